use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::Array;
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit as ArrowUnit};
use calve_contract::{ColumnType, ResolvedColumn, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn col(name: &str, ty: &str, required: bool, unit: Option<TimeUnit>) -> ResolvedColumn {
    ResolvedColumn {
        name: name.into(),
        ty: ty.parse::<ColumnType>().unwrap(),
        required,
        doc: None,
        unit,
        decimal_bytes: false,
    }
}

/// The Arrow field iceberg gives a column of each type (field ids left out: the decoder
/// carries whatever metadata the table's fields have).
fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Int => DataType::Int32,
        ColumnType::Long => DataType::Int64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision as u8, *scale as i8),
        ColumnType::Date => DataType::Date32,
        ColumnType::Time => DataType::Time64(ArrowUnit::Microsecond),
        ColumnType::Timestamp => DataType::Timestamp(ArrowUnit::Microsecond, None),
        ColumnType::Timestamptz => DataType::Timestamp(ArrowUnit::Microsecond, Some("+00:00".into())),
        ColumnType::String => DataType::Utf8,
        ColumnType::Uuid => DataType::FixedSizeBinary(16),
        ColumnType::Binary => DataType::LargeBinary,
        ColumnType::Fixed(n) => DataType::FixedSizeBinary(*n as i32),
        ColumnType::Struct(fields) => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| Field::new(&f.name, arrow_type(&f.ty), !f.required))
                .collect::<Vec<_>>(),
        )),
        ColumnType::List(e) => DataType::List(Arc::new(Field::new("element", arrow_type(&e.ty), !e.required))),
        ColumnType::Map { key, value } => DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(key), false),
                    Field::new("value", arrow_type(&value.ty), !value.required),
                ])),
                false,
            )),
            false,
        ),
    }
}

fn decoder(columns: &[ResolvedColumn]) -> JsonDecoder {
    let schema = Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.ty), !c.required))
            .collect::<Vec<_>>(),
    );
    JsonDecoder::new(Arc::new(schema), columns).unwrap()
}

/// Every type the contract knows, nested included.
fn every_type() -> Vec<ResolvedColumn> {
    vec![
        col("id", "long", true, None),
        col("b", "boolean", false, None),
        col("i", "int", false, None),
        col("f", "float", false, None),
        col("d", "double", false, None),
        col("dec", "decimal(10,2)", false, None),
        col("day", "date", false, None),
        col("t", "time", false, Some(TimeUnit::Millis)),
        col("ts", "timestamp", false, None),
        col("tsz", "timestamptz", false, Some(TimeUnit::Millis)),
        col("s", "string", false, None),
        col("u", "uuid", false, None),
        col("bin", "binary", false, None),
        col("fx", "fixed[4]", false, None),
        col(
            "addr",
            "struct<street: string, zip: int not null, geo: struct<lat: double, lon: double>>",
            false,
            None,
        ),
        col("tags", "list<string>", false, None),
        col("scores", "map<string, long>", false, None),
        col(
            "events",
            "list<struct<at: timestamptz, kind: string not null>>",
            false,
            Some(TimeUnit::Seconds),
        ),
    ]
}

fn decode(d: &JsonDecoder, values: &[&str]) -> Decoded {
    let v: Vec<&[u8]> = values.iter().map(|s| s.as_bytes()).collect();
    d.decode(&v).unwrap()
}

#[test]
fn every_type_decodes_exactly() {
    let d = decoder(&every_type());
    let out = decode(
        &d,
        &[
            r#"{"id": 1, "b": true, "i": -7, "f": 1.5, "d": 2.25, "dec": 12.34, "day": "2024-02-29",
              "t": 3600500, "ts": "2024-02-29T12:00:00.123456", "tsz": 1700000000123, "s": "héllo\n",
              "u": "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "bin": "AQID", "fx": "AAECAw==",
              "addr": {"street": "Main", "zip": 12345, "geo": {"lat": 1.0, "lon": -2.5}},
              "tags": ["a", null, "c"], "scores": {"x": 1, "y": 2},
              "events": [{"at": 1700000000, "kind": "k1"}, {"at": "2023-11-14T22:13:20Z", "kind": "k2"}]}"#,
        ],
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let b = out.batch.unwrap();
    let c = |name: &str| b.column_by_name(name).unwrap().clone();
    assert_eq!(c("id").as_primitive::<Int64Type>().value(0), 1);
    assert!(c("b").as_boolean().value(0));
    assert_eq!(c("i").as_primitive::<Int32Type>().value(0), -7);
    assert_eq!(c("f").as_primitive::<Float32Type>().value(0), 1.5);
    assert_eq!(c("d").as_primitive::<Float64Type>().value(0), 2.25);
    assert_eq!(c("dec").as_primitive::<Decimal128Type>().value(0), 1234);
    assert_eq!(c("day").as_primitive::<Date32Type>().value(0), 19_782);
    assert_eq!(c("t").as_primitive::<Time64MicrosecondType>().value(0), 3_600_500_000);
    assert_eq!(
        c("ts").as_primitive::<TimestampMicrosecondType>().value(0),
        1_709_208_000_123_456
    );
    assert_eq!(
        c("tsz").as_primitive::<TimestampMicrosecondType>().value(0),
        1_700_000_000_123_000
    );
    assert_eq!(c("s").as_string::<i32>().value(0), "héllo\n");
    assert_eq!(c("u").as_fixed_size_binary().value(0)[..2], [0x6f, 0x1c]);
    assert_eq!(c("bin").as_binary::<i64>().value(0), [1, 2, 3]);
    assert_eq!(c("fx").as_fixed_size_binary().value(0), [0, 1, 2, 3]);
    let addr = c("addr");
    let addr = addr.as_struct();
    assert_eq!(
        addr.column_by_name("zip").unwrap().as_primitive::<Int32Type>().value(0),
        12345
    );
    let geo = addr.column_by_name("geo").unwrap().as_struct().clone();
    assert_eq!(
        geo.column_by_name("lon")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        -2.5
    );
    let tags = c("tags");
    let tags = tags.as_list::<i32>().value(0);
    assert_eq!(tags.len(), 3);
    assert!(tags.is_null(1));
    assert_eq!(tags.as_string::<i32>().value(2), "c");
    let scores = c("scores");
    let scores = scores.as_map();
    assert_eq!(scores.value(0).len(), 2);
    assert_eq!(
        scores.values().as_primitive::<Int64Type>().values().to_vec(),
        vec![1, 2]
    );
    let events = c("events");
    let events = events.as_list::<i32>().value(0);
    let at = events
        .as_struct()
        .column_by_name("at")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    assert_eq!(at.values().to_vec(), vec![1_700_000_000_000_000, 1_700_000_000_000_000]);
}

#[test]
fn nulls_and_absent_optional_fields_are_null_at_every_depth() {
    let d = decoder(&every_type());
    let out = decode(
        &d,
        &[
            r#"{"id": 2, "addr": {"zip": 1, "geo": null}, "tags": null}"#,
            r#"{"id": 3}"#,
        ],
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let b = out.batch.unwrap();
    assert_eq!(b.num_rows(), 2);
    for name in ["b", "dec", "tsz", "u", "fx", "tags", "scores", "events"] {
        assert!(b.column_by_name(name).unwrap().is_null(0), "{name}");
    }
    let addr = b.column_by_name("addr").unwrap().as_struct().clone();
    assert!(addr.is_valid(0) && addr.is_null(1));
    assert!(addr.column_by_name("geo").unwrap().is_null(0));
}

#[test]
fn each_bad_value_names_its_column_path_and_kind() {
    let d = decoder(&every_type());
    let cases: &[(&str, DeadLetterKind, &str)] = &[
        (
            r#"{"id": 1, "i": 1.5}"#,
            DeadLetterKind::SchemaMismatch,
            "i: 1.5 has a fraction",
        ),
        (
            r#"{"id": 1, "i": 3000000000}"#,
            DeadLetterKind::SchemaMismatch,
            "out of range",
        ),
        (
            r#"{"id": 1, "b": "yes"}"#,
            DeadLetterKind::SchemaMismatch,
            "b: expected boolean",
        ),
        (
            r#"{"id": 1, "s": 5}"#,
            DeadLetterKind::SchemaMismatch,
            "s: expected string",
        ),
        (
            r#"{"id": 1, "dec": 1.005}"#,
            DeadLetterKind::SchemaMismatch,
            "dec: `1.005` has more than 2 digits",
        ),
        (
            r#"{"id": 1, "dec": 123456789}"#,
            DeadLetterKind::SchemaMismatch,
            "does not fit decimal(10,2)",
        ),
        (
            r#"{"id": 1, "day": "29.2.2024"}"#,
            DeadLetterKind::SchemaMismatch,
            "day: `29.2.2024` is not a date",
        ),
        (
            r#"{"id": 1, "ts": 1700000000}"#,
            DeadLetterKind::SchemaMismatch,
            "ts: 1700000000 is an epoch number",
        ),
        (
            r#"{"id": 1, "u": 42}"#,
            DeadLetterKind::SchemaMismatch,
            "u: expected uuid",
        ),
        (
            r#"{"id": 1, "u": true}"#,
            DeadLetterKind::SchemaMismatch,
            "u: expected uuid",
        ),
        (
            r#"{"id": 1, "u": {"a": 1}}"#,
            DeadLetterKind::SchemaMismatch,
            "u: expected uuid",
        ),
        (
            r#"{"id": 1, "u": "not-a-uuid"}"#,
            DeadLetterKind::SchemaMismatch,
            "is not a UUID",
        ),
        (
            r#"{"id": 1, "bin": "!!"}"#,
            DeadLetterKind::SchemaMismatch,
            "bin: `!!` is not base64",
        ),
        (
            r#"{"id": 1, "fx": "AQID"}"#,
            DeadLetterKind::SchemaMismatch,
            "fx: 3 bytes where fixed[4]",
        ),
        (
            r#"{"id": 1, "addr": {"street": "x"}}"#,
            DeadLetterKind::MissingRequired,
            "addr.zip: missing",
        ),
        (
            r#"{"id": 1, "addr": {"zip": 1, "geo": {"lat": "n"}}}"#,
            DeadLetterKind::SchemaMismatch,
            "addr.geo.lat",
        ),
        (
            r#"{"id": 1, "addr": [1]}"#,
            DeadLetterKind::SchemaMismatch,
            "addr: expected an object",
        ),
        (
            r#"{"id": 1, "tags": ["a", 2]}"#,
            DeadLetterKind::SchemaMismatch,
            "tags[]: expected string",
        ),
        (
            r#"{"id": 1, "scores": {"x": "high"}}"#,
            DeadLetterKind::SchemaMismatch,
            "scores{}: expected long",
        ),
        (
            r#"{"id": 1, "events": [{"at": 1}]}"#,
            DeadLetterKind::MissingRequired,
            "events[].kind: missing",
        ),
        (r#"{"b": true}"#, DeadLetterKind::MissingRequired, "id: missing"),
        (
            r#"{"id": null}"#,
            DeadLetterKind::MissingRequired,
            "id: null in a required field",
        ),
        (
            r#"{"id": 1, "id": 2}"#,
            DeadLetterKind::MalformedJson,
            "id: the field appears twice",
        ),
        (
            r#"{"id": 1"#,
            DeadLetterKind::MalformedJson,
            "not one complete JSON object",
        ),
        (
            r#"{"id": 1}{"id": 2}"#,
            DeadLetterKind::MalformedJson,
            "more than one JSON value",
        ),
        (
            r#"{"b": true}{"id": 2}"#,
            DeadLetterKind::MalformedJson,
            "more than one JSON value",
        ),
        (
            r#"{"id": "x", "s": "#,
            DeadLetterKind::MalformedJson,
            "not one complete",
        ),
        (r#"[1]"#, DeadLetterKind::MalformedJson, "not a JSON object"),
        ("", DeadLetterKind::MalformedJson, "not a JSON object"),
    ];
    let values: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let out = decode(&d, &values);
    assert!(out.batch.is_none(), "kept {:?}", out.kept);
    for (r, (value, want_kind, want)) in out.rejected.iter().zip(cases) {
        let reason = &r.reason;
        assert_eq!((&r.kind, values[r.index]), (want_kind, *value), "{reason}");
        assert!(reason.contains(want), "{value}: `{reason}` does not say `{want}`");
        assert!(reason.starts_with(&r.path), "{value}: path `{}` of `{reason}`", r.path);
    }
    assert_eq!(out.rejected.len(), cases.len());
}

#[test]
fn a_record_that_fails_halfway_leaves_no_trace() {
    let d = decoder(&every_type());
    let out = decode(
        &d,
        &[
            r#"{"id": 1, "tags": ["a", "b"], "scores": {"x": 1}, "addr": {"zip": 1}}"#,
            // Fails at its last field, after tags, scores and a nested struct were appended.
            r#"{"id": 2, "tags": ["c", "d", "e"], "scores": {"y": 2, "z": 3}, "addr": {"zip": 2}, "i": "x"}"#,
            r#"{"id": 3, "tags": ["f"], "scores": {}, "addr": {"zip": 3, "geo": {"lat": 3}}}"#,
        ],
    );
    assert_eq!(out.kept, vec![0, 2]);
    let b = out.batch.unwrap();
    let tags = b.column_by_name("tags").unwrap().as_list::<i32>().clone();
    assert_eq!(tags.value(1).as_string::<i32>().value(0), "f");
    assert_eq!(tags.values().len(), 3);
    let scores = b.column_by_name("scores").unwrap().as_map().clone();
    assert_eq!(scores.keys().len(), 1);
    let zip = b
        .column_by_name("addr")
        .unwrap()
        .as_struct()
        .column_by_name("zip")
        .unwrap()
        .clone();
    assert_eq!(zip.as_primitive::<Int32Type>().values().to_vec(), vec![1, 3]);
}

#[test]
fn a_frozen_table_refuses_undeclared_fields_at_their_path_and_keeps_nothing_of_them() {
    let d = decoder(&every_type()).refusing_undeclared(true);
    let out = decode(
        &d,
        &[
            r#"{"id": 1, "addr": {"zip": 1, "floor": 2}}"#,
            r#"{"id": 2}"#,
            r#"{"id": 3, "discount": 7}"#,
        ],
    );
    assert_eq!(out.kept, vec![1]);
    assert_eq!(out.batch.as_ref().map(|b| b.num_rows()), Some(1));
    let got: Vec<(usize, DeadLetterKind, &str)> = out
        .rejected
        .iter()
        .map(|r| (r.index, r.kind, r.path.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, DeadLetterKind::UndeclaredField, "addr.floor"),
            (2, DeadLetterKind::UndeclaredField, "discount")
        ]
    );
    assert!(out.unknown_fields.is_empty(), "{:?}", out.unknown_fields);
}

#[test]
fn unknown_fields_are_counted_by_path_not_stored() {
    let d = decoder(&every_type());
    let out = decode(
        &d,
        &[
            r#"{"id": 1, "discount": 5, "addr": {"zip": 1, "floor": 2}}"#,
            r#"{"id": 2, "discount": 6}"#,
            r#"{"id": "bad", "discount": 7}"#,
        ],
    );
    assert_eq!(out.kept, vec![0, 1]);
    let want: BTreeMap<String, u64> = [("addr.floor".to_string(), 1), ("discount".to_string(), 2)].into();
    assert_eq!(out.unknown_fields, want, "a rejected record's fields are not counted");
}

#[test]
fn other_encodings_producers_use() {
    let cols = vec![
        col("l", "long", false, None),
        col("d", "double", false, None),
        ResolvedColumn {
            decimal_bytes: true,
            ..col("dec", "decimal(6,2)", false, None)
        },
        col("day", "date", false, None),
        col("ts", "timestamptz", false, Some(TimeUnit::Nanos)),
        col("m", "map<int, string>", false, None),
    ];
    let d = decoder(&cols);
    let out = decode(
        &d,
        &[
            // protobuf JSON: 64-bit ints and special floats as strings; Connect: decimal bytes
            // in base64, maps as key/value arrays; epoch days and nanoseconds.
            r#"{"l": "9007199254740993", "d": "NaN", "dec": "BNI=", "day": 19782, "ts": 1700000000123456789,
                "m": [{"key": 1, "value": "a"}, {"key": 2, "value": null}]}"#,
            r#"{"l": 3.0, "d": "-Infinity", "dec": 12.5, "m": {"7": "b"}}"#,
        ],
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let b = out.batch.unwrap();
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>().values().to_vec(),
        vec![9_007_199_254_740_993, 3]
    );
    assert!(b.column(1).as_primitive::<Float64Type>().value(0).is_nan());
    assert_eq!(
        b.column(2).as_primitive::<Decimal128Type>().values().to_vec(),
        vec![1234, 1250]
    );
    assert_eq!(b.column(3).as_primitive::<Date32Type>().value(0), 19_782);
    assert_eq!(
        b.column(4).as_primitive::<TimestampMicrosecondType>().value(0),
        1_700_000_000_123_456
    );
    let m = b.column(5).as_map().clone();
    assert_eq!(m.keys().as_primitive::<Int32Type>().values().to_vec(), vec![1, 2, 7]);
    assert!(m.values().is_null(1));
}

// --- no input panics the decoder ---

/// Random JSON, mostly shaped like the schema's records (known names, nested values of
/// random types), some not shaped at all.
fn random_json(rng: &mut StdRng, depth: u32) -> String {
    const NAMES: &[&str] = &[
        "id", "b", "i", "f", "d", "dec", "day", "t", "ts", "tsz", "s", "u", "bin", "fx", "addr", "tags", "scores",
        "events", "zip", "geo", "lat", "street", "at", "kind", "key", "value", "x", "é",
    ];
    let scalar = |rng: &mut StdRng| -> String {
        match rng.gen_range(0..16) {
            0 => "null".into(),
            1 => rng.gen::<bool>().to_string(),
            2 => rng.gen::<i64>().to_string(),
            3 => rng.gen::<u64>().to_string(),
            4 => format!("{}", rng.gen::<f64>() * 10f64.powi(rng.gen_range(-30..30))),
            5 => format!("{}e{}", rng.gen_range(-99..99), rng.gen_range(-3000..3000)),
            // Exponents at the edge of i32, and zero mantissas with huge exponents.
            15 => format!(
                "{}e{}",
                rng.gen_range(-9..9),
                [i32::MIN, i32::MAX, -2147483647][rng.gen_range(0..3)]
            ),
            6 => "\"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b\"".into(),
            7 => "\"2024-02-29T12:00:00Z\"".into(),
            8 => "\"AQID\"".into(),
            9 => format!("\"{}\"", rng.gen_range(-1000..1000)),
            10 => "\"\\u00e9\\n\\\"\"".into(),
            11 => format!("{}.{}", rng.gen_range(-99999..99999), rng.gen_range(0..999999)),
            12 => "\"NaN\"".into(),
            _ => "\"2024-02-29\"".into(),
        }
    };
    if depth == 0 {
        return scalar(rng);
    }
    match rng.gen_range(0..4) {
        0 => {
            let n = rng.gen_range(0..5);
            let items: Vec<String> = (0..n).map(|_| random_json(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        1 | 2 => {
            let n = rng.gen_range(0..8);
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "\"{}\":{}",
                        NAMES[rng.gen_range(0..NAMES.len())],
                        random_json(rng, depth - 1)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        _ => scalar(rng),
    }
}

#[test]
fn no_input_panics_and_every_value_is_a_row_or_a_dead_letter() {
    let seed = std::env::var("CALVE_DECODE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("decoder property seed {seed} (CALVE_DECODE_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let d = decoder(&every_type());
    let good = r#"{"id": 1, "dec": 1.5, "addr": {"zip": 1}, "tags": ["a"], "scores": {"k": 1}, "u": "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"}"#;
    for round in 0..300 {
        let mut values: Vec<Vec<u8>> = Vec::new();
        for _ in 0..20 {
            values.push(match rng.gen_range(0..5) {
                // Arbitrary bytes.
                0 => (0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>()).collect(),
                // A good record cut short or with a byte changed.
                1 => good.as_bytes()[..rng.gen_range(0..good.len())].to_vec(),
                2 => {
                    let mut v = good.as_bytes().to_vec();
                    let i = rng.gen_range(0..v.len());
                    v[i] = rng.gen();
                    v
                }
                // Random JSON shaped like records, with the required id mostly present.
                _ => {
                    let body = random_json(&mut rng, 4);
                    match (rng.gen_bool(0.7), body.strip_prefix('{')) {
                        (true, Some(rest)) if rest != "}" => format!("{{\"id\":{},{rest}", rng.gen::<i32>()),
                        _ => body,
                    }
                    .into_bytes()
                }
            });
        }
        values.push(good.as_bytes().to_vec());
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let out = d
            .decode(&refs)
            .unwrap_or_else(|e| panic!("round {round}: the decoder failed as a whole: {e}"));
        let rows = out.batch.as_ref().map_or(0, |b| b.num_rows());
        assert_eq!(rows, out.kept.len(), "round {round}");
        assert_eq!(
            out.kept.len() + out.rejected.len(),
            values.len(),
            "round {round}: in = rows + dead letters"
        );
        assert_eq!(
            out.kept.last(),
            Some(&(values.len() - 1)),
            "round {round}: the good record survives its neighbours"
        );
    }
}

#[test]
fn what_a_review_found_is_refused_not_guessed() {
    let cols = vec![
        col("id", "long", true, None),
        col("dec", "decimal(10,2)", false, None),
        ResolvedColumn {
            decimal_bytes: true,
            ..col("raw", "decimal(10,2)", false, None)
        },
        col("t", "time", false, Some(TimeUnit::Millis)),
        col("m", "map<string, long>", false, None),
        col("f", "float", false, None),
        col("d", "double", false, None),
        col("xs", "list<struct<a: long>>", false, None),
    ];
    let d = decoder(&cols);
    let cases: &[(&str, DeadLetterKind, &str)] = &[
        // Placeholder words are valid base64; a decimal column without connect-bytes reads text.
        (
            r#"{"id": 1, "dec": "null"}"#,
            DeadLetterKind::SchemaMismatch,
            "is not a decimal number",
        ),
        (
            r#"{"id": 1, "raw": "not base64!"}"#,
            DeadLetterKind::SchemaMismatch,
            "is not base64",
        ),
        (
            r#"{"id": 1, "dec": 1e2147483647}"#,
            DeadLetterKind::SchemaMismatch,
            "does not fit",
        ),
        (
            r#"{"id": 1, "dec": 1.5e-2147483648}"#,
            DeadLetterKind::SchemaMismatch,
            "digits after the point",
        ),
        (
            r#"{"id": 1, "t": -1}"#,
            DeadLetterKind::SchemaMismatch,
            "not a time of day",
        ),
        (
            r#"{"id": 1, "t": 90000000}"#,
            DeadLetterKind::SchemaMismatch,
            "not a time of day",
        ),
        (
            r#"{"id": 9007199254740993.0}"#,
            DeadLetterKind::SchemaMismatch,
            "beyond 2^53",
        ),
        (
            r#"{"id": 1, "m": {"a": 1, "a": 2}}"#,
            DeadLetterKind::SchemaMismatch,
            "m{key}: key \"a\" appears twice",
        ),
        (
            r#"{"id": 1, "m": [{"key": "a", "value": 1}, {"key": "a", "value": 2}]}"#,
            DeadLetterKind::SchemaMismatch,
            "appears twice",
        ),
        (r#"{"id": 1, "m": [1]}"#, DeadLetterKind::SchemaMismatch, ""),
        (
            r#"{"id": 1, "d": 1e400}"#,
            DeadLetterKind::SchemaMismatch,
            "out of range",
        ),
        (
            r#"{"id": 1, "f": "1e39"}"#,
            DeadLetterKind::SchemaMismatch,
            "out of range for float",
        ),
    ];
    let values: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let out = decode(&d, &values);
    assert!(out.batch.is_none(), "kept {:?}", out.kept);
    assert_eq!(out.rejected.len(), cases.len(), "{:?}", out.rejected);
    for (r, (value, want_kind, want)) in out.rejected.iter().zip(cases) {
        let reason = &r.reason;
        assert_eq!((&r.kind, values[r.index]), (want_kind, *value), "{reason}");
        assert!(reason.contains(want), "{value}: `{reason}` does not say `{want}`");
        assert!(reason.starts_with(&r.path), "{value}: path `{}` of `{reason}`", r.path);
    }
    let ok = decode(
        &d,
        &[
            r#"{"id": 2, "dec": 0e2147483647, "raw": "BNI=", "t": 86399999, "xs": [{"a": 1, "x": 1}, {"a": 2, "x": 2}]}"#,
            r#"{"id": 9007199254740991.0}"#,
        ],
    );
    assert!(ok.rejected.is_empty(), "{:?}", ok.rejected);
    let b = ok.batch.unwrap();
    assert_eq!(b.column(1).as_primitive::<Decimal128Type>().value(0), 0);
    assert_eq!(b.column(2).as_primitive::<Decimal128Type>().value(0), 1234);
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(1), 9_007_199_254_740_991);
    let per_record: BTreeMap<String, u64> = [("xs[].x".to_string(), 1)].into();
    assert_eq!(
        ok.unknown_fields, per_record,
        "a field repeated in a list counts once per record"
    );
}

#[test]
fn inference_reads_new_fields_of_the_row_and_of_nested_structs_only() {
    let d = decoder(&every_type()).inferring(true);
    let out = decode(
        &d,
        &[
            r#"{"id": 1, "discount": 5, "addr": {"zip": 1, "floor": 2, "geo": {"alt": 1.5}}, "events": [{"kind": "k", "x": 1}], "scores": {"a": 1}}"#,
            r#"{"id": 2, "discount": 6.5, "addr": {"zip": 2, "floor": 3}}"#,
        ],
    );
    assert_eq!(out.kept, vec![0, 1], "{:?}", out.rejected);
    let got: Vec<(&str, &Inferred)> = out.inferred.iter().map(|(p, t)| (p.as_str(), t)).collect();
    assert_eq!(
        got,
        vec![
            ("addr.floor", &Inferred::Type(ColumnType::Long)),
            ("addr.geo.alt", &Inferred::Type(ColumnType::Double)),
            ("discount", &Inferred::Type(ColumnType::Double)),
        ],
        "a field inside a list element is counted, never inferred: {:?}",
        out.unknown_fields
    );
    assert_eq!(out.unknown_fields.get("events[].x"), Some(&1));
}
