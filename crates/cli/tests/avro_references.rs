//! Avro schema references end to end on the real broker: the orders' writer schema names
//! `com.acme.Addr`, which another subject defines (and which itself names `com.acme.Geo` from
//! a third). confluent-kafka's `AvroSerializer` writes with the registered schema and its
//! references; calve follows the references through the registry, writes the types in, and
//! both readers see the rows, nested fields included.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::create_topic;
use calve_testkit::python::read_table;
use calve_testkit::registry::{produce_avro, RegistryServer};
use common::*;
use serde_json::{json, Value};

fn contract() -> String {
    orders_contract("orders", "1s")
        .replace("format = \"json\"", "format = \"avro\"")
        .replace(
            "{ name = \"status\",   type = \"string\" },\n",
            "{ name = \"status\",   type = \"string\" },\n  { name = \"ship_to\", type = \"struct<city: string, geo: struct<lat: double>>\" },\n",
        )
}

#[test]
fn referenced_types_are_followed_through_the_registry() {
    let broker = Broker::start();
    let registry = RegistryServer::start();
    create_topic(&broker.bootstrap(), "orders", 1);
    let geo = json!({"type": "record", "name": "Geo", "namespace": "com.acme", "fields": [{"name": "lat", "type": "double"}]});
    let addr = json!({"type": "record", "name": "Addr", "namespace": "com.acme", "fields": [
        {"name": "city", "type": "string"}, {"name": "geo", "type": "Geo"}]});
    let register = |subject: &str, schema: &Value, refs: Value| {
        let body = json!({"schema": schema.to_string(), "references": refs});
        let (status, answer) = registry
            .call("POST", &format!("/subjects/{subject}/versions"), Some(&body))
            .unwrap();
        assert_eq!(status, 200, "{answer}");
    };
    register("geo", &geo, json!([]));
    register(
        "addr",
        &addr,
        json!([{"name": "com.acme.Geo", "subject": "geo", "version": 1}]),
    );
    let order = json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "order_id", "type": "long"},
        {"name": "customer", "type": ["null", "string"], "default": null},
        {"name": "amount", "type": ["null", "double"], "default": null},
        {"name": "status", "type": ["null", "string"], "default": null},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "ship_to", "type": ["null", "com.acme.Addr"], "default": null}]});
    let refs = json!([{"name": "com.acme.Addr", "subject": "addr", "version": 1}]);
    let lines: Vec<Value> = (0..20u64)
        .map(|i| {
            let ship_to = match i % 4 {
                0 => Value::Null,
                _ => json!({"city": format!("c{i}"), "geo": {"lat": i as f64 / 2.0}}),
            };
            let value = json!({"order_id": i, "customer": format!("c{i}"), "amount": i as f64, "status": "NEW",
                               "ts": {"$timestamp_us": 1_700_000_000_000_000u64 + i}, "ship_to": ship_to});
            json!({"schema": order, "references": refs, "key": format!("k{i}"), "value": value})
        })
        .collect();
    produce_avro(
        &broker.bootstrap(),
        "orders",
        &registry.url(),
        &lines,
        &registry.produce_opts(),
    );

    let s = Setup::new(&broker.bootstrap(), &contract());
    with_registry(&s, &registry.url());
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "{}", s.logs());

    let view = read_table(&s.catalog_db(), &s.warehouse(), "shop.orders", &["order_id", "ship_to"]);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = view.rows(reader);
        rows.sort_by_key(|r| r[0].as_u64());
        assert_eq!(ids(&rows), (0..20).collect::<Vec<_>>(), "{reader}\n{}", s.logs());
        for r in &rows {
            let i = r[0].as_u64().unwrap();
            let want = match i % 4 {
                0 => Value::Null,
                _ => json!({"city": format!("c{i}"), "geo": {"lat": i as f64 / 2.0}}),
            };
            assert_eq!(r[1], want, "{reader}: order {i}");
        }
    }
    let dlq = read_table(&s.catalog_db(), &s.warehouse(), "shop.orders__dlq", &["error_kind"]);
    assert!(dlq.rows("duckdb").is_empty(), "{:?}", dlq.rows("duckdb"));
}
