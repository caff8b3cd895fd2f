//! Stage one: the flow file as written.
//!
//! The TOML is parsed with spans kept everywhere, so every later error can
//! point at a line and column. Structured sections (steps, connections,
//! schedule) go through serde with `deny_unknown_fields`; free-form values
//! (`params`, `with`, `when`) become [`Node`] trees that keep the span of
//! every string, so a bad reference deep inside `with` is located exactly.
//! Each section is read on its own, so one mistake does not hide the next;
//! a step with a wrong key is kept with the rest of what it says, so that
//! its other keys are still checked and later steps still know its id (a
//! step with no readable id too: only nothing can refer to it).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::source::{Diagnostic, SourceFile};

/// A TOML value with the span of every part of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Spanned<Node>>),
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::String(_) => "a string",
            Node::Integer(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Bool(_) => "a boolean",
            Node::Datetime(_) => "a datetime",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }
}

/// A TOML type's name (`integer`) with its article (`an integer`).
fn a(type_name: &str) -> String {
    match type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        true => format!("an {type_name}"),
        false => format!("a {type_name}"),
    }
}

/// The whole flow file as written, before any cross-checks.
#[derive(Debug, Default)]
pub struct AuthoredFlow {
    pub name: Option<Spanned<String>>,
    /// Whether a `name` was written (one that could not be read is
    /// reported as such, not as missing).
    pub name_written: bool,
    pub description: Option<String>,
    pub schedule: Option<Spanned<AuthoredSchedule>>,
    pub params: Vec<(Spanned<String>, Spanned<Node>)>,
    pub secrets: Vec<(Spanned<String>, Spanned<AuthoredSecret>)>,
    pub connections: Vec<(Spanned<String>, Spanned<AuthoredConnection>)>,
    /// Connections declared but not readable (their problems are
    /// reported): a step granted one is not also told it is undeclared.
    pub unreadable_connections: Vec<String>,
    pub steps: Vec<Spanned<AuthoredStep>>,
    /// Span of the whole document, for problems that have no better place.
    pub document: Range<usize>,
    /// How many `[[step]]` sections were written, parsed or not.
    pub steps_written: usize,
    /// Whole numbers too large to hold, each reported where it is written
    /// ([`oversized_integers`]); what serde says at the same place would
    /// only repeat it.
    pub oversized: Vec<Diagnostic>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like `{ cron = \"0 0 * * * *\", timezone = \"UTC\" }`"
)]
pub struct AuthoredSchedule {
    pub cron: Spanned<String>,
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
}

/// Where a declared secret's value comes from.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like `{ env = \"VARIABLE_NAME\" }`"
)]
pub struct AuthoredSecret {
    /// The environment variable that holds it.
    pub env: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a connection table with `base_url` (and optionally `headers`, `auth`, `rate_limit`, `retry`, `max_response_bytes`, `request_timeout`)"
)]
pub struct AuthoredConnection {
    pub base_url: Spanned<String>,
    #[serde(default)]
    /// Name → value; the name keeps its span, for errors about it.
    pub headers: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub auth: Option<Spanned<AuthoredAuth>>,
    #[serde(default)]
    pub rate_limit: Option<Spanned<AuthoredRateLimit>>,
    #[serde(default)]
    pub retry: Option<Spanned<AuthoredRetry>>,
    #[serde(default)]
    pub max_response_bytes: Option<Spanned<u64>>,
    #[serde(default, deserialize_with = "duration_text")]
    pub request_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with `oauth2_client_credentials` or `bearer`"
)]
pub struct AuthoredAuth {
    #[serde(default)]
    pub oauth2_client_credentials: Option<Spanned<AuthoredOAuth2>>,
    #[serde(default)]
    pub bearer: Option<Spanned<AuthoredBearer>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with `token_url`, `client_id`, `client_secret` (and optionally `scope`)"
)]
pub struct AuthoredOAuth2 {
    pub token_url: Spanned<String>,
    pub client_id: Spanned<String>,
    pub client_secret: Spanned<String>,
    #[serde(default)]
    pub scope: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like `{ token = \"${secrets.name}\" }`"
)]
pub struct AuthoredBearer {
    pub token: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like `{ per_second = 10 }` (`per_second`, `per_minute` or `per_hour`)"
)]
pub struct AuthoredRateLimit {
    #[serde(default)]
    pub per_second: Option<Spanned<f64>>,
    #[serde(default)]
    pub per_minute: Option<Spanned<f64>>,
    #[serde(default)]
    pub per_hour: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like `{ max_attempts = 3, base_delay = \"1s\", max_delay = \"30s\" }`"
)]
pub struct AuthoredRetry {
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    #[serde(default, deserialize_with = "duration_text")]
    pub base_delay: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "duration_text")]
    pub max_delay: Option<Spanned<String>>,
}

/// What a step's failure does to the run: `"fail"` or `"continue"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Fail,
    Continue,
}

/// By hand, not derived: serde's derived enum reaches `toml`'s enum
/// reader, whose error for `on_error = 1` is "wanted string or table".
impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match string_expecting(deserializer, r#""fail" or "continue""#)?.as_str() {
            "fail" => Ok(OnError::Fail),
            "continue" => Ok(OnError::Continue),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["fail", "continue"],
            )),
        }
    }
}

/// Reads a string; anything else is an error that says `expecting`
/// rather than serde's "expected a string".
fn string_expecting<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    expecting: &'static str,
) -> Result<String, D::Error> {
    struct Expecting(&'static str);
    impl serde::de::Visitor<'_> for Expecting {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_str(Expecting(expecting))
}

/// A duration as written (`"30s"`, `"5m"`), read as a string by a reader
/// whose error says so: `timeout = 5` gave "expected a string".
fn duration_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Spanned<String>>, D::Error> {
    struct Text(String);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            string_expecting(
                deserializer,
                r#"a duration in quotes, such as "30s", "5m" or "2h""#,
            )
            .map(Text)
        }
    }
    let text = Option::<Spanned<Text>>::deserialize(deserializer)?;
    Ok(text.map(|t| {
        let span = t.span();
        Spanned::new(span, t.into_inner().0)
    }))
}

/// The serde-read part of a step; `with` and `when` are [`Node`]s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a step table")]
pub struct StepFields {
    /// Optional here so that a step whose other keys are wrong is still
    /// read ([`AuthoredStep::id`]).
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// `None` when missing or unreadable (reported).
    #[serde(default)]
    pub uses: Option<Spanned<String>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub retry: Option<Spanned<AuthoredRetry>>,
    #[serde(default)]
    pub for_each: Option<Spanned<String>>,
    /// A template over `${item}` naming each item (for approvals, the
    /// ledger and `--only`).
    #[serde(default)]
    pub for_each_key: Option<Spanned<String>>,
    #[serde(default)]
    pub concurrency: Option<Spanned<i64>>,
    #[serde(default, deserialize_with = "duration_text")]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub on_error: Option<Spanned<OnError>>,
    #[serde(default)]
    pub max_output_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_item_output_bytes: Option<Spanned<i64>>,
    /// A path into the step's output to a list of `{key, …}` entries the
    /// ledger records as the step's items (a step without `for_each`).
    #[serde(default)]
    pub ledger: Option<Spanned<String>>,
    /// Read by hand (a table of file name → output path), not by serde.
    #[serde(skip)]
    pub artifacts: Vec<(Spanned<String>, Spanned<String>)>,
    /// Read by hand: a list of connections or a table of role → connection.
    #[serde(skip)]
    pub connections: Vec<AuthoredGrant>,
}

/// One connection a step is granted: `"graph"` in a list (the role is the
/// connection's name, or the component's only role) or `graph = "graph_prod"`
/// in a table.
#[derive(Debug, Clone)]
pub struct AuthoredGrant {
    pub role: Option<Spanned<String>>,
    pub connection: Spanned<String>,
}

#[derive(Debug)]
pub struct AuthoredStep {
    /// `None` when missing or unreadable (reported): the step is still
    /// checked, but nothing can refer to it and it never runs.
    pub id: Option<Spanned<String>>,
    pub fields: StepFields,
    pub with: Option<Spanned<Node>>,
    pub when: Option<Spanned<Node>>,
    /// `"always"` or a table (`{ above = N, when = "…" }`).
    pub approval: Option<Spanned<Node>>,
    /// Keys whose value could not be read, and keys an unknown key may
    /// have meant (`for_eachh` → `for_each`); their problems are reported.
    /// Such a key is neither there nor absent: nothing that depends on it
    /// is checked, so that one mistake is not reported again as others.
    pub unreadable: Vec<String>,
}

impl AuthoredStep {
    /// Whether `key` was written but could not be read, or may have been
    /// meant by an unknown key.
    pub fn unreadable(&self, key: &str) -> bool {
        self.unreadable.iter().any(|k| k == key)
    }

    /// Whether the step has `for_each`, as far as is known: `None` when
    /// `for_each` could not be read.
    pub fn has_for_each(&self) -> Option<bool> {
        match self.fields.for_each {
            Some(_) => Some(true),
            None if self.unreadable("for_each") => None,
            None => Some(false),
        }
    }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "description",
    "schedule",
    "params",
    "secrets",
    "connections",
    "step",
];

/// Parses the file, collecting every problem rather than stopping at the first.
/// `None` when the TOML itself does not parse: nothing further can be checked.
pub fn parse(source: &SourceFile, diags: &mut Vec<Diagnostic>) -> Option<AuthoredFlow> {
    let (root, errors) = DeTable::parse_recoverable(&source.text);
    let document = 0..source.text.len();
    if !errors.is_empty() {
        for e in errors {
            diags.push(
                Diagnostic::new(
                    e.span().unwrap_or(0..0),
                    format!("TOML syntax: {}", first_line(e.message())),
                )
                .hint("fix the TOML syntax; strings need quotes, tables need `[name]`"),
            );
        }
        return None;
    }
    let mut flow = AuthoredFlow {
        document,
        ..Default::default()
    };
    for (_, value) in root.get_ref().iter() {
        oversized_integers(value, &source.text, &mut flow.oversized);
    }
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "name" => {
                flow.name_written = true;
                flow.name = read::<String>(value, diags);
            }
            "description" => {
                flow.description = read::<String>(value, diags).map(Spanned::into_inner)
            }
            "schedule" => flow.schedule = read::<AuthoredSchedule>(value, diags),
            "params" => {
                if let Some(entries) = table_entries(value, "params", diags) {
                    flow.params = entries.into_iter().map(|(k, v)| (k, node(v))).collect()
                }
            }
            "secrets" => {
                for (name, secret) in table_entries(value, "secrets", diags).unwrap_or_default() {
                    if let Some(secret) = read::<AuthoredSecret>(secret, diags) {
                        flow.secrets.push((name, secret));
                    }
                }
            }
            "connections" => {
                for (name, conn) in table_entries(value, "connections", diags).unwrap_or_default() {
                    match read::<AuthoredConnection>(conn, diags) {
                        Some(conn) => flow.connections.push((name, conn)),
                        None => flow.unreadable_connections.push(name.into_inner()),
                    }
                }
            }
            "step" => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Array(items) => {
                        flow.steps_written = items.len();
                        for item in items {
                            if let Some(step) = read_step(item, diags) {
                                flow.steps.push(step);
                            }
                        }
                    }
                    _ => diags.push(
                        Diagnostic::new(span, "`step` must be an array of tables")
                            .hint("write each step as a `[[step]]` section"),
                    ),
                }
            }
            other => diags.push(
                Diagnostic::new(
                    key_span,
                    format!("unknown key `{other}` at the top of the flow"),
                )
                .hint(format!(
                    "the top level takes: {}",
                    TOP_LEVEL_KEYS.join(", ")
                )),
            ),
        }
    }
    Some(flow)
}

/// What is said of a whole number, written as `written`, beyond the 64
/// bits a flow's values hold (in the flow file or a `--param`).
pub(crate) fn too_large_for_a_whole_number(written: &str) -> String {
    format!(
        "`{written}` is too large for a whole number (at most {})",
        i64::MAX
    )
}

/// TOML allows whole numbers of any size, a flow's values hold 64 bits:
/// each one beyond that is found here, with its place and its text; so is
/// each float JSON cannot hold (`nan`, `inf`, `1e400`).
fn oversized_integers(value: &Spanned<DeValue<'_>>, text: &str, found: &mut Vec<Diagnostic>) {
    match value.get_ref() {
        DeValue::Integer(i) if whole_number(i).is_none() => {
            let span = value.span();
            let written = text.get(span.clone()).unwrap_or(i.as_str());
            found.push(
                Diagnostic::new(span, too_large_for_a_whole_number(written))
                    .hint("write a smaller number, or text in quotes if it is an id"),
            );
        }
        // JSON, which a flow's values become, has no NaN or infinity: it
        // was read on as null, silently.
        DeValue::Float(f) if !float(f).is_some_and(f64::is_finite) => {
            let span = value.span();
            let written = text.get(span.clone()).unwrap_or(f.as_str());
            found.push(
                Diagnostic::new(
                    span,
                    format!("`{written}` is not a number a flow can hold (its values are JSON, which has no NaN or infinity)"),
                )
                .hint("write a finite number, or text in quotes"),
            );
        }
        DeValue::Array(items) => {
            for item in items {
                oversized_integers(item, text, found);
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter() {
                oversized_integers(item, text, found);
            }
        }
        _ => {}
    }
}

/// A TOML float as a number (`nan` and the infinities included).
fn float(f: &toml::de::DeFloat<'_>) -> Option<f64> {
    let text = f.as_str().replace('_', "");
    match text.trim_start_matches('+') {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" | "-nan" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// A TOML integer as a 64-bit whole number, whatever its base.
fn whole_number(i: &toml::de::DeInteger<'_>) -> Option<i64> {
    let digits = i.as_str().replace('_', "");
    let digits = digits
        .trim_start_matches("0x")
        .trim_start_matches("0o")
        .trim_start_matches("0b");
    i64::from_str_radix(digits, i.radix()).ok()
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim()
}

/// Deserialises one section with serde, turning its errors into
/// diagnostics. serde stops at a table's first bad key; so that one
/// mistake does not hide the next, the key at fault is set aside and the
/// rest read again, until no key is at fault (a key set aside is not then
/// reported missing as well).
fn read<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Spanned<T>> {
    match read_partly(value, diags) {
        (Some(v), set_aside) if set_aside.is_empty() => Some(v),
        _ => None,
    }
}

/// As [`read`], but what could be read of a table is returned even when
/// keys were set aside, with the path of each key set aside (the
/// table's own key first).
fn read_partly<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) -> (Option<Spanned<T>>, Vec<Vec<String>>) {
    let span = value.span();
    let mut value = value;
    let mut set_aside: Vec<Vec<String>> = Vec::new();
    loop {
        let error = match Spanned::<T>::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => return (Some(v), set_aside),
            Err(e) => e,
        };
        let missing_set_aside = first_line(error.message())
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .is_some_and(|(key, _)| set_aside.iter().any(|k| k.last() == Some(&key.to_string())));
        if !missing_set_aside {
            diags.push(serde_diagnostic(&error, span.clone()));
        }
        match set_aside_key_at(&mut value, error.span()) {
            Some(path) => set_aside.push(path),
            None => return (None, set_aside),
        }
    }
}

/// Removes from `value` (a table) the innermost entry, in it or in a
/// table within it, whose key or value holds `at`, and gives its path
/// from `value`; `None` when there is no such entry.
fn set_aside_key_at(
    value: &mut Spanned<DeValue<'_>>,
    at: Option<Range<usize>>,
) -> Option<Vec<String>> {
    let at = at?;
    let holds = |span: Range<usize>| span.start <= at.start && at.end <= span.end;
    let DeValue::Table(table) = value.get_mut() else {
        return None;
    };
    let (key, inner) = table
        .iter_mut()
        .find(|(k, v)| holds(k.span()) || holds(v.span()))?;
    if !holds(key.span())
        && matches!(inner.get_ref(), DeValue::Table(_))
        && let Some(deeper) = set_aside_key_at(inner, Some(at.clone()))
    {
        let mut path = vec![key.get_ref().to_string()];
        path.extend(deeper);
        return Some(path);
    }
    let key = key.clone();
    table.remove(&key);
    Some(vec![key.into_inner().into_owned()])
}

fn serde_diagnostic(e: &toml::de::Error, fallback: Range<usize>) -> Diagnostic {
    let message = plain_type_names(&plain_float(first_line(e.message())));
    let span = e.span().unwrap_or(fallback);
    if let Some(d) = unknown_field(&message, span.clone()) {
        return d;
    }
    let hint = if message.starts_with("missing field") {
        "add the missing key"
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "change the value to the expected type"
    } else {
        "see the flow format in the README"
    };
    Diagnostic::new(span, message).hint(hint)
}

/// serde's "invalid type: floating point `1000…0.0`" (the float printed in
/// full: 300 digits for `1e300`) as words; the caret shows what was written.
fn plain_float(message: &str) -> String {
    const FLOAT: &str = "floating point `";
    match message.split_once(FLOAT) {
        Some((head, rest)) => match rest.split_once('`') {
            Some((_, tail)) => format!("{head}a number with a fraction or an exponent{tail}"),
            None => message.to_string(),
        },
        None => message.to_string(),
    }
}

/// serde's Rust type names ("expected u32") in words a flow's author knows.
fn plain_type_names(message: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        ("expected i64", "expected a whole number"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ];
    NAMES
        .iter()
        .find_map(|(rust, plain)| {
            message
                .strip_suffix(rust)
                .map(|head| format!("{head}{plain}"))
        })
        .unwrap_or_else(|| message.to_string())
}

/// Keys a step takes, including those read by hand rather than by serde.
const STEP_KEYS: &[&str] = &[
    "id",
    "uses",
    "description",
    "connections",
    "with",
    "for_each",
    "for_each_key",
    "approval",
    "retry",
    "concurrency",
    "when",
    "timeout",
    "on_error",
    "artifacts",
    "max_output_bytes",
    "max_item_output_bytes",
    "ledger",
];

/// serde's "unknown field `x`, expected one of …" as a suggestion.
fn unknown_field(message: &str, span: Range<usize>) -> Option<Diagnostic> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let mut expected: Vec<String> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    if expected.first().is_some_and(|k| k == "id") {
        expected = STEP_KEYS.iter().map(|k| k.to_string()).collect();
    }
    let hint = match closest(key, &expected) {
        Some(k) => format!(
            "did you mean `{k}`? Keys allowed here: {}",
            expected.join(", ")
        ),
        None => format!("keys allowed here: {}", expected.join(", ")),
    };
    Some(Diagnostic::new(span, format!("unknown key `{key}`")).hint(hint))
}

/// The one of `expected` that `key` is most likely a typo of.
fn closest<S: AsRef<str>>(key: &str, expected: &[S]) -> Option<String> {
    expected
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k.as_ref()), k.as_ref()))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

fn table_entries<'i>(
    value: Spanned<DeValue<'i>>,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<(Spanned<String>, Spanned<DeValue<'i>>)>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(table) => Some(
            table
                .into_iter()
                .map(|(k, v)| (Spanned::new(k.span(), k.into_inner().into_owned()), v))
                .collect(),
        ),
        other => {
            diags.push(
                Diagnostic::new(
                    span,
                    format!("`{what}` must be a table, not {}", a(other.type_str())),
                )
                .hint(format!("write `[{what}]` followed by `key = value` lines")),
            );
            None
        }
    }
}

fn read_step(
    item: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Spanned<AuthoredStep>> {
    let span = item.span();
    let DeValue::Table(mut table) = item.into_inner() else {
        diags.push(
            Diagnostic::new(span, "a step must be a table")
                .hint("write it as a `[[step]]` section"),
        );
        return None;
    };
    let with = take(&mut table, "with").map(node);
    let when = take(&mut table, "when").map(node);
    let approval = take(&mut table, "approval").map(node);
    let artifacts = take(&mut table, "artifacts");
    let connections = take(&mut table, "connections");
    // A step with a wrong key is kept, so that its other keys are checked
    // and later steps may still refer to it by its id.
    let (step, set_aside) =
        read_partly::<StepFields>(Spanned::new(span.clone(), DeValue::Table(table)), diags);
    let mut step = step?.into_inner();
    let set_aside: Vec<String> = set_aside
        .into_iter()
        .filter_map(|path| path.into_iter().next())
        .collect();
    for key in ["id", "uses"] {
        let missing = match key {
            "id" => step.id.is_none(),
            _ => step.uses.is_none(),
        };
        if missing && !set_aside.iter().any(|k| k == key) {
            diags.push(
                Diagnostic::new(span.clone(), format!("missing field `{key}`"))
                    .hint("add the missing key"),
            );
        }
    }
    // A step without a readable id is kept all the same, so that its other
    // problems are reported; nothing can refer to it.
    let id = step.id.clone();
    let mut unreadable = Vec::new();
    for key in set_aside {
        if !STEP_KEYS.contains(&key.as_str())
            && let Some(meant) = closest(&key, STEP_KEYS)
        {
            unreadable.push(meant);
        }
        unreadable.push(key);
    }
    if let Some(artifacts) = artifacts {
        for (name, value) in table_entries(artifacts, "artifacts", diags).unwrap_or_default() {
            if let Some(path) = read::<String>(value, diags) {
                step.artifacts.push((name, path));
            }
        }
    }
    if let Some(connections) = connections {
        let (grants, whole) = read_grants(connections, diags);
        step.connections = grants;
        if !whole {
            unreadable.push("connections".to_string());
        }
    }
    Some(Spanned::new(
        span,
        AuthoredStep {
            id,
            fields: step,
            with,
            when,
            approval,
            unreadable,
        },
    ))
}

/// `connections = ["graph"]` or `connections = { graph = "graph_prod" }`;
/// and whether every grant could be read.
fn read_grants(
    value: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<AuthoredGrant>, bool) {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => {
            let count = items.len();
            let grants: Vec<AuthoredGrant> = items
                .into_iter()
                .filter_map(|item| read::<String>(item, diags))
                .map(|connection| AuthoredGrant {
                    role: None,
                    connection,
                })
                .collect();
            let whole = grants.len() == count;
            (grants, whole)
        }
        DeValue::Table(table) => {
            let count = table.len();
            let grants: Vec<AuthoredGrant> = table
                .into_iter()
                .filter_map(|(role, value)| {
                    let role = Spanned::new(role.span(), role.into_inner().into_owned());
                    let connection = read::<String>(value, diags)?;
                    Some(AuthoredGrant {
                        role: Some(role),
                        connection,
                    })
                })
                .collect();
            let whole = grants.len() == count;
            (grants, whole)
        }
        other => {
            diags.push(
                Diagnostic::new(
                    span,
                    format!(
                        "`connections` must be a list or a table, not {}",
                        a(other.type_str())
                    ),
                )
                .hint("write `connections = [\"graph\"]`, or `connections = { graph = \"graph_prod\" }` to bind a role to a connection"),
            );
            (Vec::new(), false)
        }
    }
}

fn take<'i>(table: &mut DeTable<'i>, key: &str) -> Option<Spanned<DeValue<'i>>> {
    let found = table
        .keys()
        .find(|k| k.get_ref().as_ref() == key)
        .cloned()?;
    table.remove(&found)
}

/// Converts a parsed TOML value into a [`Node`], keeping spans.
pub fn node(value: Spanned<DeValue<'_>>) -> Spanned<Node> {
    let span = value.span();
    let node = match value.into_inner() {
        DeValue::String(s) => Node::String(s.into_owned()),
        // One too large to hold is reported by `parse`, and read on as the
        // nearest that fits, so no later check reports it again as
        // something else.
        DeValue::Integer(i) => {
            Node::Integer(whole_number(&i).unwrap_or(if i.as_str().starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            }))
        }
        DeValue::Float(f) => {
            float(&f).map_or_else(|| Node::String(f.as_str().replace('_', "")), Node::Float)
        }
        DeValue::Boolean(b) => Node::Bool(b),
        DeValue::Datetime(d) => Node::Datetime(d.to_string()),
        DeValue::Array(items) => Node::Array(items.into_iter().map(node).collect()),
        DeValue::Table(table) => Node::Table(
            table
                .into_iter()
                .map(|(k, v)| (Spanned::new(k.span(), k.into_inner().into_owned()), node(v)))
                .collect(),
        ),
    };
    Spanned::new(span, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(text: &str) -> (Vec<AuthoredStep>, Vec<String>) {
        let mut diags = Vec::new();
        let flow = parse(&SourceFile::new("f.toml", text), &mut diags).unwrap();
        let steps = flow.steps.into_iter().map(Spanned::into_inner).collect();
        (steps, diags.into_iter().map(|d| d.message).collect())
    }

    /// An audit read "not a integer" and "not string".
    #[test]
    fn a_section_of_the_wrong_type_is_named_with_its_article() {
        let (_, diags) = steps(
            "name = \"f\"\nparams = 3\n[[step]]\nid = \"a\"\nuses = \"x\"\nconnections = 4\n",
        );
        assert!(
            diags.contains(&"`params` must be a table, not an integer".to_string()),
            "{diags:?}"
        );
        assert!(
            diags.contains(&"`connections` must be a list or a table, not an integer".to_string()),
            "{diags:?}"
        );
        let (_, diags) = steps("secrets = \"x\"\n");
        assert!(
            diags.contains(&"`secrets` must be a table, not a string".to_string()),
            "{diags:?}"
        );
    }

    #[test]
    fn a_step_with_a_wrong_key_is_kept_with_that_key_unreadable() {
        let (steps, diags) = steps(
            "[[step]]\nid = \"a\"\nuses = \"x\"\ntimeout = 30\nfor_each = [1]\n\
             retry = { max_attempts = 0, jitter = true }\nconcurency = 2\nconnections = [\"c\", 5]\n",
        );
        assert_eq!(diags.len(), 5, "{diags:?}");
        let [step] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(step.id.as_ref().unwrap().get_ref(), "a");
        assert_eq!(step.fields.uses.as_ref().unwrap().get_ref(), "x");
        // What could be read is there: the rest of `retry` too.
        assert_eq!(
            step.fields
                .retry
                .as_ref()
                .unwrap()
                .get_ref()
                .max_attempts
                .as_ref()
                .map(|n| *n.get_ref()),
            Some(0)
        );
        assert_eq!(step.fields.connections.len(), 1);
        for key in [
            "timeout",
            "for_each",
            "retry",
            "concurency",
            "concurrency",
            "connections",
        ] {
            assert!(step.unreadable(key), "{key}: {:?}", step.unreadable);
        }
        assert!(!step.unreadable("uses") && !step.unreadable("with"));
        assert_eq!(step.has_for_each(), None);
    }

    #[test]
    fn a_step_without_an_id_is_kept_unnamed_and_a_missing_key_is_named() {
        let (steps, diags) =
            steps("[[step]]\nwith = {}\n[[step]]\nid = 3\nuses = \"x\"\n[[step]]\nid = \"b\"\n");
        assert_eq!(steps.len(), 3);
        assert!(steps[0].id.is_none() && steps[0].with.is_some());
        assert!(steps[1].id.is_none() && steps[1].unreadable("id"));
        assert_eq!(steps[1].fields.uses.as_ref().unwrap().get_ref(), "x");
        assert_eq!(steps[2].id.as_ref().unwrap().get_ref(), "b");
        assert!(steps[2].fields.uses.is_none());
        assert_eq!(
            diags,
            [
                "missing field `id`",
                "missing field `uses`",
                "invalid type: integer `3`, expected a string",
                "missing field `uses`",
            ]
        );
    }
}
