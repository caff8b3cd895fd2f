//! What Graph's directory objects look like: the property names of each
//! entity type, the properties a user shows when no `$select` is given, and
//! the JSON of the emulated users, groups, devices and service principals.
//!
//! The property lists are Graph v1.0's `$metadata` (the structural
//! properties of each type and of `directoryObject`, navigation properties
//! left out), as the msgraph-sdk models generated from it name them. They
//! decide which `$select` and `$filter` names exist: a real property the
//! emulator does not model is answered as `null`, an unknown one with
//! Graph's 400.

use serde_json::{Map, Value, json};

use crate::scenario::{GraphGroup, GraphUser, Member, Scenario};

/// The structural properties of each directory type Graph lists as members.
#[rustfmt::skip]
mod properties {
    pub const USER: &[&str] = &[
        "id", "deletedDateTime", "aboutMe", "accountEnabled", "ageGroup", "assignedLicenses",
        "assignedPlans", "authorizationInfo", "birthday", "businessPhones", "city", "companyName",
        "consentProvidedForMinor", "country", "createdDateTime", "creationType",
        "customSecurityAttributes", "department", "deviceEnrollmentLimit", "displayName",
        "employeeHireDate", "employeeId", "employeeLeaveDateTime", "employeeOrgData",
        "employeeType", "externalUserState", "externalUserStateChangeDateTime", "faxNumber",
        "givenName", "hireDate", "identities", "identityParentId", "imAddresses", "interests",
        "isManagementRestricted", "isResourceAccount", "jobTitle", "lastPasswordChangeDateTime",
        "legalAgeGroupClassification", "licenseAssignmentStates", "mail", "mailNickname",
        "mailboxSettings", "mobilePhone", "mySite", "officeLocation", "onPremisesDistinguishedName",
        "onPremisesDomainName", "onPremisesExtensionAttributes", "onPremisesImmutableId",
        "onPremisesLastSyncDateTime", "onPremisesProvisioningErrors", "onPremisesSamAccountName",
        "onPremisesSecurityIdentifier", "onPremisesSyncEnabled", "onPremisesUserPrincipalName",
        "otherMails", "passwordPolicies", "passwordProfile", "pastProjects", "postalCode",
        "preferredDataLocation", "preferredLanguage", "preferredName", "print", "provisionedPlans",
        "proxyAddresses", "responsibilities", "schools", "securityIdentifier",
        "serviceProvisioningErrors", "showInAddressList", "signInActivity",
        "signInSessionsValidFromDateTime", "skills", "state", "streetAddress", "surname",
        "usageLocation", "userPrincipalName", "userType"
    ];
    pub const GROUP: &[&str] = &[
        "id", "deletedDateTime", "accessType", "allowExternalSenders", "assignedLabels",
        "assignedLicenses", "autoSubscribeNewMembers", "classification", "createdDateTime",
        "description", "displayName", "expirationDateTime", "groupTypes",
        "hasMembersWithLicenseErrors", "hideFromAddressLists", "hideFromOutlookClients",
        "infoCatalogs", "isArchived", "isAssignableToRole", "isFavorite", "isManagementRestricted",
        "isSubscribedByMail", "licenseProcessingState", "mail", "mailEnabled", "mailNickname",
        "membershipRule", "membershipRuleProcessingState", "onPremisesDomainName",
        "onPremisesExtensionAttributes", "onPremisesLastSyncDateTime", "onPremisesNetBiosName",
        "onPremisesProvisioningErrors", "onPremisesSamAccountName", "onPremisesSecurityIdentifier",
        "onPremisesSyncEnabled", "organizationId", "preferredDataLocation", "preferredLanguage",
        "proxyAddresses", "renewedDateTime", "resourceBehaviorOptions",
        "resourceProvisioningOptions", "securityEnabled", "securityIdentifier",
        "serviceProvisioningErrors", "theme", "uniqueName", "unseenConversationsCount",
        "unseenCount", "unseenMessagesCount", "visibility", "welcomeMessageEnabled"
    ];
    pub const DEVICE: &[&str] = &[
        "id", "deletedDateTime", "accountEnabled", "alternativeSecurityIds",
        "approximateLastSignInDateTime", "complianceExpirationDateTime", "deviceCategory",
        "deviceId", "deviceMetadata", "deviceOwnership", "deviceVersion", "displayName",
        "enrollmentProfileName", "enrollmentType", "isCompliant", "isManaged",
        "isManagementRestricted", "isRooted", "managementType", "manufacturer", "mdmAppId", "model",
        "onPremisesLastSyncDateTime", "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
        "operatingSystem", "operatingSystemVersion", "physicalIds", "profileType",
        "registrationDateTime", "systemLabels", "trustType"
    ];
    pub const SERVICE_PRINCIPAL: &[&str] = &[
        "id", "deletedDateTime", "accountEnabled", "addIns", "alternativeNames", "appDescription",
        "appDisplayName", "appId", "appOwnerOrganizationId", "appRoleAssignmentRequired",
        "appRoles", "applicationTemplateId", "createdByAppId", "customSecurityAttributes",
        "description", "disabledByMicrosoftStatus", "displayName", "homepage", "info", "isDisabled",
        "keyCredentials", "loginUrl", "logoutUrl", "notes", "notificationEmailAddresses",
        "oauth2PermissionScopes", "passwordCredentials", "preferredSingleSignOnMode",
        "preferredTokenSigningKeyThumbprint", "replyUrls", "resourceSpecificApplicationPermissions",
        "samlSingleSignOnSettings", "servicePrincipalNames", "servicePrincipalType",
        "signInAudience", "tags", "tokenEncryptionKeyId", "verifiedPublisher"
    ];
}

/// What a user shows without `$select` (Graph's documented default set).
const USER_DEFAULT_PROPERTIES: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// The directory types the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
    Device,
    ServicePrincipal,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::User,
        Kind::Group,
        Kind::Device,
        Kind::ServicePrincipal,
    ];

    /// The `@odata.type` of an object of this kind.
    pub fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
            Kind::Device => "#microsoft.graph.device",
            Kind::ServicePrincipal => "#microsoft.graph.servicePrincipal",
        }
    }

    fn properties(self) -> &'static [&'static str] {
        match self {
            Kind::User => properties::USER,
            Kind::Group => properties::GROUP,
            Kind::Device => properties::DEVICE,
            Kind::ServicePrincipal => properties::SERVICE_PRINCIPAL,
        }
    }

    /// The property's name as Graph spells it, if this kind has it (Graph
    /// reads names in queries without regard to case).
    pub fn property(self, name: &str) -> Option<&'static str> {
        self.properties()
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
            .copied()
    }
}

/// A directory object with every property the emulator models.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: Kind,
    pub fields: Map<String, Value>,
}

impl Object {
    /// The value of a property (by its canonical name); `None` when the
    /// object's type has no such property.
    pub fn get(&self, property: &str) -> Option<&Value> {
        self.kind
            .property(property)
            .map(|p| self.fields.get(p).unwrap_or(&Value::Null))
    }

    /// The object as Graph shows it: the selected properties its type has
    /// (unmodelled ones as `null`), or its default set; with `@odata.type`
    /// first when the collection mixes types.
    pub fn render(&self, selected: Option<&[&'static str]>, with_type: bool) -> Value {
        let mut out = Map::new();
        if with_type {
            out.insert("@odata.type".into(), json!(self.kind.odata_type()));
        }
        match selected {
            Some(names) => {
                for name in names {
                    if let Some(value) = self.get(name) {
                        out.insert((*name).to_string(), value.clone());
                    }
                }
            }
            None => {
                for (k, v) in &self.fields {
                    if self.kind != Kind::User || USER_DEFAULT_PROPERTIES.contains(&k.as_str()) {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Value::Object(out)
    }
}

fn object(kind: Kind, value: Value) -> Object {
    let fields = match value {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Object { kind, fields }
}

pub fn user(u: &GraphUser) -> Object {
    object(
        Kind::User,
        json!({
            "id": u.id,
            "businessPhones": [],
            "displayName": u.display_name,
            "givenName": u.given_name,
            "jobTitle": u.job_title,
            "mail": u.mail,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
            "surname": u.surname,
            "userPrincipalName": u.user_principal_name,
            "accountEnabled": u.account_enabled,
        }),
    )
}

/// A group as Graph lists it by default: the emulated groups are security
/// groups without mail, so `mail` is null; `mailNickname` Graph always has.
pub fn group(g: &GraphGroup) -> Object {
    object(
        Kind::Group,
        json!({
            "id": g.id,
            "displayName": g.display_name,
            "description": null,
            "groupTypes": [],
            "mail": null,
            "mailEnabled": false,
            "mailNickname": mail_nickname(g),
            "securityEnabled": true,
        }),
    )
}

/// What Entra ID proposes as a group's mail nickname: its display name
/// without the characters a nickname cannot hold.
fn mail_nickname(g: &GraphGroup) -> String {
    let nickname: String = g
        .display_name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if nickname.is_empty() {
        g.id.chars().take(8).collect()
    } else {
        nickname
    }
}

/// The type of a member object.
pub fn member_kind(member: &Member) -> Kind {
    match member {
        Member::User { .. } => Kind::User,
        Member::Group { .. } => Kind::Group,
        Member::Device { .. } => Kind::Device,
        Member::ServicePrincipal { .. } => Kind::ServicePrincipal,
    }
}

/// A member as the directory holds it; `None` for a member whose user or
/// group no longer exists.
pub fn member(scenario: &Scenario, member: &Member) -> Option<Object> {
    match member {
        Member::User { id } => scenario.user(id).map(user),
        Member::Group { id } => scenario.group(id).map(group),
        Member::Device { id, display_name } => Some(object(
            Kind::Device,
            json!({ "id": id, "displayName": display_name, "accountEnabled": true }),
        )),
        Member::ServicePrincipal { id, display_name } => Some(object(
            Kind::ServicePrincipal,
            json!({ "id": id, "displayName": display_name, "accountEnabled": true }),
        )),
    }
}
