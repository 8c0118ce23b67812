//! JSON values → Arrow rows of the table's schema; records that do not fit become dead letters.
//!
//! Each value is parsed once, straight into column buffers of the table's types (see
//! [`json`]); a value that fails halfway is cut back out of the buffers and reported with its
//! column path and reason, and the next value goes on. So a clean poll pays for one parse,
//! a dirty one for nothing more, and no input can panic the decoder (a property test feeds it
//! arbitrary bytes and arbitrary JSON for a schema of every type).
//!
//! Types come from the contract (a `uuid` and a `fixed[16]` are the same Arrow type but read
//! differently; epoch numbers need the column's declared unit); the Arrow schema says how
//! the table stores them, field ids included.

mod avro;
mod columns;
mod infer;
mod json;
mod json_schema;
mod learnt;
mod protobuf;
mod scalars;
mod writer;

use std::collections::BTreeMap;

use arrow_array::{Array, RecordBatch, StructArray};
use arrow_schema::{ArrowError, SchemaRef};
use calve_contract::{ColumnType, ResolvedColumn};
use serde::de::DeserializeSeed;

use crate::dead_letter::DeadLetterKind;
pub use avro::AvroDecoder;
use columns::{Column, Hints};
pub use infer::Inferred;
use json::{Ctx, ValueSeed};
pub use json_schema::JsonSchemaDecoder;
pub use learnt::framed;
pub use protobuf::ProtobufDecoder;

/// Result of decoding a slice of values.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Rows of the values that fit ([`Decoded::kept`] says whose: not always in input order).
    pub batch: Option<RecordBatch>,
    /// Input index of each row of `batch`.
    pub kept: Vec<usize>,
    /// The values that did not fit.
    pub rejected: Vec<Rejected>,
    /// Fields the table has no column for, by path (`discount`, `address.floor`), with how
    /// many of the kept values carried each. Their values are not stored.
    pub unknown_fields: BTreeMap<String, u64>,
    /// Change events: the key columns of the rows deleted, in the key columns' schema.
    pub deletes: Option<RecordBatch>,
    /// Input index of each row of `deletes`.
    pub delete_kept: Vec<usize>,
    /// With inference on: the type each unknown field's values show, over the kept values, by
    /// path (`discount`, `addr.floor`: a field of the row or of a struct nested in structs;
    /// what `evolution = "additive"` would add as a column or a nested field).
    pub inferred: BTreeMap<String, Inferred>,
}

/// A value that did not fit the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Its index in the input.
    pub index: usize,
    /// Why, as a dead-letter kind.
    pub kind: DeadLetterKind,
    /// The column path it failed at (`qty`, `addr.zip`, `tags[]`; `""` for the value as a
    /// whole), which says which column a breaking change concerns.
    pub path: String,
    /// Why, in words (starting with the path).
    pub reason: String,
    /// The Iceberg type the value has at `path`, when the decoder knows it ([`DeadLetter::shows`]).
    ///
    /// [`DeadLetter::shows`]: crate::DeadLetter::shows
    pub shows: Option<ColumnType>,
}

/// Decodes JSON objects into batches of one Arrow schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    schema: SchemaRef,
    /// Contract type and reading hints of each column of `schema`, in its order.
    columns: Vec<(String, ColumnType, Hints)>,
    /// Whether the types of top-level unknown fields are inferred.
    infer: bool,
    /// Whether a value with a field the table has no column for is refused.
    refuse_undeclared: bool,
}

impl JsonDecoder {
    /// A decoder for rows of `schema` whose columns have the contract types in `columns`
    /// (matched by name); fails when a column has no type or its type does not match.
    pub fn new(schema: SchemaRef, columns: &[ResolvedColumn]) -> Result<Self, ArrowError> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let c = contract_column(columns, f)?;
                let hints = Hints {
                    unit: c.unit,
                    decimal_bytes: c.decimal_bytes,
                    required: c.required,
                };
                Ok((c.name.clone(), c.ty.clone(), hints))
            })
            .collect::<Result<Vec<_>, ArrowError>>()?;
        let d = JsonDecoder {
            schema,
            columns,
            infer: false,
            refuse_undeclared: false,
        };
        d.row()?;
        Ok(d)
    }

    /// Infers the types of fields the table lacks ([`Decoded::inferred`]).
    pub fn inferring(mut self, infer: bool) -> Self {
        self.infer = infer;
        self
    }

    /// Refuses values that carry a field the table has no column for (`evolution =
    /// "frozen"`), as [`DeadLetterKind::UndeclaredField`] at the first such field's path.
    pub fn refusing_undeclared(mut self, refuse: bool) -> Self {
        self.refuse_undeclared = refuse;
        self
    }

    /// The schema rows are decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Fresh buffers for rows of the table.
    fn row(&self) -> Result<Column, ArrowError> {
        Ok(Column::row(
            columns::row_columns(&self.columns, self.schema.fields())?,
            self.schema.fields(),
        ))
    }

    /// Decodes `values`; never fails as a whole, bad values are reported in `rejected`.
    pub fn decode(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        let mut out = Decoded::default();
        if values.is_empty() {
            return Ok(out);
        }
        let mut row = self.row()?;
        let mut ctx = Ctx {
            infer: self.infer,
            ..Ctx::default()
        };
        for (i, v) in values.iter().enumerate() {
            let mark = row.len();
            let decoded = decode_one(&mut row, &mut ctx, v).and_then(|()| match ctx.unknown.first() {
                Some(path) if self.refuse_undeclared => {
                    row.truncate(mark);
                    let reason = format!("{path}: a field the contract does not declare (evolution = \"frozen\")");
                    Err((DeadLetterKind::UndeclaredField, path.clone(), reason))
                }
                _ => Ok(()),
            });
            match decoded {
                Ok(()) => {
                    out.kept.push(i);
                    for path in ctx.unknown.drain(..) {
                        *out.unknown_fields.entry(path).or_default() += 1;
                    }
                    for (path, ty) in ctx.inferred.drain(..) {
                        Inferred::merge_into(&mut out.inferred, path, ty);
                    }
                }
                Err((kind, path, reason)) => out.rejected.push(Rejected {
                    index: i,
                    kind,
                    path,
                    reason,
                    shows: None,
                }),
            }
        }
        if !out.kept.is_empty() {
            let rows = row.finish()?;
            let Some(rows) = rows.as_any().downcast_ref::<StructArray>() else {
                return Err(ArrowError::ComputeError("decoded rows are not a struct".into()));
            };
            let (_, columns, _) = rows.clone().into_parts();
            out.batch = Some(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        Ok(out)
    }
}

/// The contract's column for the table's field `f` (matched by name).
fn contract_column<'c>(
    columns: &'c [ResolvedColumn],
    f: &arrow_schema::Field,
) -> Result<&'c ResolvedColumn, ArrowError> {
    columns
        .iter()
        .find(|c| &c.name == f.name())
        .ok_or_else(|| ArrowError::SchemaError(format!("table column {} has no contract type", f.name())))
}

/// Appends `v` as one row, or leaves `row` as it was and says why not.
fn decode_one(row: &mut Column, ctx: &mut Ctx, v: &[u8]) -> Result<(), json::Fault> {
    ctx.fault = None;
    ctx.unknown.clear();
    ctx.inferred.clear();
    if v.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err((
            DeadLetterKind::MalformedJson,
            String::new(),
            "value is not a JSON object".into(),
        ));
    }
    let mark = row.len();
    let mut de = serde_json::Deserializer::from_slice(v);
    let parsed = ValueSeed {
        col: row,
        ctx: &mut *ctx,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    parsed.map_err(|e| {
        row.truncate(mark);
        ctx.unknown.clear();
        // A value that is not one well-formed JSON object is malformed, whatever else is wrong
        // with the part read before the malformation (`{"id":1}{"id":2}` lacks no field: it
        // is two values).
        match (ctx.fault.take(), serde_json::from_slice::<serde::de::IgnoredAny>(v)) {
            (_, Err(e)) => (DeadLetterKind::MalformedJson, String::new(), malformed(&e)),
            (Some(fault), Ok(_)) => fault,
            // Well-formed JSON the typed parse refused on its own (a number beyond f64, a map
            // entry that is not an object): the value does not fit its column.
            (None, Ok(_)) => (DeadLetterKind::SchemaMismatch, String::new(), e.to_string()),
        }
    })
}

fn malformed(e: &serde_json::Error) -> String {
    if e.is_eof() {
        return format!("value is not one complete JSON object: {e}");
    }
    match e.to_string() {
        m if m.starts_with("trailing characters") => format!("value holds more than one JSON value: {m}"),
        m => m,
    }
}

#[cfg(test)]
mod tests;

/// Table columns as the decoders' tests describe them.
#[cfg(test)]
pub(crate) mod test_columns {
    use std::collections::HashMap;

    use arrow_schema::{DataType, Field};
    use calve_contract::{ColumnType, ResolvedColumn};

    /// A contract column.
    pub fn column(name: &str, ty: ColumnType, required: bool) -> ResolvedColumn {
        ResolvedColumn {
            name: name.into(),
            ty,
            required,
            doc: None,
            unit: None,
            decimal_bytes: false,
        }
    }

    /// A table field with Iceberg field id `id`.
    pub fn field(name: &str, t: DataType, nullable: bool, id: i32) -> Field {
        Field::new(name, t, nullable).with_metadata(HashMap::from([("PARQUET:field_id".to_string(), id.to_string())]))
    }
}
