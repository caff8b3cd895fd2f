//! `${…}` references inside flow strings.
//!
//! A string in a flow may hold references: `${params.x}`, `${env.X}`,
//! `${env.X:-default}` (the default may itself hold references),
//! `${secrets.NAME}`, `${steps.<id>.<path>}`, `${item}` and `${run.<field>}`. `$${` is a literal
//! `${`. A string that is exactly one reference keeps the referenced JSON
//! type; anywhere else the value is spliced in as text.

use std::ops::Range;

/// A parsed string: literal text and references, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Literal(String),
    /// A reference and its byte range inside the string (for diagnostics).
    Ref(Reference, Range<usize>),
}

/// What a `${…}` points at, plus a path into the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub root: Root,
    pub path: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    Param(String),
    Env {
        name: String,
        default: Option<Template>,
    },
    /// A secret the flow declares under `[secrets]`.
    Secret(String),
    Step(String),
    Item,
    Run(String),
}

/// The fields of `${run.…}`.
pub const RUN_FIELDS: &[&str] = &[
    "id",
    "dry_run",
    "started_at",
    "flow",
    "output_dir",
    "approvals",
    "earlier_unfinished",
    "only",
];

/// How many `env` defaults may nest inside one another. Parsing, checking,
/// binding and resolving all recurse once per level, so an unbounded depth
/// would let one flow file overflow the stack of the whole process; real
/// flows nest two or three.
pub const MAX_DEFAULT_NESTING: usize = 32;

/// A malformed reference, with its byte range inside the string.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub range: Range<usize>,
    pub message: String,
    pub hint: String,
}

impl Template {
    /// The template, or its first malformed reference.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let (template, errors) = Template::parse_all(text);
        match errors.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(template),
        }
    }

    /// The template of the well-formed references, and every malformed
    /// one: one mistake in a string does not hide the others. A template
    /// with errors is only for checking, never for running.
    pub fn parse_all(text: &str) -> (Template, Vec<TemplateError>) {
        let mut errors = Vec::new();
        let template = parse_at(text, 0, 0, &mut errors);
        (template, errors)
    }

    /// The reference, when the whole string is exactly one reference.
    pub fn as_single_ref(&self) -> Option<&Reference> {
        match self.parts.as_slice() {
            [Part::Ref(r, _)] => Some(r),
            _ => None,
        }
    }

    /// Whether any reference (also in an `env` default) reads a secret.
    pub fn reads_a_secret(&self) -> bool {
        self.references()
            .iter()
            .any(|(r, _)| matches!(r.root, Root::Secret(_)))
    }

    /// Every reference, including those nested in `env` defaults.
    pub fn references(&self) -> Vec<(&Reference, Range<usize>)> {
        let mut out = Vec::new();
        for part in &self.parts {
            if let Part::Ref(r, range) = part {
                out.push((r, range.clone()));
                if let Root::Env {
                    default: Some(d), ..
                } = &r.root
                {
                    out.extend(d.references());
                }
            }
        }
        out
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }
}

/// `depth` is how many `env` defaults enclose `text`; a malformed
/// reference goes to `errors` and is left out.
fn parse_at(text: &str, base: usize, depth: usize, errors: &mut Vec<TemplateError>) -> Template {
    let mut parts = Vec::new();
    let mut literal = String::new();
    // Positions move over ASCII markers (`$`, `{`, `}`) by bytes and over
    // everything else by whole characters, so every slice below starts and
    // ends on a character boundary whatever the text holds.
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$${") {
            literal.push_str("${");
            i += 3;
        } else if bytes[i..].starts_with(b"${") {
            let Some(close) = matching_brace(bytes, i + 2) else {
                errors.push(TemplateError {
                    range: base + i..base + text.len(),
                    message: "a `${` is never closed".into(),
                    hint: "close the reference with `}`, or write `$${` for a literal `${`".into(),
                });
                break;
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            let inner = text.get(i + 2..close).unwrap_or("");
            let range = base + i..base + close + 1;
            match parse_reference(inner, base + i + 2, range.clone(), depth) {
                Ok(reference) => parts.push(Part::Ref(reference, range)),
                Err(e) => errors.push(e),
            }
            i = close + 1;
        } else {
            let ch = text.get(i..).and_then(|rest| rest.chars().next());
            let ch_len = ch.map_or(1, char::len_utf8);
            if let Some(ch) = ch {
                literal.push(ch);
            }
            i += ch_len;
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Template { parts }
}

/// Byte index of the `}` closing a reference whose body starts at `from`.
/// Nested `${` (in an `env` default) open a level each, and so does a
/// literal `$${`, so that `${env.A:-$${x}}` defaults to the text `${x}`.
/// Only ASCII bytes are compared, so multi-byte characters pass through
/// untouched and the index returned is always a character boundary.
fn matching_brace(bytes: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$${") {
            depth += 1;
            i += 3;
            continue;
        }
        if bytes[i..].starts_with(b"${") {
            depth += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
        i += 1;
    }
    None
}

fn parse_reference(
    inner: &str,
    base: usize,
    range: Range<usize>,
    depth: usize,
) -> Result<Reference, TemplateError> {
    let err = |message: String, hint: &str| TemplateError {
        range: range.clone(),
        message,
        hint: hint.to_string(),
    };
    let (head, default) = match inner.find(":-") {
        Some(at) => (&inner[..at], Some(&inner[at + 2..])),
        None => (inner, None),
    };
    let head = head.trim();
    let mut segments = head.split('.');
    let root = segments.next().unwrap_or("");
    let rest: Vec<String> = segments.map(str::to_string).collect();
    if let Some(bad) = rest
        .iter()
        .find(|s| s.is_empty() || !s.chars().all(is_path_char))
    {
        return Err(err(
            format!("`${{{head}}}` has an invalid path segment `{bad}`"),
            "path segments are names or list indexes separated by dots, like `steps.diff.missing.0`",
        ));
    }
    if default.is_some() && root != "env" {
        return Err(err(
            format!("`${{{inner}}}`: only `env` references take a `:-` default"),
            "write `${env.NAME:-default}`",
        ));
    }
    let name_and_path = |what: &str| -> Result<(String, Vec<String>), TemplateError> {
        match rest.split_first() {
            Some((name, path)) => Ok((name.clone(), path.to_vec())),
            None => Err(err(
                format!("`${{{head}}}` names no {what}"),
                &format!("write `${{{root}.<{what}>}}`"),
            )),
        }
    };
    let reference = match root {
        "params" => {
            let (name, path) = name_and_path("param")?;
            Reference {
                root: Root::Param(name),
                path,
            }
        }
        "secrets" => {
            let (name, path) = name_and_path("secret")?;
            if !path.is_empty() {
                return Err(err(
                    format!("`${{{head}}}`: a secret has no fields"),
                    "write `${secrets.NAME}`",
                ));
            }
            Reference {
                root: Root::Secret(name),
                path,
            }
        }
        "steps" => {
            let (name, path) = name_and_path("step")?;
            Reference {
                root: Root::Step(name),
                path,
            }
        }
        "run" => {
            let (name, path) = name_and_path("field")?;
            if !RUN_FIELDS.contains(&name.as_str()) {
                return Err(err(
                    format!("`${{run.{name}}}` is not a run field"),
                    &format!("run fields are: {}", RUN_FIELDS.join(", ")),
                ));
            }
            Reference {
                root: Root::Run(name),
                path,
            }
        }
        "item" => Reference {
            root: Root::Item,
            path: rest,
        },
        "env" => {
            let (name, path) = name_and_path("variable")?;
            if !path.is_empty() {
                return Err(err(
                    format!("`${{{head}}}`: an environment variable has no fields"),
                    "write `${env.NAME}`",
                ));
            }
            let default = match default {
                Some(_) if depth >= MAX_DEFAULT_NESTING => {
                    return Err(err(
                        format!(
                            "`${{env.{name}:-…}}` nests defaults more than \
                             {MAX_DEFAULT_NESTING} levels deep"
                        ),
                        &format!(
                            "nest at most {MAX_DEFAULT_NESTING} `${{env.X:-…}}` defaults \
                             inside one another"
                        ),
                    ));
                }
                Some(d) => {
                    let offset = base + inner.len() - d.len();
                    let mut inner = Vec::new();
                    let default = parse_at(d, offset, depth + 1, &mut inner);
                    if let Some(first) = inner.into_iter().next() {
                        return Err(first);
                    }
                    Some(default)
                }
                None => None,
            };
            Reference {
                root: Root::Env { name, default },
                path: Vec::new(),
            }
        }
        other => {
            return Err(err(
                format!(
                    "`${{{inner}}}` refers to `{other}`, which is not something a flow can reference"
                ),
                "references start with `params.`, `env.`, `secrets.`, `steps.`, `item` or `run.`",
            ));
        }
    };
    Ok(reference)
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_text_stays_literal() {
        let t = Template::parse("plain text $${not a ref}").unwrap();
        assert_eq!(
            t.parts,
            vec![Part::Literal("plain text ${not a ref}".into())]
        );
    }

    #[test]
    fn single_reference_is_recognised() {
        let t = Template::parse("${steps.diff.missing}").unwrap();
        let r = t.as_single_ref().unwrap();
        assert_eq!(r.root, Root::Step("diff".into()));
        assert_eq!(r.path, vec!["missing".to_string()]);
    }

    #[test]
    fn env_default_may_hold_references() {
        let t = Template::parse(
            "${env.GRAPH_TOKEN_URL:-https://login.example/${env.GRAPH_TENANT_ID}/token}",
        )
        .unwrap();
        let r = t.as_single_ref().unwrap();
        let Root::Env {
            name,
            default: Some(default),
        } = &r.root
        else {
            panic!("expected env with default: {r:?}");
        };
        assert_eq!(name, "GRAPH_TOKEN_URL");
        assert_eq!(default.references().len(), 1);
        assert_eq!(t.references().len(), 2);
    }

    #[test]
    fn empty_default_is_allowed() {
        let t = Template::parse("${env.REPORT_MAIL_TO:-}").unwrap();
        let r = t.as_single_ref().unwrap();
        assert!(matches!(&r.root, Root::Env { default: Some(d), .. } if d.parts.is_empty()));
    }

    #[test]
    fn mixed_text_and_references() {
        let t = Template::parse("${env.BASE}/rest/v1.0").unwrap();
        assert_eq!(t.parts.len(), 2);
        assert!(t.as_single_ref().is_none());
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Template::parse("x ${steps.a").unwrap_err();
        assert!(e.message.contains("never closed"));
        assert_eq!(e.range.start, 2);
        let e = Template::parse("${vault.x}").unwrap_err();
        assert!(e.message.contains("`vault`"));
        let t = Template::parse("${secrets.x}").unwrap();
        assert_eq!(t.as_single_ref().unwrap().root, Root::Secret("x".into()));
        let e = Template::parse("${secrets.x.y}").unwrap_err();
        assert!(e.message.contains("a secret has no fields"));
        let e = Template::parse("${params}").unwrap_err();
        assert!(e.message.contains("names no param"));
        let e = Template::parse("${run.nope}").unwrap_err();
        assert!(e.hint.contains("dry_run"));
    }

    #[test]
    fn non_ascii_text_inside_a_reference_default() {
        let t = Template::parse("${env.SUBJECT:-License – Microsoft}").unwrap();
        let r = t.as_single_ref().unwrap();
        let Root::Env {
            default: Some(d), ..
        } = &r.root
        else {
            panic!("expected env with default: {r:?}");
        };
        assert_eq!(d.parts, vec![Part::Literal("License – Microsoft".into())]);
        let t = Template::parse("é ${env.A:-😀${env.B:-ü}}ß").unwrap();
        assert_eq!(t.parts.len(), 3);
        assert_eq!(t.references().len(), 2);
        let e = Template::parse("– ${env.A:-–").unwrap_err();
        assert!(e.message.contains("never closed"), "{e:?}");
        assert_eq!(e.range.start, "– ".len());
    }

    #[test]
    fn literal_dollar_brace_inside_a_default() {
        let t = Template::parse("${env.A:-$${x}}").unwrap();
        let r = t.as_single_ref().unwrap();
        let Root::Env {
            default: Some(d), ..
        } = &r.root
        else {
            panic!("expected env with default: {r:?}");
        };
        assert_eq!(d.parts, vec![Part::Literal("${x}".into())]);
    }

    #[test]
    fn defaults_nest_at_most_the_limit() {
        let nested =
            |levels: usize| format!("{}x{}", "${env.A:-".repeat(levels), "}".repeat(levels));
        let t = Template::parse(&nested(MAX_DEFAULT_NESTING)).unwrap();
        assert_eq!(t.references().len(), MAX_DEFAULT_NESTING);
        let e = Template::parse(&nested(MAX_DEFAULT_NESTING + 1)).unwrap_err();
        assert!(e.message.contains("more than 32 levels"), "{e:?}");
        assert_eq!(e.range.start, "${env.A:-".len() * MAX_DEFAULT_NESTING);
        // Far deeper is the same error, not a stack overflow.
        let e = Template::parse(&nested(100_000)).unwrap_err();
        assert_eq!(e.range.start, "${env.A:-".len() * MAX_DEFAULT_NESTING);
    }

    /// Every string of up to four pieces drawn from awkward fragments
    /// parses or fails cleanly, and every range it reports lies on
    /// character boundaries inside the text.
    #[test]
    fn odd_input_never_panics_and_ranges_stay_on_char_boundaries() {
        const PIECES: &[&str] = &[
            "$", "{", "}", "${", "$${", "env.X", ":-", "–", "😀", "é", ".", "item", "a b",
        ];
        fn check(text: &str) {
            let on_boundary = |r: &Range<usize>| {
                r.start <= r.end
                    && r.end <= text.len()
                    && text.is_char_boundary(r.start)
                    && text.is_char_boundary(r.end)
            };
            match Template::parse(text) {
                Ok(t) => {
                    for (_, range) in t.references() {
                        assert!(on_boundary(&range), "{text:?}: {range:?}");
                    }
                }
                Err(e) => assert!(on_boundary(&e.range), "{text:?}: {e:?}"),
            }
        }
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for piece in PIECES {
                    let text = format!("{prefix}{piece}");
                    check(&text);
                    next.push(text);
                }
            }
            frontier = next;
        }
        for text in [
            "${",
            "${env.A:-",
            "${env.A:-${env.B:-${env.C:-x}}}",
            "${env.A:-${env.B:-${env.C:-x}}",
            "$${env.A",
            "$$${env.A}",
            "}${}",
            "${😀}",
            "${env.😀}",
            "${steps.a.–}",
        ] {
            check(text);
        }
        // Nested defaults resolve their references in order.
        let t = Template::parse("${env.A:-${env.B:-${env.C:-x}}}").unwrap();
        assert_eq!(t.references().len(), 3);
    }
}
