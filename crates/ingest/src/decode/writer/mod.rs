//! What the decoders of formats with writer schemas (Avro, Protobuf) share once a writer's
//! records are Arrow rows of the writer's own schema: fitting that schema to the table once
//! per writer ([`plan`]), conforming the rows to the table's fields ([`conform`]), and the
//! bookkeeping around both — which records a writer's schema admits, which rows are kept,
//! which are set aside and why, and which writer fields the table lacks.

pub mod conform;
pub mod plan;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Field, SchemaRef};
use calve_contract::ResolvedColumn;

use super::{Decoded, Inferred, Rejected};
use crate::dead_letter::DeadLetterKind;
use conform::{conform, ConformError};
use plan::{Breach, Fit, TableColumn};

/// The table's columns as the fitting needs them: `schema`'s fields with their contract
/// types from `columns`.
pub fn table_columns(schema: &SchemaRef, columns: &[ResolvedColumn]) -> Result<Vec<TableColumn>, ArrowError> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let c = super::contract_column(columns, f)?;
            Ok(TableColumn {
                name: c.name.clone(),
                ty: c.ty.clone(),
                field: Field::clone(f),
                unit: c.unit,
                former: Vec::new(),
            })
        })
        .collect()
}

/// Records each column's former names (`(old, new)` pairs: the contract's `renamed_from`), so
/// writers from before a rename fill it.
pub fn rename(columns: &mut [TableColumn], renames: &[(String, String)]) {
    for (old, new) in renames {
        if let Some(c) = columns.iter_mut().find(|c| &c.name == new) {
            c.former.push(old.clone());
        }
    }
}

/// Whether the records of a writer (schema `id`, fitted as `fit`) may enter the table: not
/// when its schema breaks the table, nor when it has a field the contract does not declare
/// and undeclared fields are refused (`evolution = "frozen"`).
pub fn admit(fit: &Fit, id: u32, refuse_undeclared: bool) -> Result<(), Breach> {
    if let Some(b) = &fit.breach {
        let mut b = b.clone();
        b.reason = format!("{} (schema id {id})", b.reason);
        return Err(b);
    }
    match fit.unknown.first().filter(|_| refuse_undeclared) {
        Some((path, ty)) => Err(Breach {
            kind: DeadLetterKind::UndeclaredField,
            path: path.clone(),
            reason: format!("{path}: a field the contract does not declare (evolution = \"frozen\"; schema id {id})"),
            shows: ty.clone(),
        }),
        None => Ok(()),
    }
}

/// Where a writer's rows go: the table's schema, how the writer fits it, and the writer's id.
#[derive(Clone, Copy)]
pub struct Fitted<'a> {
    /// The table's schema.
    pub schema: &'a SchemaRef,
    /// How the writer's rows fit it.
    pub fit: &'a Fit,
    /// The writer schema's id (named in reasons).
    pub id: u32,
}

/// Conforms rows of a writer (input records `indexes`, one per row) to the table into `into`:
/// the records kept, the rows set aside with why, and the writer's fields the table lacks,
/// counted for the rows kept (and, when `infer`, the types they would take).
pub fn upserts(
    batch: &RecordBatch,
    indexes: &[usize],
    to: Fitted<'_>,
    infer: bool,
    out: &mut Decoded,
    into: &mut Vec<RecordBatch>,
) {
    let (kept, refused) = conform_each(batch, to.schema, to.fit, to.id, into);
    out.kept.extend(kept.iter().map(|r| indexes[*r]));
    out.rejected
        .extend(refused.into_iter().map(|(r, b)| rejected(indexes[r], b)));
    if kept.is_empty() {
        return;
    }
    for (path, ty) in &to.fit.unknown {
        *out.unknown_fields.entry(path.clone()).or_default() += kept.len() as u64;
        if infer {
            let inferred = ty.clone().map_or(Inferred::Conflict, Inferred::Type);
            Inferred::merge_into(&mut out.inferred, path.clone(), inferred);
        }
    }
}

/// Conforms `batch` to `schema` as `fit` maps it, into `into`: the batch rows kept, and the
/// rows set aside with why (rows are tried one by one only when the whole batch fails).
pub fn conform_each(
    batch: &RecordBatch,
    schema: &SchemaRef,
    fit: &Fit,
    id: u32,
    into: &mut Vec<RecordBatch>,
) -> (Vec<usize>, Vec<(usize, Breach)>) {
    if batch.num_rows() == 0 {
        return (Vec::new(), Vec::new());
    }
    if let Ok(rows) = conform(batch, schema, fit) {
        into.push(rows);
        return ((0..batch.num_rows()).collect(), Vec::new());
    }
    let (mut kept, mut refused) = (Vec::new(), Vec::new());
    for row in 0..batch.num_rows() {
        match conform(&batch.slice(row, 1), schema, fit) {
            Ok(rows) => {
                into.push(rows);
                kept.push(row);
            }
            Err(e) => refused.push((row, conform_breach(e, id))),
        }
    }
    (kept, refused)
}

/// A breach of a whole record (not of one column).
pub fn breach(kind: DeadLetterKind, reason: String) -> Breach {
    Breach {
        kind,
        path: String::new(),
        reason,
        shows: None,
    }
}

fn conform_breach(e: ConformError, id: u32) -> Breach {
    match e {
        ConformError::Missing(path) => Breach {
            kind: DeadLetterKind::MissingRequired,
            reason: format!("{path}: required, and the value is null (schema id {id})"),
            path,
            shows: None,
        },
        ConformError::Digits { path, needs } => Breach {
            kind: DeadLetterKind::SchemaMismatch,
            reason: format!("{path}: the value needs {needs}, more digits than its column holds (schema id {id})"),
            path,
            shows: Some(needs),
        },
        ConformError::Arrow(e) => breach(DeadLetterKind::SchemaMismatch, format!("schema id {id}: {e}")),
    }
}

/// Record `index` set aside for `b`.
pub fn rejected(index: usize, b: Breach) -> Rejected {
    Rejected {
        index,
        kind: b.kind,
        path: b.path,
        reason: b.reason,
        shows: b.shows,
    }
}
