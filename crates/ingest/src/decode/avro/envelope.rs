//! Debezium change events as Avro (Confluent's AvroConverter): the envelope record
//! `{before, after, source, op, ts_ms, …}` whose `before` and `after` are the source row's
//! `Value` record. The table is fitted to that inner record; each decoded envelope becomes an
//! upsert (`c`, `r`, `u`: the `after` row) or a delete (`d`: the `before` row's key), as the
//! JSON path does ([`crate::debezium`]). A truncate is refused (dead-lettered): emptying a
//! table on a source's say-so would delete everything without any contract asking for it.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch, StructArray, UInt32Array};
use arrow_schema::{ArrowError, DataType, Fields};
use arrow_select::take::take;

/// Where the envelope's parts are among its top-level fields.
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    before: usize,
    after: usize,
    op: usize,
}

impl Envelope {
    /// The envelope of a writer schema's top-level `fields`, with the row record's fields.
    pub fn of(fields: &Fields) -> Result<(Envelope, Fields), String> {
        let at = |name: &str| fields.iter().position(|f| f.name() == name);
        let (Some(before), Some(after), Some(op)) = (at("before"), at("after"), at("op")) else {
            return Err("not a Debezium envelope: it lacks `before`, `after` or `op`".into());
        };
        let DataType::Struct(row) = fields[after].data_type() else {
            return Err("not a Debezium envelope: `after` is not a record".into());
        };
        if !same_shape(fields[before].data_type(), fields[after].data_type())
            || fields[op].data_type() != &DataType::Utf8
        {
            return Err("not a Debezium envelope: `before` and `after` differ, or `op` is not a string".into());
        }
        Ok((Envelope { before, after, op }, row.clone()))
    }
}

/// Whether two types have the same fields by name and type at every depth, whatever their
/// metadata: `before` rows are read with the positions found in `after`.
fn same_shape(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::Struct(x), DataType::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(x, y)| x.name() == y.name() && same_shape(x.data_type(), y.data_type()))
        }
        (DataType::List(x), DataType::List(y)) | (DataType::Map(x, _), DataType::Map(y, _)) => {
            same_shape(x.data_type(), y.data_type())
        }
        _ => a.equals_datatype(b),
    }
}

/// The rows of one batch of envelopes, by what they do.
#[derive(Debug)]
pub struct Split {
    /// `after` rows of creates, snapshot reads and updates, with their rows in the batch.
    pub upserts: (RecordBatch, Vec<usize>),
    /// `before` rows of deletes, with their rows in the batch.
    pub deletes: (RecordBatch, Vec<usize>),
    /// Events that change nothing calve applies, with why.
    pub refused: Vec<(usize, String)>,
}

/// Splits a batch of decoded envelopes.
pub fn split(batch: &RecordBatch, env: Envelope) -> Result<Split, ArrowError> {
    let op = batch.column(env.op).as_string::<i32>();
    let after = batch.column(env.after).as_struct();
    let before = batch.column(env.before).as_struct();
    let (mut upserts, mut deletes, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for row in 0..batch.num_rows() {
        match (
            op.is_valid(row).then(|| op.value(row)),
            after.is_valid(row),
            before.is_valid(row),
        ) {
            (Some("c" | "r" | "u"), true, _) => upserts.push(row),
            (Some("d"), _, true) => deletes.push(row),
            (Some("t"), _, _) => refused.push((
                row,
                "truncate events are not applied: calve does not empty a table on a source's say-so".into(),
            )),
            (Some(op @ ("c" | "r" | "u" | "d")), _, _) => {
                refused.push((row, format!("Debezium `{op}` event without the row image it needs")))
            }
            (op, _, _) => refused.push((
                row,
                format!("Debezium event with op {op:?}, which calve does not apply"),
            )),
        }
    }
    Ok(Split {
        upserts: (rows(after, &upserts)?, upserts),
        deletes: (rows(before, &deletes)?, deletes),
        refused,
    })
}

/// Rows `at` of a struct column, as a batch of its fields.
fn rows(images: &StructArray, at: &[usize]) -> Result<RecordBatch, ArrowError> {
    let indices = UInt32Array::from_iter_values(at.iter().map(|r| *r as u32));
    let taken = take(images, &indices, None)?;
    let (fields, columns, _) = taken.as_struct().clone().into_parts();
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(fields));
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(at.len()));
    RecordBatch::try_new_with_options(schema, columns, &options)
}

/// The Avro aliases of the fields of the row record inside an envelope's schema text (the
/// first record defined inline in `before` or `after`), by field name.
pub fn row_aliases(schema_text: &str) -> HashMap<String, Vec<String>> {
    let Ok(envelope) = serde_json::from_str::<serde_json::Value>(schema_text) else {
        return HashMap::new();
    };
    let fields = envelope["fields"].as_array().cloned().unwrap_or_default();
    let record = fields
        .iter()
        .filter(|f| f["name"] == "before" || f["name"] == "after")
        .flat_map(|f| match &f["type"] {
            serde_json::Value::Array(branches) => branches.clone(),
            other => vec![other.clone()],
        })
        .find(|t| t["type"] == "record");
    record.map_or_else(HashMap::new, |r| crate::decode::writer::plan::aliases(&r.to_string()))
}
