//! Stage three: a bound flow, ready to run.
//!
//! Everything here has been checked: references point at params that exist
//! and steps that run earlier, connections are declared, components are
//! found and their inputs fit their schemas, durations and cron expressions
//! parse. Binding resolved connection settings, declared secrets and every
//! `${env.…}` against the environment once; the flow keeps no copy of it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::catalog::Description;
use super::schedule::Schedule;
use super::schema::InputSchema;
use super::source::SourceFile;
use super::template::Template;

pub use super::authored::OnError;

/// A flow that passed validation.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub description: Option<String>,
    pub source: SourceFile,
    pub schedule: Option<Schedule>,
    pub params: BTreeMap<String, Value>,
    pub connections: BTreeMap<String, Arc<ConnectionSpec>>,
    pub steps: Vec<Step>,
    /// The values of the flow's declared secrets (and of the headers built
    /// from them), for redaction.
    pub secrets: Vec<Secret>,
}

/// Where a step's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentRef {
    Builtin(String),
    File(ComponentFile),
}

impl ComponentRef {
    /// A component file, not read yet.
    pub fn file(path: impl Into<PathBuf>) -> ComponentRef {
        ComponentRef::File(ComponentFile::new(path.into()))
    }

    /// A component pulled from an OCI registry into `path` (the cache),
    /// shown by its `reference` (`oci://…`) as the flow names it.
    pub fn pulled(path: impl Into<PathBuf>, reference: &str) -> ComponentRef {
        let mut file = ComponentFile::new(path.into());
        file.reference = Some(reference.to_owned());
        ComponentRef::File(file)
    }
}

impl fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentRef::Builtin(name) => write!(f, "{name}"),
            ComponentRef::File(file) => match &file.reference {
                Some(reference) => write!(f, "{reference}"),
                None => write!(f, "{}", file.path.display()),
            },
        }
    }
}

/// A component file, and its content as first read: the flow checked
/// against a component runs that component, not whatever the file holds
/// at a later firing. A rebuilt `.wasm` is picked up when the flow is
/// loaded again (`sluice serve`'s SIGHUP), and checked then; a half-copied
/// or refused one never runs. Copies of a step share what was read.
#[derive(Clone)]
pub struct ComponentFile {
    pub path: PathBuf,
    /// The `oci://` reference a pulled component is named by: its cache
    /// path means nothing to the flow's author.
    pub reference: Option<String>,
    content: Arc<std::sync::OnceLock<Arc<[u8]>>>,
}

impl ComponentFile {
    pub fn new(path: PathBuf) -> ComponentFile {
        ComponentFile {
            path,
            reference: None,
            content: Arc::default(),
        }
    }

    /// The file's content: read the first time it is asked for (when the
    /// flow is checked), the same bytes every time after.
    pub fn content<E>(
        &self,
        read: impl FnOnce(&std::path::Path) -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        if let Some(content) = self.content.get() {
            return Ok(content.clone());
        }
        let read: Arc<[u8]> = read(&self.path)?.into();
        // Two first readers at once: the first to finish is kept.
        Ok(self.content.get_or_init(|| read).clone())
    }
}

impl PartialEq for ComponentFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for ComponentFile {}

impl fmt::Debug for ComponentFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentFile")
            .field("path", &self.path)
            .field("read", &self.content.get().map(|c| c.len()))
            .finish()
    }
}

/// A connection a step may use, under the role its component knows it by
/// (for a component without `describe`, the role is the connection's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionGrant {
    pub role: String,
    pub connection: String,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub uses: ComponentRef,
    pub connections: Vec<ConnectionGrant>,
    /// What the component says about itself, when it exports `describe`.
    pub description: Option<Arc<Description>>,
    /// The component's input schema, checked against the resolved `with`
    /// before the component is called.
    pub input_schema: Option<Arc<InputSchema>>,
    /// Retries of a step whose component failed with an `unavailable` or
    /// `rate-limited` error; `None` runs it once.
    pub retry: Option<RetryPolicy>,
    pub with: Option<ValueTemplate>,
    pub for_each: Option<Template>,
    /// Names each item of `for_each` (a template over `${item}`): what
    /// approvals, the ledger and `--only` know it by.
    pub for_each_key: Option<Template>,
    /// When the step's items wait for a person's approval.
    pub approval: Option<Approval>,
    pub concurrency: usize,
    /// All must be truthy for the step to run.
    pub when: Vec<Condition>,
    pub timeout: Duration,
    pub on_error: OnError,
    /// File name in the run's output folder → path into the step's output.
    pub artifacts: Vec<(String, Vec<String>)>,
    /// The most the step's output may be, as JSON text; for a `for_each`
    /// step, its items' outputs together.
    pub max_output: usize,
    /// The most one `for_each` item's output may be, as JSON text.
    pub max_item_output: usize,
    /// A path into the output (a step without `for_each`) to a list of
    /// `{key, …}` entries, each recorded as an item of the step with that
    /// key: how a step that handles many people at once (the license
    /// sync's compare adopting them) tells the ledger about each.
    pub ledger: Option<Vec<String>>,
    /// Whether a later step or the step's own artifacts read its items
    /// (see [`super::reads`]); when not, a `for_each` step's output keeps
    /// no item's output: each is in its item's record only.
    pub items_read: bool,
}

/// One `when` condition: its template, and its text as the flow file
/// wrote it, which a skipped step's reason quotes (the template itself has
/// the environment's values in it by then).
#[derive(Debug, Clone)]
pub struct Condition {
    pub template: Template,
    pub text: String,
}

impl Step {
    /// Checks a resolved input against the component's input schema (when
    /// it has one), before the component is called.
    pub fn check_input(&self, input: &Value) -> Result<(), super::schema::InputMismatch> {
        match &self.input_schema {
            Some(schema) => schema.check(input),
            None => Ok(()),
        }
    }

    /// The same check of an input object given as its entries, each value
    /// where it lives (see [`super::schema::InputSchema::check_entries`]).
    pub fn check_input_entries(
        &self,
        entries: &[(&str, super::resolve::Found<'_>)],
    ) -> Result<(), super::schema::InputMismatch> {
        match &self.input_schema {
            Some(schema) => schema.check_entries(entries),
            None => Ok(()),
        }
    }
}

/// When a `for_each` step's items need a person's approval before they
/// run (`approval = "always"` or `approval = { above = N, when = "…" }`).
/// An item whose key was approved always runs; one whose key was rejected
/// never does; the others run, or wait in the step's approval plan, as
/// this says.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Every item without an approval waits.
    pub always: bool,
    /// More items without an approval than this: all of them wait (as a
    /// mass-change threshold holds the whole batch). A number, or a
    /// reference (`${params.max_unapproved_creates}`) resolved at run time.
    pub above: Option<Threshold>,
    /// A guard an earlier step computes: when it is truthy, every item
    /// without an approval waits in this run, whatever `above` says; a
    /// text value is the reason shown.
    pub when: Option<Template>,
}

/// `above = N`: a whole number, written or referred to.
#[derive(Debug, Clone, PartialEq)]
pub enum Threshold {
    Count(u64),
    Reference(Template),
}

/// A JSON value as a whole number from 0 up: an integer, or text of
/// digits (a param written as text, which `validate` has read already).
pub fn whole_number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON-shaped value whose strings may hold references.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    Text(Template),
    Literal(Value),
    Array(Vec<ValueTemplate>),
    Object(Vec<(String, ValueTemplate)>),
}

/// A text that must never be shown: printing it prints `[redacted]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    OAuth2ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
    Bearer(Secret),
}

/// Requests per second the connection may send, at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts from 500 ms doubling to 30 s ride out a service restart
    /// or a short outage without holding a run for minutes.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// A connection as declared in the flow, resolved against the environment.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    pub name: String,
    pub base_url: Url,
    pub headers: Vec<(String, String)>,
    pub auth: Auth,
    pub rate_limit: Option<RateLimit>,
    pub retry: RetryPolicy,
    pub max_response_bytes: u64,
    pub request_timeout: Duration,
}

impl ConnectionSpec {
    /// A connection without credentials, with the default limits.
    pub fn new(name: &str, base_url: Url) -> Self {
        Self {
            name: name.to_string(),
            base_url,
            headers: Vec::new(),
            auth: Auth::None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// 32 MiB: a Graph page of 999 users is ~1 MiB; anything far larger is a mistake.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;
/// Graph and Procore answer in seconds; a minute means something is wrong.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// 256 MiB of JSON: several times the license sync's largest output at
/// 100k users (every Procore user), and a bound on what one step can make
/// the host hold (its parsed form takes a few times its text).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 256 * 1024 * 1024;
/// 16 MiB: an item is one thing done (a user created); ten items of
/// 100 MB each are a runaway, not a result.
pub const DEFAULT_MAX_ITEM_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// The largest output cap a flow may set: 1 GiB.
pub const MAX_OUTPUT_CAP: usize = 1024 * 1024 * 1024;
/// Five minutes: the slowest built-in step (reading 100k members) takes well under that.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);
