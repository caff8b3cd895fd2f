//! Recording a run's exchanges, and running again from the recording.
//!
//! `sluice run FILE --record DIR` keeps every exchange of every connection
//! and writes them, one cassette per connection (`DIR/CONNECTION.yml`, the
//! Ruby VCR layout: [`cassette`]), with every secret and token removed
//! ([`record`]). `sluice run FILE --replay DIR` answers every request from
//! those cassettes instead of the network ([`replay`]): nothing is sent,
//! no token is fetched, so a replayed run changes nothing anywhere, and a
//! changed component can be tried against last week's answers offline.
//!
//! Both sit behind the connection's wire seam: the send loop, its retries,
//! pacing and response scrubbing are the same live, recording or replaying.
//!
//! Each run has its own id and start time, and a step may send them (the
//! report a mail carries names its run). As VCR's `filter_sensitive_data`
//! does, the recorder writes them as [`RUN_ID`] and [`RUN_STARTED_AT`] and
//! a replay puts its own back ([`RunId`]), so the same request of another
//! run still matches.
//!
//! The flow's state as the recorded run found it is kept beside the
//! cassettes ([`starting_state`]); a replay starts from it, in memory,
//! and keeps nothing it writes.

pub mod cassette;
pub mod record;
pub mod replay;
pub mod starting_state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cassette::{Cassette, CassetteError};
use record::Recorder;
use replay::Player;

use crate::redact::Redactor;
use crate::state::Json;

/// What a cassette holds in place of the recorded run's id.
pub const RUN_ID: &str = "<RUN_ID>";
/// What a cassette holds in place of the recorded run's start time (the
/// run context's `started-at`, as the component got it).
pub const RUN_STARTED_AT: &str = "<RUN_STARTED_AT>";

/// The id and start time of the run being recorded or replayed, which a
/// cassette keeps as [`RUN_ID`] and [`RUN_STARTED_AT`].
#[derive(Debug, Clone)]
pub struct RunId {
    id: String,
    started_at: Option<String>,
}

impl RunId {
    pub fn new(id: &str) -> RunId {
        RunId {
            id: id.to_string(),
            started_at: None,
        }
    }

    /// The same run, started at `started_at` (RFC 3339, as the run
    /// context gives it).
    pub fn started_at(self, started_at: &str) -> RunId {
        RunId {
            started_at: (!started_at.is_empty()).then(|| started_at.to_string()),
            ..self
        }
    }

    /// Each of the run's values with its placeholder.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.id.as_str(), RUN_ID))
            .chain(self.started_at.as_deref().map(|at| (at, RUN_STARTED_AT)))
    }

    /// The run's values replaced by their placeholders.
    pub fn hide(&self, bytes: &[u8]) -> Vec<u8> {
        self.pairs()
            .fold(bytes.to_vec(), |b, (value, placeholder)| {
                replace(&b, value.as_bytes(), placeholder.as_bytes())
            })
    }

    /// The placeholders replaced by the run's values.
    pub fn fill(&self, bytes: &[u8]) -> Vec<u8> {
        self.pairs()
            .fold(bytes.to_vec(), |b, (value, placeholder)| {
                replace(&b, placeholder.as_bytes(), value.as_bytes())
            })
    }

    pub fn hide_text(&self, text: &str) -> String {
        self.pairs()
            .fold(text.to_string(), |t, (value, placeholder)| {
                t.replace(value, placeholder)
            })
    }

    pub fn fill_text(&self, text: &str) -> String {
        self.pairs()
            .fold(text.to_string(), |t, (value, placeholder)| {
                t.replace(placeholder, value)
            })
    }
}

/// `bytes` with every `from` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// How one connection reaches its service.
#[derive(Debug, Clone, Default)]
pub enum Tape {
    /// Over the network.
    #[default]
    Live,
    /// Over the network, keeping each exchange.
    Record(Arc<Recorder>),
    /// From a cassette, never over the network.
    Replay(Arc<Player>),
}

impl Tape {
    pub fn is_replay(&self) -> bool {
        matches!(self, Tape::Replay(_))
    }
}

/// Refuses a directory another user could write in or owns: a recording
/// holds people's names and addresses, and whoever controls the directory
/// could swap the cassettes a later replay reads.
#[cfg(unix)]
fn record_dir_is_ours(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(format!(
            "it belongs to another user (uid {}); record into a directory of your own",
            meta.uid()
        ));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(
            "every user can write in it; record into a directory only you can write (chmod 700)"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn record_dir_is_ours(_: &Path) -> Result<(), String> {
    Ok(())
}

/// Why a run cannot record or replay.
#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    #[error("cannot record into {}: {reason}", dir.display())]
    RecordDir { dir: PathBuf, reason: String },
    #[error(
        "no cassette for connection `{connection}`: {} does not exist; record the flow with `sluice run FILE --record {}` first",
        path.display(),
        dir.display()
    )]
    MissingCassette {
        connection: String,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error(transparent)]
    Cassette(#[from] CassetteError),
}

/// The cassettes of one run, one per connection of the flow, and the
/// flow's state as the recorded run found it.
#[derive(Debug)]
pub struct Tapes {
    dir: PathBuf,
    tapes: BTreeMap<String, Tape>,
    /// Recording: the state to keep beside the cassettes, once known.
    /// Replaying: the recording's, when it has one.
    starting_state: Mutex<Option<Vec<(String, Json)>>>,
    replaying: bool,
}

/// Where a connection's cassette lives.
pub fn cassette_path(dir: &Path, connection: &str) -> PathBuf {
    dir.join(format!("{connection}.yml"))
}

impl Tapes {
    /// Records every connection named in `connections` into `dir` (made if
    /// missing). Nothing is written until [`Tapes::save`].
    pub fn record<'a>(
        dir: &Path,
        connections: impl IntoIterator<Item = &'a String>,
        run: &RunId,
    ) -> Result<Tapes, TapeError> {
        let refused = |reason: String| TapeError::RecordDir {
            dir: dir.to_path_buf(),
            reason,
        };
        crate::engine::cache::private_dir(dir)
            .map_err(|e| refused(sluice_store::location::folder_not_made(dir, &e)))?;
        record_dir_is_ours(dir).map_err(refused)?;
        let tapes = connections
            .into_iter()
            .map(|name| {
                (
                    name.clone(),
                    Tape::Record(Arc::new(Recorder::new(run.clone()))),
                )
            })
            .collect();
        Ok(Tapes {
            dir: dir.to_path_buf(),
            tapes,
            starting_state: Mutex::default(),
            replaying: false,
        })
    }

    /// Replays every connection named in `connections` from its cassette in
    /// `dir`; each must be there.
    pub fn replay<'a>(
        dir: &Path,
        connections: impl IntoIterator<Item = &'a String>,
        run: &RunId,
    ) -> Result<Tapes, TapeError> {
        let mut tapes = BTreeMap::new();
        for name in connections {
            let path = cassette_path(dir, name);
            if !path.exists() {
                return Err(TapeError::MissingCassette {
                    connection: name.clone(),
                    path,
                    dir: dir.to_path_buf(),
                });
            }
            let cassette = Cassette::read(&path)?;
            let player = Player::new(path.display().to_string(), cassette, run.clone());
            tapes.insert(name.clone(), Tape::Replay(Arc::new(player)));
        }
        Ok(Tapes {
            dir: dir.to_path_buf(),
            tapes,
            starting_state: Mutex::new(starting_state::read(dir)?),
            replaying: true,
        })
    }

    /// Whether these tapes answer from a recording: the run is a rehearsal
    /// and keeps no state, approval or ledger entry.
    pub fn replaying(&self) -> bool {
        self.replaying
    }

    /// Recording: the flow's state as the run starts, written beside the
    /// cassettes by [`Tapes::save`].
    pub fn keep_starting_state(&self, entries: Vec<(String, Json)>) {
        *self
            .starting_state
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(entries);
    }

    /// Replaying: the flow's state as the recorded run found it; `None`
    /// for a recording made before Sluice kept it.
    pub fn take_starting_state(&self) -> Option<Vec<(String, Json)>> {
        self.starting_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The tape of connection `name`; a connection not known here is live.
    pub fn for_connection(&self, name: &str) -> Tape {
        self.tapes.get(name).cloned().unwrap_or_default()
    }

    /// Writes every recorded connection's cassette (an empty one for a
    /// connection no request went through) and returns their paths. The
    /// whole text is scrubbed once more with `redactor`, which by now
    /// knows every token the run obtained.
    pub fn save(&self, redactor: &Redactor) -> Result<Vec<PathBuf>, TapeError> {
        let mut written = Vec::new();
        for (name, tape) in &self.tapes {
            let Tape::Record(recorder) = tape else {
                continue;
            };
            let path = cassette_path(&self.dir, name);
            let yaml = Cassette::new(recorder.interactions())
                .to_yaml()
                .map_err(|reason| CassetteError::Write {
                    path: path.clone(),
                    reason,
                })?;
            cassette::write_private(&path, &redactor.redact(&yaml))?;
            written.push(path);
        }
        if !self.replaying
            && let Some(entries) = self.take_starting_state()
        {
            written.push(starting_state::write(&self.dir, &entries, redactor)?);
        }
        Ok(written)
    }

    /// Every replayed request that found no recorded answer.
    pub fn misses(&self) -> Vec<String> {
        self.tapes
            .values()
            .flat_map(|t| match t {
                Tape::Replay(player) => player.misses(),
                _ => Vec::new(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_hidden_and_filled_wherever_it_is() {
        let run = RunId::new("20261201T171852Z-abc123");
        let sent = b"run 20261201T171852Z-abc123, again 20261201T171852Z-abc123.";
        let kept = run.hide(sent);
        assert_eq!(kept, b"run <RUN_ID>, again <RUN_ID>.");
        assert_eq!(
            RunId::new("20270101T000000Z-ffffff").fill(&kept),
            b"run 20270101T000000Z-ffffff, again 20270101T000000Z-ffffff."
        );
        assert_eq!(run.hide(b"nothing"), b"nothing");
    }

    /// A recording goes only into a directory its user owns and no other
    /// user can write in; a new one is made owner-only.
    #[cfg(unix)]
    #[test]
    fn a_recording_refuses_a_directory_every_user_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let run = RunId::new("r1");
        let names = ["graph".to_string()];
        let fresh = root.path().join("new/rec");
        assert!(Tapes::record(&fresh, &names, &run).is_ok());
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let Err(e) = Tapes::record(&shared, &names, &run) else {
            panic!("a directory every user can write was accepted");
        };
        let e = e.to_string();
        assert!(
            e.contains("every user can write in it") && e.contains("chmod 700"),
            "{e}"
        );
    }

    /// `--record FILE` names the file in the way, not "File exists".
    #[test]
    fn a_recording_into_a_file_names_it() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("notes.txt");
        std::fs::write(&file, "").unwrap();
        let Err(e) = Tapes::record(&file, &["graph".to_string()], &RunId::new("r1")) else {
            panic!("a file was taken for a folder");
        };
        assert!(
            e.to_string()
                .ends_with(&format!("{} is a file, not a folder", file.display())),
            "{e}"
        );
    }

    #[test]
    fn a_start_time_is_hidden_and_filled_like_the_id() {
        let run = RunId::new("r1").started_at("2026-12-04T18:13:27.1+00:00");
        let kept = run.hide_text(r#"{"run":"r1","at":"2026-12-04T18:13:27.1+00:00"}"#);
        assert_eq!(kept, r#"{"run":"<RUN_ID>","at":"<RUN_STARTED_AT>"}"#);
        let other = RunId::new("r2").started_at("2026-12-05T09:00:00+00:00");
        assert_eq!(
            other.fill(kept.as_bytes()),
            br#"{"run":"r2","at":"2026-12-05T09:00:00+00:00"}"#
        );
    }
}
