//! JSON values → Arrow rows of the table's schema; records that do not fit become dead letters.
//!
//! The fast path feeds a whole poll's records to one arrow-json decoder. Only when that fails
//! (or a value is not exactly one JSON object) is each record decoded on its own to find the
//! culprits, so a clean stream pays for one decode and a dirty one never stops the table.

use arrow_array::RecordBatch;
use arrow_json::ReaderBuilder;
use arrow_schema::{ArrowError, SchemaRef};
use arrow_select::concat::concat_batches;

use crate::dead_letter::DeadLetterKind;
use crate::int_guard::IntGuard;

/// Result of decoding a slice of values.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Rows of the values that fit, in input order.
    pub batch: Option<RecordBatch>,
    /// Input index of each row of `batch`.
    pub kept: Vec<usize>,
    /// Input index, kind and reason of each value that did not fit.
    pub rejected: Vec<(usize, DeadLetterKind, String)>,
}

/// Decodes JSON objects into batches of one Arrow schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    schema: SchemaRef,
    ints: IntGuard,
}

impl JsonDecoder {
    /// A decoder for `schema`; fails if arrow-json cannot decode one of its types.
    pub fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        ReaderBuilder::new(schema.clone()).build_decoder()?;
        Ok(JsonDecoder {
            ints: IntGuard::new(&schema),
            schema,
        })
    }

    /// The schema rows are decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `values`; never fails as a whole, bad values are reported in `rejected`.
    pub fn decode(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        let mut guarded = Vec::new();
        let mut pass: Vec<usize> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match self.ints.check(v) {
                Some(reason) => guarded.push((i, DeadLetterKind::SchemaMismatch, reason)),
                None => pass.push(i),
            }
        }
        let passing: Vec<&[u8]> = pass.iter().map(|i| values[*i]).collect();
        let mut out = self.decode_checked(&passing)?;
        // Back to indices into `values`.
        out.kept.iter_mut().for_each(|k| *k = pass[*k]);
        out.rejected.iter_mut().for_each(|r| r.0 = pass[r.0]);
        out.rejected.extend(guarded);
        out.rejected.sort_by_key(|r| r.0);
        Ok(out)
    }

    fn decode_checked(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        if values.is_empty() {
            return Ok(Decoded::default());
        }
        if let Some(batch) = self.decode_all(values)? {
            return Ok(Decoded {
                batch: Some(batch),
                kept: (0..values.len()).collect(),
                rejected: vec![],
            });
        }
        self.decode_one_by_one(values)
    }

    /// `None` when any value is not a clean single object or the batch does not convert.
    fn decode_all(&self, values: &[&[u8]]) -> Result<Option<RecordBatch>, ArrowError> {
        let mut d = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(values.len())
            .build_decoder()?;
        for (i, v) in values.iter().enumerate() {
            if !looks_like_object(v) {
                return Ok(None);
            }
            // A truncated value followed by another could otherwise merge into one row.
            match d.decode(v) {
                Ok(n) if n == v.len() && !d.has_partial_record() && d.len() == i + 1 => {}
                _ => return Ok(None),
            }
        }
        Ok(d.flush().ok().flatten())
    }

    fn decode_one_by_one(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        let mut out = Decoded::default();
        let mut batches = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match self.decode_single(v)? {
                Ok(b) => {
                    batches.push(b);
                    out.kept.push(i);
                }
                Err((kind, reason)) => out.rejected.push((i, kind, reason)),
            }
        }
        if !batches.is_empty() {
            out.batch = Some(concat_batches(&self.schema, &batches)?);
        }
        Ok(out)
    }

    /// Outer error: the decoder itself could not be built. Inner: why this value is rejected.
    fn decode_single(&self, v: &[u8]) -> Result<Result<RecordBatch, Rejection>, ArrowError> {
        if !looks_like_object(v) {
            return Ok(Err((
                DeadLetterKind::MalformedJson,
                "value is not a JSON object".into(),
            )));
        }
        let mut d = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(2)
            .build_decoder()?;
        match d.decode(v) {
            Err(e) => return Ok(Err((DeadLetterKind::MalformedJson, e.to_string()))),
            Ok(n) if n != v.len() || d.has_partial_record() => {
                return Ok(Err((
                    DeadLetterKind::MalformedJson,
                    "value is not one complete JSON object".into(),
                )));
            }
            Ok(_) if d.len() != 1 => {
                return Ok(Err((
                    DeadLetterKind::MalformedJson,
                    format!("value holds {} JSON objects, expected one", d.len()),
                )));
            }
            Ok(_) => {}
        }
        Ok(match d.flush() {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err((DeadLetterKind::MalformedJson, "value decoded to no row".into())),
            Err(e) => Err(classify(&e)),
        })
    }
}

/// Why one value cannot become a row.
type Rejection = (DeadLetterKind, String);

fn looks_like_object(v: &[u8]) -> bool {
    v.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn classify(e: &ArrowError) -> Rejection {
    let msg = e.to_string();
    // arrow-json reports a missing or null required field as nulls in a non-nullable child.
    let kind = if msg.contains("non-nullable") {
        DeadLetterKind::MissingRequired
    } else {
        DeadLetterKind::SchemaMismatch
    };
    (kind, msg)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn decoder() -> JsonDecoder {
        JsonDecoder::new(Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
        ])))
        .unwrap()
    }

    #[test]
    fn clean_values_take_the_fast_path() {
        let vals: Vec<&[u8]> = vec![br#"{"id":1,"name":"a"}"#, br#"{"id":2,"ts":"2026-01-01T00:00:00Z"}"#];
        let d = decoder().decode(&vals).unwrap();
        assert_eq!(d.kept, vec![0, 1]);
        assert!(d.rejected.is_empty());
        let ids = d.batch.unwrap().column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn each_bad_value_is_rejected_with_its_kind_and_the_rest_kept() {
        let vals: Vec<&[u8]> = vec![
            br#"{"id":1}"#,
            br#"{"id":2"#,               // truncated
            br#"{"name":"no id"}"#,      // required missing
            br#"{"id":"three"}"#,        // wrong type
            b"42",                       // not an object
            br#"{"id":4}{"id":5}"#,      // two objects in one value
            br#"{"id":6,"ts":"never"}"#, // bad timestamp
            b"",                         // empty
            br#"{"id":7,"extra":true}"#, // unknown fields are fine
            br#"{"id":8.5}"#,            // would be truncated to 8 by arrow-json
        ];
        let d = decoder().decode(&vals).unwrap();
        assert_eq!(d.kept, vec![0, 8]);
        let kinds: Vec<(usize, DeadLetterKind)> = d.rejected.iter().map(|(i, k, _)| (*i, *k)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, DeadLetterKind::MalformedJson),
                (2, DeadLetterKind::MissingRequired),
                (3, DeadLetterKind::SchemaMismatch),
                (4, DeadLetterKind::MalformedJson),
                (5, DeadLetterKind::MalformedJson),
                (6, DeadLetterKind::SchemaMismatch),
                (7, DeadLetterKind::MalformedJson),
                (9, DeadLetterKind::SchemaMismatch),
            ]
        );
        let ids = d.batch.unwrap().column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids, vec![1, 7]);
    }

    #[test]
    fn truncated_values_never_merge_into_a_row() {
        let vals: Vec<&[u8]> = vec![br#"{"id":"#, br#"9}"#];
        let d = decoder().decode(&vals).unwrap();
        assert!(d.batch.is_none());
        assert_eq!(d.rejected.len(), 2);
    }
}
