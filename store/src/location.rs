//! Where the store lives: `--database URL` / `SLUICE_DATABASE_URL`.
//!
//! - unset: SQLite, `history.sqlite` in the data directory (the default);
//! - `sqlite:PATH` or `sqlite://PATH`: SQLite at that file;
//! - `postgres://…` or `postgresql://…`: PostgreSQL (libpq's URL form, as
//!   `tokio-postgres` reads it: user, password, host, port, database and
//!   options such as `connect_timeout`).
//!
//! A URL may hold a password: [`Location`] shows itself without it, so it
//! is safe in messages and logs.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why the folder `dir` could not be made, in words an operator acts on:
/// `create_dir_all` through a file says only "File exists" (or "Not a
/// directory"), without naming the file in the way.
pub fn folder_not_made(dir: &Path, error: &std::io::Error) -> String {
    match dir.ancestors().find(|a| a.is_file()) {
        Some(file) => format!("{} is a file, not a folder", file.display()),
        None => error.to_string(),
    }
}

/// A database location that is not one of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{shown}` is not a database Sluice can use ({why}); give postgres://USER@HOST:PORT/DB, sqlite:PATH, or nothing for history.sqlite in the data directory"
)]
pub struct LocationError {
    /// The value, its password hidden.
    pub shown: String,
    pub why: String,
}

/// The database the store opens.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (created with its folder when missing).
    Sqlite(PathBuf),
    /// An SQLite database that lives as long as the store: for tests.
    SqliteMemory,
    /// A PostgreSQL server; the URL as given (it may hold a password).
    Postgres(String),
}

impl Location {
    /// The location `--database` names, or the default SQLite file in
    /// `data_dir` when it names none.
    pub fn from_option(url: Option<&str>, data_dir: &Path) -> Result<Location, LocationError> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(Location::Sqlite(crate::path_in(data_dir))),
            Some(url) => url.parse(),
        }
    }

    /// Whether this is a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl std::str::FromStr for Location {
    type Err = LocationError;

    fn from_str(text: &str) -> Result<Location, LocationError> {
        let refuse = |why: &str| LocationError {
            shown: hide_password(text),
            why: why.to_string(),
        };
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            text.parse::<tokio_postgres::Config>()
                .map_err(|e| refuse(&e.to_string()))?;
            return Ok(Location::Postgres(text.to_string()));
        }
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(refuse("the sqlite: form needs a file path"));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        // A bare path (no scheme, nowhere a password could be) is shown
        // as written, with the form that would have read it. libpq's
        // keyword form (`host=db password=…`) is no path.
        let path_like = !text.contains(['@', ':', '=']) && !text.chars().any(char::is_whitespace);
        if path_like {
            return Err(LocationError {
                shown: text.to_string(),
                why: format!("no scheme; for an SQLite file write sqlite:{text}"),
            });
        }
        Err(refuse("unknown scheme"))
    }
}

/// Query parameters of a PostgreSQL URL that are shown as written: where
/// the server is and how to reach it. Any other (`password`,
/// `sslpassword`, whatever libpq adds next) is shown as `NAME=***`.
const SHOWN_PARAMETERS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "load_balance_hosts",
    "channel_binding",
];

/// The URL with any password replaced by `***`: the one after `user:`
/// and the value of every query parameter not known to be harmless
/// (libpq also takes `?password=`).
fn hide_password(text: &str) -> String {
    match url::Url::parse(text) {
        // `user:pw@host` reads as a URL of scheme `user` whose path is
        // the rest: only the scheme is shown.
        Ok(url) if url.cannot_be_a_base() => format!("{}:…", url.scheme()),
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(name, value)| {
                        let shown = SHOWN_PARAMETERS
                            .iter()
                            .any(|safe| name.eq_ignore_ascii_case(safe));
                        let value = if shown {
                            value.into_owned()
                        } else {
                            "***".into()
                        };
                        (name.into_owned(), value)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        // Not a URL: it cannot be told where a password would be, so only
        // the scheme is shown.
        Err(_) => text.split_once("://").map_or(
            "(not shown: it may hold a password)".to_string(),
            |(s, _)| format!("{s}://…"),
        ),
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::SqliteMemory => f.write_str(":memory:"),
            Location::Postgres(url) => f.write_str(&hide_password(url)),
        }
    }
}

/// Debug shows what Display shows: never the password.
impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_a_file_stands_in_the_way_of_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, "").unwrap();
        for wanted in [file.clone(), file.join("runs/r1")] {
            let error = std::fs::create_dir_all(&wanted).unwrap_err();
            assert_eq!(
                folder_not_made(&wanted, &error),
                format!("{} is a file, not a folder", file.display())
            );
        }
        // Any other reason is the system's own words.
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let free = dir.path().join("free");
        assert_eq!(folder_not_made(&free, &other), other.to_string());
    }

    #[test]
    fn reads_each_form_and_never_shows_the_password() {
        let dir = Path::new("/data");
        assert_eq!(
            Location::from_option(None, dir).unwrap(),
            Location::Sqlite(PathBuf::from("/data/history.sqlite"))
        );
        assert_eq!(
            Location::from_option(Some("  "), dir).unwrap(),
            Location::Sqlite(PathBuf::from("/data/history.sqlite"))
        );
        assert_eq!(
            "sqlite:/x/h.db".parse::<Location>().unwrap(),
            Location::Sqlite(PathBuf::from("/x/h.db"))
        );
        assert_eq!(
            "sqlite://rel.db".parse::<Location>().unwrap(),
            Location::Sqlite(PathBuf::from("rel.db"))
        );
        let pg: Location = "postgres://sluice:s3cret-pw@db:5432/sluice"
            .parse()
            .unwrap();
        assert!(pg.is_postgres());
        let shown = format!("{pg} {pg:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("postgres://sluice:***@db:5432/sluice"));
        // libpq also takes the password, and others, as query parameters.
        for url in [
            "postgres://u@db/x?password=hunter2&connect_timeout=2",
            "postgresql:///x?host=/run/postgresql&user=u&password=hunter2",
        ] {
            let pg: Location = url.parse().unwrap();
            let shown = format!("{pg} {pg:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("password=***"), "{shown}");
        }
        let shown = hide_password("postgres://u@db/x?sslmode=require&SSLPassword=hunter2");
        assert_eq!(shown, "postgres://u@db/x?sslmode=require&SSLPassword=***");
        let pg: Location = "postgres://u@db/x?password=hunter2&connect_timeout=2"
            .parse()
            .unwrap();
        assert_eq!(
            pg.to_string(),
            "postgres://u@db/x?password=***&connect_timeout=2"
        );
        let err = "postgres://u@db/x?password=hunter2&port=notanumber"
            .parse::<Location>()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = "mysql://root:hunter2@db/x".parse::<Location>().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("postgres://USER@HOST"), "{err}");
        assert!("sqlite:".parse::<Location>().is_err());
    }

    #[test]
    fn a_bare_path_is_shown_with_the_form_that_reads_it() {
        let err = "/var/lib/sluice/h.db".parse::<Location>().unwrap_err();
        assert_eq!(err.shown, "/var/lib/sluice/h.db");
        assert!(
            err.to_string()
                .contains("no scheme; for an SQLite file write sqlite:/var/lib/sluice/h.db"),
            "{err}"
        );
        // Text that could hold a password is still not shown.
        for hidden in [
            "root:hunter2@db/x",
            "u:hunter2",
            "host=db user=sluice password=hunter2",
            "password=hunter2",
        ] {
            let err = hidden.parse::<Location>().unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(err.to_string().contains("unknown scheme"), "{err}");
        }
    }
}
