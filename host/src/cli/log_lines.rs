//! Where `sluice serve`'s `tracing` events become lines on stderr: text for
//! a person (`time LEVEL message`), or one JSON object per line for a log
//! shipper, with stable field names: `time`, `level`, `event`, `flow`,
//! `run_id`, `step`, `error`, `message`, and the event's other fields
//! (`file`, `at`, `next_run`, `status`…) as they were recorded. A field
//! an event does not have is left out, never written as null.
//!
//! A text entry's first line is its message with every line break and
//! control character escaped: the message quotes step errors, component
//! logs and flow names, and a raw newline in one would forge a log line.
//! An event's `detail` (a flow file's diagnostics) follows on lines of
//! its own, each indented, so that only an entry's first line starts at
//! the margin.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// How `sluice serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `time LEVEL message`, for a person at a terminal
    #[default]
    Text,
    /// One JSON object per line, for a log shipper
    Json,
}

/// Writes each event as one line (a text entry's detail adds indented
/// lines) to its writer.
pub struct LineLayer {
    format: LogFormat,
    out: Mutex<Box<dyn Write + Send>>,
}

impl LineLayer {
    pub fn new(format: LogFormat, out: Box<dyn Write + Send>) -> Self {
        Self {
            format,
            out: Mutex::new(out),
        }
    }
}

/// Set once the line layer is the process's subscriber.
static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the line layer on stderr the process's `tracing` subscriber.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let layer = LineLayer::new(format, Box::new(std::io::stderr()));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| anyhow::anyhow!("cannot start the log: {e}"))?;
    STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Whether `sluice serve`'s log is started: what the process says goes
/// there, in its format, rather than to stderr as plain lines.
pub fn started() -> bool {
    STARTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Only Sluice's own events, at INFO and above: the crates underneath
/// (wasmtime, Cranelift, hyper) log through `tracing` too, down to TRACE,
/// and are not the operator's business.
fn wanted(metadata: &Metadata<'_>) -> bool {
    metadata.target().starts_with("sluice") && *metadata.level() <= Level::INFO
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if wanted(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        wanted(metadata)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = event.metadata().level().as_str();
        let line = match self.format {
            LogFormat::Text => text_line(&time, level, &fields.message, fields.detail.as_deref()),
            LogFormat::Json => json_line(time, level, fields),
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
    }
}

fn text_line(time: &str, level: &str, message: &str, detail: Option<&str>) -> String {
    let mut text = format!("{time} {level:<5} {}", super::terminal::line(message));
    for line in detail
        .unwrap_or_default()
        .trim_end_matches('\n')
        .split_terminator('\n')
    {
        text.push_str("\n    ");
        text.push_str(&super::terminal::line(line));
    }
    text
}

fn json_line(time: String, level: &str, fields: Fields) -> String {
    let mut object = Map::new();
    object.insert("time".into(), Value::String(time));
    object.insert("level".into(), Value::String(level.to_string()));
    object.extend(fields.named);
    // A JSON line cannot be forged: the detail stays in the message.
    let message = match fields.detail {
        Some(detail) => format!("{}\n{detail}", fields.message),
        None => fields.message,
    };
    object.insert("message".into(), Value::String(message));
    let line = Value::Object(object).to_string();
    super::terminal::json(&line).into_owned()
}

/// An event's fields: its message apart, the rest by name in the order
/// they were recorded.
#[derive(Default)]
struct Fields {
    message: String,
    detail: Option<String>,
    named: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.named.insert(field.name().to_string(), value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else if field.name() == "detail" {
            self.detail = Some(value.to_string());
        } else {
            self.put(field, Value::String(value.to_string()));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // A message given as format arguments arrives here; its Debug is
        // its text.
        self.record_str(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `emit` writes in `format`, line by line.
    fn written(format: LogFormat, emit: impl FnOnce()) -> Vec<String> {
        let buffer = Buffer::default();
        let layer = LineLayer::new(format, Box::new(buffer.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn json_lines_carry_time_level_and_the_fields_recorded_and_no_others() {
        let lines = written(LogFormat::Json, || {
            tracing::warn!(
                event = "x",
                flow = "sync",
                run_id = None::<&str>,
                n = 3u64,
                "a \u{1b}[2K b"
            );
        });
        assert_eq!(lines.len(), 1);
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["time", "level", "event", "flow", "n", "message"]);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["flow"], "sync");
        assert_eq!(line["n"], 3);
        // The terminal escape survives as text, not as a raw control.
        assert_eq!(line["message"], "a \u{1b}[2K b");
        assert!(!lines[0].contains('\u{1b}'), "{}", lines[0]);
        let time = line["time"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    }

    #[test]
    fn other_crates_events_and_debug_are_left_out() {
        let lines = written(LogFormat::Json, || {
            tracing::info!(target: "cranelift_codegen", "compiling");
            tracing::debug!(event = "x", "detail");
            tracing::info!(event = "kept", "kept");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("\"event\":\"kept\""), "{lines:?}");
    }

    #[test]
    fn text_lines_are_time_level_and_message_made_inert() {
        let lines = written(LogFormat::Text, || {
            tracing::error!(event = "x", flow = "sync", "first\r\nsecond \u{1b}[2K");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert_eq!(rest, "ERROR first\\r\\nsecond \\u{1b}[2K");
    }

    /// A step's error quoting a log line of its own made a standalone,
    /// forged line in the text log.
    #[test]
    fn a_failed_step_cannot_forge_a_text_log_line() {
        let forged = "2026-12-04T15:00:00.000Z INFO  payroll run r9 finished";
        let log = super::super::serve_log::RunLog::new("sync", "r1");
        let entry = log
            .entry(&crate::run::RunEvent::StepFinished {
                step: "pay".into(),
                component: "payroll".into(),
                status: crate::run::Status::Failed,
                output: None,
                error: Some(format!("bad input\n{forged}\rx")),
                duration: std::time::Duration::from_secs(1),
                connections: Default::default(),
                attempts: None,
                memory: None,
            })
            .unwrap();
        let lines = written(LogFormat::Text, || super::super::serve_log::log(entry));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].ends_with(&format!(": bad input\\n{forged}\\rx")),
            "{lines:?}"
        );
    }

    /// A flow file's diagnostics keep their lines, each indented under
    /// the entry, with what they quote escaped.
    #[test]
    fn detail_lines_are_indented_under_their_entry() {
        let lines = written(LogFormat::Text, || {
            tracing::warn!(
                detail = "error: bad\r\n  --> f.toml:1:1\n",
                "f.toml is skipped:"
            );
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].ends_with("WARN  f.toml is skipped:"), "{lines:?}");
        assert_eq!(lines[1], "    error: bad\\r");
        assert_eq!(lines[2], "      --> f.toml:1:1");
        let lines = written(LogFormat::Json, || {
            tracing::warn!(detail = "error: bad", "f.toml is skipped:");
        });
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["message"], "f.toml is skipped:\nerror: bad");
        assert!(line.get("detail").is_none(), "{line}");
    }

    /// Firings a stall passed over are one line: how many, from when to
    /// when, in the text and as `count`, `from` and `to` in JSON.
    #[test]
    fn missed_firings_are_counted_in_both_formats() {
        use chrono::TimeZone;

        use crate::scheduler::ServeEvent;
        let utc = |m, s| {
            chrono_tz::UTC
                .with_ymd_and_hms(2026, 12, 4, 18, m, s)
                .unwrap()
        };
        let missed = ServeEvent::Missed {
            flow: "xss".into(),
            first: utc(13, 45),
            last: utc(14, 45),
            count: 5,
            more: false,
        };
        let emit = || super::super::serve_log::emit(&missed);
        let text = written(LogFormat::Text, emit);
        assert!(
            text[0].ends_with(
                "WARN  xss: 5 firings from Fri 2026-12-04 18:13:45 UTC to Fri 2026-12-04 18:14:45 UTC were missed (the host was stalled or the machine asleep); none is run late"
            ),
            "{text:?}"
        );
        let json = written(LogFormat::Json, emit);
        let line: Value = serde_json::from_str(&json[0]).unwrap();
        assert_eq!(line["event"], "missed");
        assert_eq!(line["count"], 5);
        assert_eq!(line["from"], "2026-12-04T18:13:45+00:00");
        assert_eq!(line["to"], "2026-12-04T18:14:45+00:00");
        assert_eq!(line["at"], line["from"], "`at` is still the first");
        assert!(line.get("count_incomplete").is_none(), "{line}");
        // One missed firing reads as before; a count the timer gave up on
        // says so.
        let one = ServeEvent::Missed {
            flow: "xss".into(),
            first: utc(13, 45),
            last: utc(13, 45),
            count: 1,
            more: false,
        };
        let text = written(LogFormat::Text, || super::super::serve_log::emit(&one));
        assert!(
            text[0].ends_with("WARN  xss: the firing at Fri 2026-12-04 18:13:45 UTC was missed (the host was stalled or the machine asleep); it is not run late"),
            "{text:?}"
        );
        let lots = ServeEvent::Missed {
            flow: "xss".into(),
            first: utc(13, 45),
            last: utc(14, 45),
            count: 1_000_000,
            more: true,
        };
        let json = written(LogFormat::Json, || super::super::serve_log::emit(&lots));
        let line: Value = serde_json::from_str(&json[0]).unwrap();
        assert_eq!(line["count_incomplete"], true);
        assert!(
            line["message"]
                .as_str()
                .unwrap()
                .contains("more than 1000000 firings from"),
            "{line}"
        );
    }
}
