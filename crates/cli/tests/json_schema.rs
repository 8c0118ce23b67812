//! JSON Schema through a schema registry, end to end on the real broker: producers use
//! confluent-kafka's own `JSONSerializer` against the test kit's registry. Two writer versions
//! interleaved in one partition land in one table; v2's new fields become columns of the type
//! the schema declares (`format: date-time` → a timestamp, although its values are strings);
//! a record its schema refuses and one with an id the registry never gave go to the
//! dead-letter table with the reason.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce_bytes};
use calve_testkit::python::read_table;
use calve_testkit::registry::{produce_avro, AvroProduceOpts, RegistryServer, Serializer};
use common::*;
use serde_json::{json, Value};

fn contract() -> String {
    orders_contract("orders", "1s")
        .replace("format = \"json\"", "format = \"json-schema\"")
        .replace("{ name = \"status\",   type = \"string\" },\n", "")
}

fn schema(version: u32) -> Value {
    let mut properties = json!({
        "order_id": {"type": "integer"},
        "customer": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "ts": {"type": "string", "format": "date-time"},
    });
    if version >= 2 {
        properties["shipped_at"] = json!({"type": ["null", "string"], "format": "date-time"});
        properties["coupon"] = json!({"type": "string"});
    }
    json!({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
           "properties": properties, "required": ["order_id", "ts"]})
}

fn line(i: u64) -> Value {
    let v2 = i % 2 == 1;
    let mut value = json!({"order_id": i, "customer": format!("c{i}"), "amount": i as f64 + 0.5,
                           "ts": "2025-11-24T10:00:00Z"});
    if v2 {
        value["shipped_at"] = json!(format!("2025-11-25T{:02}:00:00+02:00", i % 24));
        value["coupon"] = json!(format!("C{i}"));
    }
    json!({"schema": schema(if v2 { 2 } else { 1 }), "key": format!("k{i}"), "value": value})
}

#[test]
fn json_schema_records_land_and_the_registry_types_new_columns() {
    let broker = Broker::start();
    let registry = RegistryServer::start();
    create_topic(&broker.bootstrap(), "orders", 1);
    let opts = AvroProduceOpts {
        serializer: Serializer::Json,
        ..registry.produce_opts()
    };
    let lines: Vec<Value> = (0..100).map(line).collect();
    let ids = produce_avro(&broker.bootstrap(), "orders", &registry.url(), &lines[..50], &opts).value_ids;
    let v1 = ids[0].expect("framed");
    // What no JSONSerializer would send (it validates first), between good records: one that
    // v1's schema refuses although its values fit the table (a negative amount: only the
    // schema's `minimum` says no), and one framed with an id the registry never gave.
    let mut refused = vec![0u8];
    refused.extend(v1.to_be_bytes());
    refused.extend(br#"{"order_id": 1000, "amount": -5.0, "ts": "2025-11-24T10:00:00Z"}"#);
    let mut unknown = vec![0u8, 0, 0, 0x27, 0x0f];
    unknown.extend(br#"{"order_id": 1001, "ts": "2025-11-24T10:00:00Z"}"#);
    produce_bytes(
        &broker.bootstrap(),
        "orders",
        &[
            ("bad1".into(), Some(refused), None),
            ("bad2".into(), Some(unknown), None),
        ],
    );
    produce_avro(&broker.bootstrap(), "orders", &registry.url(), &lines[50..], &opts);

    let s = Setup::new(&broker.bootstrap(), &contract());
    with_registry(&s, &registry.url());
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "{}", s.logs());

    let columns = ["order_id", "customer", "amount", "shipped_at", "coupon"];
    let view = read_table(&s.catalog_db(), &s.warehouse(), "shop.orders", &columns);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = view.rows(reader);
        rows.sort_by_key(|r| r[0].as_u64());
        let got: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>(), "{reader}\n{}", s.logs());
        for r in &rows {
            let i = r[0].as_u64().unwrap();
            assert_eq!(r[1], json!(format!("c{i}")), "{reader}");
            assert_eq!(r[2].as_f64(), Some(i as f64 + 0.5), "{reader}");
            if i % 2 == 0 {
                assert_eq!(
                    (&r[3], &r[4]),
                    (&Value::Null, &Value::Null),
                    "{reader}: v1 rows read null"
                );
                continue;
            }
            // A timestamp column, as the schema says: the reader gives an instant, not the text.
            let text = format!("2025-11-25T{:02}:00:00+02:00", i % 24);
            let want = chrono::DateTime::parse_from_rfc3339(&text).unwrap().timestamp_micros();
            let got = r[3].as_str().unwrap();
            assert_ne!(got, text, "{reader}: shipped_at is not a string column");
            let got = instant(&r[3]);
            assert_eq!(got, want, "{reader}: shipped_at of {i}");
            assert_eq!(r[4], json!(format!("C{i}")), "{reader}");
        }
    }
    let dlq = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.orders__dlq",
        &["error_kind", "error"],
    );
    let mut dead = dlq.rows("duckdb");
    dead.sort_by_key(|r| r[0].as_str().map(String::from));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0][0], json!("schema-mismatch"), "{dead:?}");
    let reason = dead[0][1].as_str().unwrap();
    assert!(
        reason.starts_with("amount:") && reason.contains("JSON Schema"),
        "{dead:?}"
    );
    assert_eq!(dead[1][0], json!("unknown-schema"), "{dead:?}");
    assert!(dead[1][1].as_str().unwrap().contains("9999"), "{dead:?}");
}
