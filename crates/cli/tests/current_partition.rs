//! `late_data.policy = "current-partition"` end to end on the real broker: the table is
//! partitioned by an arrival column calve adds and fills with each record's Kafka timestamp,
//! so on-time events, events within the allowed lateness and events far beyond it all land in
//! the partition of the day they arrived, none is dead-lettered and no partition is reopened;
//! the true event time stays a column, which a reader still filters on. The watermark and
//! complete-through follow arrival time. Then the contract is switched back to `rewrite`:
//! `calve check` and `calve run` name the partitioning the table cannot change to. Read back
//! by PyIceberg and DuckDB.

mod common;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::duckdb_sql;
use common::*;

const DAY_US: i64 = 86_400_000_000;

fn order(id: u64, ts: &str, partition: i32) -> Message {
    let value = format!(r#"{{"order_id":{id},"customer":"c{id}","amount":1.5,"status":"new","ts":"{ts}"}}"#);
    (format!("k{id}"), Some(value), Some(partition))
}

fn contract(policy: &str) -> String {
    let text = orders_contract("events", "1m")
        .replace("policy = \"rewrite\"", &format!("policy = \"{policy}\""))
        .replace("allowed_lateness = \"3d\"", "allowed_lateness = \"1h\"")
        .replace("completeness = \"none\"", "completeness = \"watermark\"");
    assert!(text.contains(&format!("policy = \"{policy}\"")));
    text
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[test]
fn every_event_lands_in_the_partition_of_its_arrival() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "events", 2);
    let s = Setup::new(&bootstrap, &contract("current-partition"));
    let now = chrono::Utc::now().timestamp_micros();
    let sent = [
        (1, now),                           // on time
        (2, now - 30 * 60_000_000),         // within the allowed lateness
        (3, now - 3 * DAY_US),              // far beyond it
        (4, 1_767_225_600_000_000),         // 2026-01-01, long before
        (5, now - 2 * 60 * 60 * 1_000_000), // two hours late, the other Kafka partition
    ];
    let mut messages: Vec<Message> = sent
        .iter()
        .map(|(id, ts)| order(*id, &rfc3339(*ts), (*id % 2) as i32))
        .collect();
    // A producer's own field of the arrival column's name is not calve's arrival time.
    let (key, value, partition) = order(6, &rfc3339(now), 0);
    let value = value.unwrap().replace("\"ts\"", "\"arrived_at\":\"soon\",\"ts\"");
    messages.push((key, Some(value), partition));
    let sent: Vec<(u64, i64)> = sent.into_iter().chain([(6, now)]).collect();
    let before = chrono::Utc::now().timestamp_micros();
    produce(&bootstrap, "events", &messages);
    let after = chrono::Utc::now().timestamp_micros();
    let (ok, out) = s.cli(&calve_bin(), &["run", "--until-caught-up"]);
    assert!(ok, "{out}\n{}", s.logs());

    let columns = ["order_id", "ts", "arrived_at"];
    let view = read_from(&s, "shop.orders", &columns);
    for reader in ["pyiceberg", "duckdb"] {
        let rows = view.rows(reader);
        assert_eq!(
            ids(&rows),
            vec![1, 2, 3, 4, 5, 6],
            "{reader}: every event lands: {rows:?}"
        );
        for row in &rows {
            let id = row[0].as_u64().unwrap();
            let want = sent.iter().find(|(i, _)| *i == id).unwrap().1;
            assert_eq!(instant(&row[1]), want, "{reader}: the event time is kept: {row:?}");
            let arrived = instant(&row[2]);
            // Kafka timestamps are milliseconds, stamped by the producer while it sent.
            assert!(
                arrived >= before - 1_000 && arrived <= after + 1_000,
                "{reader}: arrival {arrived} not within the send [{before}, {after}]: {row:?}"
            );
        }
    }
    let arrival_days: Vec<i64> = (before.div_euclid(DAY_US)..=after.div_euclid(DAY_US)).collect();
    let files = view.files();
    assert!(!files.is_empty());
    for f in &files {
        let part = &f["partition"];
        assert!(part.get("ts_day").is_none(), "partitioned by event time: {f}");
        // PyIceberg shows a day partition as a date or as days since the epoch.
        let day = match part["arrived_at_day"].as_str() {
            Some(d) => instant(&serde_json::Value::String(format!("{d}T00:00:00Z"))).div_euclid(DAY_US),
            None => part["arrived_at_day"]
                .as_i64()
                .unwrap_or_else(|| panic!("no arrival day: {f}")),
        };
        assert!(arrival_days.contains(&day), "a file outside the arrival day: {f}");
    }
    assert!(read_dlq(&s).rows("pyiceberg").is_empty(), "nothing is late by arrival");
    assert!(
        summary_has_no_unknown_arrival(&view.current_summary()),
        "a record's own arrived_at is replaced, not an unknown field"
    );

    let summary = view.current_summary();
    let watermark = instant(&summary["calve.watermark"]);
    assert!(
        watermark >= before - 1_000 && watermark <= after + 1_000,
        "the watermark follows arrival time: {summary}"
    );
    assert!(summary.get("calve.reopened-partitions").is_none(), "{summary}");
    let history = view.snapshots();
    assert!(
        history
            .iter()
            .all(|h| h["summary"].get("calve.reopened-partitions").is_none()),
        "{history:?}"
    );

    // A reader still selects by event time, from the arrival partitions.
    let metadata = summary_metadata(&s);
    let old = duckdb_sql(
        "SELECT count(*) FROM iceberg_scan('$metadata') WHERE ts < TIMESTAMPTZ '2026-01-02 00:00:00+00'",
        &[("metadata", &metadata)],
    );
    assert_eq!(
        old,
        vec![vec![Some("1".to_string())]],
        "one event happened on 1 January"
    );

    // The table cannot go back to event-time partitions.
    std::fs::write(s.dir.path().join("contract.toml"), contract("rewrite")).unwrap();
    let (_, check) = s.cli(&calve_bin(), &["check"]);
    let mut run = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let ended = wait_for(&mut run, std::time::Duration::from_secs(60));
    if ended.is_none() {
        calve_testkit::calve::kill9(&mut run);
    }
    let ran = ended.is_some_and(|e| e.success());
    let logs = s.latest_log();
    assert!(
        check.contains("WOULD NOT START: the contract partitions by day(ts), the table by day(arrived_at)"),
        "calve check does not name the partitioning: {check}"
    );
    assert!(
        !ran && logs.contains("is partitioned by day(arrived_at), its contract asks for day(ts)"),
        "calve run wrote on into the wrong partitioning:\n{logs}"
    );
}

fn summary_has_no_unknown_arrival(summary: &serde_json::Value) -> bool {
    summary
        .get("calve.unknown-fields")
        .and_then(|v| v.as_str())
        .is_none_or(|fields| !fields.contains("arrived_at"))
}

/// The table's current metadata file, as `calve status` prints it.
fn summary_metadata(s: &Setup) -> String {
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(ok, "{status}");
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("metadata: "))
        .expect("a metadata line")
        .to_string()
}
