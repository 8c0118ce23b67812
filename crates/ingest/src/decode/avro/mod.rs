//! Avro values in the Confluent wire format (magic byte `0`, a 4-byte big-endian schema id,
//! the Avro body) → Arrow rows of the table's schema, decoded by arrow-avro straight into
//! Arrow, batch-wise, with each record's own writer schema.
//!
//! Writer schemas come from the registry by id, ahead of decoding ([`AvroDecoder::missing`]
//! says which ids a poll needs, [`AvroDecoder::learn`] takes the registry's answer), so
//! decoding itself never waits on the network. Each writer schema is fitted to the table once
//! ([`plan`](super::writer::plan)): records of a schema that breaks the table are set aside by schema, without
//! being decoded. The rest are decoded a run of same-schema records at a time and their rows
//! conformed to the table (both shared with Protobuf, in [`super::writer`]).
//!
//! For Debezium change events (`format = "debezium-avro"`) the table is fitted to the
//! envelope's row record and each decoded envelope becomes an upsert or a delete
//! ([`envelope`]).
//!
//! A record whose body does not decode (cut short, corrupt, longer than its schema says) goes
//! to the dead-letter table alone: arrow-avro's decoder cannot take back half a row, so on a
//! failure the decoder is rebuilt and the good records before the bad one are decoded again,
//! at most once each.

mod envelope;
mod references;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_schema::{ArrowError, Field, SchemaRef};
use arrow_select::concat::concat_batches;
use calve_contract::{ColumnType, ResolvedColumn};

use super::learnt::{framed, Learnt, Unreadable};
use super::writer::{breach, conform_each, plan, rejected, table_columns, Fitted};
use super::Decoded;
use crate::dead_letter::DeadLetterKind;
use crate::registry::{Fetched, SchemaKind, WriterSchema};
use envelope::Envelope;
use plan::{Breach, Fit, TableColumn};

#[derive(Debug)]
struct Writer {
    id: u32,
    schema: AvroSchema,
    /// How its rows (the envelope's `after`/`before` rows, for change events) fit the table.
    fit: Fit,
    /// For change events: where the envelope's parts are, and (when deletes need their keys)
    /// how its rows fit the key columns, and their schema.
    changes: Option<(Envelope, Option<(Fit, SchemaRef)>)>,
}

/// The key columns of a table of change events.
#[derive(Debug, Clone)]
struct Keys {
    /// Their schema (the table's fields).
    schema: SchemaRef,
    /// Their indexes among the table's columns.
    columns: Vec<usize>,
}

/// Decodes Confluent-framed Avro values into batches of one Arrow schema.
#[derive(Debug, Clone)]
pub struct AvroDecoder {
    schema: SchemaRef,
    columns: Vec<TableColumn>,
    infer: bool,
    refuse_undeclared: bool,
    /// Set when values are Debezium change events: with the key columns when deletes are
    /// applied by key.
    changes: Option<Option<Keys>>,
    /// Set when values of a writer schema that is not a record (a Kafka key of type `long`,
    /// say) are read as a record of this one field.
    lone_field: Option<String>,
    learnt: Learnt<Writer>,
}

impl AvroDecoder {
    /// A decoder for rows of `schema` whose columns have the contract types in `columns`.
    pub fn new(schema: SchemaRef, columns: &[ResolvedColumn]) -> Result<Self, ArrowError> {
        Ok(AvroDecoder {
            columns: table_columns(&schema, columns)?,
            schema,
            infer: false,
            refuse_undeclared: false,
            changes: None,
            lone_field: None,
            learnt: Learnt::default(),
        })
    }

    /// Reads a writer schema that is not a record (`"long"`, `"string"`, …) as a record of
    /// one field named `column` — the same bytes: a record's encoding is its fields' one after
    /// another. Kafka keys are often such. Call before learning schemas.
    pub fn reading_non_records_as(mut self, column: &str) -> Self {
        self.lone_field = Some(column.to_string());
        self
    }

    /// Infers the types of fields the table lacks ([`Decoded::inferred`]), from the writer
    /// schemas.
    pub fn inferring(mut self, infer: bool) -> Self {
        self.infer = infer;
        self
    }

    /// Reads each column also from the writer fields of its former names (`(old, new)` pairs:
    /// the contract's `renamed_from`), so records of writers from before a rename keep their
    /// values. Call before learning schemas.
    pub fn with_renames(mut self, renames: &[(String, String)]) -> Self {
        super::writer::rename(&mut self.columns, renames);
        self
    }

    /// Reads values as Debezium change events (Confluent's AvroConverter envelopes): creates,
    /// reads and updates become rows; deletes are reported in [`Decoded::delete_kept`], with
    /// the `before` row's `keys` columns in [`Decoded::deletes`] when `keys` are given (the
    /// contract deletes rows), without when it ignores or dead-letters deletes (so a delete
    /// with a bad key is not held against it). Call before learning schemas.
    pub fn changes(mut self, keys: Option<&[String]>) -> Result<Self, ArrowError> {
        let keys = match keys {
            None => None,
            Some(keys) => {
                let columns = keys
                    .iter()
                    .map(|k| self.schema.index_of(k))
                    .collect::<Result<Vec<_>, _>>()?;
                let fields: Vec<Field> = columns.iter().map(|c| self.schema.field(*c).clone()).collect();
                let schema = Arc::new(arrow_schema::Schema::new(fields));
                Some(Keys { schema, columns })
            }
        };
        self.changes = Some(keys);
        Ok(self)
    }

    /// Refuses records whose writer schema has a field the table has no column for.
    pub fn refusing_undeclared(mut self, refuse: bool) -> Self {
        self.refuse_undeclared = refuse;
        self
    }

    /// The schema rows are decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Schema ids `values` carry that this decoder has not learnt yet.
    pub fn missing(&self, values: &[&[u8]]) -> Vec<u32> {
        self.learnt.missing(values)
    }

    /// Takes the registry's answer for schema `id`. `Err` when a schema that references
    /// others cannot be made whole (see [`references`]): calve's limit, not its records'
    /// fault, so the caller stops the table rather than dead-letter them. Any other schema
    /// calve cannot read is its records' problem: they are dead-lettered with the reason.
    pub fn learn(&mut self, id: u32, fetched: &Fetched) -> Result<(), String> {
        // Made before: the writer is fitted with `self`, which `self.learnt` cannot lend.
        let made = match fetched {
            Fetched::Found(w) => self.writer(w).map_err(|e| Unreadable::of(w, e)),
            Fetched::Unknown(reason) => Err(Unreadable::Records(reason.clone())),
        };
        self.learnt.learn(id, fetched, |_| made)
    }

    /// Learns what `other` learnt (a decoder for the table after a schema change takes over
    /// the writer schemas of the one before, fitted anew).
    pub fn learn_from(&mut self, other: &AvroDecoder) {
        for (id, fetched) in other.learnt.answers() {
            // `other` read every schema it learnt; this one reads them alike.
            let _ = self.learn(id, fetched);
        }
    }

    fn writer(&self, w: &WriterSchema) -> Result<Writer, String> {
        if w.kind != SchemaKind::Avro {
            return Err(format!(
                "schema id {} is a {:?} schema; the contract's format is avro",
                w.id, w.kind
            ));
        }
        // Types other subjects define are written in where first used (see [`references`]).
        let own = match w.imports.is_empty() {
            true => w.text.clone(),
            false => references::inline(&w.text, &w.imports).map_err(|e| format!("schema id {}: {e}", w.id))?,
        };
        let text = match &self.lone_field {
            Some(column) => as_record(&own, column),
            None => own,
        };
        let schema = AvroSchema::new(text.clone());
        let decoder = build(w.id, &schema, 1).map_err(|e| format!("schema id {} does not parse: {e}", w.id))?;
        let arrow = decoder.schema();
        let Some(keys) = &self.changes else {
            let fit = plan::fit(arrow.fields(), &plan::aliases(&text), &self.columns);
            return Ok(Writer {
                id: w.id,
                schema,
                fit,
                changes: None,
            });
        };
        let (envelope, row) = Envelope::of(arrow.fields()).map_err(|e| format!("schema id {}: {e}", w.id))?;
        let fit = plan::fit(&row, &envelope::row_aliases(&text), &self.columns);
        let key_fit = keys.as_ref().map(|keys| {
            let fit = Fit {
                sources: keys.columns.iter().map(|c| fit.sources[*c]).collect(),
                units: fit.units.clone(),
                ..Fit::default()
            };
            (fit, keys.schema.clone())
        });
        Ok(Writer {
            id: w.id,
            schema,
            fit,
            changes: Some((envelope, key_fit)),
        })
    }

    /// What the records of learnt schema `id` would do to the table: the writer fields the
    /// table lacks (with the Iceberg type each would take), or why its records cannot enter.
    pub fn judge(&self, id: u32) -> Result<Vec<(String, Option<ColumnType>)>, String> {
        let w = self.learnt.writer(id)?;
        super::writer::admit(&w.fit, id, self.refuse_undeclared).map_err(|b| b.reason)?;
        Ok(w.fit.unknown.clone())
    }

    /// Decodes `values`; never fails as a whole, bad values are reported in `rejected`. Ids
    /// not learnt are reported as unknown schemas (the caller learns them first).
    pub fn decode(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        let mut out = Decoded::default();
        // Records are grouped by writer across the poll, not in runs of neighbours: during a
        // producer rollout versions alternate record by record. Row order does not matter,
        // each row says where it came from (`kept`).
        let mut runs: Vec<(Arc<Writer>, Vec<usize>)> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match self.admit(v) {
                Ok(w) => match runs.iter_mut().find(|(known, _)| Arc::ptr_eq(known, &w)) {
                    Some((_, run)) => run.push(i),
                    None => runs.push((w, vec![i])),
                },
                Err(b) => out.rejected.push(rejected(i, b)),
            }
        }
        let mut rows = Rows::default();
        for (w, run) in &runs {
            self.decode_run(w, run, values, &mut out, &mut rows)?;
        }
        out.rejected.sort_by_key(|r| r.index);
        if !rows.batches.is_empty() {
            out.batch = Some(concat_batches(&self.schema, &rows.batches)?);
        }
        if let (Some(Some(keys)), false) = (&self.changes, rows.deletes.is_empty()) {
            out.deletes = Some(concat_batches(&keys.schema, &rows.deletes)?);
        }
        Ok(out)
    }

    /// The writer of a value whose schema admits it into the table, or why not.
    fn admit(&self, v: &[u8]) -> Result<Arc<Writer>, Breach> {
        let (id, _) = framed(v).map_err(|reason| breach(DeadLetterKind::MalformedAvro, reason))?;
        let w = self
            .learnt
            .writer(id)
            .map_err(|reason| breach(DeadLetterKind::UnknownSchema, reason))?;
        super::writer::admit(&w.fit, id, self.refuse_undeclared)?;
        Ok(w.clone())
    }

    /// Decodes one run of records of writer `w` (indexes `run` into `values`).
    fn decode_run(
        &self,
        w: &Writer,
        run: &[usize],
        values: &[&[u8]],
        out: &mut Decoded,
        rows: &mut Rows,
    ) -> Result<(), ArrowError> {
        let mut decoded: Vec<(RecordBatch, Vec<usize>)> = Vec::new();
        let mut start = 0;
        while start < run.len() {
            let rest = &run[start..];
            let mut d = build(w.id, &w.schema, rest.len())?;
            let bad = rest.iter().position(|i| !feed(w, &mut d, values[*i]));
            let good = &rest[..bad.unwrap_or(rest.len())];
            match bad {
                None => flush(d, w, good, values, out, &mut decoded)?,
                Some(_) if good.is_empty() => {}
                Some(_) => {
                    // The same bytes from the same fresh state decode the same way; should
                    // they not, each record is finished alone rather than failing the poll.
                    let mut again = build(w.id, &w.schema, good.len())?;
                    match good.iter().all(|i| feed(w, &mut again, values[*i])) {
                        true => flush(again, w, good, values, out, &mut decoded)?,
                        false => one_by_one(w, good, values, out, &mut decoded)?,
                    }
                }
            }
            let Some(bad) = bad else { break };
            let index = rest[bad];
            let reason = format!(
                "the value does not decode with its writer schema (id {}): {}",
                w.id,
                why_not(&w.schema, w.id, values[index])
            );
            out.rejected
                .push(rejected(index, breach(DeadLetterKind::MalformedAvro, reason)));
            start += bad + 1;
        }
        for (batch, indexes) in decoded {
            match &w.changes {
                None => self.upserts(w, &batch, &indexes, out, rows)?,
                Some((envelope, key_fit)) => {
                    let split = envelope::split(&batch, *envelope)?;
                    let pick = |at: &[usize]| at.iter().map(|r| indexes[*r]).collect::<Vec<_>>();
                    self.upserts(w, &split.upserts.0, &pick(&split.upserts.1), out, rows)?;
                    let deletes = pick(&split.deletes.1);
                    match key_fit {
                        None => out.delete_kept.extend(deletes),
                        Some((key_fit, key_schema)) => {
                            let (kept, refused) =
                                conform_each(&split.deletes.0, key_schema, key_fit, w.id, &mut rows.deletes);
                            out.delete_kept.extend(kept.iter().map(|r| deletes[*r]));
                            out.rejected.extend(refused.into_iter().map(|(r, mut b)| {
                                b.kind = DeadLetterKind::BadKey;
                                rejected(deletes[r], b)
                            }));
                        }
                    }
                    for (row, reason) in split.refused {
                        let reason = format!("{reason} (schema id {})", w.id);
                        out.rejected
                            .push(rejected(indexes[row], breach(DeadLetterKind::MalformedAvro, reason)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Conforms rows of writer `w` (input `indexes`) to the table, counting the fields the
    /// table lacks for the rows kept.
    fn upserts(
        &self,
        w: &Writer,
        batch: &RecordBatch,
        indexes: &[usize],
        out: &mut Decoded,
        rows: &mut Rows,
    ) -> Result<(), ArrowError> {
        let to = Fitted {
            schema: &self.schema,
            fit: &w.fit,
            id: w.id,
        };
        super::writer::upserts(batch, indexes, to, self.infer, out, &mut rows.batches);
        Ok(())
    }
}

/// Table rows (and, for change events, key rows of deletes) decoded so far.
#[derive(Default)]
struct Rows {
    batches: Vec<RecordBatch>,
    deletes: Vec<RecordBatch>,
}

/// Finishes the rows of `indexes` fed to `d`. Some checks come only here (strings are
/// checked for UTF-8 when the batch is built), so when the batch fails the records are
/// finished one by one and the ones that fail are set aside.
fn flush(
    mut d: Decoder,
    w: &Writer,
    indexes: &[usize],
    values: &[&[u8]],
    out: &mut Decoded,
    decoded: &mut Vec<(RecordBatch, Vec<usize>)>,
) -> Result<(), ArrowError> {
    if let Ok(batch) = d.flush() {
        decoded.extend(batch.map(|b| (b, indexes.to_vec())));
        return Ok(());
    }
    one_by_one(w, indexes, values, out, decoded)
}

/// Decodes and finishes each record of `indexes` alone; the ones that fail are set aside.
fn one_by_one(
    w: &Writer,
    indexes: &[usize],
    values: &[&[u8]],
    out: &mut Decoded,
    decoded: &mut Vec<(RecordBatch, Vec<usize>)>,
) -> Result<(), ArrowError> {
    for i in indexes {
        let mut one = build(w.id, &w.schema, 1)?;
        let finished = match feed(w, &mut one, values[*i]) {
            true => one.flush().map_err(|e| e.to_string()),
            false => Err(why_not(&w.schema, w.id, values[*i])),
        };
        match finished {
            Ok(batch) => decoded.extend(batch.map(|b| (b, vec![*i]))),
            Err(e) => {
                let reason = format!("the value does not decode with its writer schema (id {}): {e}", w.id);
                out.rejected
                    .push(rejected(*i, breach(DeadLetterKind::MalformedAvro, reason)));
            }
        }
    }
    Ok(())
}

/// Schema `text` as a record: itself when it is one, else a record whose one field, named
/// `column`, has it as its type.
fn as_record(text: &str, column: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    match parsed {
        Some(serde_json::Value::Object(o)) if o.get("type").and_then(|t| t.as_str()) == Some("record") => {
            text.to_string()
        }
        Some(t) => serde_json::json!({
            "type": "record",
            "name": "calve_lone_field",
            "fields": [{"name": column, "type": t}],
        })
        .to_string(),
        None => text.to_string(),
    }
}

fn build(id: u32, schema: &AvroSchema, rows: usize) -> Result<Decoder, ArrowError> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(id), schema.clone())?;
    ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_active_fingerprint(Fingerprint::Id(id))
        .with_batch_size(rows.max(1))
        .build_decoder()
}

/// Feeds one whole value of writer `w`; whether it was exactly one row and nothing more. A
/// value whose body is followed by 5 bytes equal to its own framing would pass for a row plus
/// the start of the next record (arrow-avro would then read the next value as that record's
/// body), so such a value is checked again alone, in a decoder with room for one row only,
/// which stops right after it.
fn feed(w: &Writer, d: &mut Decoder, v: &[u8]) -> bool {
    let before = d.capacity();
    let one_row = matches!(d.decode(v), Ok(n) if n == v.len()) && d.capacity() + 1 == before;
    one_row && (v.len() < 10 || v[v.len() - 5..] != v[..5] || exactly_one_row(w, v))
}

fn exactly_one_row(w: &Writer, v: &[u8]) -> bool {
    let Ok(mut one) = build(w.id, &w.schema, 1) else {
        return false;
    };
    matches!(one.decode(v), Ok(n) if n == v.len()) && one.capacity() == 0
}

/// Why `v` does not decode, in arrow-avro's words.
fn why_not(schema: &AvroSchema, id: u32, v: &[u8]) -> String {
    let Ok(mut d) = build(id, schema, 2) else {
        return "the schema does not build a decoder".into();
    };
    match d.decode(v) {
        Err(e) => e.to_string(),
        Ok(n) if n < v.len() => format!("{} of its {} bytes make a record", n, v.len()),
        Ok(_) => "the body is cut short".into(),
    }
}

#[cfg(test)]
mod tests;
