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
//! Each run has its own id, and a step may send it (the report a mail
//! carries names its run). As VCR's `filter_sensitive_data` does, the
//! recorder writes it as [`RUN_ID`] and a replay puts its own id back
//! ([`RunId`]), so the same request of another run still matches.

pub mod cassette;
pub mod record;
pub mod replay;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cassette::{Cassette, CassetteError};
use record::Recorder;
use replay::Player;

use crate::redact::Redactor;

/// What a cassette holds in place of the recorded run's id.
pub const RUN_ID: &str = "<RUN_ID>";

/// The id of the run being recorded or replayed, which a cassette keeps as
/// [`RUN_ID`].
#[derive(Debug, Clone)]
pub struct RunId(String);

impl RunId {
    pub fn new(id: &str) -> RunId {
        RunId(id.to_string())
    }

    /// The run's id replaced by the placeholder.
    pub fn hide(&self, bytes: &[u8]) -> Vec<u8> {
        replace(bytes, self.0.as_bytes(), RUN_ID.as_bytes())
    }

    /// The placeholder replaced by the run's id.
    pub fn fill(&self, bytes: &[u8]) -> Vec<u8> {
        replace(bytes, RUN_ID.as_bytes(), self.0.as_bytes())
    }

    pub fn hide_text(&self, text: &str) -> String {
        text.replace(&self.0, RUN_ID)
    }

    pub fn fill_text(&self, text: &str) -> String {
        text.replace(RUN_ID, &self.0)
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

/// The cassettes of one run, one per connection of the flow.
#[derive(Debug)]
pub struct Tapes {
    dir: PathBuf,
    tapes: BTreeMap<String, Tape>,
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
        std::fs::create_dir_all(dir).map_err(|e| TapeError::RecordDir {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
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
        })
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
}
