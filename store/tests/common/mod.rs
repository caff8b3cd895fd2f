//! One test body, both backends: [`Db`] opens a fresh store on SQLite (a
//! file in a temporary folder) or on PostgreSQL (a new database in this
//! process's throwaway cluster), and reaches under the store with plain
//! SQL where a test must fake what it cannot make (an old row, a dead
//! writer). The `both!` macro turns `async fn name(db: Db)` into a test
//! per backend: `name::sqlite` and `name::postgres`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sluice_store::testing::TempPostgres;
use sluice_store::{Location, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct Db {
    pub store: Store,
    pub kind: Kind,
    pub location: Location,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    pub async fn new(kind: Kind) -> Db {
        let (location, dir) = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (
                    Location::Sqlite(sluice_store::path_in(dir.path())),
                    Some(dir),
                )
            }
            Kind::Postgres => (
                Location::Postgres(TempPostgres::shared().new_database().await),
                None,
            ),
        };
        Db {
            store: Store::open(&location).await.unwrap(),
            kind,
            location,
            _dir: dir,
        }
    }

    /// Another handle on the same database, as another process would open.
    pub async fn reopen(&self) -> Store {
        Store::open(&self.location).await.unwrap()
    }

    fn sqlite_path(&self) -> PathBuf {
        match &self.location {
            Location::Sqlite(p) => p.clone(),
            other => panic!("not SQLite: {other}"),
        }
    }

    async fn pg(&self) -> tokio_postgres::Client {
        let Location::Postgres(url) = &self.location else {
            panic!("not PostgreSQL")
        };
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// Runs statements under the store.
    pub async fn sql(&self, sql: &str) {
        match self.kind {
            Kind::Sqlite => rusqlite::Connection::open(self.sqlite_path())
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Kind::Postgres => self.pg().await.batch_execute(sql).await.unwrap(),
        }
    }

    /// The first column of the first row of a query, as text.
    pub async fn text(&self, sql: &str) -> String {
        match self.kind {
            Kind::Sqlite => rusqlite::Connection::open(self.sqlite_path())
                .unwrap()
                .query_row(sql, [], |r| r.get::<_, String>(0))
                .unwrap(),
            Kind::Postgres => self
                .pg()
                .await
                .query_one(sql, &[])
                .await
                .unwrap()
                .get::<_, String>(0),
        }
    }

    /// A count, by a query that returns one.
    pub async fn count(&self, sql: &str) -> i64 {
        match self.kind {
            Kind::Sqlite => rusqlite::Connection::open(self.sqlite_path())
                .unwrap()
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .unwrap(),
            Kind::Postgres => self
                .pg()
                .await
                .query_one(sql, &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
        }
    }
}

/// `both!(name)` makes tests `name::sqlite` and `name::postgres` that run
/// `async fn name(db: Db)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Db::new($crate::common::Kind::Sqlite).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Db::new($crate::common::Kind::Postgres).await).await;
                }
            }
        )+
    };
}
