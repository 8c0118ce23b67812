//! Values are built from proto3 JSON by prost-reflect against a schema compiled by protox, and
//! framed as the Confluent serializers frame them (the end-to-end tests use confluent-kafka's
//! own `ProtobufSerializer`).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use base64::Engine;
use calve_contract::{ColumnType, Element, StructField};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::ProtobufDecoder;
use crate::dead_letter::DeadLetterKind;
use crate::decode::test_columns::{column, field};
use crate::decode::Inferred;
use crate::registry::{Fetched, Import, SchemaKind, WriterSchema};

const V1: &str = r#"
syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";
import "common/address.proto";

message Order {
  enum Status { NEW = 0; PAID = 1; }
  int64 id = 1;
  Status status = 2;
  google.protobuf.Timestamp ts = 3;
  google.protobuf.StringValue note = 4;
  repeated string tags = 5;
  map<string, int64> attrs = 6;
  common.Address addr = 7;
  uint64 big = 8;
  oneof payment { string card = 9; int64 cash = 10; }
  google.protobuf.Struct extra = 11;
  // Declared after a map field: the map's entry type, which the compiler makes, comes first
  // among the nested types of the descriptor, but not among the messages the text declares.
  message Line { int64 id = 1; string sku = 2; }
}
message Refund { int64 id = 1; string reason = 2; }
"#;

const ADDRESS: &str = r#"syntax = "proto3"; package common; message Address { string city = 1; }"#;

/// V1 with a top-level `discount` and a nested `floor` in a message of its own.
const V2: &str = r#"
syntax = "proto3";
package shop;
message Order {
  int64 id = 1;
  double discount = 12;
  message Address { string city = 1; optional int32 floor = 2; }
  Address addr = 7;
}
"#;

fn string() -> Element {
    Element {
        ty: ColumnType::String,
        required: false,
    }
}

/// The table: `id long required, status string, ts timestamptz, note string,
/// tags list<string>, attrs map<string, long>, addr struct<city string>, big long,
/// card string, cash long, extra string`.
fn decoder() -> ProtobufDecoder {
    let addr = DataType::Struct(vec![field("city", DataType::Utf8, true, 20)].into());
    let tags = DataType::List(Arc::new(field("element", DataType::Utf8, true, 21)));
    let entries = DataType::Struct(
        vec![
            field("key", DataType::Utf8, false, 22),
            field("value", DataType::Int64, true, 23),
        ]
        .into(),
    );
    let attrs = DataType::Map(Arc::new(Field::new("key_value", entries, false)), false);
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    let schema = Arc::new(Schema::new(vec![
        field("id", DataType::Int64, false, 1),
        field("status", DataType::Utf8, true, 2),
        field("ts", ts, true, 3),
        field("note", DataType::Utf8, true, 4),
        field("tags", tags, true, 5),
        field("attrs", attrs, true, 6),
        field("addr", addr, true, 7),
        field("big", DataType::Int64, true, 8),
        field("card", DataType::Utf8, true, 9),
        field("cash", DataType::Int64, true, 10),
        field("extra", DataType::Utf8, true, 11),
    ]));
    let city = StructField {
        name: "city".into(),
        ty: ColumnType::String,
        required: false,
    };
    let map = ColumnType::Map {
        key: Box::new(ColumnType::String),
        value: Box::new(Element {
            ty: ColumnType::Long,
            required: false,
        }),
    };
    let columns = vec![
        column("id", ColumnType::Long, true),
        column("status", ColumnType::String, false),
        column("ts", ColumnType::Timestamptz, false),
        column("note", ColumnType::String, false),
        column("tags", ColumnType::List(Box::new(string())), false),
        column("attrs", map, false),
        column("addr", ColumnType::Struct(vec![city]), false),
        column("big", ColumnType::Long, false),
        column("card", ColumnType::String, false),
        column("cash", ColumnType::Long, false),
        column("extra", ColumnType::String, false),
    ];
    ProtobufDecoder::new(schema, &columns).unwrap().inferring(true)
}

fn writer(id: u32, text: &str) -> WriterSchema {
    let imports = vec![Import {
        name: "common/address.proto".into(),
        subject: "common/address.proto".into(),
        version: 1,
        text: ADDRESS.into(),
    }];
    WriterSchema {
        id,
        kind: SchemaKind::Protobuf,
        text: text.into(),
        references: vec!["common/address.proto".into()],
        imports,
    }
}

fn learn(d: &mut ProtobufDecoder, w: WriterSchema) {
    d.learn(w.id, &Fetched::Found(Arc::new(w))).unwrap();
}

/// The descriptor of `name` in schema `w`.
fn descriptor(w: &WriterSchema, name: &str) -> MessageDescriptor {
    super::schema::compile(w)
        .unwrap()
        .file
        .parent_pool()
        .get_message_by_name(name)
        .unwrap()
}

/// `json` (proto3 JSON) as message `name` of `w`, framed with `indexes` (already encoded).
fn framed(w: &WriterSchema, name: &str, indexes: &[u8], json: &str) -> Vec<u8> {
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(descriptor(w, name), &mut de).unwrap();
    let mut out = vec![0];
    out.extend_from_slice(&w.id.to_be_bytes());
    out.extend_from_slice(indexes);
    out.extend(msg.encode_to_vec());
    out
}

fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let a = b.column_by_name(col).unwrap().as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

fn longs(b: &RecordBatch, col: &str) -> Vec<Option<i64>> {
    let a = b.column_by_name(col).unwrap().as_primitive::<Int64Type>();
    (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect()
}

const FULL: &str = r#"{"id": "7", "status": "PAID", "ts": "2024-05-06T07:08:09.123456789Z", "note": "fragile",
  "tags": ["a", "b"], "attrs": {"z": "26", "b": "2"}, "addr": {"city": "Oslo"}, "big": "18446744073709551",
  "cash": "40", "extra": {"gift": true, "n": [1, "x"]}}"#;

#[test]
fn every_mapped_type_reads_into_its_column() {
    let mut d = decoder();
    let w = writer(1, V1);
    learn(&mut d, w.clone());
    let values = [
        framed(&w, "shop.Order", &[0], FULL),
        framed(&w, "shop.Order", &[0], r#"{"id": "8", "card": "visa"}"#),
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.kept, vec![0, 1]);
    let b = out.batch.unwrap();
    assert_eq!(longs(&b, "id"), vec![Some(7), Some(8)]);
    // Implicit presence: an unset enum is its default, an unset wrapper or oneof is null.
    assert_eq!(strings(&b, "status"), vec![Some("PAID".into()), Some("NEW".into())]);
    assert_eq!(strings(&b, "note"), vec![Some("fragile".into()), None]);
    assert_eq!(strings(&b, "card"), vec![None, Some("visa".into())]);
    assert_eq!(longs(&b, "cash"), vec![Some(40), None]);
    assert_eq!(longs(&b, "big"), vec![Some(18_446_744_073_709_551), Some(0)]);
    let ts = b
        .column_by_name("ts")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_714_979_289_123_456, "nanoseconds cut to microseconds");
    assert!(ts.is_null(1));
    let tags = b.column_by_name("tags").unwrap().as_list::<i32>();
    assert_eq!(
        tags.value(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(tags.value(1).len(), 0);
    let attrs = b.column_by_name("attrs").unwrap().as_map();
    let keys = attrs.value(0).column(0).as_string::<i32>().clone();
    let vals = attrs.value(0).column(1).as_primitive::<Int64Type>().clone();
    assert_eq!(keys.iter().flatten().collect::<Vec<_>>(), ["b", "z"]);
    assert_eq!(vals.values().to_vec(), [2, 26]);
    let addr = b.column_by_name("addr").unwrap().as_struct();
    assert_eq!(addr.column(0).as_string::<i32>().value(0), "Oslo");
    assert!(addr.is_null(1));
    let extra: serde_json::Value = serde_json::from_str(strings(&b, "extra")[0].as_deref().unwrap()).unwrap();
    assert_eq!(extra, serde_json::json!({"gift": true, "n": [1.0, "x"]}));
    // The table's field ids, not the writer's.
    assert_eq!(b.schema().field(0).metadata()["PARQUET:field_id"], "1");
}

#[test]
fn a_serialized_descriptor_reads_like_its_source() {
    let text = writer(1, V1);
    let compiled = super::schema::compile(&text).unwrap();
    let descriptor = compiled.file.file_descriptor_proto().encode_to_vec();
    let serialized = base64::engine::general_purpose::STANDARD.encode(descriptor);
    let mut d = decoder();
    learn(&mut d, writer(2, &serialized));
    let value = framed(&writer(2, V1), "shop.Order", &[0], FULL);
    // A serialized descriptor's nested types count the map entry: `Line` is [0, 1] here.
    let line = framed(
        &writer(2, V1),
        "shop.Order.Line",
        &[4, 0, 2],
        r#"{"id": "9", "sku": "x"}"#,
    );
    let out = d.decode(&[&value, &line]).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let status = strings(out.batch.as_ref().unwrap(), "status");
    assert_eq!(status, vec![Some("PAID".into()), None], "a `Line` has no status");
    assert_eq!(out.unknown_fields.get("sku"), Some(&1), "{:?}", out.unknown_fields);
}

#[test]
fn message_indexes_pick_the_message_and_bad_records_go_alone() {
    let mut d = decoder();
    let w = writer(1, V1);
    learn(&mut d, w.clone());
    let good = framed(&w, "shop.Order", &[0], r#"{"id": "1"}"#);
    // Indexes [1] (count 1, index 1; zigzag: 2, 2): the file's second message, `Refund`,
    // which fits the table too (only `id` is required) and shows its own field.
    let refund = framed(&w, "shop.Refund", &[2, 2], r#"{"id": "2", "reason": "late"}"#);
    // Indexes [0, 0]: `Order.Line`, the first message the text declares inside `Order` (the
    // map's entry type is not counted, as Confluent's Java serializers number them).
    let line = framed(&w, "shop.Order.Line", &[4, 0, 0], r#"{"id": "3", "sku": "s-1"}"#);
    let mut cut = framed(&w, "shop.Order", &[0], r#"{"id": "4", "card": "a long card name"}"#);
    cut.truncate(cut.len() - 3);
    let unframed = b"{\"id\": 5}".to_vec();
    let no_message = framed(&w, "shop.Order", &[2, 8], r#"{"id": "6"}"#);
    let unknown_id = framed(&writer(9, V1), "shop.Order", &[0], r#"{"id": "7"}"#);
    let too_big = framed(&w, "shop.Order", &[0], r#"{"id": "8", "big": "18446744073709551615"}"#);
    let header = |indexes: &[u8]| [&[0u8, 0, 0, 0, 1][..], indexes, &[8, 1]].concat();
    // A negative count, a count beyond any schema, a varint that never ends.
    let (negative, too_many, endless) = (header(&[1]), header(&[0x82, 0x01]), header(&[0xff; 11]));
    let values = [
        good, refund, line, cut, unframed, no_message, unknown_id, too_big, negative, too_many, endless,
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    let kinds: Vec<(usize, DeadLetterKind, &str)> = out
        .rejected
        .iter()
        .map(|r| (r.index, r.kind, r.path.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (3, DeadLetterKind::MalformedProtobuf, ""),
            (4, DeadLetterKind::MalformedProtobuf, ""),
            (5, DeadLetterKind::MalformedProtobuf, ""),
            (6, DeadLetterKind::UnknownSchema, ""),
            (7, DeadLetterKind::SchemaMismatch, "big"),
            (8, DeadLetterKind::MalformedProtobuf, ""),
            (9, DeadLetterKind::MalformedProtobuf, ""),
            (10, DeadLetterKind::MalformedProtobuf, ""),
        ],
        "{:?}",
        out.rejected
    );
    assert!(
        out.rejected[4].reason.contains("beyond a long"),
        "{}",
        out.rejected[4].reason
    );
    let mut kept = out.kept.clone();
    kept.sort();
    assert_eq!(kept, vec![0, 1, 2]);
    let mut ids = longs(out.batch.as_ref().unwrap(), "id");
    ids.sort();
    assert_eq!(ids, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(out.unknown_fields.get("reason"), Some(&1), "{:?}", out.unknown_fields);
    assert_eq!(out.unknown_fields.get("sku"), Some(&1), "{:?}", out.unknown_fields);
    assert!(
        !out.unknown_fields.contains_key("key"),
        "no map entry read: {:?}",
        out.unknown_fields
    );
}

#[test]
fn a_newer_writer_mixes_in_and_shows_what_it_adds() {
    let mut d = decoder();
    let (w1, w2) = (writer(1, V1), writer(2, V2));
    learn(&mut d, w1.clone());
    learn(&mut d, w2.clone());
    let values = [
        framed(&w1, "shop.Order", &[0], r#"{"id": "1", "addr": {"city": "Oslo"}}"#),
        framed(
            &w2,
            "shop.Order",
            &[0],
            r#"{"id": "2", "discount": 0.5, "addr": {"city": "Rome", "floor": 3}}"#,
        ),
        framed(&w1, "shop.Order", &[0], r#"{"id": "3"}"#),
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let mut ids = longs(out.batch.as_ref().unwrap(), "id");
    ids.sort();
    assert_eq!(ids, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(out.unknown_fields.get("discount"), Some(&1));
    assert_eq!(out.unknown_fields.get("addr.floor"), Some(&1));
    assert_eq!(out.inferred.get("discount"), Some(&Inferred::Type(ColumnType::Double)));
    assert_eq!(out.inferred.get("addr.floor"), Some(&Inferred::Type(ColumnType::Int)));
}

#[test]
fn a_writer_that_breaks_the_table_is_refused_by_schema() {
    let mut d = decoder();
    // `id` as a string: no lossless reading into the long column.
    let w = writer(3, r#"syntax = "proto3"; message Order { string id = 1; }"#);
    learn(&mut d, w.clone());
    let avro = WriterSchema {
        kind: SchemaKind::Avro,
        ..writer(4, r#""long""#)
    };
    learn(&mut d, avro);
    let values = [
        framed(&w, "Order", &[0], r#"{"id": "x"}"#),
        [&[0u8, 0, 0, 0, 4, 0][..], &[8, 1]].concat(),
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert_eq!(out.rejected[0].kind, DeadLetterKind::SchemaMismatch);
    assert_eq!(out.rejected[0].path, "id");
    assert_eq!(out.rejected[0].shows, Some(ColumnType::String));
    assert_eq!(
        out.rejected[1].kind,
        DeadLetterKind::UnknownSchema,
        "another kind: the records' fault"
    );
}

#[test]
fn a_schema_calve_cannot_read_is_calves_limit_not_the_records() {
    let mut d = decoder();
    let unknown_import =
        r#"syntax = "proto3"; import "google/type/money.proto"; message Order { google.type.Money m = 1; }"#;
    // A map entry declared by hand with a key no map may have: prost-reflect would panic on it.
    let bad_entry = r#"syntax = "proto3";
message Order {
  message AttrsEntry { option map_entry = true; double key = 1; string value = 2; }
  repeated AttrsEntry attrs = 1;
}"#;
    for (id, text, says) in [
        (5, unknown_import, "google/type/money.proto"),
        (6, bad_entry, "map entry"),
    ] {
        let w = WriterSchema {
            imports: Vec::new(),
            ..writer(id, text)
        };
        let e = d.learn(id, &Fetched::Found(Arc::new(w))).unwrap_err();
        assert!(e.contains(says) && e.contains(&format!("schema id {id}")), "{e}");
    }
}

#[test]
fn imports_serializers_never_register_are_built_in() {
    let text = r#"syntax = "proto3";
import "confluent/meta.proto";
import "confluent/type/decimal.proto";
import "google/type/timeofday.proto";
import "google/protobuf/empty.proto";
message Order {
  int64 id = 1 [(confluent.field_meta).doc = "the order"];
  google.type.TimeOfDay at = 2;
  confluent.type.Decimal price = 3;
  google.protobuf.Empty nothing = 4;
}"#;
    let w = WriterSchema {
        imports: Vec::new(),
        references: Vec::new(),
        ..writer(5, text)
    };
    let file = super::schema::compile(&w).unwrap().file;
    let order = file.messages().next().unwrap();
    let (members, fields) = super::schema::message_shape(&order).unwrap();
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "at", "price"], "an empty message maps to nothing");
    assert_eq!(fields[1].data_type(), &DataType::Time64(TimeUnit::Microsecond));
    let mut de = serde_json::Deserializer::from_str(
        r#"{"id": "1", "at": {"hours": 1, "minutes": 2, "seconds": 3, "nanos": 4000}}"#,
    );
    let msg = DynamicMessage::deserialize(order, &mut de).unwrap();
    let b = super::rows::batch(&[&msg], &members, &Arc::new(Schema::new(fields))).unwrap();
    let at = b.column(1).as_primitive::<arrow_array::types::Time64MicrosecondType>();
    assert_eq!(at.value(0), 3_723_000_004);
}

#[test]
fn text_that_declares_its_map_entries_counts_them_as_the_registry_prints_it() {
    // How Confluent's registry prints a schema registered as a descriptor: the entry type
    // spelled out, and counted among the nested messages.
    let text = r#"syntax = "proto3";
package shop;
message Order {
  int64 id = 1;
  repeated AttrsEntry attrs = 6;
  message AttrsEntry {
    option map_entry = true;
    string key = 1;
    int64 value = 2;
  }
  message Line { int64 id = 1; string sku = 2; }
}"#;
    let w = WriterSchema {
        imports: Vec::new(),
        ..writer(7, text)
    };
    let mut d = decoder();
    learn(&mut d, w.clone());
    let order = framed(&w, "shop.Order", &[0], r#"{"id": "1", "attrs": {"k": "5"}}"#);
    let line = framed(&w, "shop.Order.Line", &[4, 0, 2], r#"{"id": "2", "sku": "s"}"#);
    let out = d.decode(&[&order, &line]).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.unknown_fields.get("sku"), Some(&1), "{:?}", out.unknown_fields);
    let attrs = out
        .batch
        .as_ref()
        .unwrap()
        .column_by_name("attrs")
        .unwrap()
        .as_map()
        .clone();
    assert_eq!(
        attrs.value(0).column(1).as_primitive::<Int64Type>().values().to_vec(),
        [5]
    );
}
