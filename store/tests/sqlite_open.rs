//! Opening a fresh SQLite history from several places at once: `sluice
//! serve` creating the file while `sluice runs`, `sluice run` or another
//! `serve` opens it. Every open must succeed and the file be migrated
//! once, whoever comes first; a write lock held by another connection is
//! waited for (up to the busy timeout), never answered with "database is
//! locked".
//!
//! The processes are this test binary again, running the ignored test
//! [`child_opens_the_history`] on the file named by [`CHILD_FILE`]; they
//! start together when the parent closes their stdin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sluice_store::sqlite::schema::SCHEMA_VERSION;
use sluice_store::{Location, Store};

/// The history file a child process opens.
const CHILD_FILE: &str = "SLUICE_STORE_TEST_CHILD_FILE";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opens the history at `path` as `sluice` does, and says its version.
fn open(path: &Path) -> Result<i64, String> {
    runtime().block_on(async {
        let store = Store::open(&Location::Sqlite(path.to_path_buf()))
            .await
            .map_err(|e| e.to_string())?;
        store.schema_version().await.map_err(|e| e.to_string())
    })
}

#[test]
#[ignore = "a child process of a_fresh_history_opened_by_several_processes_at_once_is_migrated_once"]
fn child_opens_the_history() {
    let path = PathBuf::from(std::env::var_os(CHILD_FILE).expect("run by its parent test"));
    // Wait for the start: the parent closes every child's stdin at once.
    std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
    assert_eq!(open(&path), Ok(SCHEMA_VERSION));
}

fn child(path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_opens_the_history", "--exact", "--ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_FILE, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_fresh_history_opened_by_several_processes_at_once_is_migrated_once() {
    const ROUNDS: usize = 3;
    const PROCESSES: usize = 6;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = sluice_store::path_in(dir.path());
        let mut children: Vec<Child> = (0..PROCESSES).map(|_| child(&path)).collect();
        for c in &mut children {
            drop(c.stdin.take());
        }
        for (i, c) in children.into_iter().enumerate() {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}, process {i}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(open(&path), Ok(SCHEMA_VERSION));
    }
}

#[test]
fn opening_a_fresh_history_waits_for_another_connections_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    // What a process creating the file holds while it switches it to WAL:
    // the write lock of a file still in rollback mode.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (tx, rx) = mpsc::channel();
    let opener = {
        let path = path.clone();
        std::thread::spawn(move || tx.send(open(&path)).unwrap())
    };
    // Hold the lock for a while: an open that does not wait for it fails
    // in that time; one that waits is still waiting.
    let early = rx.recv_timeout(Duration::from_millis(500)).ok();
    holder.execute_batch("COMMIT").unwrap();
    let opened = early.unwrap_or_else(|| rx.recv().unwrap());
    opener.join().unwrap();
    assert_eq!(opened, Ok(SCHEMA_VERSION));
    drop(holder);
}

/// `sqlite:DIR` names a folder: said so, with a file to name instead, not
/// SQLite's "unable to open database file".
#[test]
fn a_folder_named_as_the_history_is_said_to_be_one() {
    let dir = tempfile::tempdir().unwrap();
    let why = open(dir.path()).unwrap_err();
    assert!(
        why.contains("it is a folder, not a file: name a file in it, e.g. sqlite:"),
        "{why}"
    );
    assert!(why.contains("history.sqlite"), "{why}");
}
