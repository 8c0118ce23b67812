//! Records the topic's retention deleted before calve read them are never skipped in
//! silence: under `on_lost_records = "stop"` (the default) the table stops at the gap, loudly;
//! under `"continue"` it reads on from the first record Kafka holds and the gap is recorded in
//! the table (`calve.lost-records`), in `calve status` and in the log.
//!
//! The broker is librdkafka's mock cluster, the one Kafka in reach that enforces retention:
//! each partition keeps its newest 5 MB of record batches and deletes older ones as new ones
//! arrive, so a flood of records with 1 KiB keys ages out the records calve has not read, both
//! while calve is stopped (the gap is met on start) and while it is frozen mid-run (met by a
//! fetch of the running pipeline).

mod common;

use std::time::{Duration, Instant};

use calve_testkit::calve::{terminate, wait_for, Setup};
use calve_testkit::kafka::{produce, Message};
use calve_testkit::workload::order_json;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;

const TOPIC: &str = "orders";

/// Orders `ids` with 1 KiB keys: the keys are not stored, they only fill the broker's log.
fn orders(ids: std::ops::Range<u64>) -> Vec<Message> {
    ids.map(|i| (format!("{i:>1024}"), Some(order_json(i)), Some(0)))
        .collect()
}

/// The first offset the broker holds and the high watermark of partition 0.
fn watermarks(bootstrap: &str) -> (i64, i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    c.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)).unwrap()
}

/// Produces orders from `next` on until the broker no longer holds offset `unread`; returns
/// the watermarks then.
fn flood_past(bootstrap: &str, next: &mut u64, unread: i64) -> (i64, i64) {
    for _ in 0..20 {
        produce(bootstrap, TOPIC, &orders(*next..*next + 1000));
        *next += 1000;
        let (low, high) = watermarks(bootstrap);
        if low > unread {
            return (low, high);
        }
    }
    panic!("the mock cluster kept offset {unread} after 20,000 records");
}

fn restore_offset(s: &Setup) -> Option<i64> {
    // `{"orders": {0: 100}}`: one partition, so its offset is the last number.
    let point = s.restore_point(&calve_bin());
    point.trim_end_matches('}').rsplit(": ").next()?.parse().ok()
}

fn set_policy(s: &Setup, policy: &str) {
    let path = s.dir.path().join("contract.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("\non_lost_records"),
        "the contract sets on_lost_records already"
    );
    let text = text.replacen(
        "format = \"json\"\n",
        &format!("format = \"json\"\non_lost_records = \"{policy}\"\n"),
        1,
    );
    assert!(text.contains(&format!("\non_lost_records = \"{policy}\"")));
    std::fs::write(path, text).unwrap();
}

#[test]
fn records_retention_deleted_stop_the_table_or_are_recorded_as_a_gap() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let s = Setup::new(&bootstrap, &orders_contract(TOPIC, "1s"));
    produce(&bootstrap, TOPIC, &orders(0..100));
    run_to_end(&s, &["run", "--until-caught-up"]);
    assert_eq!(read_orders(&s).rows("duckdb").len(), 100);

    // Stopped while retention deletes what it has not read: the default stops the table.
    let mut next = 100;
    let (low1, high1) = flood_past(&bootstrap, &mut next, 100);
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let status = wait_for(&mut child, Duration::from_secs(120)).expect("calve ends");
    let log = s.latest_log();
    assert!(!status.success(), "calve went on past the gap:\n{log}");
    let gap1 = format!("{TOPIC}/0 offsets 100..{low1} ({} records)", low1 - 100);
    assert!(
        log.contains("ERROR") && log.contains("Kafka deleted records the table had not read") && log.contains(&gap1),
        "the stop does not name the gap {gap1}:\n{log}"
    );
    assert_eq!(
        read_orders(&s).rows("pyiceberg").len(),
        100,
        "nothing past the gap was committed"
    );

    // The owner chooses to read on: the gap is recorded, everything Kafka still has lands.
    set_policy(&s, "continue");
    let mut child = s.spawn(&calve_bin(), &["run"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while restore_offset(&s) != Some(high1) {
        assert!(
            Instant::now() < deadline,
            "no commit up to {high1}:\n{}",
            s.latest_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Frozen mid-run while retention passes its position: the running pipeline meets the gap.
    child_signal(&child, "-STOP");
    let (low2, high2) = flood_past(&bootstrap, &mut next, high1);
    child_signal(&child, "-CONT");
    while restore_offset(&s) != Some(high2) {
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "no commit up to {high2}:\n{}",
            s.latest_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(terminate(&mut child, Duration::from_secs(60)).success(), "{}", s.logs());

    let log = s.latest_log();
    for (from, to) in [(100, low1), (high1, low2)] {
        assert!(
            log.contains("RECORDS LOST") && log.contains(&format!("from={from} to={to}")),
            "no error for the gap {from}..{to}:\n{log}"
        );
    }
    let view = read_orders(&s);
    let summary = view.current_summary();
    let lost: serde_json::Value = serde_json::from_str(
        summary["calve.lost-records"]
            .as_str()
            .unwrap_or_else(|| panic!("no calve.lost-records in {summary}")),
    )
    .unwrap();
    let ranges: Vec<(i64, i64)> = lost
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["topic"], TOPIC);
            assert_eq!(g["partition"], 0);
            (g["from"].as_i64().unwrap(), g["to"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(ranges, vec![(100, low1), (high1, low2)]);
    // One partition, produced in order: an order's id is its offset.
    let expected: Vec<u64> = (0..100)
        .chain(low1 as u64..high1 as u64)
        .chain(low2 as u64..high2 as u64)
        .collect();
    assert_orders_exactly(&view, &expected, &s.logs());
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(ok);
    assert!(
        status.contains(&gap1) && status.contains(&format!("offsets {high1}..{low2}")),
        "calve status does not show the gaps:\n{status}"
    );
}

fn child_signal(child: &std::process::Child, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal}");
}
