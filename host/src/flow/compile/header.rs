//! The flow's own fields: `name`, `schedule` and `[params]` (with the
//! `--param` overrides given on the command line).

use std::collections::BTreeMap;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::{AuthoredFlow, AuthoredSchedule, Node};
use super::super::schedule::{Schedule, ScheduleError, zone};
use super::{Compiler, literal_json};

/// What a schedule's `timezone` takes.
const ZONE_HINT: &str = "use an IANA name such as `America/Los_Angeles` or `Europe/Paris`";

/// The most characters a flow's `name` may have.
const MAX_NAME_CHARS: usize = 200;

/// Why `name` cannot name a flow, if it cannot: a control character (a NUL,
/// a terminal escape) or a bidirectional formatting one (which makes text
/// read otherwise than it is stored) would be written as it is into
/// terminals, pages, log lines and metric labels; a name of megabytes into
/// every one of them.
fn unfit_name(name: &str) -> Option<String> {
    let bidi = |c: char| matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if let Some(c) = name.chars().find(|&c| c.is_control() || bidi(c)) {
        let kind = if c.is_control() {
            "a control"
        } else {
            "a bidirectional formatting"
        };
        return Some(format!("holds {kind} character (U+{:04X})", u32::from(c)));
    }
    let chars = name.chars().count();
    (chars > MAX_NAME_CHARS)
        .then(|| format!("is {chars} characters long; at most {MAX_NAME_CHARS}"))
}

impl Compiler<'_, '_> {
    pub(super) fn name(&mut self, authored: &AuthoredFlow) -> String {
        let unfit = authored.name.as_ref().and_then(|n| unfit_name(n.get_ref()));
        match &authored.name {
            Some(n) if let Some(why) = unfit => {
                self.error(
                    n.span(),
                    format!("the flow's `name` {why}"),
                    "give the flow a short name of printable characters, like `procore-license-sync`: it names the flow's state, lease and approvals, and shows in the console, logs and metrics",
                );
                String::new()
            }
            Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
            Some(n) => {
                self.error(
                    n.span(),
                    "the flow's `name` is empty",
                    "give the flow a short name, like `procore-license-sync`",
                );
                String::new()
            }
            // Written but not readable: reported where it is written.
            None if authored.name_written => String::new(),
            None => {
                self.error(
                    0..0,
                    "the flow has no `name`",
                    "add `name = \"my-flow\"` at the top of the file",
                );
                String::new()
            }
        }
    }

    pub(super) fn schedule(&mut self, s: &Spanned<AuthoredSchedule>) -> Option<Schedule> {
        let s = s.get_ref();
        let timezone = s.timezone.as_ref();
        let e = match Schedule::parse(s.cron.get_ref(), timezone.map(|t| t.get_ref().as_str())) {
            // A schedule that never comes (30 February, a year gone by)
            // would have `serve` wait for ever without a word.
            Ok(schedule) if schedule.next_after(chrono::Utc::now()).is_none() => {
                self.error(
                    s.cron.span(),
                    format!("the cron expression `{}` never fires", s.cron.get_ref()),
                    "check the day of the month against the month (30 February never comes) and any year field",
                );
                return None;
            }
            Ok(schedule) => return Some(schedule),
            Err(e) => e,
        };
        let (span, hint) = match &e {
            ScheduleError::Timezone(_) => (timezone.map_or(s.cron.span(), |t| t.span()), ZONE_HINT),
            ScheduleError::NumberedWeekday(_) => (
                s.cron.span(),
                "write the days as names, like `Mon-Fri` or `Sat,Sun`",
            ),
            _ => (
                s.cron.span(),
                "fields are: second minute hour day-of-month month day-of-week, e.g. `0 0 5-17 * * Mon-Fri`",
            ),
        };
        self.error(span, e.to_string(), hint);
        // A bad time zone beside a bad cron is a problem of its own: told
        // with it, not after the cron is mended.
        if !matches!(e, ScheduleError::Timezone(_))
            && let Some(t) = timezone
            && let Err(bad) = zone(Some(t.get_ref()))
        {
            self.error(t.span(), bad.to_string(), ZONE_HINT);
        }
        None
    }

    pub(super) fn params(
        &mut self,
        authored: &[(Spanned<String>, Spanned<Node>)],
    ) -> BTreeMap<String, Value> {
        for (name, _) in authored {
            // `${params.a.b}` reads field `b` of param `a`: a param named
            // `a.b` (a quoted TOML key) could never be referred to.
            self.valid_name(
                name,
                "param name",
                "use letters, digits, `-` and `_`, like `group_prefixes`: `${params.NAME}` refers to it, and a `.` there reads a field of a param",
            );
        }
        let mut params: BTreeMap<String, Value> = authored
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), literal_json(v.get_ref())))
            .collect();
        for (key, written) in self.ctx.param_overrides {
            // What messages show of the value: a huge one was printed whole.
            let raw = &shown_value(written);
            if !params.contains_key(key) {
                let known: Vec<&str> = params.keys().map(String::as_str).collect();
                let key = shown_value(key);
                self.error(
                    0..0,
                    format!("--param {key}: the flow has no param `{key}`"),
                    if known.is_empty() {
                        "this flow takes no params".to_string()
                    } else {
                        format!("its params are: {}", known.join(", "))
                    },
                );
                continue;
            }
            // Said at the param's declaration, which the override replaces.
            let declared = authored
                .iter()
                .find(|(name, _)| name.get_ref() == key)
                .map_or(0..0, |(name, _)| name.span());
            // A JSON value (`["a","b"]`, `3`, `true`) keeps its type; anything else is a string.
            let parsed = serde_json::from_str(written);
            // …but a list or table param given a broken list or table is a
            // typo, not a string that starts with `[`.
            if let Err(e) = &parsed
                && params[key].is_array() | params[key].is_object()
                && written.trim_start().starts_with(['[', '{'])
            {
                let example = if params[key].is_array() {
                    r#"["a", "b"]"#
                } else {
                    r#"{"a": 1}"#
                };
                self.error(
                    declared,
                    format!("--param {key}: `{raw}` is not valid JSON ({e})"),
                    format!("write the whole value as JSON, e.g. --param '{key}={example}'"),
                );
                continue;
            }
            // Bare text for a list param is one item written without the
            // list around it: said here, not as a step's input of the
            // wrong type, far from the `--param` that made it.
            if parsed.is_err() && params[key].is_array() | params[key].is_object() {
                let (kind, example) = if params[key].is_array() {
                    ("a list", serde_json::json!([raw.as_ref()]).to_string())
                } else {
                    ("a table", r#"{"a": 1}"#.to_string())
                };
                self.error(
                    declared,
                    format!("--param {key}: the flow's `{key}` is {kind}, and `{raw}` is text"),
                    format!("write the value as JSON, e.g. --param '{key}={example}'"),
                );
                continue;
            }
            let value = parsed.unwrap_or_else(|_| Value::String(written.clone()));
            if oversized_whole_number(written, &value) {
                self.error(
                    declared,
                    format!(
                        "--param {key}: {}",
                        crate::flow::authored::too_large_for_a_whole_number(raw)
                    ),
                    format!(
                        "give a smaller number, or quote it (`--param '{key}=\"{}\"'`) if it is an id",
                        if raw.len() == written.len() { raw.as_ref() } else { "…" }
                    ),
                );
                continue;
            }
            params.insert(key.clone(), value);
        }
        params
    }
}

/// Whether `raw`, written as a whole number, was read as a float because
/// it does not fit 64 bits: it would be used as 1e20, not as written.
fn oversized_whole_number(raw: &str, value: &Value) -> bool {
    let digits = raw.trim().strip_prefix('-').unwrap_or(raw.trim());
    // Beyond f64 too, JSON refuses it and it would be taken as text.
    let fits = value.is_i64() || value.is_u64();
    !fits && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A `--param` value as messages show it: whole when short, else its
/// first 60 characters and how long it was.
fn shown_value(written: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 60;
    let chars = written.chars().count();
    if chars <= SHOWN + 20 {
        return std::borrow::Cow::Borrowed(written);
    }
    let start: String = written.chars().take(SHOWN).collect();
    std::borrow::Cow::Owned(format!("{start}… ({chars} characters)"))
}
