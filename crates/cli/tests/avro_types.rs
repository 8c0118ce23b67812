//! The Avro type matrix end to end: one writer schema holding every Avro type and logical
//! type calve maps (primitives, bytes, fixed, enum, uuid, date, time-millis/-micros,
//! timestamp-millis/-micros/-nanos, local-timestamp-millis/-micros, decimal as bytes and as
//! fixed, arrays, maps, nested records, `[T, "null"]` in either order, a union of several
//! types), produced by confluent-kafka's `AvroSerializer` through the test kit's registry and
//! read back exactly by PyIceberg and DuckDB (timestamps compared as instants).

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::create_topic;
use calve_testkit::python::read_table;
use calve_testkit::registry::{produce_avro, RegistryServer};
use common::*;
use serde_json::{json, Value};

const COLUMNS: &[&str] = &[
    "id", "b", "i", "f", "d", "s", "bin", "fx", "e", "u", "day", "t_ms", "t_us", "ts_ms", "ts_us", "ts_ns", "lts_ms",
    "lts_us", "dec", "decf", "tags", "attrs", "addr", "opt_last", "choice",
];

const CONTRACT: &str = r##"
[table]
name = "lab.avro_types"
topic = "avro-types"
format = "avro"

[schema]
columns = [
  { name = "id",       type = "long", required = true },
  { name = "b",        type = "boolean" },
  { name = "i",        type = "int" },
  { name = "f",        type = "float" },
  { name = "d",        type = "double" },
  { name = "s",        type = "string" },
  { name = "bin",      type = "binary" },
  { name = "fx",       type = "fixed[4]" },
  { name = "e",        type = "string" },
  { name = "u",        type = "uuid" },
  { name = "day",      type = "date" },
  { name = "t_ms",     type = "time" },
  { name = "t_us",     type = "time" },
  { name = "ts_ms",    type = "timestamptz", required = true },
  { name = "ts_us",    type = "timestamptz" },
  { name = "ts_ns",    type = "timestamptz" },
  { name = "lts_ms",   type = "timestamp" },
  { name = "lts_us",   type = "timestamp" },
  { name = "dec",      type = "decimal(9,3)" },
  { name = "decf",     type = "decimal(20,4)" },
  { name = "tags",     type = "list<string>" },
  { name = "attrs",    type = "map<string, long>" },
  { name = "addr",     type = "struct<zip: int not null, geo: struct<lat: double>>" },
  { name = "opt_last", type = "long" },
  { name = "choice",   type = "struct<int: int, string: string>" },
]
evolution = "frozen"
approver = "lab-leads"
on_breaking = "dead-letter"

[keys]
columns = []
from_kafka_key = false

[event_time]
column = "ts_ms"
partition = "hour"

[late_data]
policy = "rewrite"
allowed_lateness = "3650d"

[deletes]
tombstone = "dead-letter"
erasure = "physical"

[maintenance]
target_file_size = "256MB"
keep_snapshots = { min = 5, max_age = "24h" }
orphan_min_age = "1d"
budget = "20GB/h"

[owner]
team = "lab"
contact = "#lab"

[sla]
freshness = "1s"
completeness = "none"
"##;

fn schema() -> Value {
    let logical = |base: &str, logical: &str| json!({"type": base, "logicalType": logical});
    json!({"type": "record", "name": "Everything", "namespace": "lab", "fields": [
        {"name": "id", "type": "long"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "bin", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "u", "type": logical("string", "uuid")},
        {"name": "day", "type": logical("int", "date")},
        {"name": "t_ms", "type": logical("int", "time-millis")},
        {"name": "t_us", "type": logical("long", "time-micros")},
        {"name": "ts_ms", "type": logical("long", "timestamp-millis")},
        {"name": "ts_us", "type": logical("long", "timestamp-micros")},
        {"name": "ts_ns", "type": logical("long", "timestamp-nanos")},
        {"name": "lts_ms", "type": logical("long", "local-timestamp-millis")},
        {"name": "lts_us", "type": logical("long", "local-timestamp-micros")},
        {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}},
        {"name": "decf", "type": {"type": "fixed", "name": "Dec", "size": 9, "logicalType": "decimal", "precision": 20, "scale": 4}},
        {"name": "tags", "type": {"type": "array", "items": ["null", "string"]}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "addr", "type": ["null", {"type": "record", "name": "Addr", "fields": [
            {"name": "zip", "type": "int"},
            {"name": "geo", "type": {"type": "record", "name": "Geo", "fields": [{"name": "lat", "type": "double"}]}}]}], "default": null},
        {"name": "opt_last", "type": ["long", "null"]},
        {"name": "choice", "type": ["null", "int", "string"], "default": null}
    ]})
}

/// The full record (id 1) and a sparse one (id 2: nulls wherever the schema allows).
fn records() -> Vec<Value> {
    let full = json!({
        "id": 1, "b": true, "i": -7, "f": 1.5, "d": 0.1, "s": "héllo \"world\"\n",
        "bin": {"$bytes_b64": "AQID"}, "fx": {"$bytes_b64": "AAECAw=="}, "e": "GREEN",
        "u": {"$uuid": "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"}, "day": {"$date": "2024-02-29"},
        "t_ms": {"$time_us": 3_600_500_000u64}, "t_us": {"$time_us": 3_723_000_001u64},
        "ts_ms": {"$timestamp_ms": 1_700_000_000_123u64}, "ts_us": {"$timestamp_us": 1_700_000_000_123_456u64},
        "ts_ns": 1_700_000_000_123_456_789u64,
        "lts_ms": {"$local_timestamp_us": 1_709_208_000_123_000u64},
        "lts_us": {"$local_timestamp_us": 1_709_208_000_123_456u64},
        "dec": {"$decimal": "-123456.789"}, "decf": {"$decimal": "1234567890123456.7890"},
        "tags": ["a", null, "c"], "attrs": {"x": 1, "y": -2},
        "addr": {"zip": 12345, "geo": {"lat": 52.5}}, "opt_last": 42,
        "choice": {"$union": ["string", "seven"]},
    });
    let sparse = json!({
        "id": 2, "b": false, "i": 0, "f": -0.25, "d": -1e300, "s": "",
        "bin": {"$bytes_b64": ""}, "fx": {"$bytes_b64": "/////w=="}, "e": "RED",
        "u": {"$uuid": "00000000-0000-0000-0000-000000000001"}, "day": {"$date": "1969-12-31"},
        "t_ms": {"$time_us": 0}, "t_us": {"$time_us": 86_399_999_999u64},
        "ts_ms": {"$timestamp_ms": 0}, "ts_us": {"$timestamp_us": 0}, "ts_ns": 0,
        "lts_ms": {"$local_timestamp_us": 0}, "lts_us": {"$local_timestamp_us": 0},
        "dec": {"$decimal": "0.001"}, "decf": {"$decimal": "-0.0001"},
        "tags": [], "attrs": {}, "addr": null, "opt_last": null, "choice": {"$union": ["int", 7]},
    });
    [full, sparse]
        .into_iter()
        .map(|v| json!({"schema": schema(), "key": "k", "value": v}))
        .collect()
}

#[test]
fn every_avro_type_reads_back_exactly_in_both_readers() {
    let broker = Broker::start();
    let registry = RegistryServer::start();
    create_topic(&broker.bootstrap(), "avro-types", 1);
    produce_avro(
        &broker.bootstrap(),
        "avro-types",
        &registry.url(),
        &records(),
        &registry.produce_opts(),
    );
    let s = Setup::new(&broker.bootstrap(), CONTRACT);
    with_registry(&s, &registry.url());
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "{}", s.logs());

    let view = read_table(&s.catalog_db(), &s.warehouse(), "lab.avro_types", COLUMNS);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = view.rows(reader);
        rows.sort_by_key(|r| r[0].as_i64());
        assert_eq!(rows.len(), 2, "{reader}: {rows:?}\n{}", s.logs());
        let col = |row: usize, name: &str| rows[row][COLUMNS.iter().position(|c| *c == name).unwrap()].clone();
        let full = |name: &str| col(0, name);
        assert_eq!(full("b"), json!(true), "{reader}");
        assert_eq!(full("i"), json!(-7), "{reader}");
        assert_eq!(full("f").as_f64(), Some(1.5), "{reader}");
        assert_eq!(full("d").as_f64(), Some(0.1), "{reader}: doubles exactly");
        assert_eq!(full("s"), json!("héllo \"world\"\n"), "{reader}");
        assert_eq!(full("bin"), json!("010203"), "{reader}");
        assert_eq!(full("fx"), json!("00010203"), "{reader}");
        assert_eq!(full("e"), json!("GREEN"), "{reader}: enums as their symbol");
        assert_eq!(full("u"), json!("6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b"), "{reader}");
        assert_eq!(full("day"), json!("2024-02-29"), "{reader}");
        assert_eq!(full("t_ms"), json!("01:00:00.500000"), "{reader}");
        assert_eq!(full("t_us"), json!("01:02:03.000001"), "{reader}");
        assert_eq!(instant(&full("ts_ms")), 1_700_000_000_123_000, "{reader}");
        assert_eq!(instant(&full("ts_us")), 1_700_000_000_123_456, "{reader}");
        assert_eq!(
            instant(&full("ts_ns")),
            1_700_000_000_123_456,
            "{reader}: nanos cut to micros"
        );
        assert_eq!(
            instant(&full("lts_ms")),
            1_709_208_000_123_000,
            "{reader}: wall-clock time"
        );
        assert_eq!(instant(&full("lts_us")), 1_709_208_000_123_456, "{reader}");
        assert_eq!(full("dec"), json!("-123456.789"), "{reader}");
        assert_eq!(
            full("decf"),
            json!("1234567890123456.7890"),
            "{reader}: a fixed decimal"
        );
        assert_eq!(full("tags"), json!(["a", null, "c"]), "{reader}");
        assert_eq!(full("attrs"), json!({"x": 1, "y": -2}), "{reader}");
        assert_eq!(full("addr"), json!({"zip": 12345, "geo": {"lat": 52.5}}), "{reader}");
        assert_eq!(full("opt_last"), json!(42), "{reader}: [long, null]");
        assert_eq!(full("choice"), json!({"int": null, "string": "seven"}), "{reader}");

        let sparse = |name: &str| col(1, name);
        assert_eq!(sparse("f").as_f64(), Some(-0.25), "{reader}");
        assert_eq!(sparse("d").as_f64(), Some(-1e300), "{reader}");
        assert_eq!(sparse("bin"), json!(""), "{reader}: empty bytes are not null");
        assert_eq!(sparse("fx"), json!("ffffffff"), "{reader}");
        assert_eq!(sparse("u"), json!("00000000000000000000000000000001"), "{reader}");
        assert_eq!(sparse("day"), json!("1969-12-31"), "{reader}: before the epoch");
        assert_eq!(sparse("t_us"), json!("23:59:59.999999"), "{reader}");
        assert_eq!(instant(&sparse("ts_ns")), 0, "{reader}");
        assert_eq!(sparse("dec"), json!("0.001"), "{reader}");
        assert_eq!(sparse("decf"), json!("-0.0001"), "{reader}");
        assert_eq!(sparse("tags"), json!([]), "{reader}");
        // PyArrow gives a map as (key, value) pairs: an empty one reads as an empty list.
        assert!(
            [json!({}), json!([])].contains(&sparse("attrs")),
            "{reader}: {}",
            sparse("attrs")
        );
        assert_eq!(sparse("addr"), Value::Null, "{reader}");
        assert_eq!(sparse("opt_last"), Value::Null, "{reader}");
        assert_eq!(sparse("choice"), json!({"int": 7, "string": null}), "{reader}");
    }
    let dlq = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "lab.avro_types__dlq",
        &["offset", "error"],
    );
    assert!(dlq.rows("duckdb").is_empty(), "{:?}", dlq.rows("duckdb"));
}
