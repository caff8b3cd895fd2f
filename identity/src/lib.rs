//! The identity rule of the license sync, in one place.
//!
//! Used by the components that read Graph members, compare them with
//! Procore and create Procore users, and by the emulator's oracle that
//! says what a correct sync does: a change here changes both sides at once.
//!
//! - A Graph user's key is its `mail`, trimmed and lower-cased; where
//!   `mail` is empty (or only spaces), its `userPrincipalName`, the same
//!   way. A user with neither has no key and is not synced.
//! - A Procore user matches a key when its `login` or its `email_address`,
//!   trimmed and lower-cased, equals the key — active or not.
//! - Lower-casing is Unicode's (`Zoë@X.com` is `zoë@x.com`), not ASCII's.
#![deny(missing_docs)]

/// A normalised identity key: trimmed and lower-cased. Two spellings of
/// one address give equal keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// The key of any text (an address, a login), or `None` when it is
    /// empty once trimmed.
    pub fn of(text: &str) -> Option<Key> {
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| Key(trimmed.to_lowercase()))
    }

    /// The key of a Graph user, from its `mail` and `userPrincipalName`:
    /// the mail where it has one, else the UPN.
    pub fn of_graph_user(mail: Option<&str>, user_principal_name: Option<&str>) -> Option<Key> {
        mail.and_then(Key::of)
            .or_else(|| user_principal_name.and_then(Key::of))
    }

    /// Whether a Procore user with this `login` and `email_address` is the
    /// person with this key.
    pub fn matches_procore(&self, login: Option<&str>, email_address: Option<&str>) -> bool {
        [login, email_address]
            .into_iter()
            .flatten()
            .any(|field| Key::of(field).as_ref() == Some(self))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> String {
        Key::of(text).unwrap().into_string()
    }

    #[test]
    fn mail_first_trimmed_and_lower_cased() {
        let k = Key::of_graph_user(Some("  Alice.Smith@Contoso.com "), Some("x@y"));
        assert_eq!(k.unwrap().as_str(), "alice.smith@contoso.com");
    }

    #[test]
    fn upn_where_mail_is_empty_or_missing() {
        let blank = Key::of_graph_user(Some("   "), Some("Bob@Contoso.onmicrosoft.com"));
        assert_eq!(blank.unwrap().as_str(), "bob@contoso.onmicrosoft.com");
        let missing = Key::of_graph_user(None, Some(" Carl@C.com"));
        assert_eq!(missing.unwrap().as_str(), "carl@c.com");
        assert_eq!(Key::of_graph_user(None, Some("  ")), None);
        assert_eq!(Key::of_graph_user(Some(""), None), None);
    }

    #[test]
    fn lower_casing_is_unicode() {
        assert_eq!(key("ZOË@Example.COM"), "zoë@example.com");
        assert_eq!(key("ŁUKASZ@x.pl"), "łukasz@x.pl");
    }

    #[test]
    fn procore_users_match_by_login_or_email_without_case() {
        let k = Key::of("ann.lee@x.com").unwrap();
        assert!(k.matches_procore(Some(" ANN.LEE@x.com "), None));
        assert!(k.matches_procore(Some("other"), Some("Ann.Lee@X.com")));
        assert!(!k.matches_procore(Some("ann.lee@x.com.au"), Some("lee@x.com")));
        assert!(!k.matches_procore(None, None));
        assert!(!k.matches_procore(Some(""), Some("  ")));
    }
}
