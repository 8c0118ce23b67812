//! `on_breaking = "hold"` end to end on the real broker: a record that breaks the schema
//! stops its table at that offset (everything before it committed, nothing after it) while
//! another table keeps committing; the hold survives kill -9; `calve schema approve` applies
//! the proposed change (also when calve dies right after committing it) and the table
//! resumes with nothing lost or doubled; `calve schema reject` sends exactly the held records
//! to the dead-letter table; both readers agree on every outcome.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use calve_testkit::broker::Broker;
use calve_testkit::calve::{kill9, terminate, wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::read_table;
use common::*;
use serde_json::{json, Value};

const TS: &str = "2025-11-24T10:00:00Z";

/// Orders with a `qty int` column, held on breaking records.
fn contract(topic: &str, table: &str) -> String {
    let orders = orders_contract(topic, "1s").replace("shop.orders", table);
    let start = orders.find("columns = [").unwrap();
    let end = start + orders[start..].find("]\n").unwrap() + 2;
    let columns = r#"columns = [
  { name = "order_id", type = "long", required = true },
  { name = "customer", type = "string" },
  { name = "qty",      type = "int" },
  { name = "ts",       type = "timestamptz", required = true },
]
"#;
    format!("{}{columns}{}", &orders[..start], &orders[end..])
        .replace("on_breaking = \"dead-letter\"", "on_breaking = \"hold\"")
}

/// A second table (`shop.other` from topic `other`) in the same config.
fn add_other_table(s: &Setup) {
    std::fs::write(s.dir.path().join("other.toml"), contract("other", "shop.other")).unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        r#"contracts = ["contract.toml"]"#,
        r#"contracts = ["contract.toml", "other.toml"]"#,
    );
    std::fs::write(&s.config, config).unwrap();
}

fn order(i: u64, qty: Value) -> Message {
    let v = json!({"order_id": i, "customer": format!("c{i}"), "qty": qty, "ts": TS});
    (format!("k{i}"), Some(v.to_string()), None)
}

fn produce_orders(bootstrap: &str, topic: &str, ids: std::ops::Range<u64>, qty: impl Fn(u64) -> Value) {
    let msgs: Vec<Message> = ids.map(|i| order(i, qty(i))).collect();
    produce(bootstrap, topic, &msgs);
}

/// `order_id` → `qty` as both readers see `table`; panics if they disagree.
fn rows(s: &Setup, table: &str) -> Vec<(u64, Value)> {
    let view = read_table(&s.catalog_db(), &s.warehouse(), table, &["order_id", "qty"]);
    let mut out: Vec<Vec<(u64, Value)>> = Vec::new();
    for reader in ["pyiceberg", "duckdb"] {
        let mut r: Vec<(u64, Value)> = view
            .rows(reader)
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].clone()))
            .collect();
        r.sort_by_key(|x| x.0);
        out.push(r);
    }
    assert_eq!(out[0], out[1], "pyiceberg and duckdb disagree on {table}");
    out.remove(0)
}

fn ids(rows: &[(u64, Value)]) -> Vec<u64> {
    rows.iter().map(|r| r.0).collect()
}

/// Polls `calve schema pending` until it names a hold on `table` that waits for a decision;
/// returns its output.
fn wait_for_hold(s: &Setup, table: &str, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, out) = s.cli(&calve_bin(), &["schema", "pending"]);
        assert!(ok, "{out}");
        if out.contains(&format!("{table}: HELD")) && !out.contains("decided:") {
            return out;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("calve exited ({st}) before holding {table}\n{}", s.logs());
        }
        assert!(Instant::now() < deadline, "{table} not held within 90 s\n{}", s.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls until `table` holds `n` rows (as PyIceberg sees it), or panics.
fn wait_for_rows(s: &Setup, table: &str, n: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let view = read_table(&s.catalog_db(), &s.warehouse(), table, &["order_id"]);
        if view.rows("pyiceberg").len() >= n {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("calve exited ({st}) before {table} had {n} rows\n{}", s.logs());
        }
        assert!(
            Instant::now() < deadline,
            "{table} did not reach {n} rows in 90 s\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_held_table_waits_for_approval_across_kill9_and_resumes_exactly_once() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "orders", 2);
    create_topic(&bootstrap, "other", 1);
    // Under "additive" calve would widen qty on its own; here a person decides.
    let text = contract("orders", "shop.orders").replace("evolution = \"additive\"", "evolution = \"declared-only\"");
    assert!(text.contains("declared-only"));
    let s = Setup::new(&bootstrap, &text);
    add_other_table(&s);
    // 50..60 carry a qty beyond int: a breaking change whose fix (int → long) Iceberg allows.
    let qty = |i: u64| match i {
        50..60 => json!(3_000_000_000u64 + i),
        _ => json!(i),
    };
    produce_orders(&bootstrap, "orders", 0..100, qty);

    let mut child = s.spawn(&calve_bin(), &["run"]);
    let pending = wait_for_hold(&s, "shop.orders", &mut child);
    assert!(pending.contains("column: qty (schema-mismatch)"), "{pending}");
    assert!(pending.contains("proposal: widen `qty` to long"), "{pending}");
    assert!(pending.contains("approver: data-platform"), "{pending}");
    assert!(s.logs().contains("TABLE HELD"), "{}", s.logs());

    // Held: the table stopped at the first breach it met; nothing at or past a breach is in
    // (in each partition, 50..60 come before 60..100), each row once.
    let held = ids(&rows(&s, "shop.orders"));
    assert!(!held.is_empty() && held.iter().all(|i| *i < 50), "{held:?}");
    assert!(held.windows(2).all(|w| w[0] < w[1]), "no duplicates: {held:?}");
    // The other table keeps committing while this one is held.
    produce_orders(&bootstrap, "other", 0..30, |i| json!(i));
    wait_for_rows(&s, "shop.other", 30, &mut child);

    // kill -9 while held: the restart stays held at the same record.
    kill9(&mut child);
    let mut child = s.spawn_with_env(&calve_bin(), &["run"], &[("CALVE_CRASH_AT", "after-approval")]);
    let again = wait_for_hold(&s, "shop.orders", &mut child);
    let at = |out: &str| {
        out.lines()
            .find(|l| l.contains("HELD"))
            .map(|l| l.split(" at ").nth(1).map(str::to_string))
    };
    assert_eq!(at(&again), at(&pending), "the same hold after kill -9\n{again}");

    // Approve; calve dies right after committing the schema change, before any row.
    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "approve", "--table", "shop.orders", "--by", "alice"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("approved: widen `qty` to long"), "{out}");
    assert!(
        wait_for(&mut child, Duration::from_secs(60)).is_some(),
        "the crash point was reached"
    );
    assert!(
        s.latest_log().contains("aborting at after-approval"),
        "{}",
        s.latest_log()
    );

    let mut child = s.spawn(&calve_bin(), &["run"]);
    wait_for_rows(&s, "shop.orders", 100, &mut child);
    terminate(&mut child, Duration::from_secs(30));
    let all = rows(&s, "shop.orders");
    let want: Vec<(u64, Value)> = (0..100).map(|i| (i, qty(i))).collect();
    assert_eq!(all, want, "every order once, qty read as long\n{}", s.logs());
    assert_eq!(read_dlq(&s).rows("pyiceberg").len(), 0, "nothing dead-lettered");

    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(ok, "{status}");
    assert!(!status.contains("HELD"), "{status}");
    assert!(
        status.contains("Approve by alice: widen `qty` to long") && status.contains("qty: 30000000"),
        "the decision, who and why are in the schema history\n{status}"
    );
    let (ok, pending) = s.cli(&calve_bin(), &["schema", "pending"]);
    assert!(ok && pending.contains("no table is held"), "{pending}");
}

#[test]
fn a_rejected_hold_sends_exactly_the_held_records_to_the_dead_letter_table() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "orders", 1);
    let s = Setup::new(&bootstrap, &contract("orders", "shop.orders"));
    // 30..35 carry text in the int column: no schema change admits them.
    let qty = |i: u64| match i {
        30..35 | 60 => json!(format!("many-{i}")),
        _ => json!(i),
    };
    produce_orders(&bootstrap, "orders", 0..60, qty);

    let mut child = s.spawn(&calve_bin(), &["run"]);
    let pending = wait_for_hold(&s, "shop.orders", &mut child);
    assert!(
        pending.contains("shop.orders: HELD") && pending.contains("orders/0@30"),
        "{pending}"
    );
    assert!(pending.contains("proposal: none"), "{pending}");
    assert_eq!(ids(&rows(&s, "shop.orders")), (0..30).collect::<Vec<_>>());

    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "approve", "--table", "shop.orders", "--by", "bob"],
    );
    assert!(!ok, "nothing to approve: {out}");
    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "reject", "--table", "shop.orders", "--by", "bob"],
    );
    assert!(ok, "{out}");
    wait_for_rows(&s, "shop.orders", 55, &mut child);
    let got = ids(&rows(&s, "shop.orders"));
    let want: Vec<u64> = (0..30).chain(35..60).collect();
    assert_eq!(got, want, "the table has everything but the held records\n{}", s.logs());
    let dlq = read_dlq(&s);
    for reader in ["pyiceberg", "duckdb"] {
        let dead = dlq.rows(reader);
        let offsets: Vec<i64> = {
            let mut o: Vec<i64> = dead.iter().map(|r| r[2].as_i64().unwrap()).collect();
            o.sort();
            o
        };
        assert_eq!(
            offsets,
            (30..35).collect::<Vec<_>>(),
            "{reader}: exactly the held records\n{dead:?}"
        );
    }

    // The rejection covered the records held then; a later one like them holds again.
    produce_orders(&bootstrap, "orders", 60..70, qty);
    let pending = wait_for_hold(&s, "shop.orders", &mut child);
    assert!(pending.contains("orders/0@60"), "{pending}");
    terminate(&mut child, Duration::from_secs(30));
    assert_eq!(ids(&rows(&s, "shop.orders")), want, "nothing past the new hold");
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(
        ok && status.contains("Reject by bob") && status.contains("HELD"),
        "{status}"
    );
}

#[test]
fn a_frozen_table_holds_on_undeclared_fields_and_missing_columns_until_approved() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "orders", 1);
    let text = contract("orders", "shop.orders")
        .replace("evolution = \"additive\"", "evolution = \"frozen\"")
        .replace(
            r#"{ name = "customer", type = "string" },"#,
            r#"{ name = "customer", type = "string", required = true },"#,
        );
    assert!(text.contains("evolution = \"frozen\"") && text.contains("\"string\", required = true"));
    let s = Setup::new(&bootstrap, &text);
    // 20..25 carry a field the contract does not declare; 25..30 lack the required customer.
    let msgs: Vec<Message> = (0..30u64)
        .map(|i| {
            let v = match i {
                20..25 => {
                    json!({"order_id": i, "customer": format!("c{i}"), "qty": i, "ts": TS, "coupon": format!("x{i}")})
                }
                25.. => json!({"order_id": i, "qty": i, "ts": TS}),
                _ => json!({"order_id": i, "customer": format!("c{i}"), "qty": i, "ts": TS}),
            };
            (format!("k{i}"), Some(v.to_string()), None)
        })
        .collect();
    produce(&bootstrap, "orders", &msgs);

    let mut child = s.spawn(&calve_bin(), &["run"]);
    let pending = wait_for_hold(&s, "shop.orders", &mut child);
    assert!(
        pending.contains("orders/0@20") && pending.contains("column: coupon (undeclared-field)"),
        "{pending}"
    );
    assert!(
        pending.contains("proposal: add optional column `coupon` string"),
        "{pending}"
    );
    assert_eq!(ids(&rows(&s, "shop.orders")), (0..20).collect::<Vec<_>>());
    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "approve", "--table", "shop.orders", "--by", "carol"],
    );
    assert!(ok, "{out}");

    let pending = wait_for_hold(&s, "shop.orders", &mut child);
    assert!(
        pending.contains("orders/0@25") && pending.contains("column: customer (missing-required)"),
        "{pending}"
    );
    assert!(pending.contains("proposal: make `customer` optional"), "{pending}");
    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "approve", "--table", "shop.orders", "--by", "carol"],
    );
    assert!(ok, "{out}");
    wait_for_rows(&s, "shop.orders", 30, &mut child);
    terminate(&mut child, Duration::from_secs(30));

    let view = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.orders",
        &["order_id", "customer", "coupon"],
    );
    for reader in ["pyiceberg", "duckdb"] {
        let mut got = view.rows(reader);
        got.sort_by_key(|r| r[0].as_u64());
        let want: Vec<Vec<Value>> = (0..30u64)
            .map(|i| match i {
                20..25 => vec![json!(i), json!(format!("c{i}")), json!(format!("x{i}"))],
                25.. => vec![json!(i), Value::Null, Value::Null],
                _ => vec![json!(i), json!(format!("c{i}")), Value::Null],
            })
            .collect();
        assert_eq!(
            got, want,
            "{reader}: every order once, with what the approvals admitted"
        );
    }

    // A restart with the contract unchanged keeps what was approved: no hold, nothing breaking.
    produce(
        &bootstrap,
        "orders",
        &[(
            "k30".into(),
            Some(json!({"order_id": 30, "qty": 30, "ts": TS, "coupon": "y"}).to_string()),
            None,
        )],
    );
    let st = wait_for(
        &mut s.spawn(&calve_bin(), &["run", "--until-caught-up"]),
        Duration::from_secs(120),
    );
    assert!(st.is_some_and(|st| st.success()), "{}", s.latest_log());
    assert_eq!(ids(&rows(&s, "shop.orders")), (0..31).collect::<Vec<_>>());
    let (ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(ok, "an approved change is not a breaking one: {out}");
    assert!(
        out.contains(
            "the table is looser than the contract (approved; adopt it in the contract): `customer` is optional"
        ),
        "{out}"
    );
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("Approve by carol: add optional column `coupon` string")
            && status.contains("Approve by carol: make `customer` optional"),
        "{status}"
    );
}
