//! The step's output: [`Diff`](sluice_guest_services::sync::Diff)'s
//! shape, written as it is decided. The three lists that grow with the
//! tenant (`missing`, `present`, `adopted`: at a million members some
//! 200 MB of JSON) are [`OutputList`]s, handed to the host a page at a
//! time as entries are pushed, so the step never holds them; the rest is
//! small and stays typed.

use serde::Serialize;
use sluice_guest::{JsonSchema, OutputList, StepError};
use sluice_guest_services::sync::{
    Adopted, Counts, Guard, InactivePerson, InactiveUnmanaged, KnownAs, Leaver, Leaving, Person,
    Present, ProjectOwed, Returner,
};

/// Who is missing from Procore, who is there, who leaves and who returns:
/// `Diff`'s fields, in its order, with its three large lists paged.
#[derive(Serialize, JsonSchema)]
pub struct Written {
    /// License holders with no Procore user: to be created.
    pub missing: OutputList<Person>,
    /// License holders with an active Procore user.
    pub present: OutputList<Present>,
    /// License holders whose Procore user is inactive: reported, never
    /// created again.
    pub present_inactive: Vec<InactivePerson>,
    /// The counts.
    pub counts: Counts,
    /// License holders this run began to manage (adopted): the shipped
    /// flow's `ledger` records each in the person's story.
    pub adopted: OutputList<Adopted>,
    /// Managed, active Procore users who hold no license now: to be
    /// deactivated (after approval).
    #[serde(default)]
    pub leavers: Vec<Leaver>,
    /// Managed people who hold no license, still inside `leaver_grace`.
    #[serde(default)]
    pub leaving: Vec<Leaving>,
    /// Inactive Procore users the flow deactivated who hold a license
    /// again: to be reactivated.
    #[serde(default)]
    pub returners: Vec<Returner>,
    /// Inactive Procore users the flow did not deactivate: reported,
    /// never touched.
    #[serde(default)]
    pub inactive_unmanaged: Vec<InactiveUnmanaged>,
    /// Whether this run's reads look too thin to trust for deactivations.
    #[serde(default)]
    pub guard: Guard,
    /// License holders whose key matches no Procore user but whose Entra
    /// user is a managed Procore user's (their mail appeared or changed):
    /// not created, reported so an admin can change Procore's address.
    #[serde(default)]
    pub known_as: Vec<KnownAs>,
    /// Project calls earlier runs owe managed people on the flow's project
    /// (Procore refused them or never answered): to be made now.
    #[serde(default)]
    pub project_owed: Vec<ProjectOwed>,
    /// Deactivations a run sent and Procore applied, whose host died
    /// before recording them, and which an admin rejected only after:
    /// recorded as deactivated (too late to refuse; also in `adopted`, for
    /// the ledger), and listed so the report tells the admin.
    #[serde(default)]
    pub rejected_too_late: Vec<Adopted>,
}

impl Default for Written {
    fn default() -> Self {
        Written {
            missing: OutputList::new("missing"),
            present: OutputList::new("present"),
            present_inactive: Vec::new(),
            counts: Counts::default(),
            adopted: OutputList::new("adopted"),
            leavers: Vec::new(),
            leaving: Vec::new(),
            returners: Vec::new(),
            inactive_unmanaged: Vec::new(),
            guard: Guard::default(),
            known_as: Vec::new(),
            project_owed: Vec::new(),
            rejected_too_late: Vec::new(),
        }
    }
}

impl Written {
    /// The output, every list handed over.
    pub fn finish(mut self) -> Result<Written, StepError> {
        self.missing.finish()?;
        self.present.finish()?;
        self.adopted.finish()?;
        Ok(self)
    }
}

/// The whole output as a `Diff`, for tests (natively the lists are
/// written whole).
#[cfg(test)]
pub fn parsed(written: Written) -> sluice_guest_services::sync::Diff {
    let text = serde_json::to_string(&written.finish().unwrap()).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest_services::procore::Id;
    use sluice_guest_services::sync::{
        AdoptedStatus, Diff, GuardKind, LeaveReason, MatchedBy, Origin,
    };

    #[test]
    fn the_schema_is_the_diffs_with_its_three_large_lists_paged() {
        let written: serde_json::Value =
            serde_json::from_str(&sluice_guest::glue::schema::<Written>()).unwrap();
        let diff: serde_json::Value =
            serde_json::from_str(&sluice_guest::glue::schema::<Diff>()).unwrap();
        let paged = |field: &str| written["properties"][field]["x-sluice-paged"] == true;
        for field in ["missing", "present", "adopted"] {
            assert!(paged(field), "{field}");
            assert_eq!(
                written["properties"][field]["items"],
                diff["properties"][field]["items"]
            );
        }
        for field in [
            "present_inactive",
            "counts",
            "leavers",
            "leaving",
            "returners",
            "guard",
            "known_as",
            "project_owed",
            "rejected_too_late",
        ] {
            assert!(!paged(field), "{field}");
            assert_eq!(written["properties"][field], diff["properties"][field]);
        }
        assert_eq!(written["$defs"], diff["$defs"]);
    }

    #[test]
    fn the_text_is_the_diff_serialised() {
        let person = Person {
            key: "a@x.com".into(),
            id: Some("e\"1".into()),
            mail: None,
            user_principal_name: Some("a@x.com".into()),
            display_name: Some("Zoë".into()),
            given_name: None,
            surname: None,
            groups: vec!["License – E3".into()],
        };
        let expected = Diff {
            missing: vec![person.clone(), person.clone()],
            present: vec![Present {
                key: "b@x.com".into(),
                procore_id: Id::Text("7".into()),
            }],
            present_inactive: vec![InactivePerson {
                person,
                procore_id: Id::Number(8),
                matched_by: Some(MatchedBy::EntraId),
            }],
            counts: Counts {
                people: 4,
                missing: 2,
                ..Counts::default()
            },
            adopted: vec![Adopted {
                key: "b@x.com".into(),
                status: AdoptedStatus::Adopted,
                procore_id: Id::Number(7),
                matched_by: Some(MatchedBy::Upn),
                license_group: None,
                origin: Origin::Domain,
                detail: None,
                name: None,
            }],
            leavers: vec![Leaver {
                key: "c@x.com".into(),
                procore_id: Id::Number(9),
                name: None,
                email: Some("c@x.com".into()),
                login: None,
                reason: LeaveReason::UserGone,
                inactive: false,
                entra_id: None,
            }],
            leaving: Vec::new(),
            returners: Vec::new(),
            inactive_unmanaged: Vec::new(),
            guard: Guard {
                hold: true,
                reason: "why".into(),
                kind: Some(GuardKind::HoldersFell),
                deactivate: true,
            },
            known_as: vec![KnownAs {
                key: "d@x.com".into(),
                procore_id: Id::Number(10),
                managed_as: "d@x.onmicrosoft.com".into(),
                login: Some("d@x.onmicrosoft.com".into()),
                email: None,
                name: Some("D".into()),
                license_group: None,
                matched_by: MatchedBy::Mail,
            }],
            project_owed: vec![ProjectOwed {
                key: "e@x.com".into(),
                procore_id: Id::Number(11),
                name: Some("E".into()),
                project_id: "5".into(),
                action: sluice_guest_services::sync::ProjectAction::Add,
            }],
            rejected_too_late: vec![Adopted {
                key: "f@x.com".into(),
                status: AdoptedStatus::Deactivated,
                procore_id: Id::Number(12),
                matched_by: None,
                license_group: None,
                origin: Origin::Adopted,
                detail: Some("too late".into()),
                name: Some("F".into()),
            }],
        };
        let mut written = Written::default();
        for p in &expected.missing {
            written.missing.push(p).unwrap();
        }
        for p in &expected.present {
            written.present.push(p).unwrap();
        }
        for a in &expected.adopted {
            written.adopted.push(a).unwrap();
        }
        written.present_inactive = expected.present_inactive.clone();
        written.counts = expected.counts;
        written.leavers = expected.leavers.clone();
        written.guard = expected.guard.clone();
        written.known_as = expected.known_as.clone();
        written.project_owed = expected.project_owed.clone();
        written.rejected_too_late = expected.rejected_too_late.clone();
        assert_eq!(written.missing.len(), 2);
        let text = serde_json::to_string(&written.finish().unwrap()).unwrap();
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
    }
}
