//! Whether a run may read only changes: what the last run kept
//! (`members-delta/meta`: the groups tracked, the delta links, when they
//! were issued and when the last full read was) and the rules that send a
//! run back to a full read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_guest::{StepError, state};
use sluice_guest_services::duration;

use crate::delta::{Links, Pending};

const META: &str = "members-delta/meta";
const VERSION: u32 = 1;
/// A kept link older than this is not used: Graph keeps delta tokens of
/// directory objects seven days, and a run that close to the limit may
/// start with a token that expires while it reads.
pub const LINK_MAX_AGE_DAYS: i64 = 3;
/// The safety net: a full read at least this often unless the flow says.
pub const DEFAULT_FULL_SYNC_EVERY: &str = "24h";

/// What the last run kept beside the members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    /// The group ids tracked, sorted.
    pub groups: Vec<String>,
    pub links: Option<Links>,
    /// When the last full read was, and when `links` were issued (RFC 3339).
    pub full_at: String,
    pub linked_at: String,
    /// How many chunks of members are kept.
    pub chunks: u32,
    /// Users who joined a group but whom Graph's look-up did not list yet
    /// (replication delay), with the groups they joined: looked up again
    /// by the next incremental run; a full read starts without them.
    #[serde(default, skip_serializing_if = "Pending::is_empty")]
    pub unfound: Pending,
}

impl Meta {
    pub fn after_full(groups: Vec<String>, links: Links, now: DateTime<Utc>, chunks: u32) -> Meta {
        Meta {
            version: VERSION,
            groups,
            links: Some(links),
            full_at: now.to_rfc3339(),
            linked_at: now.to_rfc3339(),
            chunks,
            unfound: Pending::new(),
        }
    }

    pub fn relinked(
        &self,
        links: Links,
        now: DateTime<Utc>,
        chunks: u32,
        unfound: Pending,
    ) -> Meta {
        Meta {
            links: Some(links),
            linked_at: now.to_rfc3339(),
            chunks,
            unfound,
            ..self.clone()
        }
    }
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The `full_sync_every` param (default 24h).
pub fn full_sync_every(text: Option<&str>) -> Result<chrono::Duration, StepError> {
    let text = text.unwrap_or(DEFAULT_FULL_SYNC_EVERY);
    duration::parse(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .ok_or_else(|| {
            StepError::bad_input(format!(
                "full_sync_every `{text}` is not a duration (e.g. \"24h\", \"12h\", \"7days\")"
            ))
            .with_code("bad-duration")
        })
}

/// What the last run kept of its delta read.
pub enum Kept {
    /// Nothing: no run kept any yet.
    Nothing,
    /// Something this version cannot read (another shape or version):
    /// the run reads fully, keeps its own, and says why.
    Unusable,
    Meta(Meta),
}

/// What the last run kept.
pub fn load_meta() -> Result<Kept, StepError> {
    match state::get::<Meta>(META) {
        Ok(None) => Ok(Kept::Nothing),
        Ok(Some(meta)) if meta.version == VERSION => Ok(Kept::Meta(meta)),
        Ok(Some(_)) => Ok(Kept::Unusable),
        Err(e) if e.code == "state-shape" => Ok(Kept::Unusable),
        Err(e) => Err(e),
    }
}

/// Why a run reads fully when what the last run kept is [`Kept::Unusable`].
pub const UNUSABLE: &str =
    "the delta state kept by the last run is unreadable or of another version";

pub fn save_meta(meta: &Meta) -> Result<(), StepError> {
    state::set(META, meta)
}

/// The kept state and links to read changes from, or why this run reads
/// fully.
pub fn decide<'a>(
    meta: Option<&'a Meta>,
    groups: &[String],
    now: DateTime<Utc>,
    every: chrono::Duration,
) -> Result<(&'a Meta, &'a Links), String> {
    let meta = meta.ok_or("no members kept yet (the first incremental run)")?;
    let links = meta.links.as_ref().ok_or("no delta link kept")?;
    if meta.groups != groups {
        return Err("the license groups changed".into());
    }
    let age = |text: &str| parse_time(text).map(|t| now - t);
    match age(&meta.linked_at) {
        Some(a) if a <= chrono::Duration::days(LINK_MAX_AGE_DAYS) => {}
        _ => {
            return Err(format!(
                "the kept delta link is older than {LINK_MAX_AGE_DAYS} days"
            ));
        }
    }
    match age(&meta.full_at) {
        Some(a) if a < every => Ok((meta, links)),
        _ => Err(format!(
            "the last full read is older than full_sync_every ({})",
            humantime::format_duration(every.to_std().unwrap_or_default())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(full_at: &str, linked_at: &str) -> Meta {
        Meta {
            version: VERSION,
            groups: vec!["g1".into(), "g2".into()],
            links: Some(Links {
                groups: "g".into(),
                users: "u".into(),
            }),
            full_at: full_at.into(),
            linked_at: linked_at.into(),
            chunks: 1,
            unfound: Pending::new(),
        }
    }

    #[test]
    fn the_rules_that_send_a_run_back_to_a_full_read() {
        let now = parse_time("2026-12-02T12:00:00Z").unwrap();
        let day = full_sync_every(None).unwrap();
        let groups = ["g1".to_string(), "g2".to_string()];
        let fresh = meta("2026-12-02T01:00:00Z", "2026-12-02T11:00:00Z");
        assert!(decide(Some(&fresh), &groups, now, day).is_ok());
        let why = |m: Option<&Meta>, g: &[String], every| decide(m, g, now, every).unwrap_err();
        assert!(why(None, &groups, day).contains("first"));
        assert!(why(Some(&fresh), &groups[..1], day).contains("groups changed"));
        let old_full = meta("2026-12-01T11:00:00Z", "2026-12-02T11:00:00Z");
        assert!(why(Some(&old_full), &groups, day).contains("full_sync_every (1day)"));
        let hour = full_sync_every(Some("1h")).unwrap();
        assert!(why(Some(&fresh), &groups, hour).contains("full_sync_every"));
        let old_link = meta("2026-12-02T01:00:00Z", "2026-11-28T11:00:00Z");
        assert!(why(Some(&old_link), &groups, day).contains("older than 3 days"));
        let unlinked = Meta {
            links: None,
            ..fresh.clone()
        };
        assert!(why(Some(&unlinked), &groups, day).contains("no delta link"));
        assert!(full_sync_every(Some("often")).is_err());
    }
}
