//! Event time end to end on the real broker: the table's watermark (with a partition that
//! goes quiet), completeness published in every snapshot only once the watermark has passed
//! a day's end by the allowed lateness, late events under `dead-letter` (to the dead-letter
//! table, kind `late`, with their event time) and under `rewrite` (into their true day, which
//! is reported reopened). Two tables read one two-partition topic; each phase is a separate
//! `calve run --until-caught-up`, so the watermark is also resumed from the table every time.
//! Read back by PyIceberg and DuckDB.

mod common;

use calve_testkit::broker::Broker;
use calve_testkit::calve::Setup;
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::duckdb_sql;
use common::*;
use serde_json::Value;

const TOPIC: &str = "events";
const DEAD_LETTERING: &str = "shop.orders";
const REWRITING: &str = "shop.orders_rewrite";

/// Order `id` that happened at `ts`, on Kafka partition `partition`.
fn order(id: u64, ts: &str, partition: i32) -> Message {
    let value = format!(r#"{{"order_id":{id},"customer":"c{id}","amount":1.5,"status":"new","ts":"{ts}"}}"#);
    (format!("k{id}"), Some(value), Some(partition))
}

fn contract(name: &str, policy: &str) -> String {
    // A band longer than a phase: each phase commits once, when it has read everything.
    let text = orders_contract(TOPIC, "1m")
        .replace("name = \"shop.orders\"", &format!("name = \"{name}\""))
        .replace("policy = \"rewrite\"", &format!("policy = \"{policy}\""))
        .replace("allowed_lateness = \"3d\"", "allowed_lateness = \"1h\"")
        .replace("completeness = \"none\"", "completeness = \"watermark\"");
    assert!(text.contains(&format!("policy = \"{policy}\"")) && text.contains("completeness = \"watermark\""));
    text
}

/// The current snapshot's summary of `table`, and every snapshot's.
fn summaries(s: &Setup, table: &str) -> (Value, Vec<Value>) {
    let view = read_from(s, table, &["order_id"]);
    let all = view.snapshots().iter().map(|snap| snap["summary"].clone()).collect();
    (view.current_summary(), all)
}

/// Asserts the current snapshot of each of `tables` says `watermark` and `complete_through`.
fn assert_marks(s: &Setup, tables: &[&str], watermark: &str, complete_through: &str, why: &str) {
    for table in tables {
        let (summary, _) = summaries(s, table);
        let get = |k: &str| summary[k].as_str().unwrap_or_else(|| panic!("no {k} in {summary}"));
        assert_eq!(
            (get("calve.watermark"), get("calve.complete-through")),
            (watermark, complete_through),
            "{table}: {why}"
        );
    }
}

fn order_ids(s: &Setup, table: &str) -> Vec<u64> {
    let view = read_from(s, table, ORDER_COLUMNS);
    let by_pyiceberg = ids(&view.rows("pyiceberg"));
    assert_eq!(by_pyiceberg, ids(&view.rows("duckdb")), "{table}: the readers disagree");
    by_pyiceberg
}

/// The DuckDB recipe of `docs/completeness.md`, as written there: the query that waits for
/// 1 January and the one that reads it.
fn duckdb_recipe() -> (String, String) {
    let doc = include_str!("../../../docs/completeness.md");
    let section = &doc[doc.find("### DuckDB").expect("a DuckDB section")..];
    let mut blocks = section
        .split("```sql\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_string());
    (blocks.next().unwrap(), blocks.next().unwrap())
}

/// The dead-lettering table's current metadata file, as `calve status` prints it.
fn metadata_file(s: &Setup) -> String {
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(ok, "{status}");
    let line = status.lines().find_map(|l| l.trim().strip_prefix("metadata: "));
    line.unwrap_or_else(|| panic!("{status}")).to_string()
}

/// What the recipe's waiting query returns now: the snapshot to read, once 1 January is complete.
fn complete_day_snapshot(s: &Setup) -> Option<String> {
    let rows = duckdb_sql(&duckdb_recipe().0, &[("metadata", &metadata_file(s))]);
    assert!(rows.len() <= 1, "{rows:?}");
    rows.first().map(|r| r[0].clone().expect("a snapshot id"))
}

#[test]
fn watermark_completeness_and_late_data_on_a_real_broker() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, TOPIC, 2);
    let s = Setup::new(&bootstrap, &contract(DEAD_LETTERING, "dead-letter")).without_maintenance();
    std::fs::write(s.dir.path().join("rewrite.toml"), contract(REWRITING, "rewrite")).unwrap();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let cfg = cfg.replace(
        "contracts = [\"contract.toml\"]",
        "contracts = [\"contract.toml\", \"rewrite.toml\"]",
    );
    assert!(cfg.contains("rewrite.toml"));
    std::fs::write(&s.config, cfg).unwrap();
    let run = || run_to_end(&s, &["run", "--until-caught-up"]);

    // Partition 1 sends one early event and goes quiet; partition 0 runs on through the day.
    produce(&bootstrap, TOPIC, &[order(1, "2026-01-01T09:00:00Z", 1)]);
    let day: Vec<Message> = [(2, "10"), (3, "14"), (4, "18"), (5, "22")]
        .iter()
        .map(|(id, h)| order(*id, &format!("2026-01-01T{h}:00:00Z"), 0))
        .collect();
    produce(&bootstrap, TOPIC, &day);
    run();
    // The quiet partition's 09:00 does not hold the watermark back.
    assert_marks(
        &s,
        &[DEAD_LETTERING, REWRITING],
        "2026-01-01T22:00:00.000000Z",
        "2026-01-01T00:00:00.000000Z",
        "watermark at the newest event, 1 January not complete",
    );

    // 00:30 on 2 January: within the hour of lateness 1 January may still get events.
    produce(&bootstrap, TOPIC, &[order(6, "2026-01-02T00:30:00Z", 0)]);
    run();
    assert_marks(
        &s,
        &[DEAD_LETTERING],
        "2026-01-02T00:30:00.000000Z",
        "2026-01-01T00:00:00.000000Z",
        "1 January is not complete before the watermark passes its end by the lateness",
    );
    assert_eq!(complete_day_snapshot(&s), None, "DuckDB's recipe waits");

    // 01:30: the watermark has passed 1 January's end by the hour: it is complete.
    produce(&bootstrap, TOPIC, &[order(7, "2026-01-02T01:30:00Z", 0)]);
    run();
    assert_marks(
        &s,
        &[DEAD_LETTERING, REWRITING],
        "2026-01-02T01:30:00.000000Z",
        "2026-01-02T00:00:00.000000Z",
        "1 January complete",
    );
    let snapshot = complete_day_snapshot(&s).expect("DuckDB's recipe sees 1 January complete");
    let metadata = metadata_file(&s);
    let count = duckdb_sql(
        &duckdb_recipe().1,
        &[("metadata", &metadata), ("snapshot_id", &snapshot)],
    );
    assert_eq!(
        count,
        vec![vec![Some("5".to_string())]],
        "orders 1-5 happened on 1 January"
    );

    // Late events from both partitions (23:00 and, from the quiet one, 12:00 of 1 January)
    // and one within the lateness (00:45).
    produce(
        &bootstrap,
        TOPIC,
        &[
            order(8, "2026-01-01T23:00:00Z", 0),
            order(9, "2026-01-02T00:45:00Z", 0),
            order(10, "2026-01-01T12:00:00Z", 1),
        ],
    );
    run();
    let logs = s.logs();

    // dead-letter: the late ones are in the dead-letter table with their event time.
    assert_eq!(order_ids(&s, DEAD_LETTERING), vec![1, 2, 3, 4, 5, 6, 7, 9], "{logs}");
    let dlq = read_from(
        &s,
        "shop.orders__dlq",
        &["partition", "offset", "error_kind", "error", "value"],
    );
    for reader in ["pyiceberg", "duckdb"] {
        let rows = dlq.rows(reader);
        assert_eq!(rows.len(), 2, "{reader}: two late events dead-lettered: {rows:?}");
        for (row, at) in rows.iter().zip(["2026-01-01T23:00:00", "2026-01-01T12:00:00"]) {
            assert_eq!(row[2], "late", "{reader}: {row:?}");
            let error = row[3].as_str().unwrap();
            assert!(
                error.contains(at),
                "{reader}: the dead letter names its event time {at}: {error}"
            );
        }
    }
    let (_, history) = summaries(&s, DEAD_LETTERING);
    assert!(
        history.iter().all(|h| h.get("calve.reopened-partitions").is_none()),
        "dead-letter never reopens a complete day: {history:?}"
    );

    // rewrite: every event lands, 1 January is reported reopened by the commit that did it.
    assert_eq!(order_ids(&s, REWRITING), (1..=10).collect::<Vec<_>>(), "{logs}");
    let (current, history) = summaries(&s, REWRITING);
    assert_eq!(current["calve.reopened-partitions"], "ts_day=2026-01-01", "{current}");
    let reopening: Vec<&Value> = history
        .iter()
        .filter(|h| h.get("calve.reopened-partitions").is_some())
        .collect();
    assert_eq!(reopening.len(), 1, "one commit reopened the day: {history:?}");
    assert!(logs.contains("they are reopened"), "{logs}");

    // In no snapshot of either table was a day complete before the watermark passed its end
    // by the lateness.
    for table in [DEAD_LETTERING, REWRITING] {
        let (_, history) = summaries(&s, table);
        for h in history.iter().filter(|h| h.get("calve.complete-through").is_some()) {
            let (w, c) = (instant(&h["calve.watermark"]), instant(&h["calve.complete-through"]));
            assert!(
                c + 3_600_000_000 <= w,
                "{table}: complete through {c} with watermark {w}: {h}"
            );
        }
    }

    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains(
            "event time: watermark 2026-01-02T01:30:00.000000Z, complete through 2026-01-02T00:00:00.000000Z"
        ),
        "{status}"
    );
    assert!(
        status.contains("reopened by late events") && status.contains("ts_day=2026-01-01"),
        "{status}"
    );
    assert!(status.contains(" snapshots (metadata.json "), "{status}");
}
