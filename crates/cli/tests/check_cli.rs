//! `calve check` as a person or a CI job uses it.

use std::process::Command;

fn calve(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_calve")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn valid_contract_prints_ok() {
    let path = calve_testkit::workspace_root().join("examples/contracts/orders.toml");
    let (ok, out) = calve(&["check", path.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("ok: ") && out.contains("table shop.orders, topic orders"),
        "{out}"
    );
}

#[test]
fn invalid_contract_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../../examples/contracts/orders.toml")
        .replace("[owner]", "[owners]")
        .replace("column = \"ts\"", "column = \"when\"");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let (ok, out) = calve(&["check", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("owners: unknown section"), "{out}");
    assert!(out.contains("owner: section [owner] is missing"), "{out}");
    // Semantic checks need every section, so the missing one is reported first; fix it and
    // the event-time problem shows with its field path.
    std::fs::write(
        &path,
        include_str!("../../../examples/contracts/orders.toml").replace("column = \"ts\"", "column = \"when\""),
    )
    .unwrap();
    let (ok, out) = calve(&["check", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("event_time.column: `when` is not a column of [schema]"),
        "{out}"
    );
}
