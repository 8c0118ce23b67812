//! Keys in the registry's formats, end to end on the real broker: an upsert topic whose
//! Kafka keys and values are both Avro (confluent-kafka's `AvroSerializer` for each, the key a
//! plain `long`, as Kafka Connect's Avro converter writes a primitive key) into a keyed table.
//! Inserts, updates and tombstones interleave; a tombstone deletes the row its Avro key names,
//! and a tombstone whose framed key has an id the registry never gave goes to the dead-letter
//! table as a bad key. Both readers see exactly the model.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce_bytes};
use calve_testkit::python::read_table;
use calve_testkit::registry::{produce_avro, RegistryServer};
use common::*;
use serde_json::{json, Value};

const COLUMNS: &[&str] = &["customer_id", "name", "tier", "version", "updated_at"];

fn value_schema() -> Value {
    json!({"type": "record", "name": "Customer", "namespace": "crm", "fields": [
        {"name": "customer_id", "type": "long"},
        {"name": "name", "type": ["null", "string"], "default": null},
        {"name": "tier", "type": ["null", "string"], "default": null},
        {"name": "version", "type": "long"},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]})
}

fn upsert(id: i64, version: i64) -> Value {
    let value = json!({"customer_id": id, "name": format!("n{id}v{version}"), "tier": if id % 2 == 0 { "gold" } else { "free" },
                       "version": version, "updated_at": {"$timestamp_us": 1_700_000_000_000_000i64 + version * 1_000_000}});
    json!({"schema": value_schema(), "key_schema": "long", "key": id, "value": value})
}

fn tombstone(id: i64) -> Value {
    json!({"key_schema": "long", "key": id, "value": null})
}

#[test]
fn avro_keys_name_the_rows_their_tombstones_delete() {
    let broker = Broker::start();
    let registry = RegistryServer::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "customers", 1);
    let mut model: BTreeMap<i64, i64> = BTreeMap::new();
    let mut lines = Vec::new();
    for id in 1..=30 {
        lines.push(upsert(id, 1));
        model.insert(id, 1);
    }
    for id in [3, 7, 11, 30] {
        lines.push(tombstone(id));
        model.remove(&id);
    }
    for id in [2, 4, 7] {
        lines.push(upsert(id, 2));
        model.insert(id, 2);
    }
    lines.push(tombstone(4));
    model.remove(&4);
    let produced = produce_avro(
        &bootstrap,
        "customers",
        &registry.url(),
        &lines,
        &registry.produce_opts(),
    );
    assert!(produced.key_ids.iter().all(Option::is_some), "every key is framed Avro");
    // A tombstone whose key is framed with an id the registry never gave.
    // (Its bytes are all ASCII, so they travel as a string key.)
    let unknown_key = String::from_utf8(vec![0u8, 0, 0, 0x27, 0x0f, 0x02]).unwrap();
    produce_bytes(&bootstrap, "customers", &[(unknown_key, None, None)]);

    let contract = CUSTOMERS
        .replace("format = \"json\"", "format = \"avro\"")
        .replace("# kafka_key_format = \"registry\"", "kafka_key_format = \"registry\"")
        .replace("freshness = \"1m\"", "freshness = \"1s\"");
    let s = Setup::new(&bootstrap, &contract);
    with_registry(&s, &registry.url());
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "{}", s.logs());

    let view = read_table(&s.catalog_db(), &s.warehouse(), "crm.customers", COLUMNS);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = view.rows(reader);
        rows.sort_by_key(|r| r[0].as_i64());
        let got: BTreeMap<i64, i64> = rows
            .iter()
            .map(|r| (r[0].as_i64().unwrap(), r[3].as_i64().unwrap()))
            .collect();
        assert_eq!(got, model, "{reader}\n{}", s.logs());
        assert_eq!(rows.len(), model.len(), "{reader}: one row per live key");
        for r in &rows {
            let (id, version) = (r[0].as_i64().unwrap(), r[3].as_i64().unwrap());
            assert_eq!(r[1], json!(format!("n{id}v{version}")), "{reader}");
        }
    }
    let dlq = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "crm.customers__dlq",
        &["error_kind", "error"],
    );
    let dead = dlq.rows("duckdb");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0][0], json!("bad-key"), "{dead:?}");
    assert!(dead[0][1].as_str().unwrap().contains("9999"), "{dead:?}");
}
