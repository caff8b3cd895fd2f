//! The example components of other languages (`examples/`), built from
//! source once per test binary by scripts/build-examples (with the tools
//! scripts/test-deps installs), and data directories in which both are
//! already compiled.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use sluice_emulator::{EmulatorConfig, RunningEmulator, Scenario};

use super::emulated::flow_path;

/// The two examples, built from source once per test binary, and a data
/// directory whose compile cache holds both (see [`warm_cache`]).
pub struct Examples {
    pub python: PathBuf,
    pub js: PathBuf,
    warm: PathBuf,
}

pub fn examples() -> &'static Examples {
    static BUILT: OnceLock<Examples> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let started = Instant::now();
        let out = std::process::Command::new(root.join("scripts/build-examples"))
            .current_dir(&root)
            .output()
            .expect("run scripts/build-examples");
        assert!(
            out.status.success(),
            "scripts/build-examples failed (scripts/test-deps installs its tools):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("examples built in {:.1?}", started.elapsed());
        let paths: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect();
        let [python, js] = <[PathBuf; 2]>::try_from(paths).expect("two components");
        let warm = warm_cache(&python, &js);
        Examples { python, js, warm }
    })
}

/// Compiling an 18 MB Python or 12 MB JavaScript component is most of what
/// these tests cost (tens of seconds of CPU each; loading the compiled code
/// from the cache is under a second). One run of a flow made of both fills
/// the cache of a data directory beside the built examples, kept between
/// test runs; each test starts from a copy of it ([`data_dir`]).
fn warm_cache(python: &Path, js: &Path) -> PathBuf {
    let dir = python.parent().unwrap().join("warm");
    std::fs::create_dir_all(&dir).unwrap();
    let flow = dir.join("warm.toml");
    std::fs::write(
        &flow,
        format!(
            "name = \"warm\"\n\n\
             [[step]]\nid = \"diff\"\nuses = \"{}\"\n\
             with = {{ people = [], procore_users = [] }}\n\n\
             [[step]]\nid = \"report\"\nuses = \"{}\"\n\
             with = {{ diff = \"${{steps.diff}}\" }}\n",
            python.display(),
            js.display()
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .env("SLUICE_DATA_DIR", &data)
        .args(["run", flow.to_str().unwrap()])
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "examples compiled (or loaded from the cache) in {:.1?}",
        started.elapsed()
    );
    data
}

/// A fresh data directory holding a copy of the warm compile cache (and the
/// key that signs its entries, without which they are not trusted).
pub fn data_dir() -> tempfile::TempDir {
    let warm = &examples().warm;
    let data = tempfile::tempdir().unwrap();
    let cache = data.path().join("cache");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&cache)
        .unwrap();
    for entry in std::fs::read_dir(warm.join("cache")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), cache.join(entry.file_name())).unwrap();
    }
    std::fs::copy(warm.join("cache.key"), data.path().join("cache.key")).unwrap();
    data
}

/// The shipped flow in `dir` with `from` replaced by `to`.
pub fn flow_with(dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(flow_path()).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let path = dir.join("sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Ann's Procore login is her UPN, not her mail (the key); Bob is missing.
pub fn upn_scenario() -> Scenario {
    let mut s = Scenario::hand_written();
    let group = s.add_group("License – Microsoft 365 E3");
    s.add_user(
        "Ann Lee",
        Some("ann.lee@contoso.com"),
        "alee@contoso.com",
        &[&group],
    );
    s.add_user(
        "Bob Ray",
        Some("bob.ray@contoso.com"),
        "bob.ray@contoso.com",
        &[&group],
    );
    s.add_procore_user("alee@contoso.com", "alee@contoso.com", true);
    s
}

/// The emulators with `scenario`, the environment pointing the flow at
/// them, and a data directory with the examples already compiled.
pub async fn emulated_with(
    scenario: Scenario,
) -> (RunningEmulator, Vec<(String, String)>, tempfile::TempDir) {
    let data = data_dir();
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await
    .unwrap();
    let env = emulator.env_vars();
    (emulator, env, data)
}
