//! The restore point survives maintenance: after calve ingested, `calve maintain` compacts the
//! table into one file per partition (a `replace` snapshot) and a second pass expires every
//! snapshot but the newest; calve restarts and resumes exactly where it was, proven by
//! PyIceberg and DuckDB.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::workload::order_json;
use common::*;

fn produce_ids(broker: &Broker, ids: std::ops::Range<u64>) {
    let msgs: Vec<Message> = ids.map(|i| (format!("k{i}"), Some(order_json(i)), None)).collect();
    produce(&broker.bootstrap(), "orders", &msgs);
}

fn run_until_caught_up(s: &Setup) {
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "{}", s.logs());
}

/// `calve maintain`, which must succeed; returns what it printed.
fn maintain(s: &Setup) -> String {
    let out = std::process::Command::new(calve_bin())
        .args(["maintain", "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn restore_point_survives_compaction_and_expiry() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 3);
    let contract = orders_contract("orders", "1s").replace(
        "keep_snapshots = { min = 5, max_age = \"24h\", max = 1000 }",
        "keep_snapshots = { min = 1, max_age = \"1s\" }",
    );
    assert!(contract.contains("max_age = \"1s\""));
    let s = Setup::new(&broker.bootstrap(), &contract);
    produce_ids(&broker, 0..600);
    run_until_caught_up(&s);
    produce_ids(&broker, 600..900);
    run_until_caught_up(&s);

    // Compact, then (once the compaction snapshot is past max_age) expire all but the newest.
    let first = maintain(&s);
    assert!(first.contains("shop.orders: compacted"), "{first}");
    std::thread::sleep(Duration::from_millis(1100));
    maintain(&s);
    let view = read_orders(&s);
    assert_eq!(view.snapshots().len(), 1, "every snapshot but the newest expired");
    assert!(
        view.current_summary()["calve.offsets"].is_string(),
        "the newest snapshot holds the restore point"
    );
    let partitions: std::collections::BTreeSet<String> =
        view.files().iter().map(|f| f["partition"].to_string()).collect();
    assert_eq!(
        view.files().len(),
        partitions.len(),
        "one file per day partition after compaction: {:?}",
        view.files()
    );
    assert_orders_exactly(&view, &(0..900).collect::<Vec<_>>(), &s.logs());

    // calve restarts from the compacted, expired table: nothing is read twice or skipped.
    produce_ids(&broker, 900..1500);
    run_until_caught_up(&s);
    assert_orders_exactly(&read_orders(&s), &(0..1500).collect::<Vec<_>>(), &s.logs());
    assert!(s.logs().contains("resuming from the table's restore point"));
}
