//! `evolution = "additive"` end to end: fields producers add mid-stream (a number, then an
//! object) become optional columns, committed together with the first rows that carry them;
//! earlier rows read null; nothing is lost or doubled — also when calve is killed after
//! writing the files of the commit that adds a column; and a restart with the unchanged
//! contract accepts the columns calve added.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::read_table;
use common::*;
use serde_json::{json, Value};

const TS: &str = "2025-11-24T10:00:00Z";

fn order(i: u64) -> String {
    match i {
        0..100 => format!(r#"{{"order_id":{i},"customer":"c{i}","ts":"{TS}"}}"#),
        // Fields that cannot become columns: a name the partition field has, and an object
        // whose values disagree (its end must still be read). They are counted, the rows land.
        310.. => format!(
            r#"{{"order_id":{i},"customer":"c{i}","ts":"{TS}","discount":{i},"ts_day":1,"odd":{{"tags":[1,"x"],"src":"a"}},"meta":{{"channel":"web","tags":["t{i}"]}}}}"#
        ),
        100..200 => format!(r#"{{"order_id":{i},"customer":"c{i}","ts":"{TS}","discount":{i}}}"#),
        _ => format!(
            r#"{{"order_id":{i},"customer":"c{i}","ts":"{TS}","discount":{i},"meta":{{"channel":"web","tags":["t{i}"]}}}}"#
        ),
    }
}

fn run(s: &Setup, env: &[(&str, &str)]) -> std::process::ExitStatus {
    let mut child = s.spawn_with_env(&calve_bin(), &["run", "--until-caught-up"], env);
    wait_for(&mut child, Duration::from_secs(120)).expect("calve did not finish in 120s")
}

/// Produces orders `ids` one poll's worth at a time, so the new fields arrive mid-stream.
fn produce_orders(bootstrap: &str, ids: std::ops::Range<u64>) {
    let msgs: Vec<Message> = ids.map(|i| (format!("k{i}"), Some(order(i)), None)).collect();
    produce(bootstrap, "orders", &msgs);
}

fn check(s: &Setup, n: u64, unknown: Value) {
    let view = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.orders",
        &["order_id", "discount", "meta"],
    );
    for reader in ["pyiceberg", "duckdb"] {
        let rows = view.rows(reader);
        let mut ids: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
        ids.sort();
        assert_eq!(
            ids,
            (0..n).collect::<Vec<_>>(),
            "{reader}: every order once\n{}",
            s.logs()
        );
        for r in &rows {
            let i = r[0].as_u64().unwrap();
            let want_discount = if i < 100 { Value::Null } else { json!(i) };
            assert_eq!(r[1], want_discount, "{reader}: discount of {i}");
            let want_meta = if i < 200 {
                Value::Null
            } else {
                json!({"channel": "web", "tags": [format!("t{i}")]})
            };
            assert_eq!(r[2], want_meta, "{reader}: meta of {i}");
        }
    }
    let summary = view.current_summary();
    let counted: Value = serde_json::from_str(summary["calve.unknown-fields"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(
        counted, unknown,
        "fields that became columns are not counted as dropped: {summary}"
    );
}

#[test]
fn fields_added_mid_stream_become_columns_with_their_rows() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 1);
    let s = Setup::new(&broker.bootstrap(), &orders_contract("orders", "1s"));
    produce_orders(&broker.bootstrap(), 0..100);
    assert!(run(&s, &[]).success(), "{}", s.logs());
    produce_orders(&broker.bootstrap(), 100..200);
    // Killed after writing the files of the commit that adds `discount`: nothing of it is
    // in the table, and the next run adds column and rows together.
    let st = run(&s, &[("CALVE_CRASH_AT", "after-files-written")]);
    assert!(!st.success(), "the crash point was reached\n{}", s.latest_log());
    produce_orders(&broker.bootstrap(), 200..300);
    assert!(run(&s, &[]).success(), "{}", s.logs());
    let log = s.logs();
    assert!(
        log.contains("events carry new fields; adding them as optional columns"),
        "{log}"
    );
    check(&s, 300, json!({}));

    // A restart with the contract unchanged accepts the added columns and goes on.
    produce_orders(&broker.bootstrap(), 300..320);
    assert!(run(&s, &[]).success(), "{}", s.latest_log());
    check(&s, 320, json!({"ts_day": 10, "odd": 10}));
    assert!(s.latest_log().contains("cannot become a column"), "{}", s.latest_log());
    let (status_ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(status_ok, "{status}");
    let (check_ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(check_ok, "{out}");
    assert!(
        out.contains("in the table, not in the contract (added from events; adopt them in the contract): discount long, meta struct<channel: string, tags: list<string>>"),
        "{out}"
    );
    assert!(
        status.contains(
            "in the table, not in the contract (added from events; adopt them in the contract): discount, meta"
        ),
        "{status}"
    );
}

/// The orders contract (1 s band) with one more column, declared by `line`.
fn with_column(line: &str) -> String {
    let orders = orders_contract("orders", "1s");
    let anchor = r#"{ name = "amount",   type = "double" },"#;
    assert!(orders.contains(anchor));
    orders.replace(anchor, &format!("{anchor}\n  {line}"))
}

/// Values that outgrow an int column widen it to long, and a decimal column to the precision
/// they need, with the commit that holds them, under `evolution = "additive"`: nothing is
/// dead-lettered, both readers read every value exactly.
#[test]
fn values_beyond_int_widen_the_column_with_their_rows() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 1);
    let text = with_column(
        r#"{ name = "qty", type = "int" },
  { name = "price", type = "decimal(10,2)" },"#,
    );
    let s = Setup::new(&broker.bootstrap(), &text);
    let qty = |i: u64| if i >= 40 { 3_000_000_000 + i } else { i };
    // From 50 on, prices with 12 integer digits: decimal(10,2) → decimal(18,2).
    let price = |i: u64| {
        if i >= 50 {
            format!("1234567890{i}.25")
        } else {
            format!("{i}.25")
        }
    };
    let msgs: Vec<Message> = (0..60u64)
        .map(|i| {
            let v = json!({"order_id": i, "qty": qty(i), "price": price(i), "ts": TS});
            (format!("k{i}"), Some(v.to_string()), None)
        })
        .collect();
    produce(&broker.bootstrap(), "orders", &msgs[..20]);
    assert!(run(&s, &[]).success(), "{}", s.logs());
    // The poll that widens also holds rows of the narrow type; both land.
    produce(&broker.bootstrap(), "orders", &msgs[20..]);
    assert!(run(&s, &[]).success(), "{}", s.logs());
    let log = s.latest_log();
    assert!(
        log.contains("widening them") && log.contains("columns=price, qty"),
        "{log}"
    );
    let view = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.orders",
        &["order_id", "qty", "price"],
    );
    for reader in ["pyiceberg", "duckdb"] {
        let mut got = view.rows(reader);
        got.sort_by_key(|r| r[0].as_u64());
        let want: Vec<Vec<Value>> = (0..60u64)
            .map(|i| vec![json!(i), json!(qty(i)), json!(price(i))])
            .collect();
        assert_eq!(got, want, "{reader}");
    }
    assert!(read_dlq(&s).rows("pyiceberg").is_empty(), "nothing dead-lettered");
    let (ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(
        ok && !out.contains("WOULD HOLD"),
        "a widened column is not a breaking change: {out}"
    );
}

/// A field producers add inside a struct the contract declares becomes a new optional field
/// of that struct, committed with the first rows that carry it (also across a crash after
/// its files were written); earlier rows read null in it; a restart with the unchanged
/// contract keeps it, and `calve check` lists it for the owner to adopt.
#[test]
fn a_field_added_inside_a_struct_becomes_a_nested_field_with_its_rows() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 1);
    let text = with_column(r#"{ name = "addr", type = "struct<street: string, zip: int>" },"#);
    let s = Setup::new(&broker.bootstrap(), &text);
    let addr = |i: u64| match i {
        0..30 => json!({"street": format!("s{i}"), "zip": i}),
        _ => json!({"street": format!("s{i}"), "zip": i, "floor": i % 7}),
    };
    let produce_range = |ids: std::ops::Range<u64>| {
        let msgs: Vec<Message> = ids
            .map(|i| {
                let v = json!({"order_id": i, "addr": addr(i), "ts": TS});
                (format!("k{i}"), Some(v.to_string()), None)
            })
            .collect();
        produce(&broker.bootstrap(), "orders", &msgs);
    };
    produce_range(0..30);
    assert!(run(&s, &[]).success(), "{}", s.logs());
    produce_range(30..60);
    let st = run(&s, &[("CALVE_CRASH_AT", "after-files-written")]);
    assert!(!st.success(), "the crash point was reached\n{}", s.latest_log());
    assert!(run(&s, &[]).success(), "{}", s.logs());
    produce_range(60..70);
    assert!(
        run(&s, &[]).success(),
        "a restart keeps the nested field\n{}",
        s.latest_log()
    );

    let view = read_table(&s.catalog_db(), &s.warehouse(), "shop.orders", &["order_id", "addr"]);
    for reader in ["pyiceberg", "duckdb"] {
        let mut got = view.rows(reader);
        got.sort_by_key(|r| r[0].as_u64());
        let want: Vec<Vec<Value>> = (0..70u64)
            .map(|i| {
                let floor = if i < 30 { Value::Null } else { json!(i % 7) };
                vec![json!(i), json!({"street": format!("s{i}"), "zip": i, "floor": floor})]
            })
            .collect();
        assert_eq!(got, want, "{reader}: every order once, floor null before it existed");
    }
    let (ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(ok && !out.contains("WOULD HOLD"), "{out}");
    assert!(
        out.contains("`addr` is struct<street: string, zip: int, floor: long> in the table"),
        "{out}"
    );

    // The owner adopts `floor` and declares one more nested field: added on the next start.
    let adopted = text.replace(
        "struct<street: string, zip: int>",
        "struct<street: string, zip: int, floor: long, unit: string>",
    );
    std::fs::write(s.dir.path().join("contract.toml"), &adopted).unwrap();
    let (ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(
        ok && out.contains("the next start applies: add optional field `addr.unit` string"),
        "{out}"
    );
    assert!(!out.contains("looser"), "the contract says what the table has: {out}");
    assert!(run(&s, &[]).success(), "{}", s.latest_log());
    let (ok, out) = s.cli(&calve_bin(), &["check"]);
    assert!(ok && !out.contains("applies") && !out.contains("looser"), "{out}");
}
