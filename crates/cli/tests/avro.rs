//! Avro through a schema registry, end to end on the real broker: producers use
//! confluent-kafka's own `AvroSerializer` against the test kit's registry (the real Confluent
//! REST API with real compatibility checks), so the bytes calve reads are what production
//! sends. Proves: records of two writer versions interleaved in one partition land in one
//! table (v2's new top-level and nested fields become columns, v1 rows read null in them);
//! a registry answering 503 for 30 s costs no record (the table waits, says so, and resumes);
//! a record with an unknown schema id and one without the framing go to the dead-letter table
//! with the reason; a writer version that breaks the contract holds the table until approved.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce};
use calve_testkit::python::{read_table, ForeignView};
use calve_testkit::registry::{produce_avro, RegistryServer};
use common::*;
use serde_json::{json, Value};

const CONTRACT: &str = r##"
[table]
name = "shop.orders"
topic = "orders"
format = "avro"

[schema]
columns = [
  { name = "order_id", type = "long",          required = true },
  { name = "customer", type = "string",        required = true },
  { name = "amount",   type = "decimal(10,2)" },
  { name = "ts",       type = "timestamptz",   required = true },
  { name = "address",  type = "struct<city: string>" },
]
evolution = "additive"
approver = "data-platform"
on_breaking = "ON_BREAKING"

[keys]
columns = []
from_kafka_key = false

[event_time]
column = "ts"
partition = "day"

[late_data]
policy = "rewrite"
allowed_lateness = "3d"

[deletes]
tombstone = "dead-letter"
erasure = "physical"

[maintenance]
target_file_size = "256MB"
keep_snapshots = { min = 5, max_age = "24h" }
orphan_min_age = "1d"
budget = "20GB/h"

[owner]
team = "checkout-data"
contact = "#checkout-data-oncall"

[sla]
freshness = "1s"
completeness = "none"
"##;

const TS0_US: i64 = 1_764_000_000_000_000;

/// Writer schema v1, or v2 (`address.floor` and `discount` added, both optional), or v3
/// (`customer` gone: a required column the writer no longer has).
fn schema(version: u32) -> Value {
    let mut address = vec![json!({"name": "city", "type": "string"})];
    if version >= 2 {
        address.push(json!({"name": "floor", "type": ["null", "int"], "default": null}));
    }
    let mut fields = vec![json!({"name": "order_id", "type": "long"})];
    if version < 3 {
        fields.push(json!({"name": "customer", "type": "string"}));
    }
    fields.extend([
        json!({"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}}),
        json!({"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}}),
        json!({"name": "address", "type": ["null", {"type": "record", "name": "Address", "fields": address}], "default": null}),
    ]);
    if version >= 2 {
        fields.push(json!({"name": "discount", "type": ["null", "double"], "default": null}));
    }
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": fields})
}

/// Order `i` in writer `version`: odd orders of the mixed range are v2.
fn line(i: u64, version: u32) -> Value {
    let address = match i % 5 {
        0 => Value::Null,
        _ if version >= 2 => json!({"city": format!("city{}", i % 3), "floor": (i % 7) as i64}),
        _ => json!({"city": format!("city{}", i % 3)}),
    };
    let mut value = json!({
        "order_id": i,
        "amount": {"$decimal": format!("{}.{:02}", i, i % 100)},
        "ts": {"$timestamp_us": TS0_US + i as i64 * 1_000_000},
        "address": address,
    });
    if version < 3 {
        value["customer"] = json!(format!("c{i}"));
    }
    if version >= 2 {
        value["discount"] = json!(i as f64 * 0.5);
    }
    json!({"schema": schema(version), "key": format!("k{i}"), "value": value})
}

/// The registry's password reaches calve only through this variable.
const PASSWORD_VAR: &str = "CALVE_TEST_REGISTRY_PASSWORD";
const PASSWORD: &str = "s3cret-registry-pw";

fn setup(broker: &Broker, registry: &RegistryServer, on_breaking: &str) -> Setup {
    let s = Setup::new(&broker.bootstrap(), &CONTRACT.replace("ON_BREAKING", on_breaking));
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!(
        "\n[registry]\nurl = \"{}\"\ntimeout = \"2s\"\n",
        registry.url()
    ));
    if let Some((user, _)) = registry.auth() {
        cfg.push_str(&format!("username = \"{user}\"\npassword_env = \"{PASSWORD_VAR}\"\n"));
    }
    std::fs::write(&s.config, cfg).unwrap();
    s
}

fn run(s: &Setup) -> std::process::ExitStatus {
    let mut child = s.spawn_with_env(&calve_bin(), &["run", "--until-caught-up"], &[(PASSWORD_VAR, PASSWORD)]);
    wait_for(&mut child, Duration::from_secs(180)).expect("calve did not finish in 180s")
}

fn read(s: &Setup) -> ForeignView {
    read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.orders",
        &["order_id", "customer", "amount", "ts", "address", "discount"],
    )
}

/// Both readers see exactly orders `ids`, each with the values its writer version gave it.
fn assert_orders(view: &ForeignView, ids: &[u64], version_of: impl Fn(u64) -> u32, logs: &str) {
    for reader in ["pyiceberg", "duckdb"] {
        let rows = view.rows(reader);
        let got: Vec<u64> = {
            let mut v: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
            v.sort();
            v
        };
        assert_eq!(
            got,
            ids,
            "{reader}: every order once\n{}",
            &logs[logs.len().saturating_sub(5000)..]
        );
        for r in &rows {
            let i = r[0].as_u64().unwrap();
            let v = version_of(i);
            let customer = if v < 3 { json!(format!("c{i}")) } else { Value::Null };
            assert_eq!(r[1], customer, "{reader}: customer of {i}");
            assert_eq!(r[2], json!(format!("{}.{:02}", i, i % 100)), "{reader}: amount of {i}");
            let ts = chrono::DateTime::from_timestamp_micros(TS0_US + i as i64 * 1_000_000).unwrap();
            let want = ts.format("%Y-%m-%dT%H:%M:%S").to_string();
            assert!(
                r[3].as_str().unwrap().starts_with(&want),
                "{reader}: ts of {i}: {} vs {want}",
                r[3]
            );
            let address = match i % 5 {
                0 => Value::Null,
                _ if v >= 2 => json!({"city": format!("city{}", i % 3), "floor": i % 7}),
                _ => json!({"city": format!("city{}", i % 3), "floor": null}),
            };
            assert_eq!(r[4], address, "{reader}: address of {i} (v{v})");
            let discount = if v >= 2 { json!(i as f64 * 0.5) } else { Value::Null };
            assert_eq!(r[5], discount, "{reader}: discount of {i}");
        }
    }
}

#[test]
fn two_writer_versions_interleaved_land_in_one_table_through_a_registry_outage() {
    let broker = Broker::start();
    let registry = RegistryServer::start();
    create_topic(&broker.bootstrap(), "orders", 1);
    let s = setup(&broker, &registry, "dead-letter");
    let opts = registry.produce_opts();

    let v1: Vec<Value> = (0..100).map(|i| line(i, 1)).collect();
    produce_avro(&broker.bootstrap(), "orders", &registry.url(), &v1, &opts);
    assert!(run(&s).success(), "{}", s.logs());

    // v1 and v2 interleaved in one partition, and two records calve cannot read: one
    // without the framing (plain JSON), one framed with an id the registry never gave.
    let mixed: Vec<Value> = (100..300).map(|i| line(i, if i % 2 == 1 { 2 } else { 1 })).collect();
    let ids = produce_avro(&broker.bootstrap(), "orders", &registry.url(), &mixed, &opts).value_ids;
    assert!(ids.contains(&Some(1)) && ids.contains(&Some(2)), "{ids:?}");
    let unknown_id = "\u{0}\u{0}\u{0}\u{27}\u{f}not avro".to_string(); // schema id 9999
    produce(
        &broker.bootstrap(),
        "orders",
        &[
            ("bad1".into(), Some(r#"{"order_id": 1000}"#.into()), None),
            ("bad2".into(), Some(unknown_id), None),
        ],
    );
    produce_avro(&broker.bootstrap(), "orders", &registry.url(), &[line(300, 2)], &opts);

    // A new process knows no schema; the registry answers 503 for 30 s.
    registry.clear_requests();
    registry.fault_status(503, 30.0);
    let started = std::time::Instant::now();
    assert!(run(&s).success(), "{}", s.logs());
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "calve waited for the registry"
    );
    let log = s.latest_log();
    assert!(
        log.contains("the schema registry cannot answer; the table waits"),
        "{log}"
    );
    assert!(log.contains("the schema registry answers again"), "{log}");
    let asked = registry.requests();
    let refused = asked.iter().filter(|r| r["status"] == json!(503)).count();
    assert!(
        (3..=40).contains(&refused),
        "calve asked again with backoff, not in a loop: {refused} refused asks"
    );

    let all: Vec<u64> = (0..=300).collect();
    let version = |i: u64| {
        if (100..=300).contains(&i) && i % 2 == 1 || i == 300 {
            2
        } else {
            1
        }
    };
    assert_orders(&read(&s), &all, version, &s.logs());

    let dlq = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.orders__dlq",
        &["offset", "error_kind", "error"],
    );
    let dead = dlq.rows("duckdb");
    let kinds: Vec<&str> = dead.iter().map(|r| r[1].as_str().unwrap()).collect();
    assert_eq!(dead.len(), 2, "only the two unreadable records: {dead:?}");
    assert!(
        kinds.contains(&"malformed-avro") && kinds.contains(&"unknown-schema"),
        "{dead:?}"
    );
    let unknown = dead.iter().find(|r| r[1] == json!("unknown-schema")).unwrap();
    assert!(log.contains("schema_id=9999"), "the unknown id was asked about: {log}");
    assert!(
        unknown[2].as_str().unwrap().contains("9999"),
        "the id is in the reason: {unknown:?}"
    );

    // The new fields became columns with the rows that carry them.
    let summary = read(&s).current_summary();
    assert!(log.contains("events carry new fields"), "{log}");
    let counted: Value = serde_json::from_str(summary["calve.unknown-fields"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(counted, json!({}), "{summary}");
}

#[test]
fn a_writer_version_that_drops_a_required_column_holds_the_table_until_approved() {
    let broker = Broker::start();
    // With basic auth: calve's password comes from a variable and appears in no log.
    let registry = RegistryServer::start_with_auth("calve", PASSWORD);
    create_topic(&broker.bootstrap(), "orders", 1);
    let s = setup(&broker, &registry, "hold");
    let opts = registry.produce_opts();
    let before: Vec<Value> = (0..50).map(|i| line(i, 2)).collect();
    produce_avro(&broker.bootstrap(), "orders", &registry.url(), &before, &opts);
    // v3 drops `customer`, which the contract requires; Avro-wise a reader can still read
    // it, so the registry accepts it as BACKWARD compatible. The contract decides.
    let after: Vec<Value> = (50..80).map(|i| line(i, 3)).collect();
    produce_avro(&broker.bootstrap(), "orders", &registry.url(), &after, &opts);

    // A registry slower than calve's timeout is waited for like one that is down.
    registry.fault_delay(3.0, 6.0);
    let held = run(&s);
    assert!(
        !held.success(),
        "a held table ends --until-caught-up with an error\n{}",
        s.logs()
    );
    assert!(!s.logs().contains(PASSWORD), "the registry password is in no log");
    let log = s.latest_log();
    assert!(log.contains("TABLE HELD"), "{log}");
    assert!(
        log.contains("an Avro record of writer schema id"),
        "the sample names the schema id: {log}"
    );
    let view = read(&s);
    assert_orders(&view, &(0..50).collect::<Vec<_>>(), |_| 2, &s.logs());

    let (ok, pending) = s.cli(&calve_bin(), &["schema", "pending"]);
    assert!(ok, "{pending}");
    assert!(pending.contains("customer"), "{pending}");
    let (ok, out) = s.cli(
        &calve_bin(),
        &["schema", "approve", "--table", "shop.orders", "--by", "alice"],
    );
    assert!(ok, "{out}");
    assert!(run(&s).success(), "{}", s.logs());
    let version = |i: u64| if i < 50 { 2 } else { 3 };
    assert_orders(&read(&s), &(0..80).collect::<Vec<_>>(), version, &s.logs());
}
