//! Protobuf values in the Confluent wire format (magic byte `0`, a 4-byte big-endian schema
//! id, the message indexes naming which message of the schema's file the value is, then the
//! Protobuf body) → Arrow rows of the table's schema, each record read with its own writer
//! schema.
//!
//! Writer schemas come from the registry by id ahead of decoding, as for Avro; each is
//! compiled once ([`schema`]) and every message of its file fitted to the table once (the
//! fitting Avro uses, [`super::writer`]). Records are decoded into prost-reflect's dynamic
//! messages, grouped by writer message across the poll, and turned into Arrow a column at a
//! time ([`rows`]); the rows are then conformed to the table.
//!
//! A record whose framing, message indexes or body do not decode goes to the dead-letter
//! table alone, as `malformed-protobuf`; one whose value has no Arrow value (a `uint64`
//! beyond a long) as `schema-mismatch` with the column path.

mod rows;
mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use calve_contract::{ColumnType, ResolvedColumn};
use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor};

use super::learnt::{framed, Learnt, Unreadable};
use super::writer::{admit, breach, plan, rejected, table_columns, upserts, Fitted};
use super::Decoded;
use crate::dead_letter::DeadLetterKind;
use crate::registry::{Fetched, SchemaKind, WriterSchema};
use plan::{Breach, Fit, TableColumn};
use schema::Member;

/// Message indexes deeper than this are not a real schema's.
const MAX_INDEXES: i64 = 64;

/// A writer schema: its file's messages, each fitted to the table.
#[derive(Debug)]
struct Writer {
    id: u32,
    /// Every message of the file (nested ones too), by message indexes.
    messages: Vec<(Vec<i32>, Arc<WriterMessage>)>,
}

/// One message of a writer schema, as rows of the table.
#[derive(Debug)]
struct WriterMessage {
    descriptor: MessageDescriptor,
    members: Vec<Member>,
    /// Its rows' Arrow schema.
    schema: SchemaRef,
    fit: Fit,
}

/// Records of one writer message in a poll: their indexes among the values, decoded.
struct Run {
    id: u32,
    message: Arc<WriterMessage>,
    records: Vec<(usize, DynamicMessage)>,
}

/// Decodes Confluent-framed Protobuf values into batches of one Arrow schema.
#[derive(Debug, Clone)]
pub struct ProtobufDecoder {
    schema: SchemaRef,
    columns: Vec<TableColumn>,
    infer: bool,
    refuse_undeclared: bool,
    learnt: Learnt<Writer>,
}

impl ProtobufDecoder {
    /// A decoder for rows of `schema` whose columns have the contract types in `columns`.
    pub fn new(schema: SchemaRef, columns: &[ResolvedColumn]) -> Result<Self, ArrowError> {
        Ok(ProtobufDecoder {
            columns: table_columns(&schema, columns)?,
            schema,
            infer: false,
            refuse_undeclared: false,
            learnt: Learnt::default(),
        })
    }

    /// Infers the types of fields the table lacks ([`Decoded::inferred`]), from the writer
    /// schemas.
    pub fn inferring(mut self, infer: bool) -> Self {
        self.infer = infer;
        self
    }

    /// Reads each column also from the writer fields of its former names (`(old, new)` pairs:
    /// the contract's `renamed_from`). Call before learning schemas.
    pub fn with_renames(mut self, renames: &[(String, String)]) -> Self {
        super::writer::rename(&mut self.columns, renames);
        self
    }

    /// Refuses records whose writer message has a field the table has no column for.
    pub fn refusing_undeclared(mut self, refuse: bool) -> Self {
        self.refuse_undeclared = refuse;
        self
    }

    /// Schema ids `values` carry that this decoder has not learnt yet.
    pub fn missing(&self, values: &[&[u8]]) -> Vec<u32> {
        self.learnt.missing(values)
    }

    /// Takes the registry's answer for schema `id`. `Err` when the schema is one calve
    /// cannot read (it does not compile — an import calve lacks —, or is beyond calve's
    /// limits): calve's limit, not its records' fault, so the caller stops the table rather
    /// than dead-letter them. A schema of another kind is the records' fault: they are
    /// dead-lettered.
    pub fn learn(&mut self, id: u32, fetched: &Fetched) -> Result<(), String> {
        // Made before: the writer is fitted with `self`, which `self.learnt` cannot lend.
        let made = match fetched {
            Fetched::Found(w) if w.kind != SchemaKind::Protobuf => Err(Unreadable::Records(format!(
                "schema id {id} is a {:?} schema; the contract's format is protobuf",
                w.kind
            ))),
            Fetched::Found(w) => {
                let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.writer(w)));
                let made = made.unwrap_or_else(|_| Err("reading it panicked".to_string()));
                made.map_err(|e| Unreadable::Calve(format!("schema id {id}: {e}")))
            }
            Fetched::Unknown(reason) => Err(Unreadable::Records(reason.clone())),
        };
        self.learnt.learn(id, fetched, |_| made)
    }

    /// Learns what `other` learnt (fitted anew to this decoder's table).
    pub fn learn_from(&mut self, other: &ProtobufDecoder) {
        for (id, fetched) in other.learnt.answers() {
            // `other` read every schema it learnt; this one reads them alike.
            let _ = self.learn(id, fetched);
        }
    }

    fn writer(&self, w: &WriterSchema) -> Result<Writer, String> {
        let compiled = schema::compile(w)?;
        let messages = all_messages(&compiled.file, compiled.skip_map_entries)
            .into_iter()
            .map(|(path, descriptor)| {
                let (members, fields) = schema::message_shape(&descriptor)?;
                let fit = plan::fit(&fields, &HashMap::new(), &self.columns);
                let schema = Arc::new(Schema::new(fields));
                let m = WriterMessage {
                    descriptor,
                    members,
                    schema,
                    fit,
                };
                Ok((path, Arc::new(m)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Writer { id: w.id, messages })
    }

    /// What the records of learnt schema `id` — of its file's first message, what producers
    /// send unless they name another — would do to the table: the writer fields the table
    /// lacks (with the Iceberg type each would take), or why its records cannot enter.
    pub fn judge(&self, id: u32) -> Result<Vec<(String, Option<ColumnType>)>, String> {
        let w = self.learnt.writer(id)?;
        let (_, m) = w
            .messages
            .iter()
            .find(|(path, _)| path.as_slice() == [0])
            .ok_or_else(|| format!("schema id {id} has no message"))?;
        admit(&m.fit, id, self.refuse_undeclared).map_err(|b| b.reason)?;
        Ok(m.fit.unknown.clone())
    }

    /// Decodes `values`; never fails as a whole, bad values are reported in `rejected`. Ids
    /// not learnt are reported as unknown schemas (the caller learns them first).
    pub fn decode(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        let mut out = Decoded::default();
        // Grouped by writer message across the poll: during a rollout versions alternate.
        let mut runs: Vec<Run> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match self.read(v) {
                Ok((id, m, msg)) => match runs.iter_mut().find(|r| Arc::ptr_eq(&r.message, &m)) {
                    Some(run) => run.records.push((i, msg)),
                    None => runs.push(Run {
                        id,
                        message: m,
                        records: vec![(i, msg)],
                    }),
                },
                Err(b) => out.rejected.push(rejected(i, b)),
            }
        }
        let mut batches = Vec::new();
        for run in &runs {
            self.rows(run.id, &run.message, &run.records, &mut out, &mut batches)?;
        }
        out.rejected.sort_by_key(|r| r.index);
        if !batches.is_empty() {
            out.batch = Some(concat_batches(&self.schema, &batches)?);
        }
        Ok(out)
    }

    /// The writer message of value `v`, admitted into the table, and `v` decoded as it.
    fn read(&self, v: &[u8]) -> Result<(u32, Arc<WriterMessage>, DynamicMessage), Breach> {
        let malformed = |reason: String| breach(DeadLetterKind::MalformedProtobuf, reason);
        let (id, rest) = framed(v).map_err(malformed)?;
        let w = self
            .learnt
            .writer(id)
            .map_err(|reason| breach(DeadLetterKind::UnknownSchema, reason))?;
        let (path, body) = message_indexes(rest).map_err(|e| malformed(format!("{e} (schema id {id})")))?;
        let m = w
            .messages
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| malformed(format!("message indexes {path:?} name no message of schema id {id}")))?;
        admit(&m.fit, w.id, self.refuse_undeclared)?;
        let msg = DynamicMessage::decode(m.descriptor.clone(), body).map_err(|e| {
            malformed(format!(
                "the value does not decode as {} (schema id {id}): {e}",
                m.descriptor.full_name()
            ))
        })?;
        Ok((id, m, msg))
    }

    /// Rows of the records `run` (all of writer message `m`, schema `id`) into `batches`.
    fn rows(
        &self,
        id: u32,
        m: &WriterMessage,
        run: &[(usize, DynamicMessage)],
        out: &mut Decoded,
        batches: &mut Vec<RecordBatch>,
    ) -> Result<(), ArrowError> {
        let msgs: Vec<&DynamicMessage> = run.iter().map(|(_, msg)| msg).collect();
        let to = Fitted {
            schema: &self.schema,
            fit: &m.fit,
            id,
        };
        if let Ok(batch) = rows::batch(&msgs, &m.members, &m.schema) {
            let indexes: Vec<usize> = run.iter().map(|(i, _)| *i).collect();
            upserts(&batch, &indexes, to, self.infer, out, batches);
            return Ok(());
        }
        let (mut good, mut indexes) = (Vec::new(), Vec::new());
        for (i, msg) in run {
            match rows::batch(&[msg], &m.members, &m.schema) {
                Ok(b) => {
                    good.push(b);
                    indexes.push(*i);
                }
                Err((path, reason)) => {
                    let b = Breach {
                        kind: DeadLetterKind::SchemaMismatch,
                        path,
                        reason: format!("{reason} (schema id {id})"),
                        shows: None,
                    };
                    out.rejected.push(rejected(*i, b));
                }
            }
        }
        if !good.is_empty() {
            let batch = concat_batches(&m.schema, &good)?;
            upserts(&batch, &indexes, to, self.infer, out, batches);
        }
        Ok(())
    }
}

/// Every message of `file` with its message indexes (top-level messages, then nested ones
/// in declaration order; map-entry types left uncounted when `skip_map_entries`, see
/// [`schema::Compiled`]).
fn all_messages(file: &FileDescriptor, skip_map_entries: bool) -> Vec<(Vec<i32>, MessageDescriptor)> {
    let walk = |m: MessageDescriptor, path: Vec<i32>, out: &mut Vec<_>| {
        let mut todo = vec![(m, path)];
        while let Some((m, path)) = todo.pop() {
            let children = m.child_messages().filter(|c| !(skip_map_entries && c.is_map_entry()));
            for (i, child) in children.enumerate() {
                let mut p = path.clone();
                p.push(i as i32);
                todo.push((child, p));
            }
            out.push((path, m));
        }
    };
    let mut out = Vec::new();
    for (i, m) in file.messages().enumerate() {
        walk(m, vec![i as i32], &mut out);
    }
    out
}

/// The message indexes at the start of a framed Protobuf payload, and the body after them:
/// a zigzag varint count, then that many zigzag varint indexes; a count of 0 stands for the
/// file's first message (`[0]`), the common case in one byte.
fn message_indexes(mut rest: &[u8]) -> Result<(Vec<i32>, &[u8]), String> {
    let next = |rest: &mut &[u8]| -> Result<i64, String> {
        let v = prost::encoding::decode_varint(rest).map_err(|_| "the message indexes are cut short".to_string())?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    };
    let count = next(&mut rest)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if !(1..=MAX_INDEXES).contains(&count) {
        return Err(format!("the message indexes announce {count} indexes"));
    }
    let mut path = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = next(&mut rest)?;
        path.push(i32::try_from(i).map_err(|_| format!("message index {i} is out of range"))?);
    }
    Ok((path, rest))
}

#[cfg(test)]
mod tests;
