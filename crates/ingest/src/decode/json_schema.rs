//! JSON values in the Confluent wire format (magic byte `0`, a 4-byte big-endian schema id,
//! the JSON text) whose writers' JSON Schemas are in the registry, as confluent-kafka's and
//! Kafka's `JSONSerializer`s write them.
//!
//! Each record is checked against its writer's schema (a record the schema refuses goes to the
//! dead-letter table with the failing path), then decoded by the JSON decoder like any JSON
//! record. The schema drives evolution: a field the table lacks becomes a column of the type
//! the schema declares for it (`format: date-time` is a timestamp, not the string its values
//! look like), so the table follows the registry rather than guesses from values; writers that
//! declare a field differently agree on the wider type or leave it to the values. New fields
//! nested in struct columns, and types behind `$ref`, are still typed by their values.
//! Checking parses each value a second time (into a `serde_json::Value` for the validator);
//! schemas are compiled once per id, with `format` checked whatever the draft, since column
//! types depend on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::ArrowError;
use calve_contract::{ColumnType, Element, StructField};
use serde_json::Value;

use super::json::Fault;
use super::learnt::{framed, Learnt, Unreadable};
use super::{Decoded, Inferred, JsonDecoder, Rejected};
use crate::dead_letter::DeadLetterKind;
use crate::registry::{Fetched, SchemaKind, WriterSchema};

struct Writer {
    validator: jsonschema::Validator,
    /// The Iceberg type the schema declares for each top-level property that has one.
    declared: HashMap<String, ColumnType>,
}

// The validator's own `Debug` prints the whole compiled schema into any log line that shows
// a router; the declared types say what matters.
impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("declared", &self.declared)
            .finish_non_exhaustive()
    }
}

/// Decodes Confluent-framed JSON Schema records into batches of the table's schema.
#[derive(Debug, Clone)]
pub struct JsonSchemaDecoder {
    json: JsonDecoder,
    learnt: Learnt<Writer>,
}

impl JsonSchemaDecoder {
    /// Decodes with `json` once a record's framing and schema are checked.
    pub fn new(json: JsonDecoder) -> Self {
        JsonSchemaDecoder {
            json,
            learnt: Learnt::default(),
        }
    }

    /// Schema ids `values` carry that this decoder has not learnt (or should ask about again).
    pub fn missing(&self, values: &[&[u8]]) -> Vec<u32> {
        self.learnt.missing(values)
    }

    /// Takes the registry's answer for schema `id`.
    /// `Err` when a schema with references does not build: calve's limit (the registry took
    /// it), so the caller stops the table rather than dead-letter its records.
    pub fn learn(&mut self, id: u32, fetched: &Fetched) -> Result<(), String> {
        self.learnt
            .learn(id, fetched, |w| writer(w).map_err(|e| Unreadable::of(w, e)))
    }

    /// Learns what `other` learnt (after a schema change of the table: JSON Schemas do not
    /// depend on the table, so what was compiled stays).
    pub fn learn_from(&mut self, other: &JsonSchemaDecoder) {
        self.learnt = other.learnt.clone();
    }

    /// Decodes `values`; never fails as a whole, bad values are reported in `rejected`.
    pub fn decode(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        let mut rejected = Vec::new();
        let (mut payloads, mut origin, mut writers) = (Vec::new(), Vec::new(), Vec::new());
        for (i, v) in values.iter().enumerate() {
            match self.admit(v) {
                Ok((w, payload)) => {
                    payloads.push(payload);
                    origin.push(i);
                    writers.push(w);
                }
                Err((kind, path, reason)) => rejected.push(Rejected {
                    index: i,
                    kind,
                    path,
                    reason,
                    shows: None,
                }),
            }
        }
        let mut out = self.json.decode(&payloads)?;
        for r in &mut out.rejected {
            r.index = origin[r.index];
        }
        out.rejected.extend(rejected);
        out.rejected.sort_by_key(|r| r.index);
        // The registry, not the values, says what a new top-level field is; writers that
        // disagree agree on the wider type, or leave it to the values.
        let kept: Vec<&Arc<Writer>> = out.kept.iter().map(|k| &writers[*k]).collect();
        for (path, inferred) in out.inferred.iter_mut().filter(|(p, _)| !p.contains(['.', '['])) {
            let declared = kept
                .iter()
                .filter_map(|w| w.declared.get(path))
                .fold(Inferred::Unknown, |seen, ty| seen.merge(Inferred::Type(ty.clone())));
            if let Inferred::Type(ty) = declared {
                *inferred = Inferred::Type(ty);
            }
        }
        for k in &mut out.kept {
            *k = origin[*k];
        }
        Ok(out)
    }

    /// A value's writer and JSON text, once its framing, schema and validity are checked.
    fn admit<'v>(&self, v: &'v [u8]) -> Result<(Arc<Writer>, &'v [u8]), Fault> {
        let (id, payload) = framed(v).map_err(|e| (DeadLetterKind::MalformedJson, String::new(), e))?;
        let w = self
            .learnt
            .writer(id)
            .map_err(|reason| (DeadLetterKind::UnknownSchema, String::new(), reason))?;
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            (
                DeadLetterKind::MalformedJson,
                String::new(),
                format!("not JSON (schema id {id}): {e}"),
            )
        })?;
        if let Err(e) = w.validator.validate(&value) {
            let mut path = column_path(e.instance_path().as_str());
            let kind = match e.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    path = match path.is_empty() {
                        true => name.to_string(),
                        false => format!("{path}.{name}"),
                    };
                    DeadLetterKind::MissingRequired
                }
                _ => DeadLetterKind::SchemaMismatch,
            };
            let mut why = e.to_string();
            if why.len() > 300 {
                let cut = (0..=300).rev().find(|i| why.is_char_boundary(*i)).unwrap_or(0);
                why.truncate(cut);
                why.push('…');
            }
            let reason = format!("{path}: the writer's JSON Schema (id {id}) refuses the record: {why}");
            return Err((kind, path, reason));
        }
        Ok((w.clone(), payload))
    }
}

/// A JSON pointer into a record (`/items/0/sku`) as calve's column path (`items[].sku`).
fn column_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        match segment.parse::<usize>() {
            Ok(_) => path.push_str("[]"),
            Err(_) if path.is_empty() => path.push_str(&segment),
            Err(_) => {
                path.push('.');
                path.push_str(&segment);
            }
        }
    }
    path
}

/// The base of a writer schema without `$id`, against which relative `$ref`s name references.
/// Never fetched: calve resolves nothing over the network from a schema.
const BASE_URI: &str = "https://schemas.calve.invalid/";

fn writer(w: &WriterSchema) -> Result<Writer, String> {
    if w.kind != SchemaKind::Json {
        return Err(format!(
            "schema id {} is a {:?} schema; the contract's format is json-schema",
            w.id, w.kind
        ));
    }
    let schema: Value = serde_json::from_str(&w.text).map_err(|e| format!("schema id {} is not JSON: {e}", w.id))?;
    let mut options = jsonschema::options()
        .should_validate_formats(true)
        .with_base_uri(BASE_URI);
    // A reference's name is what the schema's `$ref`s say: an absolute URI as it is, a
    // relative one against the schema's own `$id` (if it has one) or calve's base.
    let own = schema
        .get("$id")
        .and_then(Value::as_str)
        .and_then(|id| id.rsplit_once('/'))
        .map(|(dir, _)| format!("{dir}/"));
    for i in &w.imports {
        let contents: Value = serde_json::from_str(&i.text)
            .map_err(|e| format!("schema id {}: referenced schema {} is not JSON: {e}", w.id, i.name))?;
        let absolute = i.name.contains("://") || i.name.starts_with("urn:");
        let uris = match absolute {
            true => vec![i.name.clone()],
            false => [Some(BASE_URI.to_string()), own.clone()]
                .into_iter()
                .flatten()
                .map(|base| format!("{base}{}", i.name))
                .collect(),
        };
        for uri in uris {
            options = options.with_resource(uri, jsonschema::Resource::from_contents(contents.clone()));
        }
    }
    let validator = options
        .build(&schema)
        .map_err(|e| format!("schema id {} is no JSON Schema: {e}", w.id))?;
    let declared = match schema.get("properties") {
        Some(Value::Object(props)) => props
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), column_type(s)?)))
            .collect(),
        _ => HashMap::new(),
    };
    Ok(Writer { validator, declared })
}

/// The Iceberg type a JSON Schema declares, when it declares one: `integer` → long, `number`
/// → double, `string` (`format` `date-time` → timestamptz, `date`, `time`, `uuid`),
/// `boolean`, `object` with `properties` → struct, with only `additionalProperties` → map,
/// `array` → list. A type that also allows null (`["null", T]`, or a `oneOf`/`anyOf` with
/// `{"type": "null"}`) is that type, optional.
fn column_type(s: &Value) -> Option<ColumnType> {
    for alternatives in ["oneOf", "anyOf"] {
        if let Some(Value::Array(options)) = s.get(alternatives) {
            let typed: Vec<&Value> = options
                .iter()
                .filter(|o| o.get("type") != Some(&Value::from("null")))
                .collect();
            return match typed.as_slice() {
                [one] => column_type(one),
                _ => None,
            };
        }
    }
    let ty = match s.get("type")? {
        Value::String(t) => t.as_str(),
        Value::Array(types) => {
            let mut typed = types.iter().filter_map(Value::as_str).filter(|t| *t != "null");
            match (typed.next(), typed.next()) {
                (Some(one), None) => one,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(match (ty, s.get("format").and_then(Value::as_str)) {
        ("integer", _) => ColumnType::Long,
        ("number", _) => ColumnType::Double,
        ("boolean", _) => ColumnType::Boolean,
        ("string", Some("date-time")) => ColumnType::Timestamptz,
        ("string", Some("date")) => ColumnType::Date,
        ("string", Some("uuid")) => ColumnType::Uuid,
        ("string", _) => ColumnType::String,
        ("array", _) => ColumnType::List(Box::new(Element {
            ty: column_type(s.get("items")?)?,
            required: false,
        })),
        ("object", _) => match (s.get("properties"), s.get("additionalProperties")) {
            (Some(Value::Object(props)), _) if !props.is_empty() => ColumnType::Struct(
                props
                    .iter()
                    .map(|(name, p)| {
                        Some(StructField {
                            name: name.clone(),
                            ty: column_type(p)?,
                            required: false,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
            (None, Some(values @ Value::Object(_))) => ColumnType::Map {
                key: Box::new(ColumnType::String),
                value: Box::new(Element {
                    ty: column_type(values)?,
                    required: false,
                }),
            },
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_columns::column;

    #[test]
    fn json_schema_types_map_to_iceberg_types() {
        let t = |s: Value| column_type(&s);
        assert_eq!(t(serde_json::json!({"type": "integer"})), Some(ColumnType::Long));
        assert_eq!(
            t(serde_json::json!({"type": ["null", "string"], "format": "date-time"})),
            Some(ColumnType::Timestamptz)
        );
        assert_eq!(
            t(serde_json::json!({"oneOf": [{"type": "null"}, {"type": "string", "format": "date"}]})),
            Some(ColumnType::Date)
        );
        assert_eq!(
            t(serde_json::json!({"type": "object", "additionalProperties": {"type": "number"}})),
            Some(ColumnType::Map {
                key: Box::new(ColumnType::String),
                value: Box::new(Element {
                    ty: ColumnType::Double,
                    required: false
                })
            })
        );
        assert_eq!(
            t(serde_json::json!({"type": ["string", "integer"]})),
            None,
            "no one type"
        );
        assert_eq!(
            t(serde_json::json!({"type": "object", "properties": {}})),
            None,
            "no empty struct"
        );
        assert_eq!(
            t(serde_json::json!({"type": "string", "format": "time"})),
            Some(ColumnType::String),
            "RFC 3339 times carry an offset a time column has no room for"
        );
        assert_eq!(column_path("/items/0/a~1b"), "items[].a/b");
    }

    #[test]
    fn framing_validation_and_decoding_keep_every_record_in_its_place() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("qty", arrow_schema::DataType::Int64, true),
        ]));
        let long = |name: &str, required| column(name, ColumnType::Long, required);
        let json = JsonDecoder::new(schema, &[long("id", true), long("qty", false)]).unwrap();
        let mut d = JsonSchemaDecoder::new(json);
        let text = r#"{"type":"object","properties":{"id":{"type":"integer"},"qty":{"type":"integer","minimum":0}},"required":["id"]}"#;
        let w = WriterSchema {
            id: 3,
            kind: SchemaKind::Json,
            text: text.into(),
            references: Vec::new(),
            imports: Vec::new(),
        };
        d.learn(3, &Fetched::Found(Arc::new(w))).unwrap();
        let framed = |json: &str| {
            let mut v = vec![0, 0, 0, 0, 3];
            v.extend(json.as_bytes());
            v
        };
        let values = [
            framed(r#"{"id": 1}"#),
            br#"{"id": 2}"#.to_vec(),
            framed(r#"{"id": 3, "qty": -1}"#),
            framed(r#"{"qty": 4}"#),
            framed(r#"{"id": 5, "qty": 5}"#),
            vec![0, 0, 0, 0, 9, b'{', b'}'],
            framed(r#"{"id": 7, "qty": 7}"#),
        ];
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let out = d.decode(&refs).unwrap();
        assert_eq!(out.kept, vec![0, 4, 6]);
        let got: Vec<(usize, DeadLetterKind, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.index, r.kind, r.path.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, DeadLetterKind::MalformedJson, ""),
                (2, DeadLetterKind::SchemaMismatch, "qty"),
                (3, DeadLetterKind::MissingRequired, "id"),
                (5, DeadLetterKind::UnknownSchema, ""),
            ]
        );
        assert!(out.rejected[1].reason.contains("JSON Schema"), "{:?}", out.rejected[1]);
    }

    #[test]
    fn references_resolve_relative_to_the_schema_or_as_absolute_uris() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "id",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let column = column("id", ColumnType::Long, true);
        let import = |name: &str, text: &str| crate::registry::Import {
            name: name.into(),
            subject: "s".into(),
            version: 1,
            text: text.into(),
        };
        let address = r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;
        let money = r#"{"type":"number","minimum":0}"#;
        // `address.json` relative (to calve's base, and to the schema's own `$id`), `money`
        // by an absolute URI.
        let texts = [
            r#"{"type":"object","properties":{"id":{"type":"integer"},"addr":{"$ref":"address.json"},
               "price":{"$ref":"https://acme.example/money.json"}}}"#,
            r#"{"$id":"https://acme.example/orders/order.json","type":"object","properties":{"id":{"type":"integer"},
               "addr":{"$ref":"address.json"},"price":{"$ref":"https://acme.example/money.json"}}}"#,
        ];
        for (n, text) in texts.iter().enumerate() {
            let id = 10 + n as u32;
            let mut d =
                JsonSchemaDecoder::new(JsonDecoder::new(schema.clone(), std::slice::from_ref(&column)).unwrap());
            let w = WriterSchema {
                id,
                kind: SchemaKind::Json,
                text: (*text).into(),
                references: vec!["s".into()],
                imports: vec![
                    import("address.json", address),
                    import("https://acme.example/money.json", money),
                ],
            };
            d.learn(id, &Fetched::Found(Arc::new(w))).unwrap();
            let framed = |json: &str| {
                let mut v = vec![0, 0, 0, 0, id as u8];
                v.extend(json.as_bytes());
                v
            };
            let values = [
                framed(r#"{"id": 1, "addr": {"city": "Oslo"}, "price": 2.5}"#),
                framed(r#"{"id": 2, "addr": {"city": 5}}"#),
                framed(r#"{"id": 3, "price": -1}"#),
            ];
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let out = d.decode(&refs).unwrap();
            let got: Vec<(usize, &str)> = out.rejected.iter().map(|r| (r.index, r.path.as_str())).collect();
            assert_eq!(
                got,
                vec![(1, "addr.city"), (2, "price")],
                "schema {n}: {:?}",
                out.rejected
            );
            assert_eq!(out.kept, vec![0]);
        }
        // A reference the registry gave but that does not resolve: calve's limit.
        let mut d = JsonSchemaDecoder::new(JsonDecoder::new(schema.clone(), &[column]).unwrap());
        let w = WriterSchema {
            id: 20,
            kind: SchemaKind::Json,
            text: r#"{"properties":{"addr":{"$ref":"elsewhere.json"}}}"#.into(),
            references: vec!["s".into()],
            imports: vec![import("address.json", address)],
        };
        assert!(d.learn(20, &Fetched::Found(Arc::new(w))).is_err());
    }
}
