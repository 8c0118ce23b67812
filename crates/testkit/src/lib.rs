//! Test fixtures for calve: a real Kafka-protocol broker (tansu) on a free loopback port,
//! producers, the `calve` process under test, and the bridge to foreign readers (PyIceberg,
//! DuckDB) in a Python venv the fixture creates. Never shipped in the binary.

pub mod broker;
pub mod calve;
pub mod kafka;
pub mod ports;
pub mod postgres;
pub mod prometheus;
pub mod python;
pub mod registry;
pub mod rest_catalog;
pub mod rustberg;
pub mod s3;
pub mod workload;

/// Directory for caches shared across test runs (broker binary, venv): `$CALVE_CACHE` or
/// `~/.cache/calve`.
pub fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("CALVE_CACHE").map(Into::into).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache/calve")
    })
}

/// The workspace root (for scripts and examples).
///
/// Found at run time from the crate under test (`cargo test` sets `CARGO_MANIFEST_DIR`), not
/// baked in at compile time: CI clones to a new directory each run and shares the target dir,
/// so a testkit compiled in an earlier clone must not point into it.
pub fn workspace_root() -> std::path::PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("current dir"));
    start
        .ancestors()
        .find(|d| d.join("scripts/test.sh").is_file())
        .unwrap_or_else(|| panic!("no workspace root (with scripts/test.sh) above {}", start.display()))
        .to_path_buf()
}

/// The seed of a seeded test: `$var` when set (a number, or `random` for a fresh one), else
/// `default`, so CI runs the same sequence every time. Printed with the line that replays it.
pub fn seed(var: &str, default: u64) -> u64 {
    let seed = match std::env::var(var).ok().as_deref().map(str::trim) {
        None | Some("") => default,
        Some("random") => rand::random(),
        Some(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("{var}={n}: give a number or `random`")),
    };
    eprintln!("seed {seed} (replay with {var}={seed}; {var}=random for a new one)");
    seed
}

/// A count a test takes from `$var` (its length, rounds, kills), else `default`.
pub fn env_count(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(n) => n
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={n}: give a whole number")),
        Err(_) => default,
    }
}

/// A tool path: `$env_var` if set, else what `scripts/<script>` (which installs the tool when
/// missing) prints.
pub fn installed_tool(env_var: &str, script: &str) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return p.into();
    }
    let out = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts").join(script))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{script}: {e}"));
    assert!(out.status.success(), "scripts/{script} failed");
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
