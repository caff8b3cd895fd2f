//! Every broken flow in `tests/flows/invalid/` is rejected by
//! `sluice validate` with exit status 2 and exactly the message stored
//! beside it in `NAME.expected` (file:line:column, the line, a caret, a
//! hint), with no environment variable set. A flow whose first line is
//! `# validate --env` is validated with `--env` (its problems are found
//! when it is bound to that empty environment). Run with `SLUICE_BLESS=1`
//! to rewrite the expected files after an intended change, then review the
//! diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn invalid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/flows/invalid")
}

fn validate(dir: &Path, file: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    sluice(dir, &["validate", file], env)
}

/// Runs `sluice ARGS` in `dir` with exactly the variables `env`.
fn sluice(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.current_dir(dir).env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_broken_flow_is_reported_with_its_location_and_a_hint() {
    let dir = invalid_dir();
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("read invalid flows")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected one broken flow per error class, found {files:?}"
    );
    let mut mismatches = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let args: &[&str] = if text.starts_with("# validate --env") {
            &["validate", "--env", file]
        } else {
            &["validate", file]
        };
        let (code, stdout, stderr) = sluice(&dir, args, &[]);
        assert_eq!(
            code, 2,
            "{file}: exit status {code}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(stdout.is_empty(), "{file}: printed on stdout: {stdout}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{file}: {stderr}"
        );
        let expected_path = dir.join(file.replace(".toml", ".expected"));
        if bless {
            std::fs::write(&expected_path, &stderr).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != stderr {
            mismatches.push(format!(
                "--- {file}: expected\n{expected}\n--- got\n{stderr}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches (SLUICE_BLESS=1 to update):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn all_problems_of_a_file_are_reported_at_once() {
    let (code, _, stderr) = validate(&invalid_dir(), "many_problems.toml", &[]);
    assert_eq!(code, 2);
    for needle in [
        "many_problems.toml:2:21",
        "`graph-grups` is not a built-in component",
        "asks for connection `graph`",
        "`params.prefixes` is not a param",
        "step id `groups` is used twice",
        "refers to step `later`, which runs later",
        "a duration of zero is not allowed",
        "the cron expression does not parse",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(
        stderr
            .trim_end()
            .ends_with("7 problems found; nothing was run"),
        "{stderr}"
    );
}

/// `run --json` on a flow that is not run says so on stdout too: one
/// `run_not_started` event with every problem where it is, so a script
/// reading the stream never reads nothing.
#[test]
fn run_json_on_a_broken_flow_says_on_stdout_that_it_did_not_start() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_string_lossy().into_owned();
    let args = [
        "--data-dir",
        &data_dir,
        "run",
        "--json",
        "many_problems.toml",
    ];
    let (code, stdout, stderr) = sluice(&invalid_dir(), &args, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("7 problems found"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["event"], "run_not_started");
    assert_eq!(
        event["error"],
        "many_problems.toml: 7 problems found; nothing was run"
    );
    let problems = event["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 7, "{event:#}");
    assert_eq!(
        (&problems[0]["line"], &problems[0]["column"]),
        (&serde_json::json!(2), &serde_json::json!(21)),
        "{event:#}"
    );
    // A file that cannot be read: no problems to place, the reason.
    let args = ["--data-dir", &data_dir, "run", "--json", "no-such.toml"];
    let (code, stdout, _) = sluice(&invalid_dir(), &args, &[]);
    assert_eq!(code, 2);
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot read flow file no-such.toml"),
        "{event:#}"
    );
    assert_eq!(event["problems"], serde_json::json!([]));
    // A valid flow the host cannot run (a memory budget that is no size).
    let flow = data.path().join("ok.toml");
    std::fs::write(
        &flow,
        "name = \"ok\"\n[[step]]\nid = \"diff\"\nuses = \"compare\"\nwith = { people = [], procore_users = [] }\n",
    )
    .unwrap();
    let flow = flow.to_string_lossy().into_owned();
    let args = ["--data-dir", &data_dir, "run", "--json", &flow];
    let (code, stdout, _) = sluice(data.path(), &args, &[("SLUICE_MEMORY_BUDGET", "lots")]);
    assert_eq!(code, 1);
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(event["event"], "run_not_started");
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .starts_with("flow `ok` was not run: SLUICE_MEMORY_BUDGET=lots is not a size"),
        "{event:#}"
    );
}

const SHIPPED_ENV: [(&str, &str); 6] = [
    ("GRAPH_TENANT_ID", "contoso"),
    ("GRAPH_CLIENT_ID", "graph-app"),
    ("GRAPH_CLIENT_SECRET", "graph-secret-value"),
    ("PROCORE_CLIENT_ID", "procore-app"),
    ("PROCORE_CLIENT_SECRET", "procore-secret-value"),
    ("PROCORE_COMPANY_ID", "42"),
];

fn shipped_flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows")
}

#[test]
fn the_shipped_flow_validates_with_no_environment_variables_set() {
    let (code, stdout, stderr) = validate(&shipped_flows(), "procore-license-sync.toml", &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(
        stdout.contains("flow `procore-license-sync` is valid (10 steps"),
        "{stdout}"
    );
    assert!(stdout.contains("America/Los_Angeles"), "{stdout}");
    // It names what `--env` would check: exactly the variables it reads.
    assert!(
        stdout.contains(
            "reads GRAPH_BASE_URL, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, GRAPH_TENANT_ID, \
             GRAPH_TOKEN_URL, PROCORE_BASE_URL, PROCORE_CLIENT_ID, PROCORE_CLIENT_SECRET, \
             PROCORE_COMPANY_ID, PROCORE_PERMISSION_TEMPLATE_ID, PROCORE_PROJECT_ID, \
             PROCORE_TOKEN_URL, REPORT_MAIL_FROM, REPORT_MAIL_TO;"
        ),
        "{stdout}"
    );
}

/// The shipped flow's duration params are checked by `validate` against
/// the built-ins' input schemas, before any run reads a tenant: a value
/// that is not a duration is named with the line that uses it and what the
/// component says it takes.
#[test]
fn the_shipped_flows_durations_are_checked_before_anything_runs() {
    let text = std::fs::read_to_string(shipped_flows().join("procore-license-sync.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Validates the flow with its two duration params' defaults replaced.
    let check = |grace: &str, every: &str| {
        let mut changed = text.clone();
        for (param, value) in [("leaver_grace", grace), ("full_sync_every", every)] {
            let default = text
                .lines()
                .find(|l| l.starts_with(&format!("{param} = ")))
                .unwrap();
            changed = changed.replace(default, &format!("{param} = {value:?}"));
        }
        std::fs::write(dir.path().join("f.toml"), changed).unwrap();
        validate(dir.path(), "f.toml", &[])
    };
    let refused = |param: &str, step: &str, value: &str, stderr: &str| {
        assert!(
            stderr.contains(&format!(
                "`with.{param}` = {value:?} is not in the form `{step}` takes"
            )),
            "{stderr}"
        );
    };
    for (grace, every) in [("abc", "-1s"), ("99999999999999999999d", "12 parsecs")] {
        let (code, _, stderr) = check(grace, every);
        assert_eq!(code, 2, "{stderr}");
        refused("leaver_grace", "compare", grace, &stderr);
        refused("full_sync_every", "graph-group-members", every, &stderr);
        assert!(stderr.contains("f.toml: 2 problems found"), "{stderr}");
        // The hint is the component's own description of the param.
        assert!(stderr.contains("hint: `compare` says of `with.leaver_grace`: How long"));
    }
    for (grace, every) in [("1h 30min", "1.5h"), ("", "90 minutes"), ("0", "1h30m")] {
        let (code, _, stderr) = check(grace, every);
        assert_eq!(code, 0, "{grace:?} {every:?}: {stderr}");
    }
    // Blank keeps the grace at none; a full read's interval needs a value.
    let (code, _, stderr) = check("3days", "");
    assert_eq!(code, 2, "{stderr}");
    refused("full_sync_every", "graph-group-members", "", &stderr);
}

/// A `managed_domains` entry that can match nobody (blank, a wildcard, a
/// suffix) is refused before anything runs: it used to turn the domain's
/// management off without a word.
#[test]
fn the_shipped_flows_managed_domains_are_whole_domains() {
    let text = std::fs::read_to_string(shipped_flows().join("procore-license-sync.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let check = |domains: &str| {
        let changed = text.replace(
            "\nmanaged_domains = []\n",
            &format!("\nmanaged_domains = {domains}\n"),
        );
        assert_ne!(changed, text);
        std::fs::write(dir.path().join("f.toml"), changed).unwrap();
        validate(dir.path(), "f.toml", &[])
    };
    for (domains, bad) in [
        (r#"["*"]"#, "*"),
        (r#"["contoso.com", ""]"#, ""),
        (r#"[".com"]"#, ".com"),
    ] {
        let (code, _, stderr) = check(domains);
        assert_eq!(code, 2, "{domains}: {stderr}");
        let at = if bad.is_empty() { 1 } else { 0 };
        assert!(
            stderr.contains(&format!(
                "`with.managed_domains.{at}` = {bad:?} is not in the form `compare` takes"
            )),
            "{stderr}"
        );
        assert!(stderr.contains("no wildcard, no leading dot"), "{stderr}");
    }
    for domains in [r#"["contoso.com"]"#, r#"["@Contoso.COM", "bücher.de"]"#] {
        let (code, _, stderr) = check(domains);
        assert_eq!(code, 0, "{domains}: {stderr}");
    }
}

#[test]
fn validate_env_binds_the_shipped_flow_to_its_environment() {
    let flows = shipped_flows();
    let (code, stdout, stderr) = sluice(
        &flows,
        &["validate", "--env", "procore-license-sync.toml"],
        &SHIPPED_ENV,
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("is valid") && stdout.contains("bound to this environment"));
    assert!(!stdout.contains("graph-secret-value") && !stderr.contains("graph-secret-value"));
    // Without them, every missing variable and secret is named at once.
    let (code, _, stderr) = sluice(
        &flows,
        &["validate", "--env", "procore-license-sync.toml"],
        &[],
    );
    assert_eq!(code, 2);
    for var in [
        "GRAPH_CLIENT_ID",
        "PROCORE_CLIENT_ID",
        "PROCORE_COMPANY_ID",
        "GRAPH_TENANT_ID",
    ] {
        assert!(
            stderr.contains(&format!("environment variable {var} is not set")),
            "{var} not reported:\n{stderr}"
        );
    }
    for (secret, var) in [
        ("graph_client_secret", "GRAPH_CLIENT_SECRET"),
        ("procore_client_secret", "PROCORE_CLIENT_SECRET"),
    ] {
        assert!(
            stderr.contains(&format!("secret `{secret}` reads {var}, which is not set")),
            "{secret} not reported:\n{stderr}"
        );
    }
    // A variable the flow uses five times is one problem, with the lines
    // of its other uses.
    assert_eq!(
        stderr
            .matches("environment variable PROCORE_COMPANY_ID is not set")
            .count(),
        1,
        "{stderr}"
    );
    let text = std::fs::read_to_string(flows.join("procore-license-sync.toml")).unwrap();
    let uses: Vec<String> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("${env.PROCORE_COMPANY_ID}"))
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    assert_eq!(uses.len(), 5);
    let others = format!("{} and {}", uses[1..4].join(", "), uses[4]);
    assert!(
        stderr.contains(&format!("(it is also needed on lines {others})")),
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("6 problems found; nothing was run"),
        "{stderr}"
    );
}

/// A variable the flow needs, set to nothing (`X=` in a file of
/// variables), is refused like an unset one: before, validate passed and
/// the run failed in a step ("`company_id` is empty") without saying which
/// variable, or built `…microsoftonline.com//oauth2…`. A secret of blanks
/// only is empty too.
#[test]
fn a_needed_variable_set_to_nothing_is_refused() {
    let flows = shipped_flows();
    let mut env: Vec<(&str, &str)> = SHIPPED_ENV
        .iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "PROCORE_COMPANY_ID" | "GRAPH_TENANT_ID" | "GRAPH_CLIENT_SECRET"
            )
        })
        .copied()
        .collect();
    env.extend([
        ("PROCORE_COMPANY_ID", ""),
        ("GRAPH_TENANT_ID", "  "),
        // Blanks only would redact every run of blanks in output.
        ("GRAPH_CLIENT_SECRET", "          "),
    ]);
    let (code, _, stderr) = sluice(
        &flows,
        &["validate", "--env", "procore-license-sync.toml"],
        &env,
    );
    assert_eq!(code, 2, "{stderr}");
    for var in ["PROCORE_COMPANY_ID", "GRAPH_TENANT_ID"] {
        assert!(
            stderr.contains(&format!("environment variable {var} is empty")),
            "{var} not reported:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("write `${{env.{var}:-}}` where nothing is meant")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("secret `graph_client_secret` reads GRAPH_CLIENT_SECRET, which is empty"),
        "{stderr}"
    );
    // A variable with a default may be empty (PROCORE_PROJECT_ID:-).
    let mut env: Vec<(&str, &str)> = SHIPPED_ENV.to_vec();
    env.push(("PROCORE_PROJECT_ID", ""));
    let (code, _, stderr) = sluice(
        &flows,
        &["validate", "--env", "procore-license-sync.toml"],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
}

/// A secret pasted into a URL variable by mistake is not printed with the
/// error that says the URL is invalid.
#[test]
fn a_secret_in_the_wrong_variable_is_not_printed_with_its_error() {
    let secret = "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6vX8zY0";
    let mut env: Vec<(&str, &str)> = SHIPPED_ENV
        .iter()
        .filter(|(k, _)| *k != "PROCORE_CLIENT_SECRET")
        .copied()
        .collect();
    env.extend([
        ("PROCORE_CLIENT_SECRET", secret),
        ("PROCORE_TOKEN_URL", secret),
        (
            "PROCORE_BASE_URL",
            "ftp://x/Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6vX8zY0",
        ),
    ]);
    let (code, stdout, stderr) = sluice(
        &shipped_flows(),
        &["validate", "--env", "procore-license-sync.toml"],
        &env,
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("[redacted]"), "{stderr}");
    assert!(
        !stdout.contains(&secret[..10]) && !stderr.contains(&secret[..10]),
        "{stdout}{stderr}"
    );

    // Nor one given as a `--param` that a component's input refuses
    // (an audit's: the refusal quoted the value).
    let mut env: Vec<(&str, &str)> = SHIPPED_ENV
        .iter()
        .filter(|(k, _)| *k != "GRAPH_CLIENT_SECRET")
        .copied()
        .collect();
    env.push(("GRAPH_CLIENT_SECRET", secret));
    let grace = format!("leaver_grace={secret}");
    let data = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = sluice(
        &shipped_flows(),
        &[
            "--data-dir",
            data.path().to_str().unwrap(),
            "run",
            "procore-license-sync.toml",
            "--dry-run",
            "--param",
            &grace,
        ],
        &env,
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("`with.leaver_grace` = \"[redacted]\" is not in the form"),
        "{stderr}"
    );
    assert!(
        !stdout.contains(&secret[..10]) && !stderr.contains(&secret[..10]),
        "{stdout}{stderr}"
    );
}

/// A secret too short to tell apart from ordinary text could not be kept
/// out of output, so the flow is refused where the secret is declared,
/// and the value is not printed.
#[test]
fn a_secret_too_short_to_redact_is_refused_where_it_is_declared() {
    let short = "Zq7";
    let flows = shipped_flows();
    let validate_with_secret = |secret: &str| {
        let mut env: Vec<(&str, &str)> = SHIPPED_ENV
            .iter()
            .filter(|(k, _)| *k != "PROCORE_CLIENT_SECRET")
            .copied()
            .collect();
        env.push(("PROCORE_CLIENT_SECRET", secret));
        sluice(
            &flows,
            &["validate", "--env", "procore-license-sync.toml"],
            &env,
        )
    };
    let (code, stdout, stderr) = validate_with_secret(short);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let text = std::fs::read_to_string(flows.join("procore-license-sync.toml")).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("procore_client_secret"))
        .unwrap();
    assert!(
        stderr.contains(&format!("procore-license-sync.toml:{line}:")),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "secret `procore_client_secret` reads PROCORE_CLIENT_SECRET, whose value is shorter than 8 characters"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("set PROCORE_CLIENT_SECRET to the real credential"),
        "{stderr}"
    );
    assert!(
        !stdout.contains(short) && !stderr.contains(short),
        "{stdout}{stderr}"
    );
    // Seven characters are still too few (its hex and base64 would match
    // ids by chance); eight are enough: the flow binds.
    let (code, stdout, stderr) = validate_with_secret("Zq7wK9p");
    assert_eq!(code, 2, "{stdout}{stderr}");
    let (code, stdout, stderr) = validate_with_secret("Zq7wK9pL");
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// A secret read from a file often ends with a newline; as a bearer token
/// it passed validation, then every request failed with a transport error
/// naming nothing. It is refused where it is used, with its variable, and
/// its value is never printed.
#[test]
fn a_secret_that_cannot_be_sent_in_its_header_is_refused_where_it_is_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        r#"name = "echo"

[secrets]
k = { env = "ECHO_KEY" }

[connections.echo]
base_url = "https://example.com"
auth.bearer = { token = "${secrets.k}" }
headers = { X-Api-Key = "${secrets.k}", X-Other = "a-${env.OTHER}" }

[[step]]
id = "a"
uses = "html-report"
"#,
    )
    .unwrap();
    let key = "Kx9-bearer-value-7Qz";
    let with_newline = format!("{key}\n");
    let env = [("ECHO_KEY", with_newline.as_str()), ("OTHER", "plain")];
    let (code, stdout, stderr) = sluice(dir.path(), &["validate", "--env", "f.toml"], &env);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("error: the bearer token contains a line break\n  --> f.toml:8:25\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: header `X-Api-Key` contains a line break\n  --> f.toml:9:25\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: remove CR/LF from the value; it is read from ECHO_KEY (secret `k`)"),
        "{stderr}"
    );
    assert!(!stdout.contains(key) && !stderr.contains(key), "{stderr}");
    // A variable spliced into a header is named too.
    let env = [("ECHO_KEY", key), ("OTHER", "caf\u{e9}")];
    let (code, _, stderr) = sluice(dir.path(), &["validate", "--env", "f.toml"], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "error: header `X-Other` has a value HTTP does not allow\n  --> f.toml:9:51\n"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("it is read from OTHER"), "{stderr}");
    assert!(!stderr.contains(key), "{stderr}");
    let env = [("ECHO_KEY", key), ("OTHER", "plain")];
    let (code, _, stderr) = sluice(dir.path(), &["validate", "--env", "f.toml"], &env);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn non_ascii_text_inside_references_validates() {
    let dir = tempfile::tempdir().unwrap();
    // A component without `describe`: any input is its to judge.
    let component = sluice_builtins::fixture("contract-0-2").expect("fixture contract-0-2");
    std::fs::write(
        dir.path().join("flow.toml"),
        format!(
            r#"name = "dash"
[params]
prefixes = ["License – Microsoft"]

[[step]]
id = "echo"
uses = "{component}"
with = {{ subject = "${{env.SUBJECT:-License – Microsoft}}", nested = "é ${{env.A:-😀 ${{env.B:-ü}}}} ß", people = "${{params.prefixes}}", procore_users = [] }}
"#
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = validate(dir.path(), "flow.toml", &[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("flow `dash` is valid"), "{stdout}");
}

/// A flow whose `with.x` nests `levels` `${env.A:-…}` defaults.
fn nested_defaults_flow(dir: &Path, levels: usize) {
    let component = sluice_builtins::fixture("contract-0-2").expect("fixture contract-0-2");
    let x = format!("{}x{}", "${env.A:-".repeat(levels), "}".repeat(levels));
    std::fs::write(
        dir.join("nested.toml"),
        format!("name = \"nested\"\n[[step]]\nid = \"a\"\nuses = \"{component}\"\nwith = {{x=\"{x}\"}}\n"),
    )
    .unwrap();
}

/// Defaults nested thousands deep overflowed the stack and aborted the
/// process (`sluice serve` with it); past the limit they are an error at
/// the reference that goes too deep.
#[test]
fn defaults_nested_too_deep_are_refused_where_they_go_too_deep() {
    let dir = tempfile::tempdir().unwrap();
    nested_defaults_flow(dir.path(), 20_000);
    let (code, stdout, stderr) = validate(dir.path(), "nested.toml", &[]);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr:.2000}");
    assert!(
        !stderr.contains("overflow") && !stderr.contains("panicked"),
        "{stderr:.2000}"
    );
    // `with = {x="` is 11 characters; each `${env.A:-` is 9, and the 33rd
    // is the first refused.
    assert!(
        stderr.starts_with(
            "error: `${env.A:-…}` nests defaults more than 32 levels deep\n  --> nested.toml:5:300\n"
        ),
        "{stderr:.2000}"
    );
    assert!(
        stderr.contains("hint: nest at most 32 `${env.X:-…}` defaults inside one another"),
        "{stderr:.2000}"
    );
    // 32 levels are allowed.
    nested_defaults_flow(dir.path(), 32);
    let (code, _, stderr) = validate(dir.path(), "nested.toml", &[]);
    assert_eq!(code, 0, "{stderr:.2000}");
    nested_defaults_flow(dir.path(), 33);
    let (code, _, stderr) = validate(dir.path(), "nested.toml", &[]);
    assert_eq!(code, 2, "{stderr:.2000}");
}

#[test]
fn a_root_with_a_trailing_slash_does_not_double_the_base_path() {
    let builtins = sluice_builtins::names();
    let env: std::collections::BTreeMap<String, String> = SHIPPED_ENV
        .iter()
        .chain(&[("PROCORE_BASE_URL", "http://127.0.0.1:9000/")])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ctx = sluice::flow::Context {
        builtins: &builtins,
        catalog: &sluice::flow::Undescribed,
        param_overrides: &[],
        remote: &sluice::flow::NoRegistry,
    };
    let path = shipped_flows().join("procore-license-sync.toml");
    let flow = sluice::flow::load(&path, &ctx, &env).unwrap();
    assert_eq!(
        flow.connections["procore"].base_url.as_str(),
        "http://127.0.0.1:9000/rest/v1.0"
    );
}

/// A catalog read from `tests/flows/described/catalog.json`: what the
/// built-ins say about themselves through `describe`, written by hand, so
/// that the checks which need descriptions are tested on their own.
struct JsonCatalog(std::collections::BTreeMap<String, sluice::flow::Description>);

impl sluice::flow::ComponentCatalog for JsonCatalog {
    fn describe(
        &self,
        component: &sluice::flow::ComponentRef,
    ) -> Result<Option<sluice::flow::Description>, sluice::flow::CatalogError> {
        Ok(match component {
            sluice::flow::ComponentRef::Builtin(name) => self.0.get(name).cloned(),
            sluice::flow::ComponentRef::File(_) => None,
        })
    }
}

fn described_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/flows/described")
}

/// Compiles `file` (in `tests/flows/described/`) against the JSON catalog,
/// with no environment: the rendered problems, or `None` when it compiles.
fn compile_described(file: &str) -> Option<String> {
    let dir = described_dir();
    let catalog: std::collections::BTreeMap<String, sluice::flow::Description> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("catalog.json")).unwrap()).unwrap();
    let names: Vec<&str> = catalog.keys().map(String::as_str).collect();
    let catalog = JsonCatalog(catalog.clone());
    let ctx = sluice::flow::Context {
        builtins: &names,
        catalog: &catalog,
        param_overrides: &[],
        remote: &sluice::flow::NoRegistry,
    };
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let source = sluice::flow::SourceFile::new(file, text);
    sluice::flow::compile_source(source, &ctx)
        .err()
        .map(|e| e.to_string())
}

/// Each flow of `tests/flows/described/` but `fits.toml` is refused with
/// exactly the problems stored beside it (`SLUICE_BLESS=1` rewrites them).
#[test]
fn inputs_that_do_not_fit_their_schema_and_unknown_roles_are_reported_where_written() {
    let dir = described_dir();
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut mismatches = Vec::new();
    for file in [
        "schema_literal.toml",
        "schema_reference.toml",
        "unknown_role.toml",
    ] {
        let got = compile_described(file).unwrap_or_default() + "\n";
        let expected_path = dir.join(file.replace(".toml", ".expected"));
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != got {
            mismatches.push(format!("--- {file}: expected\n{expected}\n--- got\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_schema_mismatch_names_the_key_its_line_and_column_and_the_type_expected() {
    let text = compile_described("schema_literal.toml").unwrap();
    assert!(
        text.contains(
            "error: `with.company_id` must be an integer or a string, not a boolean (input of `procore-users`)\n  --> schema_literal.toml:10:10"
        ),
        "{text}"
    );
    let text = compile_described("schema_reference.toml").unwrap();
    assert!(
        text.contains(
            "error: `with.people` must be an array, but `${steps.groups.count}` (output of `graph-groups`) is an integer\n  --> schema_reference.toml:18:10"
        ),
        "{text}"
    );
    let text = compile_described("unknown_role.toml").unwrap();
    assert!(
        text.contains(
            "error: component `graph-groups` has no connection role `mail`\n  --> unknown_role.toml:12:17"
        ),
        "{text}"
    );
}

#[test]
fn a_flow_that_fits_its_components_schemas_compiles_with_no_environment() {
    assert_eq!(compile_described("fits.toml"), None);
}

/// A component built for the 0.1 contract is refused by `sluice validate`
/// (the engine loads each component to read its `describe`), at its `uses`,
/// naming the version it targets and the one the host speaks.
#[test]
fn a_component_built_for_0_1_is_refused_at_its_uses_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let old = sluice_builtins::fixture("contract-0-1").expect("fixture contract-0-1 was built");
    std::fs::copy(old, dir.path().join("old.wasm")).unwrap();
    let flow = "name = \"old\"\n\n[[step]]\nid = \"old\"\nuses = \"old.wasm\"\n";
    std::fs::write(dir.path().join("old.toml"), flow).unwrap();
    let (code, stdout, stderr) = validate(dir.path(), "old.toml", &[]);
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    let expected = "\
error: component `old.wasm` cannot be used: it was built for the step contract sluice:flow@0.1.0, and this host speaks sluice:flow@0.2.3: rebuild it against sluice:flow@0.2.3 (the WIT in Sluice's wit/ folder, or the sluice-guest SDK)
  --> old.toml:5:8
  |
5 | uses = \"old.wasm\"
  |        ^^^^^^^^^^
  = hint: `uses` takes a component built for the step contract sluice:flow@0.2.3 (wasm32-wasip2)
old.toml: 1 problem found; nothing was run
";
    assert_eq!(stderr, expected);
}

/// A reader that has gone (`sluice validate … | head -0`) is no panic: the
/// command's output is dropped and it exits as it would have.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(shipped_flows())
        .env_clear()
        .args(["validate", "procore-license-sync.toml"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `runs --limit 0` listed nothing and said no runs were recorded, which
/// was not true of a data directory with runs; it is refused instead.
#[test]
fn runs_with_a_limit_of_zero_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .arg("--data-dir")
        .arg(data.path())
        .args(["runs", "--limit", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("list at least one run"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `components show` says what a component takes and returns: a built-in
/// by name (its roles, and its input and output schemas, also as JSON),
/// a file by path; a file that is not there is an error with a hint, and
/// a component without `describe` says nothing is known of it.
#[test]
fn components_show_says_what_a_component_takes_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = sluice(dir.path(), &["components", "show", "procore-users"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("procore-users ")
            && out.contains("  procore  Procore: lists the company's users")
            && out.contains("input (the step's `with`), JSON Schema:")
            && out.contains("\"company_id\"")
            && out.contains("output (what later steps read as `${steps.ID.…}`), JSON Schema:")
            && out.contains("\"users\""),
        "{out}"
    );
    let (code, out, err) = sluice(
        dir.path(),
        &["components", "show", "html-report", "--json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let described: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(described["name"], "html-report");
    assert!(
        described["output_schema"]["properties"]["mail_html"].is_object(),
        "{out}"
    );
    let (code, _, err) = sluice(dir.path(), &["components", "show", "nope.wasm"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nope.wasm: component file `nope.wasm` does not exist")
            && err.contains("hint:"),
        "{err}"
    );
    let (code, _, err) = sluice(dir.path(), &["components", "show", "compar"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`compar` is neither a built-in component nor a file")
            && err.contains("`sluice components` lists the built-ins"),
        "{err}"
    );
    // Built from the WIT's `step` world: no `describe`.
    let bare = sluice_builtins::fixture("contract-0-2").expect("fixture contract-0-2 was built");
    let (code, out, err) = sluice(dir.path(), &["components", "show", bare], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("exports no `describe`, so what it takes and returns is not known"),
        "{err}"
    );
}
