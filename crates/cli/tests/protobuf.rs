//! Protobuf through a schema registry, end to end on the real broker: producers use
//! confluent-kafka's own `ProtobufSerializer` (message classes compiled by protoc) against
//! the test kit's registry.
//!
//! v1 is registered by the serializer as it ships (a serialized descriptor, its
//! `common/address.proto` import registered as a reference); v2 — v1 plus a new optional
//! nested message — is registered as `.proto` text, as a schema pipeline would, and the
//! producer serialises with the subject's latest version. Runs of v1 and v2 alternate in one
//! partition, so both registry forms, references, the built-in `google/type/date.proto` and
//! every mapped type reach calve; v2's new field becomes a column on its own (additive), v1
//! rows read null in it. A record whose body is not its message and one with an id the
//! registry never gave go to the dead-letter table. Both readers see exactly the model.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce_bytes};
use calve_testkit::python::read_table;
use calve_testkit::registry::{produce_avro, AvroProduceOpts, RegistryServer, Serializer};
use common::*;
use serde_json::{json, Value};

const COLUMNS: &[&str] = &[
    "order_id", "status", "amount", "ts", "note", "tags", "attrs", "addr", "big", "day", "card", "cash", "extra",
    "shipping",
];

const CONTRACT: &str = r##"
[table]
name = "shop.pb_orders"
topic = "pb-orders"
format = "protobuf"

[schema]
columns = [
  { name = "order_id", type = "long", required = true },
  { name = "status",   type = "string" },
  { name = "amount",   type = "double" },
  { name = "ts",       type = "timestamptz", required = true },
  { name = "note",     type = "string" },
  { name = "tags",     type = "list<string>" },
  { name = "attrs",    type = "map<string, long>" },
  { name = "addr",     type = "struct<city: string, zip: int>" },
  { name = "big",      type = "long" },
  { name = "day",      type = "date" },
  { name = "card",     type = "string" },
  { name = "cash",     type = "long" },
  { name = "extra",    type = "string" },
]
evolution = "additive"
approver = "shop-leads"
on_breaking = "dead-letter"

[keys]
columns = []
from_kafka_key = false

[event_time]
column = "ts"
partition = "day"

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
team = "shop"
contact = "#shop"

[sla]
freshness = "1s"
completeness = "none"
"##;

const ADDRESS: &str = r#"syntax = "proto3";
package common;
message Address { string city = 1; int32 zip = 2; }
"#;

fn order_proto(v2: bool) -> String {
    let shipping = if v2 {
        "  message Shipping { string carrier = 1; optional int32 days = 2; }\n  Shipping shipping = 14;\n"
    } else {
        ""
    };
    format!(
        r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";
import "google/type/date.proto";
import "common/address.proto";

message Order {{
  enum Status {{ NEW = 0; PAID = 1; SHIPPED = 2; }}
  int64 order_id = 1;
  Status status = 2;
  double amount = 3;
  google.protobuf.Timestamp ts = 4;
  google.protobuf.StringValue note = 5;
  repeated string tags = 6;
  map<string, int64> attrs = 7;
  common.Address addr = 8;
  uint64 big = 9;
  google.type.Date day = 10;
  oneof payment {{ string card = 11; int64 cash = 12; }}
  google.protobuf.Struct extra = 13;
{shipping}}}
"#
    )
}

/// Order `i` in proto3 JSON: every field set on odd ids, the sparse defaults on even ones.
fn value(i: u64, v2: bool) -> Value {
    let mut v = json!({"orderId": i, "ts": format!("2025-11-24T10:{:02}:00.123456Z", i % 60)});
    if i % 2 == 1 {
        v["status"] = json!("PAID");
        v["amount"] = json!(i as f64 + 0.25);
        v["note"] = json!(format!("note {i}"));
        v["tags"] = json!(["a", format!("t{i}")]);
        v["attrs"] = json!({"x": i, "y": -1});
        v["addr"] = json!({"city": "Oslo", "zip": 150 + i});
        v["big"] = json!((1u64 << 62).to_string());
        v["day"] = json!({"year": 2024, "month": 2, "day": 29});
        v["card"] = json!("visa");
        v["extra"] = json!({"gift": true});
    } else {
        v["cash"] = json!(i * 10);
    }
    if v2 {
        v["shipping"] = json!({"carrier": format!("dhl{i}"), "days": 2});
    }
    v
}

fn lines(ids: std::ops::Range<u64>, v2: bool) -> Vec<Value> {
    ids.map(|i| {
        json!({"schema": order_proto(v2), "message": "shop.Order", "proto_file": "shop/order.proto",
               "imports": {"common/address.proto": ADDRESS}, "key": format!("k{i}"), "value": value(i, v2)})
    })
    .collect()
}

#[test]
fn protobuf_orders_of_two_registered_forms_land_in_one_table() {
    let broker = Broker::start();
    let registry = RegistryServer::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "pb-orders", 1);
    let v1_opts = AvroProduceOpts {
        serializer: Serializer::Protobuf,
        ..registry.produce_opts()
    };
    let produce = |ids: std::ops::Range<u64>, v2: bool, opts: &AvroProduceOpts| {
        produce_avro(&bootstrap, "pb-orders", &registry.url(), &lines(ids, v2), opts).value_ids
    };
    let v1 = produce(0..20, false, &v1_opts)[0].expect("framed");
    // v2 as `.proto` text, its import a reference to the version v1's serializer registered.
    let refs = json!([{"name": "common/address.proto", "subject": "common/address.proto", "version": 1}]);
    let body = json!({"schemaType": "PROTOBUF", "schema": order_proto(true), "references": refs});
    let (status, answer) = registry
        .call("POST", "/subjects/pb-orders-value/versions", Some(&body))
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let v2_opts = AvroProduceOpts {
        auto_register: false,
        use_latest: true,
        ..v1_opts.clone()
    };
    let v2 = produce(20..40, true, &v2_opts)[0].expect("framed");
    assert_ne!(v1, v2);
    // Between good records: v1's framing around a body that is no Order (a field 1 of wire
    // type 7, which does not exist), and an id the registry never gave.
    let mut broken = vec![0u8];
    broken.extend(v1.to_be_bytes());
    broken.extend([0, 0x0f, 0xff]);
    let mut unknown = vec![0u8, 0, 0, 0x27, 0x0f, 0];
    unknown.extend([0x08, 0x01]);
    produce_bytes(
        &bootstrap,
        "pb-orders",
        &[
            ("bad1".into(), Some(broken), None),
            ("bad2".into(), Some(unknown), None),
        ],
    );
    produce(40..60, false, &v1_opts);
    produce(60..80, true, &v2_opts);

    // What calve is served: v1 as the serializer registered it, v2 as the text it was given.
    let served = |id: u32| registry.call("GET", &format!("/schemas/ids/{id}"), None).unwrap().1;
    assert!(
        !served(v1)["schema"].as_str().unwrap().contains("syntax"),
        "v1 is a serialized descriptor"
    );
    assert!(
        served(v2)["schema"].as_str().unwrap().contains("syntax"),
        "v2 is .proto text"
    );
    registry.clear_requests();

    let s = Setup::new(&bootstrap, CONTRACT);
    with_registry(&s, &registry.url());
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "{}", s.logs());

    let view = read_table(&s.catalog_db(), &s.warehouse(), "shop.pb_orders", COLUMNS);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = view.rows(reader);
        rows.sort_by_key(|r| r[0].as_u64());
        let got: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
        assert_eq!(got, (0..80).collect::<Vec<_>>(), "{reader}\n{}", s.logs());
        for r in &rows {
            check_row(reader, r);
        }
    }
    // The reference was read from the registry, under its subject's escaped name.
    let asked: Vec<String> = registry
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(String::from))
        .collect();
    assert!(
        asked.iter().any(|p| p == "/subjects/common%2Faddress.proto/versions/1"),
        "{asked:?}"
    );
    let dlq = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.pb_orders__dlq",
        &["error_kind", "error"],
    );
    let mut dead = dlq.rows("duckdb");
    dead.sort_by_key(|r| r[0].as_str().map(String::from));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0][0], json!("malformed-protobuf"), "{dead:?}");
    assert!(dead[0][1].as_str().unwrap().contains("shop.Order"), "{dead:?}");
    assert_eq!(dead[1][0], json!("unknown-schema"), "{dead:?}");
    assert!(dead[1][1].as_str().unwrap().contains("9999"), "{dead:?}");
}

fn check_row(reader: &str, r: &[Value]) {
    let i = r[0].as_u64().unwrap();
    let col = |name: &str| r[COLUMNS.iter().position(|c| *c == name).unwrap()].clone();
    let at = format!("{reader}: order {i}");
    let ts = format!("2025-11-24T10:{:02}:00.123456Z", i % 60);
    assert_eq!(instant(&col("ts")), instant(&json!(ts)), "{at}");
    if i % 2 == 1 {
        assert_eq!(col("status"), json!("PAID"), "{at}");
        assert_eq!(col("amount").as_f64(), Some(i as f64 + 0.25), "{at}");
        assert_eq!(col("note"), json!(format!("note {i}")), "{at}");
        assert_eq!(col("tags"), json!(["a", format!("t{i}")]), "{at}");
        assert_eq!(col("attrs"), json!({"x": i, "y": -1}), "{at}");
        assert_eq!(col("addr"), json!({"city": "Oslo", "zip": 150 + i}), "{at}");
        assert_eq!(col("big"), json!(1u64 << 62), "{at}");
        assert_eq!(col("day"), json!("2024-02-29"), "{at}");
        assert_eq!(
            (col("card"), col("cash")),
            (json!("visa"), Value::Null),
            "{at}: one oneof member"
        );
        let extra: Value = serde_json::from_str(col("extra").as_str().unwrap()).unwrap();
        assert_eq!(extra, json!({"gift": true}), "{at}");
    } else {
        // Proto3 defaults where the writer set nothing; null where the field tracks presence.
        assert_eq!(col("status"), json!("NEW"), "{at}");
        assert_eq!(col("amount").as_f64(), Some(0.0), "{at}");
        assert_eq!(col("big"), json!(0), "{at}");
        assert_eq!(col("tags"), json!([]), "{at}");
        for name in ["note", "addr", "day", "card", "extra"] {
            assert_eq!(col(name), Value::Null, "{at}: {name}");
        }
        assert_eq!(col("cash"), json!(i * 10), "{at}");
    }
    let v2 = (20..40).contains(&i) || (60..80).contains(&i);
    let shipping = col("shipping");
    match v2 {
        true => assert_eq!(shipping, json!({"carrier": format!("dhl{i}"), "days": 2}), "{at}"),
        false => assert_eq!(shipping, Value::Null, "{at}: v1 rows read null"),
    }
}
