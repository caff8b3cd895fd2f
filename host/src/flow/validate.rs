//! From the authored flow to a validated [`Flow`], finding every problem.
//!
//! Checks, each reported with its location and a hint: duplicate or
//! malformed step ids, references to unknown params, to unknown, later or
//! the same step, `${item}` outside `for_each`, unknown connections, unset
//! environment variables without a default, components that are neither a
//! built-in nor an existing file, bad durations, cron expressions and time
//! zones, durations and rates beyond their caps (a step timeout over a day,
//! request timeouts and retry delays over an hour, fewer than one request
//! an hour), `${item}` in a `for_each` step's `when`, and connection
//! settings (URLs, auth, limits).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;
use url::Url;

use super::authored::{AuthoredConnection, AuthoredFlow, AuthoredStep, Node, OnError};
use super::model::*;
use super::resolve::{ResolveError, Scope};
use super::schedule::Schedule;
use super::source::{Diagnostic, SourceFile};
use super::template::{Root, Template};

/// What the validator needs to know about the world outside the file.
pub struct Context<'a> {
    pub builtins: &'a [&'a str],
    pub env: BTreeMap<String, String>,
    pub param_overrides: &'a [(String, String)],
}

pub fn validate(
    source: &SourceFile,
    authored: AuthoredFlow,
    ctx: &Context<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Flow> {
    let mut v = Validator { source, diags, ctx };
    let name = match &authored.name {
        Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
        Some(n) => {
            v.error(
                n.span(),
                "the flow's `name` is empty",
                "give the flow a short name, like `procore-license-sync`",
            );
            String::new()
        }
        None => {
            v.error(
                0..0,
                "the flow has no `name`",
                "add `name = \"my-flow\"` at the top of the file",
            );
            String::new()
        }
    };
    let schedule = authored.schedule.as_ref().and_then(|s| v.schedule(s));
    let params = v.params(&authored.params);
    let env = Arc::new(ctx.env.clone());
    let mut secrets = Vec::new();
    let mut connections = BTreeMap::new();
    for (name, conn) in &authored.connections {
        if let Some(spec) = v.connection(name, conn, &params, &mut secrets) {
            connections.insert(name.get_ref().clone(), Arc::new(spec));
        }
    }
    let declared: HashSet<&str> = authored
        .connections
        .iter()
        .map(|(n, _)| n.get_ref().as_str())
        .collect();
    let mut steps = Vec::new();
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let all_ids: Vec<String> = authored
        .steps
        .iter()
        .map(|s| s.get_ref().fields.id.get_ref().clone())
        .collect();
    for (index, step) in authored.steps.iter().enumerate() {
        let earlier: Vec<&str> = seen.keys().map(String::as_str).collect();
        let earlier: HashSet<&str> = earlier.into_iter().collect();
        if let Some(s) = v.step(
            step.get_ref(),
            &params,
            &declared,
            &earlier,
            &all_ids[index + 1..],
        ) {
            steps.push(s);
        }
        let id = step.get_ref().fields.id.clone();
        if let Some(first) = seen.get(id.get_ref()) {
            let (line, _) = source.line_col(first.start);
            v.error(
                id.span(),
                format!("step id `{}` is used twice", id.get_ref()),
                format!("it is first used on line {line}; give each step its own id"),
            );
        } else {
            seen.insert(id.get_ref().clone(), id.span());
        }
    }
    if authored.steps_written == 0 {
        v.error(
            authored.document.start..authored.document.start,
            "the flow has no steps",
            "add at least one `[[step]]` section",
        );
    }
    // Every env value that looks like a credential is redacted too, in case a
    // flow passes one to a component by hand.
    for (key, value) in ctx.env.iter() {
        let upper = key.to_ascii_uppercase();
        if [
            "SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "PRIVATE",
        ]
        .iter()
        .any(|w| upper.contains(w))
            && value.len() >= 4
        {
            secrets.push(value.clone());
        }
    }
    secrets.sort();
    secrets.dedup();
    if !v.diags.is_empty() {
        return None;
    }
    Some(Flow {
        name,
        description: authored.description,
        source: source.clone(),
        schedule,
        params,
        connections,
        steps,
        env,
        secrets,
    })
}

/// The longest step `timeout`: a step that needs more than a day is a
/// flow of its own, and a larger value would overflow deadline arithmetic.
const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest `request_timeout`: an HTTP request an hour long is a hang.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest retry `base_delay`/`max_delay`, the same hour the host
/// waits at most for a service's `Retry-After` or rate-limit window.
const MAX_RETRY_DELAY: Duration = crate::connections::throttle::MAX_WAIT;
/// One request per hour: the slowest `rate_limit` (see MAX_RETRY_DELAY).
const MIN_RATE_PER_SECOND: f64 = 1.0 / 3600.0;

struct Validator<'a, 'b> {
    source: &'a SourceFile,
    diags: &'a mut Vec<Diagnostic>,
    ctx: &'a Context<'b>,
}

impl Validator<'_, '_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::new(span, message).hint(hint));
    }

    fn schedule(&mut self, s: &Spanned<super::authored::AuthoredSchedule>) -> Option<Schedule> {
        let s = s.get_ref();
        match Schedule::parse(
            s.cron.get_ref(),
            s.timezone.as_ref().map(|t| t.get_ref().as_str()),
        ) {
            Ok(schedule) => Some(schedule),
            Err(e @ super::schedule::ScheduleError::Timezone(_)) => {
                let span = s.timezone.as_ref().map_or(s.cron.span(), |t| t.span());
                self.error(
                    span,
                    e.to_string(),
                    "use an IANA name such as `America/Los_Angeles` or `Europe/Paris`",
                );
                None
            }
            Err(e @ super::schedule::ScheduleError::NumberedWeekday(_)) => {
                self.error(
                    s.cron.span(),
                    e.to_string(),
                    "write the days as names, like `Mon-Fri` or `Sat,Sun`",
                );
                None
            }
            Err(e) => {
                self.error(
                    s.cron.span(),
                    e.to_string(),
                    "fields are: second minute hour day-of-month month day-of-week, e.g. `0 0 5-17 * * Mon-Fri`",
                );
                None
            }
        }
    }

    fn params(&mut self, authored: &[(Spanned<String>, Spanned<Node>)]) -> BTreeMap<String, Value> {
        let mut params: BTreeMap<String, Value> = authored
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), literal_json(v.get_ref())))
            .collect();
        for (key, raw) in self.ctx.param_overrides {
            if !params.contains_key(key) {
                let known: Vec<&str> = params.keys().map(String::as_str).collect();
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
            // A JSON value (`["a","b"]`, `3`, `true`) keeps its type; anything else is a string.
            let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()));
            params.insert(key.clone(), value);
        }
        params
    }

    /// Resolves a load-time string of a connection: only params and env.
    fn load_time_string(
        &mut self,
        s: &Spanned<String>,
        params: &BTreeMap<String, Value>,
    ) -> Option<String> {
        let template = self.template(s)?;
        for (r, range) in template.references() {
            if matches!(r.root, Root::Step(_) | Root::Item | Root::Run(_)) {
                self.error(
                    self.inner_span(s, range),
                    "connection settings are resolved before the flow runs and can only use `params` and `env`",
                    "move step-dependent values into a step's `with`",
                );
                return None;
            }
        }
        let scope = Scope {
            params: Some(params),
            env: Some(&self.ctx.env),
            ..Default::default()
        };
        match scope.resolve_string(&template) {
            Ok(text) => Some(text),
            Err(e) => {
                self.resolve_error(s, &template, e);
                None
            }
        }
    }

    fn resolve_error(&mut self, s: &Spanned<String>, template: &Template, e: ResolveError) {
        let span = template
            .references()
            .into_iter()
            .find(|(r, _)| matches!((&r.root, &e), (Root::Env { name, .. }, ResolveError::MissingEnv(m)) if name == m))
            .map_or(s.span(), |(_, range)| self.inner_span(s, range));
        match e {
            ResolveError::MissingEnv(name) => self.error(
                span,
                format!("environment variable {name} is not set"),
                format!("set {name}, or give a default with `${{env.{name}:-value}}`"),
            ),
            ResolveError::Unavailable(what) => self.error(
                span,
                format!("`{what}` is not available here"),
                "see the flow format in the README",
            ),
        }
    }

    fn template(&mut self, s: &Spanned<String>) -> Option<Template> {
        match Template::parse(s.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = self.inner_span(s, e.range.clone());
                self.error(span, e.message, e.hint);
                None
            }
        }
    }

    /// The file span of `range` inside the string token at `s`, when the
    /// token is written without escapes; the whole token otherwise.
    fn inner_span(&self, s: &Spanned<String>, range: Range<usize>) -> Range<usize> {
        let token = s.span();
        let raw = self.source.text.get(token.clone()).unwrap_or("");
        for quote in ["\"\"\"", "'''", "\"", "'"] {
            if let Some(body) = raw.strip_prefix(quote).and_then(|b| b.strip_suffix(quote))
                && body == s.get_ref()
            {
                let start = token.start + quote.len();
                return start + range.start..start + range.end;
            }
        }
        token
    }

    fn connection(
        &mut self,
        name: &Spanned<String>,
        conn: &Spanned<AuthoredConnection>,
        params: &BTreeMap<String, Value>,
        secrets: &mut Vec<String>,
    ) -> Option<ConnectionSpec> {
        if !is_identifier(name.get_ref()) {
            self.error(
                name.span(),
                format!("connection name `{}` is not valid", name.get_ref()),
                "use letters, digits, `-` and `_`",
            );
        }
        let c = conn.get_ref();
        let base_url = self
            .load_time_string(&c.base_url, params)
            .and_then(|text| self.url(&c.base_url, &text))
            .map(collapse_slashes);
        let mut headers = Vec::new();
        for (header, value) in &c.headers {
            if !crate::connections::policy::valid_header_name(header) {
                self.error(
                    value.span(),
                    format!("`{header}` is not a valid header name"),
                    "header names are letters, digits and `-`",
                );
                continue;
            }
            if is_reserved_header(header) {
                self.error(
                    value.span(),
                    format!("header `{header}` is set by the host"),
                    "use `auth` for credentials",
                );
                continue;
            }
            if let Some(text) = self.load_time_string(value, params) {
                if text.contains(['\r', '\n']) {
                    self.error(
                        value.span(),
                        format!("header `{header}` contains a line break"),
                        "remove CR/LF from the value",
                    );
                } else if !crate::connections::policy::valid_header_value(&text) {
                    self.error(
                        value.span(),
                        format!("header `{header}` has a value HTTP does not allow"),
                        "header values are printable ASCII: no accented letters, dashes other than `-`, or control characters",
                    );
                } else {
                    headers.push((header.clone(), text));
                }
            }
        }
        let auth = match &c.auth {
            None => Auth::None,
            Some(auth) => {
                let a = auth.get_ref();
                match (&a.oauth2_client_credentials, &a.bearer) {
                    (Some(o), None) => {
                        let o = o.get_ref();
                        let token_url = self
                            .load_time_string(&o.token_url, params)
                            .and_then(|t| self.url(&o.token_url, &t));
                        let client_id = self.load_time_string(&o.client_id, params);
                        let client_secret = self.load_time_string(&o.client_secret, params);
                        let scope = o
                            .scope
                            .as_ref()
                            .and_then(|s| self.load_time_string(s, params));
                        if let Some(secret) = &client_secret {
                            if secret.is_empty() {
                                self.error(
                                    o.client_secret.span(),
                                    "the client secret is empty",
                                    "set the variable it reads to the app's secret",
                                );
                            }
                            secrets.push(secret.clone());
                        }
                        match (token_url, client_id, client_secret) {
                            (Some(token_url), Some(client_id), Some(secret)) => {
                                Auth::OAuth2ClientCredentials {
                                    token_url,
                                    client_id,
                                    client_secret: Secret::new(secret),
                                    scope,
                                }
                            }
                            _ => Auth::None,
                        }
                    }
                    (None, Some(b)) => match self.load_time_string(&b.get_ref().token, params) {
                        Some(token) => {
                            secrets.push(token.clone());
                            Auth::Bearer(Secret::new(token))
                        }
                        None => Auth::None,
                    },
                    _ => {
                        self.error(
                            auth.span(),
                            "`auth` must name exactly one method",
                            "use `auth.oauth2_client_credentials = {…}` or `auth.bearer = { token = \"${env.TOKEN}\" }`",
                        );
                        Auth::None
                    }
                }
            }
        };
        let rate_limit = c.rate_limit.as_ref().and_then(|r| {
            let r = r.get_ref();
            let rates = [
                r.per_second.as_ref().map(|v| (v, 1.0)),
                r.per_minute.as_ref().map(|v| (v, 60.0)),
                r.per_hour.as_ref().map(|v| (v, 3600.0)),
            ];
            let mut best: Option<f64> = None;
            for (value, seconds) in rates.into_iter().flatten() {
                if !(*value.get_ref() > 0.0 && value.get_ref().is_finite()) {
                    self.error(
                        value.span(),
                        "a rate limit must be a positive number",
                        "for example `per_minute = 600`",
                    );
                    continue;
                }
                let per_second = value.get_ref() / seconds;
                // Slower than one an hour would space requests further
                // apart than any wait the host allows.
                if per_second < MIN_RATE_PER_SECOND {
                    self.error(
                        value.span(),
                        "a rate limit below one request per hour is not allowed",
                        "use at least `per_hour = 1`, or remove the rate limit",
                    );
                    continue;
                }
                best = Some(best.map_or(per_second, |b: f64| b.min(per_second)));
            }
            best.map(|per_second| RateLimit { per_second })
        });
        let mut retry = RetryPolicy::default();
        if let Some(r) = &c.retry {
            let r = r.get_ref();
            if let Some(n) = &r.max_attempts {
                if *n.get_ref() == 0 {
                    self.error(
                        n.span(),
                        "`max_attempts` counts the first attempt too and must be at least 1",
                        "use 1 to disable retries",
                    );
                }
                retry.max_attempts = (*n.get_ref()).max(1);
            }
            if let Some(d) = &r.base_delay {
                retry.base_delay = self
                    .duration(d, "base_delay", MAX_RETRY_DELAY)
                    .unwrap_or(retry.base_delay);
            }
            if let Some(d) = &r.max_delay {
                retry.max_delay = self
                    .duration(d, "max_delay", MAX_RETRY_DELAY)
                    .unwrap_or(retry.max_delay);
            }
        }
        let request_timeout = c
            .request_timeout
            .as_ref()
            .and_then(|d| self.duration(d, "request_timeout", MAX_REQUEST_TIMEOUT))
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let max_response_bytes = c
            .max_response_bytes
            .as_ref()
            .map_or(DEFAULT_MAX_RESPONSE_BYTES, |m| *m.get_ref());
        Some(ConnectionSpec {
            name: name.get_ref().clone(),
            base_url: base_url?,
            headers,
            auth,
            rate_limit,
            retry,
            max_response_bytes,
            request_timeout,
        })
    }

    fn url(&mut self, at: &Spanned<String>, text: &str) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                self.error(
                    at.span(),
                    format!("`{text}` is not a valid URL: {e}"),
                    "write an absolute URL such as `https://graph.microsoft.com/v1.0`",
                );
                return None;
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if crate::connections::policy::is_loopback(&url) => {}
            "http" => {
                self.error(
                    at.span(),
                    format!("`{text}` uses plain http to a host that is not loopback"),
                    "use https; http is accepted only for 127.0.0.1, ::1 and localhost",
                );
                return None;
            }
            other => {
                self.error(
                    at.span(),
                    format!("`{text}` has scheme `{other}`"),
                    "use https",
                );
                return None;
            }
        }
        if crate::connections::policy::has_userinfo(&url) {
            self.error(
                at.span(),
                "credentials in a URL are not allowed",
                "use the connection's `auth` instead",
            );
            return None;
        }
        Some(url)
    }

    /// A positive duration no longer than `max`, a whole number of hours
    /// (`what` names the setting).
    fn duration(&mut self, d: &Spanned<String>, what: &str, max: Duration) -> Option<Duration> {
        match humantime::parse_duration(d.get_ref()) {
            Ok(duration) if duration > max => {
                self.error(
                    d.span(),
                    format!(
                        "{what} `{}` is longer than the {}h allowed",
                        d.get_ref(),
                        max.as_secs() / 3600
                    ),
                    format!("use at most \"{}h\"", max.as_secs() / 3600),
                );
                None
            }
            Ok(duration) if !duration.is_zero() => Some(duration),
            Ok(_) => {
                self.error(
                    d.span(),
                    "a duration of zero is not allowed",
                    "for example \"30s\", \"5m\" or \"1h\"",
                );
                None
            }
            Err(e) => {
                self.error(
                    d.span(),
                    format!("`{}` is not a duration: {e}", d.get_ref()),
                    "for example \"30s\", \"5m\" or \"1h\"",
                );
                None
            }
        }
    }

    fn step(
        &mut self,
        step: &AuthoredStep,
        params: &BTreeMap<String, Value>,
        declared: &HashSet<&str>,
        earlier: &HashSet<&str>,
        later: &[String],
    ) -> Option<Step> {
        let f = &step.fields;
        let id = f.id.get_ref().clone();
        let before = self.diags.len();
        if !is_identifier(&id) {
            self.error(
                f.id.span(),
                format!("step id `{id}` is not valid"),
                "use letters, digits, `-` and `_`, like `create-users`",
            );
        }
        let uses = self.uses(&f.uses);
        for c in &f.connections {
            if !declared.contains(c.get_ref().as_str()) {
                let mut known: Vec<&str> = declared.iter().copied().collect();
                known.sort();
                self.error(
                    c.span(),
                    format!(
                        "step `{id}` asks for connection `{}`, which the flow does not declare",
                        c.get_ref()
                    ),
                    if known.is_empty() {
                        "declare it under `[connections.NAME]`".to_string()
                    } else {
                        format!("declared connections: {}", known.join(", "))
                    },
                );
            }
        }
        let refs = RefRules {
            params,
            earlier,
            later,
            step: &id,
            item: if f.for_each.is_some() {
                ItemRule::Allowed
            } else {
                ItemRule::OutsideForEach
            },
        };
        let with = step.with.as_ref().and_then(|w| {
            if !matches!(w.get_ref(), Node::Table(_)) {
                self.error(
                    w.span(),
                    format!("`with` must be a table, not {}", w.get_ref().kind()),
                    "write `with = { key = \"value\" }`",
                );
                return None;
            }
            self.value_template(w, &refs)
        });
        let for_each = f.for_each.as_ref().and_then(|fe| {
            let t = self.checked_template(
                fe,
                &RefRules {
                    item: ItemRule::OutsideForEach,
                    ..refs
                },
            )?;
            if t.as_single_ref().is_none() {
                self.error(
                    fe.span(),
                    "`for_each` must be exactly one reference to a list",
                    "for example `for_each = \"${steps.diff.missing}\"`",
                );
            }
            Some(t)
        });
        // `when` decides once whether the whole step runs, before any item.
        let when_refs = RefRules {
            item: match refs.item {
                ItemRule::Allowed => ItemRule::InWhen,
                other => other,
            },
            ..refs
        };
        let when = match &step.when {
            None => Vec::new(),
            Some(node) => match node.get_ref() {
                Node::String(s) => self
                    .checked_template(&Spanned::new(node.span(), s.clone()), &when_refs)
                    .into_iter()
                    .collect(),
                Node::Array(items) => items
                    .iter()
                    .filter_map(|i| match i.get_ref() {
                        Node::String(s) => {
                            self.checked_template(&Spanned::new(i.span(), s.clone()), &when_refs)
                        }
                        other => {
                            self.error(
                                i.span(),
                                format!(
                                    "a `when` condition must be a string, not {}",
                                    other.kind()
                                ),
                                "write `when = \"${steps.x.ok}\"`",
                            );
                            None
                        }
                    })
                    .collect(),
                other => {
                    self.error(
                        node.span(),
                        format!(
                            "`when` must be a string or a list of strings, not {}",
                            other.kind()
                        ),
                        "write `when = \"${steps.x.ok}\"`",
                    );
                    Vec::new()
                }
            },
        };
        let concurrency = match &f.concurrency {
            None => 1,
            Some(c) => {
                if f.for_each.is_none() {
                    self.error(
                        c.span(),
                        "`concurrency` only applies to a step with `for_each`",
                        "remove it, or add `for_each`",
                    );
                }
                match usize::try_from(*c.get_ref()) {
                    Ok(n @ 1..=256) => n,
                    _ => {
                        self.error(
                            c.span(),
                            format!("`concurrency = {}` is out of range", c.get_ref()),
                            "use a number from 1 to 256",
                        );
                        1
                    }
                }
            }
        };
        let timeout = f
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, "timeout", MAX_STEP_TIMEOUT))
            .unwrap_or(DEFAULT_STEP_TIMEOUT);
        let on_error = f.on_error.as_ref().map_or(OnError::Fail, |o| *o.get_ref());
        let mut artifacts = Vec::new();
        for (file, path) in &f.artifacts {
            let name = file.get_ref();
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                self.error(
                    file.span(),
                    format!("artifact name `{name}` must be a plain file name"),
                    "for example `report.html`",
                );
                continue;
            }
            let segments: Vec<String> = if path.get_ref().is_empty() {
                Vec::new()
            } else {
                path.get_ref().split('.').map(str::to_string).collect()
            };
            artifacts.push((name.clone(), segments));
        }
        if self.diags.len() > before {
            return None;
        }
        Some(Step {
            id,
            uses: uses?,
            connections: f.connections.iter().map(|c| c.get_ref().clone()).collect(),
            with,
            for_each,
            concurrency,
            when,
            timeout,
            on_error,
            artifacts,
        })
    }

    fn uses(&mut self, uses: &Spanned<String>) -> Option<ComponentRef> {
        let text = uses.get_ref();
        let looks_like_path = text.ends_with(".wasm") || text.contains('/') || text.contains('\\');
        if looks_like_path {
            let path = PathBuf::from(text);
            let path = if path.is_absolute() {
                path
            } else {
                self.source.dir().join(path)
            };
            if path.is_file() {
                return Some(ComponentRef::File(path));
            }
            self.error(
                uses.span(),
                format!("component file `{}` does not exist", path.display()),
                "paths in `uses` are relative to the flow file; build the component with `cargo build --target wasm32-wasip2`",
            );
            return None;
        }
        if self.ctx.builtins.contains(&text.as_str()) {
            return Some(ComponentRef::Builtin(text.clone()));
        }
        self.error(
            uses.span(),
            format!("`{text}` is not a built-in component"),
            format!(
                "built-ins are: {}; or give a path to a .wasm file",
                self.ctx.builtins.join(", ")
            ),
        );
        None
    }

    fn checked_template(&mut self, s: &Spanned<String>, rules: &RefRules<'_>) -> Option<Template> {
        let template = self.template(s)?;
        let mut ok = true;
        for (r, range) in template.references() {
            let span = self.inner_span(s, range);
            match &r.root {
                Root::Param(name) if !rules.params.contains_key(name) => {
                    ok = false;
                    let known: Vec<&str> = rules.params.keys().map(String::as_str).collect();
                    self.error(
                        span,
                        format!("`params.{name}` is not a param of this flow"),
                        if known.is_empty() {
                            "declare it under `[params]`".to_string()
                        } else {
                            format!("params are: {}", known.join(", "))
                        },
                    );
                }
                Root::Step(id) if id == rules.step => {
                    ok = false;
                    self.error(
                        span,
                        format!("step `{id}` refers to its own output"),
                        "a step can only read the output of steps before it",
                    );
                }
                Root::Step(id) if !rules.earlier.contains(id.as_str()) => {
                    ok = false;
                    if rules.later.iter().any(|l| l == id) {
                        self.error(
                            span,
                            format!(
                                "step `{}` refers to step `{id}`, which runs later",
                                rules.step
                            ),
                            "move this step after it, or read an earlier step",
                        );
                    } else {
                        let mut known: Vec<&str> = rules.earlier.iter().copied().collect();
                        known.sort();
                        self.error(
                            span,
                            format!("there is no step `{id}` before step `{}`", rules.step),
                            if known.is_empty() {
                                "this is the first step; it can only use params and env".to_string()
                            } else {
                                format!("earlier steps: {}", known.join(", "))
                            },
                        );
                    }
                }
                Root::Item if rules.item == ItemRule::OutsideForEach => {
                    ok = false;
                    self.error(
                        span,
                        "`${item}` is only available in a step with `for_each`",
                        "add `for_each = \"${steps.x.list}\"` to the step",
                    );
                }
                Root::Item if rules.item == ItemRule::InWhen => {
                    ok = false;
                    self.error(
                        span,
                        format!(
                            "step `{}` uses `${{item}}` in `when`, which is checked once for the whole step, before any item runs",
                            rules.step
                        ),
                        "filter the list in an earlier step and give `for_each` only the items to handle, or let the component skip an item",
                    );
                }
                Root::Env {
                    name,
                    default: None,
                } if !self.ctx.env.contains_key(name) => {
                    ok = false;
                    self.error(
                        span,
                        format!("environment variable {name} is not set"),
                        format!("set {name}, or give a default with `${{env.{name}:-value}}`"),
                    );
                }
                _ => {}
            }
        }
        ok.then_some(template)
    }

    fn value_template(
        &mut self,
        node: &Spanned<Node>,
        rules: &RefRules<'_>,
    ) -> Option<ValueTemplate> {
        Some(match node.get_ref() {
            Node::String(s) => {
                let t = self.checked_template(&Spanned::new(node.span(), s.clone()), rules)?;
                if t.is_literal() {
                    ValueTemplate::Literal(Value::String(text_of(&t)))
                } else {
                    ValueTemplate::Text(t)
                }
            }
            Node::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for i in items {
                    match self.value_template(i, rules) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                ValueTemplate::Array(out)
            }
            Node::Table(entries) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (k, v) in entries {
                    match self.value_template(v, rules) {
                        Some(v) => out.push((k.get_ref().clone(), v)),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                ValueTemplate::Object(out)
            }
            other => ValueTemplate::Literal(literal_json(other)),
        })
    }
}

#[derive(Clone, Copy)]
struct RefRules<'a> {
    params: &'a BTreeMap<String, Value>,
    earlier: &'a HashSet<&'a str>,
    later: &'a [String],
    step: &'a str,
    item: ItemRule,
}

/// Where `${item}` may appear.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ItemRule {
    /// In a `for_each` step's `with`.
    Allowed,
    /// In a step without `for_each`, or in `for_each` itself.
    OutsideForEach,
    /// In a `for_each` step's `when`, which is checked before any item.
    InWhen,
}

fn text_of(t: &Template) -> String {
    t.parts
        .iter()
        .map(|p| match p {
            super::template::Part::Literal(s) => s.as_str(),
            super::template::Part::Ref(..) => "",
        })
        .collect()
}

/// A TOML value as JSON; strings are taken literally.
pub fn literal_json(node: &Node) -> Value {
    match node {
        Node::String(s) | Node::Datetime(s) => Value::String(s.clone()),
        Node::Integer(i) => Value::from(*i),
        Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Node::Bool(b) => Value::Bool(*b),
        Node::Array(items) => {
            Value::Array(items.iter().map(|i| literal_json(i.get_ref())).collect())
        }
        Node::Table(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), literal_json(v.get_ref())))
                .collect(),
        ),
    }
}

/// The URL with runs of `/` in its path made one. A base URL is often
/// built from a root and a path (`${env.PROCORE_BASE_URL}/rest/v1.0`), and
/// a root written with a trailing slash would otherwise give `//rest/v1.0`,
/// which services answer with 404s.
fn collapse_slashes(mut url: Url) -> Url {
    if url.path().contains("//") {
        let mut path = String::with_capacity(url.path().len());
        for c in url.path().chars() {
            if !(c == '/' && path.ends_with('/')) {
                path.push(c);
            }
        }
        url.set_path(&path);
    }
    url
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Headers only the host may set: credentials and framing.
pub fn is_reserved_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_paths_lose_doubled_slashes() {
        for (given, expected) in [
            (
                "http://127.0.0.1:9000//rest/v1.0",
                "http://127.0.0.1:9000/rest/v1.0",
            ),
            (
                "https://api.procore.com/rest/v1.0",
                "https://api.procore.com/rest/v1.0",
            ),
            (
                "https://graph.example/v1.0///x//",
                "https://graph.example/v1.0/x/",
            ),
            (
                "https://a.example//v1?next=//kept",
                "https://a.example/v1?next=//kept",
            ),
            ("https://a.example/", "https://a.example/"),
        ] {
            let url = collapse_slashes(Url::parse(given).unwrap());
            assert_eq!(url.as_str(), expected, "{given}");
        }
    }
}
