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

/// A 1-second band kept for a day is 86,400 snapshots: the check says what that costs and
/// warns; the example's cap keeps it to 1,000 and quiet.
#[test]
fn the_metadata_a_band_and_retention_imply_is_shown_and_warned_about() {
    let example = include_str!("../../../examples/contracts/orders.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        calve(&["check", path.to_str().unwrap()])
    };
    let (ok, out) = check(example);
    assert!(ok, "{out}");
    assert!(
        out.contains("metadata: about 1000 snapshots retained (capped by keep_snapshots.max = 1000)"),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "{out}");
    let second = example
        .replace(", max = 1000 }", " }")
        .replace("freshness = \"1m\"", "freshness = \"1s\"");
    assert!(second.contains("freshness = \"1s\"") && !second.contains("max = 1000"));
    let (ok, out) = check(&second);
    assert!(ok, "a warning does not fail the check: {out}");
    assert!(
        out.contains("metadata: about 86400 snapshots retained (a commit per 1s band for 1day, at least 5)"),
        "{out}"
    );
    assert!(out.contains("WARNING") && out.contains("keep_snapshots.max"), "{out}");
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

/// With a registry, `check --config` judges the latest schema under `<topic>-value` against
/// the table as the running table would: a schema that fits, one whose new field the table
/// would add, one whose records could not enter (the check fails), and a registry that does
/// not answer (the check fails: nothing was checked).
#[test]
fn the_latest_registered_schema_is_judged_against_the_table() {
    use calve_testkit::calve::Setup;
    use calve_testkit::registry::RegistryServer;
    use serde_json::json;

    let registry = RegistryServer::start();
    let contract = std::fs::read_to_string(calve_testkit::workspace_root().join("examples/contracts/orders.toml"))
        .unwrap()
        .replace("format = \"json\"", "format = \"avro\"");
    // calve check does not reach Kafka.
    let s = Setup::new("127.0.0.1:9", &contract);
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!("\n[registry]\nurl = \"{}\"\n", registry.url()));
    std::fs::write(&s.config, cfg).unwrap();
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_calve"));
    let check = || s.cli(&bin, &["check"]);

    let (ok, out) = check();
    assert!(ok && out.contains("orders-value has no schema yet"), "{out}");

    let field = |name: &str, ty: serde_json::Value| json!({"name": name, "type": ty});
    let mut fields = vec![
        field("order_id", json!("long")),
        field("customer", json!(["null", "string"])),
        field("amount", json!(["null", "double"])),
        field("status", json!(["null", "string"])),
        field("ts", json!({"type": "long", "logicalType": "timestamp-micros"})),
    ];
    let schema =
        |fields: &[serde_json::Value]| json!({"type": "record", "name": "Order", "fields": fields}).to_string();
    let v1 = registry.register("orders-value", &schema(&fields)).unwrap();
    let (ok, out) = check();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("orders-value version 1 (schema id {v1}) fits the table\n")),
        "{out}"
    );

    fields.push(json!({"name": "coupon", "type": ["null", "string"], "default": null}));
    registry.register("orders-value", &schema(&fields)).unwrap();
    let (ok, out) = check();
    assert!(
        ok && out.contains("version 2") && out.contains("would add the columns: coupon string"),
        "{out}"
    );

    let (status, _) = registry
        .call("PUT", "/config/orders-value", Some(&json!({"compatibility": "NONE"})))
        .unwrap();
    assert_eq!(status, 200);
    fields[2] = field("amount", json!("string"));
    registry.register("orders-value", &schema(&fields)).unwrap();
    let (ok, out) = check();
    assert!(!ok, "a schema whose records cannot enter fails the check: {out}");
    assert!(
        out.contains("version 3") && out.contains("WOULD NOT ENTER THE TABLE") && out.contains("amount"),
        "{out}"
    );

    registry.fault_status(503, 60.0);
    let (ok, out) = check();
    assert!(!ok && out.contains("registry: cannot check the latest schema"), "{out}");
}
