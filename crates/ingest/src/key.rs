//! Business keys from Kafka message keys: what a tombstone (a null value) deletes.
//!
//! A tombstone carries no row, only its Kafka key, so when the contract says
//! `keys.from_kafka_key = true` the key is decoded into the key columns: a JSON object of the
//! key columns (`{"id": 7}`, or Kafka Connect's `{"schema": …, "payload": {"id": 7}}`), or for a
//! single key column the bare value (`7`, `"abc"`) or raw text (`abc`). The same JSON decoder
//! as for values turns it into typed Arrow columns, so the key compares equal to the key
//! columns of the rows it deletes.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use calve_contract::ResolvedColumn;
use serde_json::Value;

use crate::dead_letter::DeadLetterKind;
use crate::debezium;
use crate::decode::{Decoded, JsonDecoder, Rejected};

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
        })
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
        let mut rejected = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match k.map(|k| self.as_object(k)) {
                None => rejected.push(bad_key(i, "tombstone without a Kafka key".to_string())),
                Some(Err(reason)) => rejected.push(bad_key(i, reason)),
                Some(Ok(obj)) => {
                    objects.push(obj);
                    origin.push(i);
                }
            }
        }
        let refs: Vec<&[u8]> = objects.iter().map(Vec::as_slice).collect();
        let mut out = self.decoder.decode(&refs)?;
        out.kept.iter_mut().for_each(|k| *k = origin[*k]);
        for r in out.rejected.iter_mut() {
            *r = bad_key(origin[r.index], format!("Kafka key: {}", r.reason));
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
            Err(_) => match (single, std::str::from_utf8(key)) {
                (Some(col), Ok(text)) => serde_json::json!({ col: text }),
                _ => return Err("Kafka key is neither JSON nor UTF-8 text of the single key column".into()),
            },
        };
        Ok(value.to_string().into_bytes())
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

    fn decoder() -> KeyDecoder {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let types = [ResolvedColumn {
            name: "id".into(),
            ty: calve_contract::ColumnType::Long,
            required: true,
            doc: None,
            unit: None,
            decimal_bytes: false,
        }];
        KeyDecoder::new(&schema, &["id".to_string()], &types).unwrap()
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
