//! From the authored flow to a [`CompiledFlow`], finding every problem that
//! can be found without the environment.
//!
//! Checks, each reported with its location and a hint: duplicate or
//! malformed step ids, references to unknown params, secrets, or unknown,
//! later or the same step, fields an earlier step's output schema does not
//! have, `${item}` outside `for_each` (or in its `when`), a `for_each`
//! known not to be a list or whose known items name themselves with a
//! blank key (see [`super::item_key`]), an `approval.above` known not to
//! be a whole number (a param's value, an environment variable, which is
//! text), secrets anywhere but credentials, unknown connections and
//! connection roles, components that are neither a built-in, a component file nor a
//! registry reference that resolves (see [`super::remote`]), a
//! `with` that its component's input schema refuses, bad durations, cron
//! expressions and time zones, durations and rates beyond their caps, and
//! connection settings (URLs, headers, auth, limits) as far as they are
//! written in the file.
//!
//! One module per part of the file: [`header`] (name, schedule, params),
//! [`secrets`], [`connection`], [`step`] with [`grants`], [`inputs`] and
//! [`approval`] (`for_each_key`, `approval`);
//! [`references`] checks what a `${…}` may point at and [`text`] turns
//! strings into templates and durations.

mod approval;
mod connection;
mod grants;
mod header;
mod inputs;
mod references;
mod secrets;
mod step;
mod text;

use std::ops::Range;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use super::authored::{AuthoredFlow, Node};
use super::catalog::ComponentCatalog;
use super::compiled::{CompiledFlow, EnvUse, SecretDecl};
use super::remote::RemoteComponents;
use super::source::{Diagnostic, SourceFile};

/// What compiling needs to know about the world outside the file: never
/// the environment.
pub struct Context<'a> {
    pub builtins: &'a [&'a str],
    /// Loads components and reads their `describe`.
    pub catalog: &'a dyn ComponentCatalog,
    /// `--param NAME=VALUE` given on the command line.
    pub param_overrides: &'a [(String, String)],
    /// Turns `oci://` references in `uses` into component files.
    pub remote: &'a dyn RemoteComponents,
}

/// Compiles as much of the flow as is right; the problems go to `diags`.
/// The flow returned is whole only when no problem was found.
pub fn compile(
    source: &SourceFile,
    authored: AuthoredFlow,
    ctx: &Context<'_>,
    diags: &mut Vec<Diagnostic>,
) -> CompiledFlow {
    let mut c = Compiler {
        source,
        diags,
        ctx,
        secrets: Vec::new(),
        env_uses: Vec::new(),
        described: Vec::new(),
    };
    let name = c.name(&authored);
    let schedule = authored.schedule.as_ref().and_then(|s| c.schedule(s));
    let params = c.params(&authored.params);
    c.secrets = c.secret_decls(&authored.secrets);
    let connections = c.connections(&authored, &params);
    let mut steps = c.steps(&authored, &params);
    super::reads::mark_items_read(&mut steps);
    CompiledFlow {
        name,
        description: authored.description,
        source: source.clone(),
        schedule,
        params,
        secrets: c.secrets,
        connections,
        steps,
        env_uses: c.env_uses,
    }
}

/// The longest step `timeout`: a step that needs more than a day is a
/// flow of its own, and a larger value would overflow deadline arithmetic.
const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest `request_timeout`: an HTTP request an hour long is a hang.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// A step has an instance to make and a component to run in its time.
const MIN_STEP_TIMEOUT: Duration = Duration::from_secs(1);
/// Even a loopback service takes some milliseconds to answer.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// A service's shortest error body and headers fit in a kibibyte.
const MIN_RESPONSE_BYTES: u64 = 1024;
/// The longest retry `base_delay`/`max_delay`, the same hour the host
/// waits at most for a service's `Retry-After` or rate-limit window.
const MAX_RETRY_DELAY: Duration = crate::http_rules::MAX_WAIT;
/// The most attempts a `retry` (a step's or a connection's) may make: 20
/// waits of up to an hour each already span most of a day, and a larger
/// count is a typo more often than a plan.
const MAX_ATTEMPTS: u32 = 20;
/// One request per hour: the slowest `rate_limit` (see MAX_RETRY_DELAY).
const MIN_RATE_PER_SECOND: f64 = 1.0 / 3600.0;

/// Walks the authored flow, collecting diagnostics as it goes.
struct Compiler<'a, 'b> {
    source: &'a SourceFile,
    diags: &'a mut Vec<Diagnostic>,
    ctx: &'a Context<'b>,
    /// The flow's declared secrets, once read.
    secrets: Vec<SecretDecl>,
    /// Every `${env.…}` met so far.
    env_uses: Vec<EnvUse>,
    /// Each component the steps use, as described (once: a hundred steps of
    /// one component took 35 ms and 2 MB each to describe and compile it).
    described: Vec<(super::model::ComponentRef, step::Described)>,
}

impl Compiler<'_, '_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::new(span, message).hint(hint));
    }

    /// Whether `name` (`what`: "param name", "step id", …) is letters,
    /// digits, `-` and `_`; a name that is not is refused at it, with
    /// `hint`. Returns whether it was valid.
    fn valid_name(&mut self, name: &Spanned<String>, what: &str, hint: &str) -> bool {
        let valid = is_identifier(name.get_ref());
        if !valid {
            self.error(
                name.span(),
                format!("{what} `{}` is not valid", name.get_ref()),
                hint,
            );
        }
        valid
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::catalog::{CatalogError, Description};
    use super::super::model::ComponentRef;
    use super::super::remote::NoRegistry;
    use super::super::{LoadError, SourceFile, compile_source};
    use super::*;

    /// Built-ins: `lister`, which describes its output (and takes any
    /// input), and `plain`, which exports no `describe`.
    struct Catalog;

    impl ComponentCatalog for Catalog {
        fn describe(&self, c: &ComponentRef) -> Result<Option<Description>, CatalogError> {
            Ok(match c {
                ComponentRef::Builtin(name) if name == "lister" => Some(Description {
                    name: "lister".into(),
                    version: "1.0.0".into(),
                    summary: "lists".into(),
                    input_schema: json!({"type": "object"}),
                    output_schema: json!({
                        "type": "object",
                        "properties": {
                            "count": {"type": "integer"},
                            "names": {"type": "array", "items": {"type": "string"}},
                            "info": {
                                "type": "object",
                                "properties": {"a": {"type": "string"}},
                                "additionalProperties": false
                            }
                        },
                        "additionalProperties": false
                    }),
                    connections: Vec::new(),
                }),
                _ => None,
            })
        }
    }

    /// [`Catalog`], counting what it is asked; `broken` cannot be used.
    #[derive(Default)]
    struct Counting {
        asked: std::sync::Mutex<Vec<String>>,
    }

    impl ComponentCatalog for Counting {
        fn describe(&self, c: &ComponentRef) -> Result<Option<Description>, CatalogError> {
            self.asked.lock().unwrap().push(c.to_string());
            match c {
                ComponentRef::Builtin(name) if name == "broken" => {
                    Err(CatalogError::new("it is broken", "mend it"))
                }
                _ => Catalog.describe(c),
            }
        }
    }

    /// Each problem of `flow` as `LINE:COLUMN message`, in file order.
    fn problems(flow: &str) -> Vec<String> {
        problems_with(flow, &Catalog)
    }

    fn problems_with(flow: &str, catalog: &dyn ComponentCatalog) -> Vec<String> {
        problems_given(flow, catalog, &[])
    }

    /// Each problem of `flow` run with `--param` `overrides`.
    fn problems_given(
        flow: &str,
        catalog: &dyn ComponentCatalog,
        overrides: &[(String, String)],
    ) -> Vec<String> {
        let ctx = Context {
            builtins: &["lister", "plain", "broken"],
            catalog,
            param_overrides: overrides,
            remote: &NoRegistry,
        };
        let source = SourceFile::new("f.toml", flow);
        match compile_source(source.clone(), &ctx) {
            Ok(_) => Vec::new(),
            Err(LoadError::Invalid(d)) => d
                .items
                .iter()
                .map(|d| {
                    let (line, col) = source.line_col(d.span.start);
                    format!("{line}:{col} {}", d.message)
                })
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }

    fn flow(steps: &str) -> String {
        format!("name = \"t\"\n[params]\nlist = [1]\nobj = {{ a = 1 }}\n{steps}")
    }

    /// Each component is described once however many steps use it (a
    /// hundred steps of one took 35 ms and 2 MB each), and one that cannot
    /// be used is reported at every step that uses it.
    #[test]
    fn each_component_is_described_once_and_its_problem_told_at_each_use() {
        let catalog = Counting::default();
        let step = |id: &str, uses: &str| format!("[[step]]\nid = \"{id}\"\nuses = \"{uses}\"\n");
        let steps = [
            step("a", "lister"),
            step("b", "broken"),
            step("c", "lister"),
            step("d", "broken"),
            step("e", "lister"),
        ];
        let got = problems_with(&flow(&steps.concat()), &catalog);
        assert_eq!(
            got,
            [
                "10:8 component `broken` cannot be used: it is broken",
                "16:8 component `broken` cannot be used: it is broken",
            ]
        );
        assert_eq!(*catalog.asked.lock().unwrap(), ["lister", "broken"]);
    }

    /// `when = []` would always hold (all of no conditions), though `[]`
    /// as a condition's value is false: refused, not guessed.
    #[test]
    fn a_when_listing_no_condition_is_refused() {
        let got = problems(&flow("[[step]]\nid = \"a\"\nuses = \"plain\"\nwhen = []\n"));
        assert_eq!(got, ["8:8 `when = []` lists no condition"]);
        let one = "[[step]]\nid = \"a\"\nuses = \"plain\"\nwhen = [\"${params.list}\"]\n";
        assert_eq!(problems(&flow(one)), Vec::<String>::new());
    }

    /// An artifact must be a file name the run can write: a folder or a
    /// leading dot is refused, and so is a name longer than file systems
    /// take (it passed, and its run failed after the step had run).
    #[test]
    fn an_artifact_name_must_be_a_file_name_the_run_can_write() {
        let long = "a".repeat(256);
        for (name, said) in [
            ("../report.html", "must be a plain file name"),
            (".hidden", "must be a plain file name"),
            (long.as_str(), "artifact name is 256 bytes long"),
        ] {
            let got = problems(&flow(&format!(
                "[[step]]\nid = \"a\"\nuses = \"plain\"\nartifacts = {{ \"{name}\" = \"out\" }}\n"
            )));
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            assert!(got[0].contains(said), "{name}: {got:?}");
        }
        let fits = "a".repeat(255);
        let got = problems(&flow(&format!(
            "[[step]]\nid = \"a\"\nuses = \"plain\"\nartifacts = {{ \"{fits}\" = \"out\" }}\n"
        )));
        assert!(!got.iter().any(|p| p.contains("bytes long")), "{got:?}");
    }

    /// Two steps writing one artifact file: the later file replaced the
    /// earlier without a word, and the run reported the same path twice.
    #[test]
    fn two_steps_may_not_write_the_same_artifact() {
        let step = |id: &str, file: &str| {
            format!(
                "[[step]]\nid = \"{id}\"\nuses = \"plain\"\nartifacts = {{ \"{file}\" = \"out\" }}\n"
            )
        };
        let got = problems(&flow(&(step("a", "r.html") + &step("b", "r.html"))));
        assert_eq!(
            got,
            ["12:15 artifact `r.html` is written by an earlier step too"],
            "{got:?}"
        );
        let apart = step("a", "r.html") + &step("b", "s.html");
        assert_eq!(problems(&flow(&apart)), Vec::<String>::new());
        // Ignoring case, as some file systems do.
        let cased = step("a", "r.html") + &step("b", "R.html");
        assert_eq!(problems(&flow(&cased)).len(), 1);
        // Steps with a `when` may write it in turn (a skipped step, or a
        // null field, writes no file).
        let turns = step("a", "r.html")
            + &step("b", "r.html").replace("uses", "when = \"${params.list}\"\nuses");
        assert_eq!(problems(&flow(&turns)), Vec::<String>::new());
    }

    #[test]
    fn a_step_with_a_wrong_key_is_still_known_to_later_steps() {
        for wrong in [
            "timeout = 30",
            "on_error = \"ignore\"",
            "retry = 3",
            "for_each = [1, 2, 3]",
            "uses = 5",
            "concurency = 2",
        ] {
            let got = problems(&flow(&format!(
                "[[step]]\nid = \"a\"\nuses = \"plain\"\n{wrong}\n\
                 [[step]]\nid = \"b\"\nuses = \"plain\"\nwith = {{ x = \"${{steps.a.out}}\" }}\n"
            )));
            assert_eq!(got.len(), 1, "{wrong}: {got:?}");
            assert!(!got[0].contains("no step"), "{wrong}: {got:?}");
        }
    }

    #[test]
    fn a_param_name_a_reference_could_not_name_is_refused() {
        let got = problems(
            "name = \"t\"\n[params]\n\"a.b\" = 1\n\"\" = 2\nok-name_2 = 3\n\
             [[step]]\nid = \"a\"\nuses = \"plain\"\n",
        );
        assert_eq!(
            got,
            [
                "3:1 param name `a.b` is not valid",
                "4:1 param name `` is not valid"
            ]
        );
    }

    /// JSON has no NaN or infinity: such a param was read as null, so
    /// `validate` passed and the step got nothing.
    #[test]
    fn a_float_json_cannot_hold_is_refused_where_it_is_written() {
        let got = problems(
            "name = \"t\"\n[params]\nn = nan\ni = -inf\nbig = 1e400\nok = 2.5\n\
             [[step]]\nid = \"a\"\nuses = \"plain\"\n",
        );
        let said = |at: &str, written: &str| {
            format!(
                "{at} `{written}` is not a number a flow can hold (its values are JSON, which has no NaN or infinity)"
            )
        };
        assert_eq!(
            got,
            [
                said("3:5", "nan"),
                said("4:5", "-inf"),
                said("5:7", "1e400")
            ]
        );
    }

    #[test]
    fn a_param_override_too_large_for_a_whole_number_is_refused() {
        let flow = "name = \"t\"\n[params]\nmax = 1\n[[step]]\nid = \"a\"\nuses = \"plain\"\n";
        let given = |raw: &str| problems_given(flow, &Catalog, &[("max".into(), raw.into())]);
        let too_large = "--param max: `99999999999999999999` is too large for a whole number \
                         (at most 9223372036854775807)";
        // Said where the param is declared.
        assert_eq!(given("99999999999999999999"), [format!("3:1 {too_large}")]);
        assert_eq!(
            given("-99999999999999999999"),
            [
                "3:1 --param max: `-99999999999999999999` is too large for a whole number \
              (at most 9223372036854775807)"
            ]
        );
        // What fits is kept as written; a float written as one stays one.
        for fits in [
            "18446744073709551615",
            "-9223372036854775808",
            "2.5",
            "1e3",
            "\"99999999999999999999\"",
        ] {
            assert_eq!(given(fits), Vec::<String>::new(), "{fits}");
        }
        // A huge name of no param is cut too.
        let name = "N".repeat(100_000);
        let unknown = problems_given(flow, &Catalog, &[(name, "1".into())]);
        assert!(unknown[0].len() < 400, "{}", unknown[0].len());
        assert!(unknown[0].contains("… (100000 characters): the flow has no param"));
        // A huge one is cut in the message (it was printed whole).
        let huge = "9".repeat(100_000);
        assert_eq!(
            given(&huge),
            [format!(
                "3:1 --param max: `{}… (100000 characters)` is too large for a whole number \
                 (at most 9223372036854775807)",
                "9".repeat(60)
            )]
        );
    }

    #[test]
    fn a_broken_list_for_a_list_param_is_refused_not_taken_as_text() {
        let flow = "name = \"t\"\n[params]\nmax = 1\nprefixes = [\"L\"]\nnames = { a = 1 }\n\
                    [[step]]\nid = \"a\"\nuses = \"plain\"\n";
        let given =
            |key: &str, raw: &str| problems_given(flow, &Catalog, &[(key.into(), raw.into())]);
        let broken = given("prefixes", "[");
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(
            broken[0].starts_with("4:1 --param prefixes: `[` is not valid JSON (EOF while parsing"),
            "{broken:?}"
        );
        assert_eq!(given("names", "{a: 1}").len(), 1);
        // Bare text for a list or table param: the JSON to write instead.
        assert_eq!(
            given("prefixes", "License – Microsoft"),
            [
                "4:1 --param prefixes: the flow's `prefixes` is a list, and `License – Microsoft` is text"
            ]
        );
        assert_eq!(given("names", "a").len(), 1);
        // Text for a number param, or a list param's JSON, is as before.
        assert_eq!(given("prefixes", r#"["A", "B"]"#), Vec::<String>::new());
        assert_eq!(given("prefixes", r#""A""#), Vec::<String>::new());
        assert_eq!(given("max", "[draft"), Vec::<String>::new());
    }

    #[test]
    fn a_step_with_a_wrong_key_still_has_its_other_problems_reported() {
        let got = problems(&flow(
            "[[step]]\nid = \"a\"\nuses = \"plain\"\non_error = \"ignore\"\n\
             with = { x = \"${steps.zzz.out}\" }\n\
             [[step]]\nid = \"a\"\nuses = \"plain\"\n",
        ));
        assert_eq!(
            got,
            [
                "8:12 unknown variant `ignore`, expected `fail` or `continue`",
                "9:15 there is no step `zzz` before step `a`",
                "11:6 step id `a` is used twice",
            ]
        );
    }

    /// A step with no readable id (missing, or not a string) has its other
    /// problems reported too, named by its line; nothing can refer to it,
    /// and it does not make a later step's id "used twice".
    #[test]
    fn a_step_without_an_id_still_has_its_other_problems_reported() {
        let got = problems(&flow(
            "[[step]]\nid = 5\nuses = \"plain\"\nconnections = [\"nowhere\"]\ntimeout = \"soon\"\n\
             with = { x = \"${steps.zzz.out}\", y = \"${steps.b.out}\" }\nwhen = \"${item}\"\n\
             [[step]]\nuses = \"plain\"\nconcurrency = 2\n\
             [[step]]\nid = \"b\"\nuses = \"plain\"\n",
        ));
        assert_eq!(
            got,
            [
                "6:6 invalid type: integer `5`, expected a string",
                "8:16 the step on line 5 asks for connection `nowhere`, which the flow does not declare",
                "9:11 `soon` is not a duration: expected number at 0",
                "10:15 there is no step `zzz` before the step on line 5",
                "10:39 the step on line 5 refers to step `b`, which runs later",
                "11:9 `${item}` is only available in a step with `for_each`",
                "12:1 missing field `id`",
                "14:15 `concurrency` only applies to a step with `for_each`",
            ]
        );
    }

    /// `for_each` that could not be read is neither there nor absent:
    /// what needs it is not refused, and what refuses it is not said.
    #[test]
    fn an_unreadable_for_each_is_not_taken_as_absent() {
        let got = problems(&flow(
            "[[step]]\nid = \"a\"\nuses = \"plain\"\nfor_each = [1]\nfor_each_key = \"${item}\"\n\
             approval = { above = 1 }\nconcurrency = 2\nmax_item_output_bytes = 10\n\
             with = { x = \"${item}\" }\n",
        ));
        assert_eq!(got, ["8:12 invalid type: sequence, expected a string"]);
        // Nor is a key an unknown key may have meant.
        let got = problems(&flow(
            "[[step]]\nid = \"a\"\nuses = \"plain\"\nfor_eachh = \"${params.list}\"\n\
             with = { x = \"${item}\" }\n",
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("8:1 unknown key `for_eachh`"), "{got:?}");
    }

    #[test]
    fn a_problem_in_a_step_hides_none_of_its_path_typos() {
        let got = problems(&flow(
            "[[step]]\nid = \"a\"\nuses = \"lister\"\ntimeout = \"0s\"\n\
             with = { x = \"${params.nope}\" }\n\
             [[step]]\nid = \"b\"\nuses = \"lister\"\nwhen = \"${steps.a.cuont}\"\n\
             with = { x = \"${steps.a.nmes}\", y = \"${params.nope}\" }\n",
        ));
        assert_eq!(
            got,
            [
                "8:11 a duration of zero is not allowed",
                "9:15 `params.nope` is not a param of this flow",
                "13:8 step `a` has no output field `cuont`",
                "14:14 step `a` has no output field `nmes`",
                "14:38 `params.nope` is not a param of this flow",
            ]
        );
    }

    /// A step whose id is used twice, or that refers to its own id, is not
    /// typed by the other step of that id.
    #[test]
    fn a_reference_is_typed_only_by_the_one_earlier_step_it_can_name() {
        let got = problems(&flow(
            "[[step]]\nid = \"a\"\nuses = \"lister\"\n\
             [[step]]\nid = \"a\"\nuses = \"plain\"\nwith = { x = \"${steps.a.nope}\" }\n\
             [[step]]\nid = \"c\"\nuses = \"plain\"\nwith = { x = \"${steps.a.nope}\" }\n",
        ));
        assert_eq!(
            got,
            [
                "9:6 step id `a` is used twice",
                "11:15 step `a` refers to its own output",
            ]
        );
    }

    /// A reference spliced into text is checked like a whole one, at its
    /// own column, whether or not the step's component describes its
    /// input; spliced text takes any value, so its type is not checked.
    #[test]
    fn a_spliced_reference_is_checked_like_a_whole_one() {
        let got = problems(&flow(
            "[[step]]\nid = \"a\"\nuses = \"lister\"\n\
             [[step]]\nid = \"b\"\nuses = \"plain\"\n\
             with = { x = \"${steps.a.cont}\", y = \"n=${steps.a.cont}!\", z = [\"${env.E:-${steps.a.info.b}}\"] }\n\
             [[step]]\nid = \"c\"\nuses = \"lister\"\n\
             with = { t = \"${steps.a.count} ${steps.a.names} ${steps.a.info} ${steps.a.names.5}\" }\n",
        ));
        assert_eq!(
            got,
            [
                "11:14 step `a` has no output field `cont`",
                "11:40 step `a` has no output field `cont`",
                "11:74 step `a` has no output field `b`",
            ]
        );
    }

    /// `${run.approvals.ID.STATE}` names a step with `approval` (before or
    /// after the one reading it) and one of its plan's lists: a misspelt
    /// or renamed step read as null, and quietly took the admins'
    /// decisions out of the step reading them.
    #[test]
    fn run_approvals_names_a_step_with_approval_and_a_list_of_its_plan() {
        let read = |refs: &[&str]| {
            let with: Vec<String> = (refs.iter().enumerate())
                .map(|(n, r)| format!("r{n} = \"{r}\""))
                .collect();
            let with = with.join(", ");
            problems(&flow(&format!(
                "[[step]]\nid = \"diff\"\nuses = \"plain\"\nwith = {{ {with} }}\n\
                 [[step]]\nid = \"deactivate\"\nuses = \"lister\"\nfor_each = \"${{params.list}}\"\n\
                 for_each_key = \"${{item}}\"\napproval = \"always\"\n"
            )))
        };
        assert_eq!(
            read(&[
                "${run.approvals.deactivate.rejected}",
                "${run.approvals.deactivate.approved.0}",
                "${run.approvals.deactivate}",
                "${run.approvals}",
            ]),
            Vec::<String>::new()
        );
        assert_eq!(
            read(&[
                "${run.approvals.deactivat.rejected}",
                "${run.approvals.diff.pending}",
                "${run.approvals.deactivate.rejectd}",
            ]),
            [
                "8:16 `${run.approvals.deactivat}` names no step with `approval`",
                "8:60 `${run.approvals.diff}` names no step with `approval`",
                "8:98 `${run.approvals.deactivate.rejectd}` is not a list of the plan",
            ]
        );
        let none = problems(&flow(
            "[[step]]\nid = \"diff\"\nuses = \"plain\"\nwith = { r = \"${run.approvals.deactivate.rejected}\" }\n",
        ));
        assert_eq!(
            none,
            ["8:15 `${run.approvals.deactivate}` names no step with `approval`"]
        );
    }

    /// `for_each` over what is known not to be a list is refused where it
    /// is written; what may be a list, or null, is not.
    #[test]
    fn for_each_over_what_is_known_not_to_be_a_list_is_refused() {
        let step = |n: usize, list: &str| {
            format!(
                "[[step]]\nid = \"s{n}\"\nuses = \"plain\"\nfor_each = \"{list}\"\nwith = {{ x = \"${{item.x}}\" }}\n"
            )
        };
        let refused = [
            ("${params.obj}", "`${params.obj}` is an object"),
            ("${params.obj.a}", "`${params.obj.a}` is an integer"),
            (
                "${env.LIST}",
                "`${env.LIST}` (environment variables are text) is a string",
            ),
            ("${run.id}", "`${run.id}` (a run field) is a string"),
            (
                "${steps.a.count}",
                "`${steps.a.count}` (output of `lister`) is an integer",
            ),
            (
                "${steps.a}",
                "`${steps.a}` (output of `lister`) is an object",
            ),
            // Null when skipped, and an integer when not.
            (
                "${steps.maybe.count}",
                "`${steps.maybe.count}` (output of `lister`) is an integer",
            ),
        ];
        let fine = [
            "${params.list}",
            "${params.obj.nothing}",
            "${steps.a.names}",
            "${steps.maybe.names}",
            "${steps.each}",
            "${steps.plain.x}",
            "${run.approvals.gate.pending}",
        ];
        let mut text = flow(
            "[[step]]\nid = \"gate\"\nuses = \"lister\"\nfor_each = \"${params.list}\"\n\
             for_each_key = \"${item}\"\napproval = \"always\"\n\
             [[step]]\nid = \"a\"\nuses = \"lister\"\n\
             [[step]]\nid = \"maybe\"\nuses = \"lister\"\nwhen = \"${steps.a.count}\"\n\
             [[step]]\nid = \"each\"\nuses = \"lister\"\nfor_each = \"${params.list}\"\n\
             [[step]]\nid = \"plain\"\nuses = \"plain\"\n",
        );
        for (n, list) in refused.iter().map(|(l, _)| *l).chain(fine).enumerate() {
            text.push_str(&step(n, list));
        }
        let got: Vec<String> = problems(&text)
            .into_iter()
            .map(|p| p.split_once(' ').unwrap().1.to_string())
            .collect();
        let mut expected: Vec<String> = refused
            .iter()
            .map(|(_, what)| format!("`for_each` must be a list, but {what}"))
            .collect();
        // `names` is a list of texts: `${item.x}` reads nothing from them.
        expected.extend(vec![
            "`item` is a text, which has no field `x`".to_string();
            2
        ]);
        assert_eq!(got, expected);
    }

    /// `approval.above` and `for_each` read a param the same way: in full,
    /// through its path.
    #[test]
    fn an_approval_threshold_param_is_read_through_its_path() {
        let got = problems(&flow(
            "[[step]]\nid = \"a\"\nuses = \"plain\"\nfor_each = \"${params.list}\"\n\
             for_each_key = \"${item}\"\napproval = { above = \"${params.obj.b}\" }\n\
             [[step]]\nid = \"b\"\nuses = \"plain\"\nfor_each = \"${params.list}\"\n\
             for_each_key = \"${item}\"\napproval = { above = \"${params.obj.a}\" }\n",
        ));
        assert_eq!(
            got,
            ["10:22 `params.obj.b` is null, but `above` needs a whole number from 0 up"]
        );
    }
}
