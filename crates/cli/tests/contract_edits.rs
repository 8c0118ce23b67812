//! A contract edited between runs: additive edits (a new column, a widened type, a required
//! column made optional) apply on their own at the next start, rows already in the table read
//! null in the new column, and nothing is lost or doubled; a breaking edit (a column dropped,
//! or renamed) holds that table with the change named, leaving it as it was, until the
//! approver approves: then a declared rename keeps the column's field id, so old rows read
//! their values under the new name in both readers.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::read_table;
use common::*;
use serde_json::{json, Value};

/// The orders contract with `columns` as its [schema] columns.
fn contract(columns: &str) -> String {
    let orders = orders_contract("orders", "1s");
    let start = orders.find("columns = [").unwrap();
    let end = start + orders[start..].find("]\n").unwrap() + 2;
    format!("{}columns = [\n{columns}\n]\n{}", &orders[..start], &orders[end..])
}

const V1: &str = r#"
  { name = "order_id", type = "long", required = true },
  { name = "customer", type = "string", required = true },
  { name = "qty",      type = "int" },
  { name = "ts",       type = "timestamptz", required = true },"#;

/// v1 plus `coupon`, `qty` widened to long, `customer` optional.
const V2: &str = r#"
  { name = "order_id", type = "long", required = true },
  { name = "customer", type = "string" },
  { name = "qty",      type = "long" },
  { name = "ts",       type = "timestamptz", required = true },
  { name = "coupon",   type = "struct<code: string, pct: double>" },"#;

/// v2 with `customer` renamed without saying so: a drop and an add, breaking.
const V3: &str = r#"
  { name = "order_id", type = "long", required = true },
  { name = "buyer",    type = "string" },
  { name = "qty",      type = "long" },
  { name = "ts",       type = "timestamptz", required = true },
  { name = "coupon",   type = "struct<code: string, pct: double>" },"#;

/// v2 with `customer` renamed, and the rename declared.
const V4: &str = r#"
  { name = "order_id", type = "long", required = true },
  { name = "buyer",    type = "string", renamed_from = "customer" },
  { name = "qty",      type = "long" },
  { name = "ts",       type = "timestamptz", required = true },
  { name = "coupon",   type = "struct<code: string, pct: double>" },"#;

fn run(s: &Setup) -> std::process::ExitStatus {
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    wait_for(&mut child, Duration::from_secs(120)).expect("calve did not finish in 120s")
}

fn set_contract(s: &Setup, columns: &str) {
    std::fs::write(s.dir.path().join("contract.toml"), contract(columns)).unwrap();
}

#[test]
fn additive_edits_apply_on_restart_and_breaking_ones_wait_for_approval() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 2);
    let ts = "2025-11-24T10:00:00Z";
    let first: Vec<Message> = (0..20)
        .map(|i| {
            (
                format!("k{i}"),
                Some(format!(r#"{{"order_id":{i},"customer":"c{i}","qty":{i},"ts":"{ts}"}}"#)),
                None,
            )
        })
        .collect();
    produce(&broker.bootstrap(), "orders", &first);
    let s = Setup::new(&broker.bootstrap(), &contract(V1));
    assert!(run(&s).success(), "v1 run\n{}", s.logs());

    // v2: a new nested column, a widening and required → optional, with rows that need them.
    let second: Vec<Message> = (20..40)
        .map(|i| {
            let v = format!(
                r#"{{"order_id":{i},"qty":{},"ts":"{ts}","coupon":{{"code":"X{i}","pct":0.5}}}}"#,
                5_000_000_000i64 + i
            );
            (format!("k{i}"), Some(v), None)
        })
        .collect();
    produce(&broker.bootstrap(), "orders", &second);
    set_contract(&s, V2);
    let (check_ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(check_ok, "{out}");
    for change in [
        "add optional column `coupon` struct<code: string, pct: double>",
        "widen `qty` to long",
        "make `customer` optional",
    ] {
        assert!(out.contains(&format!("the next start applies: {change}")), "{out}");
    }
    assert!(run(&s).success(), "v2 run\n{}", s.logs());
    assert!(
        s.latest_log().contains("the contract adds to the table's schema"),
        "{}",
        s.latest_log()
    );

    let columns = ["order_id", "customer", "qty", "coupon"];
    let view = read_table(&s.catalog_db(), &s.warehouse(), "shop.orders", &columns);
    for reader in ["pyiceberg", "duckdb"] {
        let rows = view.rows(reader);
        assert_eq!(rows.len(), 40, "{reader}: every row once\n{rows:?}");
        for r in &rows {
            let i = r[0].as_i64().unwrap();
            if i < 20 {
                assert_eq!(r[1], json!(format!("c{i}")), "{reader}");
                assert_eq!(r[2], json!(i), "{reader}: int read as long");
                assert_eq!(r[3], Value::Null, "{reader}: an old row reads null in the new column");
            } else {
                assert_eq!(r[1], Value::Null, "{reader}: customer is optional now");
                assert_eq!(r[2], json!(5_000_000_000i64 + i), "{reader}: a value only a long holds");
                assert_eq!(r[3], json!({"code": format!("X{i}"), "pct": 0.5}), "{reader}");
            }
        }
    }

    // v3 renames `customer` without saying so: it reads as a drop (breaking) and an add.
    // `calve check --config` says the start would hold the table, and what approving does;
    // the start holds it, says why, and leaves it as it was.
    set_contract(&s, V3);
    let (check_ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(!check_ok, "{out}");
    assert!(
        out.contains(
            "WOULD HOLD THE TABLE FOR ITS APPROVER: column `customer` is in the table but not in the contract"
        ) && out.contains(
            "approving (calve schema approve) would: drop column `customer`, add optional column `buyer` string"
        ),
        "{out}"
    );
    let st = run(&s);
    assert!(!st.success(), "a held table ends a batch run\n{}", s.latest_log());
    let log = s.latest_log();
    assert!(
        log.contains("TABLE HELD") && log.contains("column `customer` is in the table"),
        "{log}"
    );
    let after = read_table(&s.catalog_db(), &s.warehouse(), "shop.orders", &columns);
    assert_eq!(
        after.rows("duckdb"),
        view.rows("duckdb"),
        "the held edit changed nothing"
    );

    // v4 declares the rename: a different edit, held anew until approved; approved, the
    // column keeps its field id, so old rows read their values under the new name.
    set_contract(&s, V4);
    assert!(!run(&s).success(), "held until approved\n{}", s.latest_log());
    let (ok, pending) = s.cli(&calve_bin(), &["schema", "pending"]);
    assert!(
        ok && pending.contains("proposal: rename `customer` to `buyer`"),
        "{pending}"
    );
    assert!(!pending.contains("drop column"), "{pending}");
    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "reject", "--table", "shop.orders", "--by", "dora"],
    );
    assert!(!ok, "a contract edit is restored, not rejected: {out}");
    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "approve", "--table", "shop.orders", "--by", "dora"],
    );
    assert!(ok, "{out}");
    let third: Vec<Message> = (40..50)
        .map(|i| {
            let v = format!(r#"{{"order_id":{i},"buyer":"b{i}","qty":{i},"ts":"{ts}"}}"#);
            (format!("k{i}"), Some(v), None)
        })
        .collect();
    produce(&broker.bootstrap(), "orders", &third);
    assert!(run(&s).success(), "v4 approved\n{}", s.logs());
    let view = read_table(&s.catalog_db(), &s.warehouse(), "shop.orders", &["order_id", "buyer"]);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = view.rows(reader);
        rows.sort_by_key(|r| r[0].as_i64());
        let want: Vec<Vec<Value>> = (0..50i64)
            .map(|i| match i {
                0..20 => vec![json!(i), json!(format!("c{i}"))],
                20..40 => vec![json!(i), Value::Null],
                _ => vec![json!(i), json!(format!("b{i}"))],
            })
            .collect();
        assert_eq!(rows, want, "{reader}: every row once, old values under the new name");
    }
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(
        ok && status.contains("Approve by dora: rename `customer` to `buyer`"),
        "{status}"
    );
    let (ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(ok, "nothing left to hold: {out}");
}
