//! Business keys from Kafka message keys: what a tombstone (a null value) deletes.
//!
//! A tombstone carries no row, only its Kafka key, so when the contract says
//! `keys.from_kafka_key = true` the key is decoded into the key columns: a JSON object of the
//! key columns (`{"id": 7}`, or Kafka Connect's `{"schema": …, "payload": {"id": 7}}`), or for a
//! single key column the bare value (`7`, `"abc"`) or raw text (`abc`). The same JSON decoder
//! as for values turns it into typed Arrow columns, so the key compares equal to the key
//! columns of the rows it deletes.
//!
//! When the contract says its keys are in the registry's format (`kafka_key_format =
//! "registry"`), keys framed as the registry's serializers frame them (magic byte 0, schema
//! id) are read with their writer schema, learnt from the registry like a value's: an Avro key
//! record or Protobuf key message by field name, an Avro key of a plain type (`"long"`,
//! `"string"`) as the single key column, a JSON Schema key as JSON. Keys that are not framed
//! are read as above. Never guessed: an 8-byte number key (Kafka's `LongSerializer`) can
//! begin like a framed one.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use calve_contract::{Format, ResolvedColumn};
use serde_json::Value;

use crate::dead_letter::DeadLetterKind;
use crate::debezium;
use crate::decode::{framed, AvroDecoder, Decoded, JsonDecoder, ProtobufDecoder, Rejected};
use crate::registry::Fetched;

/// A record as a dead letter keeps it: raw Kafka key and raw value.
pub type RawRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// What in a record may carry its business key: its Kafka key, its value, and, when the value
/// is a Debezium envelope (valid or not), its `before` and `after` images. A value too broken
/// to parse offers only itself.
pub fn key_candidates(key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = key.into_iter().chain(value).map(<[u8]>::to_vec).collect();
    out.extend(value.map(debezium::images).unwrap_or_default());
    out
}

/// Decodes Kafka keys into rows of the key columns.
#[derive(Debug, Clone)]
pub struct KeyDecoder {
    columns: Vec<String>,
    decoder: JsonDecoder,
    framed: Option<Framed>,
}

/// How keys in the Confluent framing are read.
#[derive(Debug, Clone)]
enum Framed {
    Avro(AvroDecoder),
    Protobuf(ProtobufDecoder),
    /// JSON Schema keys: the JSON after the framing.
    Json,
}

impl KeyDecoder {
    /// A decoder for `columns` of `table` (the table's Arrow schema), whose contract types are
    /// in `types`.
    pub fn new(table: &SchemaRef, columns: &[String], types: &[ResolvedColumn]) -> Result<Self, ArrowError> {
        let fields = columns
            .iter()
            .map(|c| table.field_with_name(c).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        let schema = Arc::new(Schema::new(fields));
        Ok(KeyDecoder {
            columns: columns.to_vec(),
            decoder: JsonDecoder::new(schema, types)?,
            framed: None,
        })
    }

    /// Reads keys in the Confluent framing with writer schemas of `format`'s kind (none for
    /// formats without a registry, and for Debezium's, whose tombstones are not read). Call
    /// before learning schemas.
    pub fn reading_framed(mut self, format: Format, types: &[ResolvedColumn]) -> Result<Self, ArrowError> {
        let schema = self.decoder.schema().clone();
        self.framed = match format {
            Format::Avro => {
                let mut d = AvroDecoder::new(schema, types)?;
                if let [single] = self.columns.as_slice() {
                    d = d.reading_non_records_as(single);
                }
                Some(Framed::Avro(d))
            }
            Format::Protobuf => Some(Framed::Protobuf(ProtobufDecoder::new(schema, types)?)),
            Format::JsonSchema => Some(Framed::Json),
            Format::Json | Format::DebeziumJson | Format::DebeziumAvro => None,
        };
        Ok(self)
    }

    /// Schema ids framed `keys` carry that are not learnt yet.
    pub fn missing(&self, keys: &[&[u8]]) -> Vec<u32> {
        match &self.framed {
            Some(Framed::Avro(d)) => d.missing(keys),
            Some(Framed::Protobuf(d)) => d.missing(keys),
            _ => Vec::new(),
        }
    }

    /// Takes the registry's answer for schema `id` (`Err`: a schema calve cannot read, see
    /// [`ProtobufDecoder::learn`]).
    pub fn learn(&mut self, id: u32, fetched: &Fetched) -> Result<(), String> {
        match &mut self.framed {
            Some(Framed::Avro(d)) => return d.learn(id, fetched),
            Some(Framed::Protobuf(d)) => return d.learn(id, fetched),
            _ => {}
        }
        Ok(())
    }

    /// Learns what `other` learnt.
    pub fn learn_from(&mut self, other: &KeyDecoder) {
        match (&mut self.framed, &other.framed) {
            (Some(Framed::Avro(new)), Some(Framed::Avro(old))) => new.learn_from(old),
            (Some(Framed::Protobuf(new)), Some(Framed::Protobuf(old))) => new.learn_from(old),
            _ => {}
        }
    }

    /// Decodes every business key some raw records may carry (see [`key_candidates`]): the
    /// decoded keys and, per key, the index of the record it came from; `None` when no record
    /// carries one. Erasure finds a person's dead letters with it.
    pub fn decode_carried(&self, records: &[RawRecord<'_>]) -> Result<Option<(RecordBatch, Vec<usize>)>, ArrowError> {
        let (mut candidates, mut owner) = (Vec::new(), Vec::new());
        for (i, (key, value)) in records.iter().enumerate() {
            for c in key_candidates(*key, *value) {
                candidates.push(c);
                owner.push(i);
            }
        }
        let raw: Vec<Option<&[u8]>> = candidates.iter().map(|c| Some(c.as_slice())).collect();
        let decoded = self.decode(&raw)?;
        Ok(decoded
            .batch
            .map(|b| (b, decoded.kept.iter().map(|k| owner[*k]).collect())))
    }

    /// Decodes `keys`; a missing or undecodable key is rejected with the reason.
    pub fn decode(&self, keys: &[Option<&[u8]>]) -> Result<Decoded, ArrowError> {
        let mut objects = Vec::with_capacity(keys.len());
        let mut origin = Vec::with_capacity(keys.len());
        let (mut binary, mut binary_origin) = (Vec::new(), Vec::new());
        let mut rejected = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let Some(k) = k else {
                rejected.push(bad_key(i, "tombstone without a Kafka key".to_string()));
                continue;
            };
            let object = match (&self.framed, framed(k)) {
                (Some(Framed::Json), Ok((_, json))) => self.as_object(json),
                (Some(_), Ok(_)) => {
                    binary.push(*k);
                    binary_origin.push(i);
                    continue;
                }
                _ => self.as_object(k),
            };
            match object {
                Err(reason) => rejected.push(bad_key(i, reason)),
                Ok(obj) => {
                    objects.push(obj);
                    origin.push(i);
                }
            }
        }
        let refs: Vec<&[u8]> = objects.iter().map(Vec::as_slice).collect();
        let mut out = self.decoder.decode(&refs)?;
        remap(&mut out, &origin);
        if !binary.is_empty() {
            let mut more = match &self.framed {
                Some(Framed::Avro(d)) => d.decode(&binary)?,
                Some(Framed::Protobuf(d)) => d.decode(&binary)?,
                _ => Decoded::default(),
            };
            remap(&mut more, &binary_origin);
            out.kept.extend(more.kept);
            out.rejected.extend(more.rejected);
            out.batch = match (out.batch.take(), more.batch) {
                (Some(a), Some(b)) => Some(concat_batches(&a.schema(), [&a, &b])?),
                (a, b) => a.or(b),
            };
        }
        out.rejected.extend(rejected);
        out.rejected.sort_by_key(|r| r.index);
        Ok(out)
    }

    /// The key as a JSON object of the key columns.
    fn as_object(&self, key: &[u8]) -> Result<Vec<u8>, String> {
        let single = (self.columns.len() == 1).then(|| self.columns[0].as_str());
        let value = match serde_json::from_slice::<Value>(key) {
            Ok(Value::Object(mut m)) => match (m.remove("payload"), m.contains_key("schema")) {
                (Some(p @ Value::Object(_)), true) => p,
                (Some(p), _) => {
                    m.insert("payload".into(), p);
                    Value::Object(m)
                }
                (None, _) => Value::Object(m),
            },
            Ok(scalar) => match single {
                Some(col) if !scalar.is_null() && !scalar.is_array() => serde_json::json!({ col: scalar }),
                _ => {
                    return Err(format!(
                        "Kafka key `{}` is not an object of the key columns",
                        String::from_utf8_lossy(key)
                    ))
                }
            },
            Err(_) if framed(key).is_ok() && self.framed.is_none() => {
                return Err(
                    "Kafka key begins like the Confluent framing (magic byte 0, schema id): if a registry \
                     serializer writes the keys, say keys.kafka_key_format = \"registry\" in the contract"
                        .into(),
                )
            }
            Err(_) => match (single, std::str::from_utf8(key)) {
                (Some(col), Ok(text)) => serde_json::json!({ col: text }),
                _ => return Err("Kafka key is neither JSON nor UTF-8 text of the single key column".into()),
            },
        };
        Ok(value.to_string().into_bytes())
    }
}

/// Points a decoding of some keys back at the keys they were (`origin`), every refusal a bad
/// key.
fn remap(out: &mut Decoded, origin: &[usize]) {
    out.kept.iter_mut().for_each(|k| *k = origin[*k]);
    for r in out.rejected.iter_mut() {
        *r = bad_key(origin[r.index], format!("Kafka key: {}", r.reason));
    }
}

fn bad_key(index: usize, reason: String) -> Rejected {
    Rejected {
        index,
        kind: DeadLetterKind::BadKey,
        path: String::new(),
        reason,
        shows: None,
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_schema::{DataType, Field};

    use super::*;

    fn id_type() -> [ResolvedColumn; 1] {
        [crate::decode::test_columns::column(
            "id",
            calve_contract::ColumnType::Long,
            true,
        )]
    }

    fn decoder() -> KeyDecoder {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        KeyDecoder::new(&schema, &["id".to_string()], &id_type()).unwrap()
    }

    #[test]
    fn every_key_shape_decodes_to_the_same_key() {
        let keys: Vec<&[u8]> = vec![
            b"7",
            br#"{"id":7}"#,
            br#"{"schema":{"type":"struct"},"payload":{"id":7}}"#,
            b"\"7\"",
            b"7 ",
        ];
        let d = decoder()
            .decode(&keys.iter().map(|k| Some(*k)).collect::<Vec<_>>())
            .unwrap();
        let batch = d.batch.unwrap();
        let ids: Vec<i64> = batch.column(0).as_primitive::<Int64Type>().values().to_vec();
        // "7" (a JSON string) into a long column is a mismatch arrow-json rejects or coerces;
        // every accepted key must be 7.
        assert!(ids.iter().all(|i| *i == 7), "{ids:?}");
        assert!(d.kept.len() >= 3, "{:?}", d.rejected);
    }

    fn learnt(format: Format, id: u32, kind: crate::registry::SchemaKind, text: &str) -> KeyDecoder {
        let mut d = decoder().reading_framed(format, &id_type()).unwrap();
        let w = crate::registry::WriterSchema {
            id,
            kind,
            text: text.into(),
            references: Vec::new(),
            imports: Vec::new(),
        };
        assert_eq!(d.missing(&[&[0, 0, 0, 0, id as u8, 1][..]]), vec![id]);
        d.learn(id, &Fetched::Found(Arc::new(w))).unwrap();
        d
    }

    fn ids_of(d: &KeyDecoder, keys: &[&[u8]]) -> (Vec<i64>, Vec<Rejected>) {
        let out = d.decode(&keys.iter().map(|k| Some(*k)).collect::<Vec<_>>()).unwrap();
        let ids = out
            .batch
            .map_or_else(Vec::new, |b| b.column(0).as_primitive::<Int64Type>().values().to_vec());
        (ids, out.rejected)
    }

    #[test]
    fn framed_keys_read_with_their_writer_schema() {
        use crate::registry::SchemaKind;
        // An Avro `long` key (zigzag 7 = 14), beside a plain JSON key.
        let avro = learnt(Format::Avro, 3, SchemaKind::Avro, r#""long""#);
        let (ids, rejected) = ids_of(&avro, &[&[0, 0, 0, 0, 3, 14], b"8", &[0, 0, 0, 0, 9, 2]]);
        assert_eq!(ids, vec![8, 7]);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!((rejected[0].index, rejected[0].kind), (2, DeadLetterKind::BadKey));
        // A Protobuf key message: field 1 (`id`) = 7, after the one-byte message indexes.
        let proto = r#"syntax = "proto3"; message Key { int64 id = 1; string shard = 2; }"#;
        let pb = learnt(Format::Protobuf, 4, SchemaKind::Protobuf, proto);
        let (ids, rejected) = ids_of(&pb, &[&[0, 0, 0, 0, 4, 0, 8, 7]]);
        assert_eq!((ids, rejected.len()), (vec![7], 0));
        // A JSON Schema key: the JSON after the framing.
        let json = KeyDecoder::reading_framed(decoder(), Format::JsonSchema, &[]).unwrap();
        let (ids, rejected) = ids_of(&json, &[b"\0\0\0\0\x05{\"id\": 7}"]);
        assert_eq!((ids, rejected.len()), (vec![7], 0), "{rejected:?}");
    }

    #[test]
    fn a_framed_key_under_plain_keys_says_which_setting_reads_it() {
        let (ids, rejected) = ids_of(&decoder(), &[&[0, 0, 0, 0, 3, 14]]);
        assert!(ids.is_empty());
        assert!(
            rejected[0].reason.contains("kafka_key_format"),
            "{}",
            rejected[0].reason
        );
    }

    #[test]
    fn missing_and_bad_keys_are_rejected_with_a_reason() {
        let keys: Vec<Option<&[u8]>> = vec![None, Some(b"[1,2]"), Some(br#"{"id":"x"}"#), Some(b"abc"), Some(b"8")];
        let d = decoder().decode(&keys).unwrap();
        assert_eq!(d.kept, vec![4]);
        let rejected: Vec<usize> = d.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, vec![0, 1, 2, 3]);
        assert!(d.rejected.iter().all(|r| r.kind == DeadLetterKind::BadKey));
        assert!(
            d.rejected[0].reason.contains("without a Kafka key"),
            "{}",
            d.rejected[0].reason
        );
    }
}
