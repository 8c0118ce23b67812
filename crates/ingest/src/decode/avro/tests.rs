//! Values are encoded with the `apache-avro` crate, an encoder independent of the arrow-avro
//! decoder under test, and framed as the Confluent serializers frame them.

use std::sync::Arc;

use apache_avro::types::Value as AvroValue;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::Array;
use arrow_schema::{DataType, Schema, TimeUnit};
use calve_contract::{ColumnType, StructField};

use super::AvroDecoder;
use crate::dead_letter::DeadLetterKind;
use crate::decode::test_columns::{column, field};
use crate::decode::Inferred;
use crate::registry::{Fetched, SchemaKind, WriterSchema};

/// A table `id long required, qty int, ts timestamptz, addr struct<city string>`.
fn decoder() -> AvroDecoder {
    let addr = DataType::Struct(vec![field("city", DataType::Utf8, true, 5)].into());
    let schema = Arc::new(Schema::new(vec![
        field("id", DataType::Int64, false, 1),
        field("qty", DataType::Int32, true, 2),
        field(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
            3,
        ),
        field("addr", addr, true, 4),
    ]));
    let city = StructField {
        name: "city".into(),
        ty: ColumnType::String,
        required: false,
    };
    let columns = vec![
        column("id", ColumnType::Long, true),
        column("qty", ColumnType::Int, false),
        column("ts", ColumnType::Timestamptz, false),
        column("addr", ColumnType::Struct(vec![city]), false),
    ];
    AvroDecoder::new(schema, &columns).unwrap().inferring(true)
}

const V1: &str = r#"{"type":"record","name":"Order","fields":[
  {"name":"id","type":"long"},
  {"name":"qty","type":["null","int"],"default":null},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"addr","type":["null",{"type":"record","name":"Addr","fields":[{"name":"city","type":"string"}]}],"default":null}]}"#;

/// V1 plus an optional top-level `discount` and a nested `addr.floor`.
const V2: &str = r#"{"type":"record","name":"Order","fields":[
  {"name":"id","type":"long"},
  {"name":"qty","type":["null","int"],"default":null},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"addr","type":["null",{"type":"record","name":"Addr","fields":[
     {"name":"city","type":"string"},{"name":"floor","type":["null","int"],"default":null}]}],"default":null},
  {"name":"discount","type":["null","double"],"default":null}]}"#;

fn learn(d: &mut AvroDecoder, id: u32, text: &str) {
    let w = WriterSchema {
        id,
        kind: SchemaKind::Avro,
        text: text.into(),
        references: Vec::new(),
        imports: Vec::new(),
    };
    d.learn(id, &Fetched::Found(Arc::new(w))).unwrap();
}

fn framed(id: u32, schema: &str, value: AvroValue) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
    out
}

fn v1(id: i64, qty: Option<i32>, city: Option<&str>) -> Vec<u8> {
    let addr = match city {
        Some(c) => AvroValue::Union(
            1,
            Box::new(AvroValue::Record(vec![("city".into(), AvroValue::String(c.into()))])),
        ),
        None => AvroValue::Union(0, Box::new(AvroValue::Null)),
    };
    framed(
        1,
        V1,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(id)),
            ("qty".into(), opt(qty.map(AvroValue::Int))),
            ("ts".into(), AvroValue::TimestampMillis(1_700_000_000_123)),
            ("addr".into(), addr),
        ]),
    )
}

fn v2(id: i64, discount: f64, floor: i32) -> Vec<u8> {
    let addr = AvroValue::Record(vec![
        ("city".into(), AvroValue::String("Oslo".into())),
        ("floor".into(), opt(Some(AvroValue::Int(floor)))),
    ]);
    framed(
        2,
        V2,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(id)),
            ("qty".into(), opt(Some(AvroValue::Int(1)))),
            ("ts".into(), AvroValue::TimestampMillis(1_700_000_000_000)),
            ("addr".into(), AvroValue::Union(1, Box::new(addr))),
            ("discount".into(), opt(Some(AvroValue::Double(discount)))),
        ]),
    )
}

fn opt(v: Option<AvroValue>) -> AvroValue {
    match v {
        Some(v) => AvroValue::Union(1, Box::new(v)),
        None => AvroValue::Union(0, Box::new(AvroValue::Null)),
    }
}

#[test]
fn records_of_two_writer_versions_land_in_one_batch_of_the_table() {
    let mut d = decoder();
    let values = [
        v1(1, Some(3), Some("Bergen")),
        v2(2, 0.5, 4),
        v1(3, None, None),
        v2(4, 1.5, 7),
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    assert_eq!(d.missing(&refs), vec![1, 2]);
    learn(&mut d, 1, V1);
    learn(&mut d, 2, V2);
    assert!(d.missing(&refs).is_empty());
    let out = d.decode(&refs).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    // Rows come grouped by writer; `kept` says which input each row is.
    assert_eq!(out.kept, vec![0, 2, 1, 3]);
    let b = out.batch.unwrap();
    assert_eq!(b.schema(), *d.schema(), "rows carry the table's fields and ids");
    let ids: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, vec![1, 3, 2, 4]);
    let qty = b.column(1).as_primitive::<Int32Type>();
    assert_eq!((qty.value(0), qty.is_null(1)), (3, true));
    let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        ts.value(0),
        1_700_000_000_123_000,
        "millis read as an instant, stored in micros"
    );
    let city = b.column(3).as_struct().column(0).as_string::<i32>();
    assert_eq!(
        (city.value(0), city.value(2), b.column(3).is_null(1)),
        ("Bergen", "Oslo", true)
    );
    assert_eq!(out.unknown_fields.get("discount"), Some(&2));
    assert_eq!(out.unknown_fields.get("addr.floor"), Some(&2));
    assert_eq!(out.inferred.get("discount"), Some(&Inferred::Type(ColumnType::Double)));
    assert_eq!(out.inferred.get("addr.floor"), Some(&Inferred::Type(ColumnType::Int)));
}

#[test]
fn a_bad_record_is_set_aside_alone_and_the_next_ones_land() {
    let mut d = decoder();
    learn(&mut d, 1, V1);
    d.learn(9, &Fetched::Unknown("schema id 9 is not in the registry".into()))
        .unwrap();
    let good = v1(1, Some(1), None);
    let mut cut = v1(2, Some(2), Some("Tromsø"));
    cut.truncate(cut.len() - 3);
    let mut longer = v1(3, Some(3), None);
    longer.push(42);
    let unknown = {
        let mut v = v1(4, None, None);
        v[4] = 9;
        v
    };
    let values: Vec<Vec<u8>> = vec![
        good.clone(),
        b"{\"id\": 5}".to_vec(),
        cut,
        v1(6, Some(6), Some("Bodø")),
        longer,
        unknown,
        vec![0, 0],
        v1(8, Some(8), None),
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    let kinds: Vec<(usize, DeadLetterKind)> = out.rejected.iter().map(|r| (r.index, r.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (1, DeadLetterKind::MalformedAvro),
            (2, DeadLetterKind::MalformedAvro),
            (4, DeadLetterKind::MalformedAvro),
            (5, DeadLetterKind::UnknownSchema),
            (6, DeadLetterKind::MalformedAvro),
        ]
    );
    assert!(out.rejected[3].reason.contains("schema id 9"), "{:?}", out.rejected[3]);
    assert_eq!(out.kept, vec![0, 3, 7]);
    let b = out.batch.unwrap();
    let ids: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, vec![1, 6, 8]);
    let city = b.column(3).as_struct().column(0).as_string::<i32>();
    assert_eq!(city.value(1), "Bodø");
}

#[test]
fn a_writer_schema_that_breaks_the_table_sets_its_records_aside_by_path() {
    let mut d = decoder();
    let wider = V1.replace(
        r#"{"name":"qty","type":["null","int"],"default":null}"#,
        r#"{"name":"qty","type":"long"}"#,
    );
    let text = V1.replace(
        r#"{"name":"qty","type":["null","int"],"default":null}"#,
        r#"{"name":"qty","type":"string"}"#,
    );
    let no_id = V1.replace(r#"{"name":"id","type":"long"},"#, "");
    learn(&mut d, 3, &wider);
    learn(&mut d, 4, &text);
    learn(&mut d, 5, &no_id);
    let long_qty = framed(
        3,
        &wider,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(1)),
            ("qty".into(), AvroValue::Long(5_000_000_000)),
            ("ts".into(), AvroValue::TimestampMillis(0)),
            ("addr".into(), opt(None)),
        ]),
    );
    let text_qty = framed(
        4,
        &text,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(2)),
            ("qty".into(), AvroValue::String("many".into())),
            ("ts".into(), AvroValue::TimestampMillis(0)),
            ("addr".into(), opt(None)),
        ]),
    );
    let without_id = framed(
        5,
        &no_id,
        AvroValue::Record(vec![
            ("qty".into(), opt(None)),
            ("ts".into(), AvroValue::TimestampMillis(0)),
            ("addr".into(), opt(None)),
        ]),
    );
    let out = d.decode(&[&long_qty, &text_qty, &without_id]).unwrap();
    assert!(out.batch.is_none());
    let r = &out.rejected;
    assert_eq!((r[0].kind, r[0].path.as_str()), (DeadLetterKind::SchemaMismatch, "qty"));
    assert_eq!(
        r[0].shows,
        Some(ColumnType::Long),
        "a long in an int column asks for a widening"
    );
    assert_eq!(
        (r[1].kind, r[1].shows.clone()),
        (DeadLetterKind::SchemaMismatch, Some(ColumnType::String))
    );
    assert_eq!((r[2].kind, r[2].path.as_str()), (DeadLetterKind::MissingRequired, "id"));
}

#[test]
fn a_null_in_a_required_column_sets_aside_that_row_only() {
    let mut d = decoder();
    let optional_id = V1.replace(
        r#"{"name":"id","type":"long"}"#,
        r#"{"name":"id","type":["null","long"]}"#,
    );
    learn(&mut d, 6, &optional_id);
    let row = |id: Option<i64>| {
        framed(
            6,
            &optional_id,
            AvroValue::Record(vec![
                ("id".into(), opt(id.map(AvroValue::Long))),
                ("qty".into(), opt(None)),
                ("ts".into(), AvroValue::TimestampMillis(0)),
                ("addr".into(), opt(None)),
            ]),
        )
    };
    let values = [row(Some(1)), row(None), row(Some(3))];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert_eq!(out.kept, vec![0, 2]);
    assert_eq!(
        (out.rejected[0].index, out.rejected[0].kind),
        (1, DeadLetterKind::MissingRequired)
    );
    assert_eq!(out.rejected[0].path, "id");
}

#[test]
fn a_frozen_table_refuses_a_writer_with_an_undeclared_field() {
    let mut d = decoder().refusing_undeclared(true);
    learn(&mut d, 2, V2);
    let out = d.decode(&[&v2(1, 0.1, 1)]).unwrap();
    assert_eq!(out.rejected[0].kind, DeadLetterKind::UndeclaredField);
    assert_eq!(out.rejected[0].path, "addr.floor");
}

#[test]
fn no_input_panics_the_decoder() {
    use rand::{Rng, SeedableRng};
    let mut d = decoder();
    learn(&mut d, 1, V1);
    learn(&mut d, 2, V2);
    let seed = 7;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base = [v1(1, Some(2), Some("x")), v2(2, 0.5, 3)];
    for _ in 0..2_000 {
        let n = rng.gen_range(1..6);
        let values: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let mut v = base[rng.gen_range(0..2)].clone();
                for _ in 0..rng.gen_range(0..4) {
                    let at = rng.gen_range(0..v.len());
                    match rng.gen_range(0..3) {
                        0 => v[at] = rng.gen(),
                        1 => v.truncate(at.max(1)),
                        _ => v.insert(at, rng.gen()),
                    }
                }
                v
            })
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let out = d.decode(&refs).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let rows = out.batch.as_ref().map_or(0, |b| b.num_rows());
        assert_eq!(rows + out.rejected.len(), n, "seed {seed}: in = rows + rejected");
        assert_eq!(rows, out.kept.len());
    }
}

#[test]
fn epoch_numbers_iso_text_and_aliases_read_as_avro_resolution_says() {
    let mut d = decoder();
    // Debezium's millisecond timestamps are plain longs named by `connect.name`; `quantity`
    // is the table's `qty` by its alias. A writer lacking it reads null, whatever default
    // another writer declares: what a record reads as does not depend on which writers
    // calve happened to have seen.
    let debezium = r#"{"type":"record","name":"Order","fields":[
      {"name":"id","type":"long"},
      {"name":"ts","type":{"type":"long","connect.name":"io.debezium.time.Timestamp"}},
      {"name":"quantity","type":"int","aliases":["qty"],"default":7}]}"#;
    let iso = r#"{"type":"record","name":"Order","fields":[
      {"name":"id","type":"long"},{"name":"ts","type":"string"}]}"#;
    learn(&mut d, 10, debezium);
    learn(&mut d, 11, iso);
    let a = framed(
        10,
        debezium,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(1)),
            ("ts".into(), AvroValue::Long(1_700_000_000_123)),
            ("quantity".into(), AvroValue::Int(3)),
        ]),
    );
    let text = |id: i64, ts: &str| {
        framed(
            11,
            iso,
            AvroValue::Record(vec![
                ("id".into(), AvroValue::Long(id)),
                ("ts".into(), AvroValue::String(ts.into())),
            ]),
        )
    };
    let (b, bad) = (text(2, "2023-11-14T22:13:20.5Z"), text(3, "yesterday"));
    let out = d.decode(&[&a, &b, &bad]).unwrap();
    assert_eq!(out.kept, vec![0, 1]);
    assert_eq!(
        (out.rejected[0].index, out.rejected[0].kind),
        (2, DeadLetterKind::SchemaMismatch)
    );
    let batch = out.batch.unwrap();
    let ts = batch.column(2).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        (ts.value(0), ts.value(1)),
        (1_700_000_000_123_000, 1_700_000_000_500_000)
    );
    let qty = batch.column(1).as_primitive::<Int32Type>();
    assert_eq!((qty.value(0), qty.is_null(1)), (3, true), "by alias, then null");
    assert!(
        out.unknown_fields.is_empty(),
        "an aliased field is not unknown: {:?}",
        out.unknown_fields
    );
}

#[test]
fn a_value_followed_by_its_own_framing_does_not_swallow_the_next_record() {
    let mut d = decoder();
    learn(&mut d, 1, V1);
    let mut tricky = v1(1, Some(1), None);
    let framing = tricky[..5].to_vec();
    tricky.extend(framing);
    let values = [tricky, v1(2, Some(2), Some("Alta")), v1(3, Some(3), None)];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert_eq!(
        (out.rejected.len(), out.rejected[0].index),
        (1, 0),
        "{:?}",
        out.rejected
    );
    assert_eq!(out.rejected[0].kind, DeadLetterKind::MalformedAvro);
    assert_eq!(out.kept, vec![1, 2]);
    let b = out.batch.unwrap();
    let city = b.column(3).as_struct().column(0).as_string::<i32>();
    assert_eq!(city.value(0), "Alta", "the next record is read as itself");
}

#[test]
fn decimals_beyond_their_column_and_nulls_under_null_structs() {
    let addr = DataType::Struct(
        vec![field(
            "geo",
            DataType::Struct(vec![field("lat", DataType::Float64, false, 6)].into()),
            false,
            5,
        )]
        .into(),
    );
    let schema = Arc::new(Schema::new(vec![
        field("price", DataType::Decimal128(4, 2), true, 1),
        field("addr", addr, true, 4),
    ]));
    let lat = StructField {
        name: "lat".into(),
        ty: ColumnType::Double,
        required: true,
    };
    let geo = StructField {
        name: "geo".into(),
        ty: ColumnType::Struct(vec![lat]),
        required: true,
    };
    let columns = vec![
        column("price", ColumnType::Decimal { precision: 4, scale: 2 }, false),
        column("addr", ColumnType::Struct(vec![geo]), false),
    ];
    let mut d = AvroDecoder::new(schema, &columns).unwrap();
    let text = r#"{"type":"record","name":"P","fields":[
      {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}},
      {"name":"addr","type":["null",{"type":"record","name":"A","fields":[
        {"name":"geo","type":{"type":"record","name":"G","fields":[{"name":"lat","type":"double"}]}}]}]}]}"#;
    learn(&mut d, 1, text);
    let row = |unscaled: i64, lat: Option<f64>| {
        let addr = match lat {
            None => opt(None),
            Some(l) => opt(Some(AvroValue::Record(vec![(
                "geo".into(),
                AvroValue::Record(vec![("lat".into(), AvroValue::Double(l))]),
            )]))),
        };
        let price = apache_avro::Decimal::from(unscaled.to_be_bytes().to_vec());
        framed(
            1,
            text,
            AvroValue::Record(vec![("price".into(), AvroValue::Decimal(price)), ("addr".into(), addr)]),
        )
    };
    let values = [row(1234, None), row(123_456, Some(1.5)), row(-99, Some(2.5))];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert_eq!(out.kept, vec![0, 2], "a null address hides its required inner fields");
    let r = &out.rejected[0];
    assert_eq!(
        (r.index, r.kind, r.path.as_str()),
        (1, DeadLetterKind::SchemaMismatch, "price")
    );
    assert_eq!(
        r.shows,
        Some(ColumnType::Decimal { precision: 6, scale: 2 }),
        "1234.56 needs 6 digits"
    );
}

/// Debezium's envelope as Confluent's AvroConverter writes it (trimmed `source`).
const ENVELOPE: &str = r#"{"type":"record","name":"Envelope","namespace":"db.inv.customers","fields":[
  {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
     {"name":"id","type":"long"},
     {"name":"score","type":["null",{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data",
        "fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}],
        "connect.name":"io.debezium.data.VariableScaleDecimal"}],"default":null},
     {"name":"seen","type":["null",{"type":"long","connect.name":"io.debezium.time.MicroTimestamp"}],"default":null}],
     "connect.name":"db.inv.customers.Value"}],"default":null},
  {"name":"after","type":["null","Value"],"default":null},
  {"name":"source","type":{"type":"record","name":"Source","fields":[{"name":"lsn","type":["null","long"]}]}},
  {"name":"op","type":"string"},
  {"name":"ts_ms","type":["null","long"],"default":null}]}"#;

#[test]
fn debezium_avro_envelopes_become_upserts_and_deletes_by_key() {
    let schema = Arc::new(Schema::new(vec![
        field("id", DataType::Int64, false, 1),
        field("score", DataType::Decimal128(10, 3), true, 2),
        field(
            "seen",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
            3,
        ),
    ]));
    let columns = vec![
        column("id", ColumnType::Long, true),
        column(
            "score",
            ColumnType::Decimal {
                precision: 10,
                scale: 3,
            },
            false,
        ),
        column("seen", ColumnType::Timestamptz, false),
    ];
    let mut d = AvroDecoder::new(schema, &columns)
        .unwrap()
        .changes(Some(&["id".into()]))
        .unwrap();
    learn(&mut d, 4, ENVELOPE);
    let row = |id: i64, unscaled: i64, scale: i32| {
        let score = AvroValue::Record(vec![
            ("scale".into(), AvroValue::Int(scale)),
            ("value".into(), AvroValue::Bytes(unscaled.to_be_bytes().to_vec())),
        ]);
        opt(Some(AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(id)),
            ("score".into(), opt(Some(score))),
            ("seen".into(), opt(Some(AvroValue::Long(1_700_000_000_000_001)))),
        ])))
    };
    let event = |op: &str, before: AvroValue, after: AvroValue| {
        framed(
            4,
            ENVELOPE,
            AvroValue::Record(vec![
                ("before".into(), before),
                ("after".into(), after),
                ("source".into(), AvroValue::Record(vec![("lsn".into(), opt(None))])),
                ("op".into(), AvroValue::String(op.into())),
                ("ts_ms".into(), opt(None)),
            ]),
        )
    };
    let values = [
        event("c", opt(None), row(1, -125, 2)),       // -1.25 at scale 2 → -1.250
        event("u", row(1, 0, 0), row(1, 31_4159, 5)), // 3.14159: more digits than scale 3
        event("d", row(2, 5, 0), opt(None)),
        event("t", opt(None), opt(None)),
        event("r", opt(None), row(3, 7, 0)),
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert_eq!(out.kept, vec![0, 4]);
    let b = out.batch.unwrap();
    let score = b.column(1).as_primitive::<arrow_array::types::Decimal128Type>();
    assert_eq!((score.value(0), score.value(1)), (-1250, 7000));
    let seen = b.column(2).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        seen.value(0),
        1_700_000_000_000_001,
        "a nullable MicroTimestamp keeps its unit"
    );
    assert_eq!(out.delete_kept, vec![2]);
    let keys = out.deletes.unwrap();
    assert_eq!(keys.column(0).as_primitive::<Int64Type>().value(0), 2);
    let kinds: Vec<(usize, DeadLetterKind)> = out.rejected.iter().map(|r| (r.index, r.kind)).collect();
    assert_eq!(
        kinds,
        vec![(1, DeadLetterKind::SchemaMismatch), (3, DeadLetterKind::MalformedAvro)]
    );
    assert!(out.rejected[1].reason.contains("truncate"), "{:?}", out.rejected[1]);
}

#[test]
fn a_union_of_several_types_is_a_struct_of_its_branches() {
    let choice = DataType::Struct(
        vec![
            field("int", DataType::Int32, true, 2),
            field("string", DataType::Utf8, true, 3),
        ]
        .into(),
    );
    let schema = Arc::new(Schema::new(vec![
        field("id", DataType::Int64, false, 1),
        field("choice", choice, true, 4),
    ]));
    let branch = |name: &str, ty| StructField {
        name: name.into(),
        ty,
        required: false,
    };
    let columns = vec![
        column("id", ColumnType::Long, true),
        column(
            "choice",
            ColumnType::Struct(vec![
                branch("int", ColumnType::Int),
                branch("string", ColumnType::String),
            ]),
            false,
        ),
    ];
    let mut d = AvroDecoder::new(schema, &columns).unwrap().inferring(true);
    let text = r#"{"type":"record","name":"R","fields":[{"name":"id","type":"long"},
      {"name":"choice","type":["null","int","string",{"type":"record","name":"ns.Pair","fields":[{"name":"a","type":"int"}]}]}]}"#;
    learn(&mut d, 1, text);
    let row = |id: i64, choice: AvroValue| {
        framed(
            1,
            text,
            AvroValue::Record(vec![("id".into(), AvroValue::Long(id)), ("choice".into(), choice)]),
        )
    };
    let values = [
        row(1, AvroValue::Union(1, Box::new(AvroValue::Int(7)))),
        row(2, AvroValue::Union(2, Box::new(AvroValue::String("seven".into())))),
        row(3, AvroValue::Union(0, Box::new(AvroValue::Null))),
        row(
            4,
            AvroValue::Union(3, Box::new(AvroValue::Record(vec![("a".into(), AvroValue::Int(1))]))),
        ),
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert_eq!(out.kept, vec![0, 1, 2, 3], "{:?}", out.rejected);
    let b = out.batch.unwrap();
    let choice = b.column(1).as_struct();
    let (ints, texts) = (
        choice.column(0).as_primitive::<Int32Type>(),
        choice.column(1).as_string::<i32>(),
    );
    assert_eq!(
        (ints.value(0), ints.is_null(1), texts.value(1), texts.is_null(0)),
        (7, true, "seven", true)
    );
    assert!(choice.is_null(2) && ints.is_null(3), "the null branch is a null struct");
    assert_eq!(
        out.unknown_fields.get("choice.Pair"),
        Some(&4),
        "a branch the table lacks is a new field"
    );
    let pair = ColumnType::Struct(vec![StructField {
        name: "a".into(),
        ty: ColumnType::Int,
        required: false,
    }]);
    assert_eq!(out.inferred.get("choice.Pair"), Some(&Inferred::Type(pair)));
}

#[test]
fn variable_scale_decimals_are_rescaled_exactly_or_refused() {
    let schema = Arc::new(Schema::new(vec![field("v", DataType::Decimal128(38, 3), true, 1)]));
    let columns = vec![column(
        "v",
        ColumnType::Decimal {
            precision: 38,
            scale: 3,
        },
        false,
    )];
    let mut d = AvroDecoder::new(schema, &columns).unwrap();
    let text = r#"{"type":"record","name":"R","fields":[{"name":"v","type":{"type":"record","name":"VariableScaleDecimal",
      "namespace":"io.debezium.data","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}]}}]}"#;
    learn(&mut d, 1, text);
    let row = |scale: i32, bytes: Vec<u8>| {
        let v = AvroValue::Record(vec![
            ("scale".into(), AvroValue::Int(scale)),
            ("value".into(), AvroValue::Bytes(bytes)),
        ]);
        framed(1, text, AvroValue::Record(vec![("v".into(), v)]))
    };
    let values = [
        row(0, vec![0x83]),                        // -125, one sign-extended byte
        row(1, vec![0x00, 0x80]),                  // 12.8
        row(-2, vec![0x05]),                       // 500
        row(5, 314_000i64.to_be_bytes().to_vec()), // 3.14000 → 3.140 exactly
        row(5, 314_159i64.to_be_bytes().to_vec()), // 3.14159: more digits than scale 3
        row(i32::MIN, vec![0x01]),                 // no such scale
        row(0, vec![1; 17]),                       // more than 38 digits
        row(0, i128::MIN.to_be_bytes().to_vec()),  // 16 bytes, beyond 38 digits at scale 3
    ];
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let out = d.decode(&refs).unwrap();
    assert_eq!(out.kept, vec![0, 1, 2, 3]);
    let v = out.batch.unwrap();
    let v = v.column(0).as_primitive::<arrow_array::types::Decimal128Type>();
    assert_eq!(v.values().to_vec(), vec![-125_000, 12_800, 500_000, 3_140]);
    let refused: Vec<usize> = out.rejected.iter().map(|r| r.index).collect();
    assert_eq!(refused, vec![4, 5, 6, 7], "{:?}", out.rejected);
}

#[test]
fn types_other_subjects_define_are_read_through_references() {
    // `Order` takes `com.acme.Addr` from another subject, uses it twice, and the referenced
    // record itself takes `com.acme.Geo` from a third.
    let order = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
      {"name":"id","type":"long"},
      {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
      {"name":"addr","type":["null","com.acme.Addr"],"default":null},
      {"name":"billing","type":["null","com.acme.Addr"],"default":null}]}"#;
    let addr = r#"{"type":"record","name":"Addr","namespace":"com.acme","fields":[
      {"name":"city","type":"string"},{"name":"geo","type":"Geo"}]}"#;
    let geo = r#"{"type":"record","name":"Geo","namespace":"com.acme","fields":[{"name":"lat","type":"double"}]}"#;
    let import = |name: &str, text: &str| crate::registry::Import {
        name: name.into(),
        subject: name.into(),
        version: 1,
        text: text.into(),
    };
    let w = WriterSchema {
        id: 7,
        kind: SchemaKind::Avro,
        text: order.into(),
        references: vec!["com.acme.Addr".into()],
        imports: vec![import("com.acme.Addr", addr), import("com.acme.Geo", geo)],
    };
    let mut d = decoder();
    d.learn(7, &Fetched::Found(Arc::new(w))).unwrap();
    // The same record written against the schema spelled out in full.
    let full = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
      {"name":"id","type":"long"},
      {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
      {"name":"addr","type":["null",{"type":"record","name":"Addr","namespace":"com.acme","fields":[
         {"name":"city","type":"string"},
         {"name":"geo","type":{"type":"record","name":"Geo","fields":[{"name":"lat","type":"double"}]}}]}],"default":null},
      {"name":"billing","type":["null","com.acme.Addr"],"default":null}]}"#;
    let place = |city: &str| {
        AvroValue::Record(vec![
            ("city".into(), AvroValue::String(city.into())),
            (
                "geo".into(),
                AvroValue::Record(vec![("lat".into(), AvroValue::Double(59.9))]),
            ),
        ])
    };
    let value = framed(
        7,
        full,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(1)),
            ("ts".into(), AvroValue::TimestampMillis(1_700_000_000_000)),
            ("addr".into(), AvroValue::Union(1, Box::new(place("Oslo")))),
            ("billing".into(), AvroValue::Union(1, Box::new(place("Bergen")))),
        ]),
    );
    let out = d.decode(&[&value]).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let b = out.batch.unwrap();
    let addr = b.column_by_name("addr").unwrap().as_struct();
    assert_eq!(addr.column_by_name("city").unwrap().as_string::<i32>().value(0), "Oslo");
    // The writer's fields the table lacks, nested ones included, typed through the references.
    assert!(out.unknown_fields.contains_key("billing"), "{:?}", out.unknown_fields);
    assert!(out.unknown_fields.contains_key("addr.geo"), "{:?}", out.unknown_fields);
}

#[test]
fn references_in_every_spelling_are_written_in_and_a_whole_that_cannot_be_made_stops() {
    let import = |name: &str, text: &str| crate::registry::Import {
        name: name.into(),
        subject: "s".into(),
        version: 1,
        text: text.into(),
    };
    // `Point` lives in the null namespace and is used twice inside namespace `shop` (arrow-avro
    // would look a bare `Point` up in `shop`); `Tag` comes as `{"type": name}`, under a
    // reference name other than its full name.
    let order = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
      {"name":"id","type":"long"},
      {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
      {"name":"from","type":"Point"},
      {"name":"to","type":"Point"},
      {"name":"tag","type":{"type":"com.acme.Tag"}}]}"#;
    let point = r#"{"type":"record","name":"Point","fields":[{"name":"x","type":"int"}]}"#;
    let tag = r#"{"type":"enum","name":"Tag","namespace":"com.acme","symbols":["A","B"]}"#;
    let w = |id: u32, text: &str| WriterSchema {
        id,
        kind: SchemaKind::Avro,
        text: text.into(),
        references: vec!["s".into()],
        imports: vec![import("Point", point), import("tag-ref", tag)],
    };
    let mut d = decoder();
    d.learn(8, &Fetched::Found(Arc::new(w(8, order)))).unwrap();
    let full = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
      {"name":"id","type":"long"},
      {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
      {"name":"from","type":{"type":"record","name":"Point","namespace":"","fields":[{"name":"x","type":"int"}]}},
      {"name":"to","type":{"type":"record","name":"P2","fields":[{"name":"x","type":"int"}]}},
      {"name":"tag","type":{"type":"enum","name":"Tag","namespace":"com.acme","symbols":["A","B"]}}]}"#;
    let p = |x: i32| AvroValue::Record(vec![("x".into(), AvroValue::Int(x))]);
    let value = framed(
        8,
        full,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(3)),
            ("ts".into(), AvroValue::TimestampMillis(1_700_000_000_000)),
            ("from".into(), p(1)),
            ("to".into(), p(2)),
            ("tag".into(), AvroValue::Enum(1, "B".into())),
        ]),
    );
    let out = d.decode(&[&value]).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.kept, vec![0]);
    // A union of referenced records at the top: arrow-avro reads records only, so the table
    // stops on it rather than dead-letter every record.
    let union = r#"["Point", "com.acme.Tag"]"#;
    let e = d.learn(9, &Fetched::Found(Arc::new(w(9, union)))).unwrap_err();
    assert!(e.contains("schema id 9") && e.contains("references"), "{e}");
}
