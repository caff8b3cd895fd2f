//! Who may reach the console, and how they prove it.
//!
//! - Without a console token the console listens only on loopback, and
//!   answers only requests whose `Host` names a loopback address: a page
//!   of another site that rebinds its own name to 127.0.0.1 cannot read the
//!   console or post to it. The viewer is the OS user, and only the OS
//!   user's own connections (and root's) are served: see [`super::peer`].
//! - With a token, every page needs it: a login form (name and token) sets
//!   a session cookie (HttpOnly, SameSite=Strict) signed with the token, or
//!   a request carries `Authorization: Bearer TOKEN`. Tokens are compared in
//!   constant time, by their SHA-256 digests so their lengths do not show
//!   either. The token itself is never stored in a cookie, shown or logged;
//!   changing it ends every session.
//! - Every form carries its browser's CSRF cookie signed with a
//!   [`CsrfKey`], so a planted cookie gives an attacker nothing to submit.
//! - `/metrics` and `/healthz` are open without the token when the console
//!   listens on loopback, or with `--metrics-public`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::listen::Listen;

/// Shorter tokens are refused: the token guards who can approve changes
/// to people, and a guessable one would be no guard at all.
pub const MIN_TOKEN_CHARS: usize = 16;

/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The longest approver name a login may give: what `sluice approve --by`
/// takes, as the README says (it was 64, and a longer name got a 400).
pub const MAX_NAME_CHARS: usize = sluice_store::approval::MAX_AUTHOR_CHARS;

/// The console token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl Token {
    /// Whether `given` is this token, in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(given.as_bytes());
        a.ct_eq(&b).into()
    }

    /// The MAC that signs sessions, keyed by the token (HMAC takes a key
    /// of any length, so this is always `Some`).
    fn mac(&self) -> Option<Hmac<Sha256>> {
        <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_bytes()).ok()
    }
}

/// What is wrong with how the console was asked to listen.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "the console would listen on {}, which is not a loopback address, without a console token; set SLUICE_CONSOLE_TOKEN or pass --token-file FILE (then every page asks for the token), or listen on 127.0.0.1",
        open_address(given, addr)
    )]
    OpenToNetwork { given: String, addr: SocketAddr },
    #[error(
        "the console cannot listen on {given}: the host name `{host}` does not resolve ({source}); give an IP address such as 127.0.0.1:8700, or a name this machine resolves"
    )]
    Unresolved {
        given: String,
        host: String,
        source: std::io::Error,
    },
    #[error(
        "the console cannot listen on {given}: the host name resolves to no address; give an IP address such as 127.0.0.1:8700"
    )]
    NoAddress { given: String },
    #[error("cannot read the console token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the console token ({from}) is too short: use at least {MIN_TOKEN_CHARS} characters, for example from `openssl rand -hex 32`"
    )]
    WeakToken { from: String },
    #[error("both SLUICE_CONSOLE_TOKEN and --token-file are set; keep one")]
    TwoTokens,
}

/// Reads the console token from `SLUICE_CONSOLE_TOKEN` (given as `env`) or
/// from a file (its first line, trimmed); none configured is `Ok(None)`.
pub fn load_token(env: Option<String>, file: Option<&Path>) -> Result<Option<Token>, AccessError> {
    let env = env.filter(|t| !t.trim().is_empty());
    let (text, from) = match (env, file) {
        (Some(_), Some(_)) => return Err(AccessError::TwoTokens),
        (Some(t), None) => (t, "SLUICE_CONSOLE_TOKEN".to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| AccessError::TokenFile {
                path: path.display().to_string(),
                source,
            })?;
            (text, path.display().to_string())
        }
        (None, None) => return Ok(None),
    };
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(AccessError::WeakToken { from });
    }
    Ok(Some(Token(token)))
}

/// Refuses to listen where any address the `--http` value resolved to is
/// not loopback, unless a token is configured: the console binds one of
/// them, and which one should not decide whether it is open.
pub fn check_address(listen: &Listen, token: Option<&Token>) -> Result<(), AccessError> {
    if token.is_some() {
        return Ok(());
    }
    match listen.addrs().iter().find(|a| !a.ip().is_loopback()) {
        None => Ok(()),
        Some(addr) => Err(AccessError::OpenToNetwork {
            given: listen.given.clone(),
            addr: *addr,
        }),
    }
}

/// `0.0.0.0:8700`, or `console.lan:8700 (10.0.0.5:8700)` for a name.
fn open_address(given: &str, addr: &SocketAddr) -> String {
    if given == addr.to_string() {
        given.to_string()
    } else {
        format!("{given} ({addr})")
    }
}

/// Whether a `Host` header names this machine's loopback: `localhost`,
/// `127.x.y.z` or `[::1]`, with any port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether an approver name is acceptable: 1 to [`MAX_NAME_CHARS`]
/// characters, none of them control characters.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&n) && !name.chars().any(char::is_control)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A session cookie's value for `name`: `EXPIRY.NAME_HEX.MAC_HEX`, where
/// the MAC (HMAC-SHA256 keyed by the token) covers the expiry and name.
pub fn sign_session(token: &Token, name: &str) -> Option<String> {
    let expires = now_secs() + SESSION_LIFETIME.as_secs();
    signed(
        token,
        &format!("{expires}.{}", hex::encode(name.as_bytes())),
    )
}

fn signed(token: &Token, body: &str) -> Option<String> {
    let mut mac = token.mac()?;
    mac.update(body.as_bytes());
    Some(format!(
        "{body}.{}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// The name a session cookie was signed for, if its MAC is right and it
/// has not expired.
pub fn verify_session(token: &Token, value: &str) -> Option<String> {
    let (body, mac_hex) = value.rsplit_once('.')?;
    let mut mac = token.mac()?;
    mac.update(body.as_bytes());
    mac.verify_slice(&hex::decode(mac_hex).ok()?).ok()?;
    let (expires, name_hex) = body.split_once('.')?;
    if expires.parse::<u64>().ok()? <= now_secs() {
        return None;
    }
    String::from_utf8(hex::decode(name_hex).ok()?)
        .ok()
        .filter(|n| valid_name(n))
}

/// Sessions signed out before they expired. A session cookie carries all
/// it needs (name, expiry, MAC), so a copy kept from before the sign-out
/// would go on working until it expires; this console refuses it instead.
/// Kept in this process: another console process serving the same token
/// does not know of the sign-out.
#[derive(Debug, Default)]
pub struct SignedOut(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl SignedOut {
    /// Ends the session cookie `value` (a valid one, verified first).
    /// Kept lower-cased: the MAC's hex verifies in either case, and a
    /// tester's upper-cased copy of a signed-out cookie got back in.
    pub fn end(&self, value: &str) {
        let Some(expires) = value
            .split_once('.')
            .and_then(|(e, _)| e.parse::<u64>().ok())
        else {
            return;
        };
        let now = now_secs();
        let mut ended = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Expired ones are refused by their expiry: forgotten here.
        ended.retain(|_, expiry| *expiry > now);
        ended.insert(value.to_ascii_lowercase(), expires);
    }

    /// Whether the session cookie `value` was signed out. A signed value
    /// is digits and lower-case hex, so lower-casing a copy only undoes
    /// a change of case that the MAC's check would let through.
    pub fn ended(&self, value: &str) -> bool {
        let ended = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ended.contains_key(&value.to_ascii_lowercase())
    }
}

/// A new random value for a CSRF cookie: 32 bytes from the OS's
/// generator, in hex.
pub fn new_csrf_value() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// The key a console signs its forms' CSRF values with. A form carries
/// the MAC of its browser's CSRF cookie, not the cookie itself, so a page
/// that can plant a cookie (another port of the same host, a sibling
/// subdomain) still cannot make a value the console accepts. Its `Debug`
/// never shows it.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey([redacted])")
    }
}

impl CsrfKey {
    /// A key for this process only (an open console: forms open before a
    /// restart are refused once, and the next page has new ones).
    pub fn random() -> Self {
        CsrfKey(rand::random())
    }

    /// A key derived from the console token, so that every console
    /// sharing the token (replicas, or one restarted) accepts the others'
    /// forms; changing the token changes it.
    pub fn for_token(token: &Token) -> Self {
        let mut key = [0u8; 32];
        if let Some(mut mac) = token.mac() {
            mac.update(b"sluice console CSRF key");
            key.copy_from_slice(&mac.finalize().into_bytes());
        }
        CsrfKey(key)
    }

    fn mac(&self, cookie: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(cookie.as_bytes());
        Some(mac)
    }

    /// The value the forms of the browser holding CSRF cookie `cookie` carry.
    pub fn sign(&self, cookie: &str) -> String {
        self.mac(cookie)
            .map(|mac| hex::encode(mac.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Whether a submitted value is this key's for `cookie`, in constant time.
    pub fn verifies(&self, cookie: &str, submitted: &str) -> bool {
        let (Some(mac), Ok(given)) = (self.mac(cookie), hex::decode(submitted)) else {
            return false;
        };
        !cookie.is_empty() && mac.verify_slice(&given).is_ok()
    }
}

/// The OS user this process runs as: who approvals made on an open
/// loopback console, and by `sluice approve`/`reject` without `--by`, are
/// recorded under. `$USER`, else `$LOGNAME`, else `$USERNAME` (the first
/// that holds a usable name); else, as under systemd, cron or `docker
/// exec` where none is set, the name of the process's user id in
/// `/etc/passwd`; else `uid N`.
pub fn os_user() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    os_user_from(
        |var| std::env::var(var).ok(),
        uid,
        || std::fs::read_to_string("/etc/passwd").ok(),
    )
}

/// [`os_user`] from the environment, the user id and the passwd file given.
fn os_user_from(
    var: impl Fn(&str) -> Option<String>,
    uid: u32,
    passwd: impl FnOnce() -> Option<String>,
) -> String {
    let usable = |name: &String| !name.trim().is_empty() && valid_name(name);
    if let Some(name) = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .filter_map(|v| var(v))
        .find(usable)
    {
        return name;
    }
    let uid = uid.to_string();
    passwd()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?.to_string();
                (fields.nth(1)? == uid && usable(&name)).then_some(name)
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token("0123456789abcdef-token".into())
    }

    #[test]
    fn the_os_user_is_the_environments_then_the_passwd_files_then_the_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# a comment\nbroken\nops:x:1000:1000::/home/ops:/bin/sh\n";
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| v.to_string())
            }
        };
        let file = || Some(passwd.to_string());
        let all = env(&[("USER", "ann"), ("LOGNAME", "bob"), ("USERNAME", "cy")]);
        assert_eq!(os_user_from(all, 1000, file), "ann");
        // A blank or unprintable value is passed over.
        let later = env(&[("USER", " "), ("LOGNAME", "bob\u{1b}"), ("USERNAME", "cy")]);
        assert_eq!(os_user_from(later, 1000, file), "cy");
        let logname = env(&[("LOGNAME", "bob")]);
        assert_eq!(os_user_from(logname, 1000, file), "bob");
        // None set: the user id's name in /etc/passwd.
        assert_eq!(os_user_from(env(&[]), 1000, file), "ops");
        assert_eq!(os_user_from(env(&[("USER", "")]), 0, file), "root");
        // Not there, or no passwd file: the id.
        assert_eq!(os_user_from(env(&[]), 4242, file), "uid 4242");
        assert_eq!(os_user_from(env(&[]), 0, || None), "uid 0");
    }

    #[test]
    fn tokens_compare_whole_and_never_print() {
        let t = token();
        assert!(t.matches("0123456789abcdef-token"));
        assert!(!t.matches("0123456789abcdef-toke"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn weak_or_doubled_tokens_are_refused() {
        assert!(matches!(
            load_token(Some("short".into()), None),
            Err(AccessError::WeakToken { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "a-long-enough-token-value\nignored").unwrap();
        let t = load_token(None, Some(&file)).unwrap().unwrap();
        assert!(t.matches("a-long-enough-token-value"));
        assert!(matches!(
            load_token(Some("a-long-enough-token-value".into()), Some(&file)),
            Err(AccessError::TwoTokens)
        ));
        assert!(load_token(Some(" ".into()), None).unwrap().is_none());
    }

    #[test]
    fn only_loopback_listens_without_a_token() {
        let listen = |a: &str| Listen::from(a.parse::<SocketAddr>().unwrap());
        let open = listen("0.0.0.0:8700");
        assert!(check_address(&listen("127.0.0.1:8700"), None).is_ok());
        assert!(check_address(&listen("[::1]:8700"), None).is_ok());
        let e = check_address(&open, None).unwrap_err().to_string();
        assert!(
            e.contains("listen on 0.0.0.0:8700, which is not a loopback")
                && e.contains("SLUICE_CONSOLE_TOKEN"),
            "{e}"
        );
        assert!(check_address(&open, Some(&token())).is_ok());
    }

    #[tokio::test]
    async fn every_address_a_name_resolves_to_must_be_loopback() {
        let localhost: super::super::listen::HttpAddr = "localhost:8700".parse().unwrap();
        assert!(check_address(&localhost.resolve().await.unwrap(), None).is_ok());
        // A name that also resolves beyond loopback is refused, naming both.
        let mixed = Listen::resolved(
            "console.lan:8700",
            vec![
                "127.0.0.1:8700".parse().unwrap(),
                "10.0.0.5:8700".parse().unwrap(),
            ],
        )
        .unwrap();
        let e = check_address(&mixed, None).unwrap_err().to_string();
        assert!(
            e.contains("listen on console.lan:8700 (10.0.0.5:8700), which is not a loopback"),
            "{e}"
        );
        assert!(check_address(&mixed, Some(&token())).is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8700",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:8700",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8700",
            "10.0.0.1:8700",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn sessions_are_signed_by_the_token_and_carry_the_name() {
        let t = token();
        let cookie = sign_session(&t, "Zoë <admin>").unwrap();
        assert_eq!(verify_session(&t, &cookie).as_deref(), Some("Zoë <admin>"));
        let other = Token("another-token-of-enough-length".into());
        assert_eq!(verify_session(&other, &cookie), None);
        let forged = cookie.replacen('.', "0.", 1);
        assert_eq!(verify_session(&t, &forged), None);
        assert_eq!(verify_session(&t, "garbage"), None);
        // Expired: the MAC covers the expiry, so it cannot be extended.
        let old = signed(&t, &format!("1.{}", hex::encode("x"))).unwrap();
        assert_eq!(verify_session(&t, &old), None);
    }

    #[test]
    fn csrf_values_are_signed_and_a_chosen_cookie_is_not_enough() {
        let cookie = new_csrf_value();
        assert_eq!(cookie.len(), 64);
        let key = CsrfKey::random();
        let signed = key.sign(&cookie);
        assert!(key.verifies(&cookie, &signed));
        // The cookie itself, a cut value, another key's: all refused.
        assert!(!key.verifies(&cookie, &cookie));
        assert!(!key.verifies(&cookie, &signed[1..]));
        assert!(!CsrfKey::random().verifies(&cookie, &signed));
        assert!(!key.verifies("", &key.sign("")));
        // A token's key is the same in every process that has the token.
        let (a, b) = (CsrfKey::for_token(&token()), CsrfKey::for_token(&token()));
        assert!(b.verifies(&cookie, &a.sign(&cookie)));
        let other = CsrfKey::for_token(&Token("another-token-of-enough-length".into()));
        assert!(!other.verifies(&cookie, &a.sign(&cookie)));
        assert!(!format!("{a:?}").contains(&hex::encode(a.0)));
    }
}
