//! The contract stage: applies a table's per-record rules to polled records and splits them
//! into rows for the table and dead letters. Every input record ends up in exactly one of
//! `rows`, `deletes`, `dead` or the `ignored` count, so
//! `in = table changes + dead-letter (+ ignored)` holds.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};
use arrow_select::concat::concat_batches;
use calve_contract::{
    ColumnType, Contract, Evolution, Format, KafkaKeyFormat, LatePolicy, PartitionGrain, ResolvedColumn,
    TombstonePolicy,
};

use crate::dead_letter::{DeadLetter, DeadLetterKind};
use crate::debezium::{self, Change};
use crate::decode::{AvroDecoder, Decoded, Inferred, JsonDecoder, JsonSchemaDecoder, ProtobufDecoder};
use crate::error::IngestError;
use crate::key::KeyDecoder;
use crate::late::{event_micros, split_late, stamp_arrival, without_column};
use crate::record::KafkaRecord;
use crate::registry::Fetched;

/// Where a poll's records went.
#[derive(Debug, Default)]
pub struct Routed {
    /// Rows for the table.
    pub rows: Option<RecordBatch>,
    /// Index (into the routed records) of each row: its place in consumption order, which
    /// decides the winner when a key changes twice before a commit.
    pub row_origin: Vec<usize>,
    /// Keys to delete (key columns only), from tombstones and change events' deletes under
    /// `delete-row`.
    pub deletes: Option<RecordBatch>,
    /// Index (into the routed records) of each delete.
    pub delete_origin: Vec<usize>,
    /// Records for the dead-letter table.
    pub dead: Vec<DeadLetter>,
    /// Tombstones skipped because the contract says `ignore`.
    pub ignored: u64,
    /// Fields the table has no column for, by path, with how many routed rows carried each.
    pub unknown_fields: BTreeMap<String, u64>,
    /// Under `evolution = "additive"`: the types the unknown fields of these rows show, by
    /// path.
    pub inferred: BTreeMap<String, Inferred>,
    /// Per Kafka partition, the newest event time (µs) of the rows for the table: what moves
    /// the table's watermark.
    pub newest_event: BTreeMap<i32, i64>,
    /// Event-time partitions (named as engines show them, `ts_day=2026-01-01`) that rows land
    /// in although the table had declared them complete.
    pub reopened: BTreeSet<String>,
}

/// What routing judges event times against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventClock {
    /// Wall-clock time (µs since the epoch): when dead letters were received.
    pub now_us: i64,
    /// The table's event-time watermark, once it has one: under `late_data.policy =
    /// "dead-letter"`, rows older than it by more than the allowed lateness are late.
    pub watermark_us: Option<i64>,
    /// What the table last published as complete through: rows before it reopen their
    /// partition.
    pub complete_through_us: Option<i64>,
}

impl Routed {
    /// One routing of what `parts` found, each part the routing of records that stand at
    /// its offset in the poll (origins are shifted by it; parts in poll order).
    pub fn merge(parts: Vec<(Routed, usize)>) -> Result<Routed, ArrowError> {
        let mut out = Routed::default();
        let (mut rows, mut deletes) = (Vec::new(), Vec::new());
        for (part, offset) in parts {
            let shift = |o: Vec<usize>| o.into_iter().map(move |i| i + offset);
            rows.extend(part.rows);
            out.row_origin.extend(shift(part.row_origin));
            deletes.extend(part.deletes);
            out.delete_origin.extend(shift(part.delete_origin));
            out.dead.extend(part.dead);
            out.ignored += part.ignored;
            for (path, n) in part.unknown_fields {
                *out.unknown_fields.entry(path).or_default() += n;
            }
            for (path, ty) in part.inferred {
                Inferred::merge_into(&mut out.inferred, path, ty);
            }
            for (p, t) in part.newest_event {
                let newest = out.newest_event.entry(p).or_insert(t);
                *newest = (*newest).max(t);
            }
            out.reopened.extend(part.reopened);
        }
        out.rows = concat_all(rows)?;
        out.deletes = concat_all(deletes)?;
        Ok(out)
    }

    /// Sends `record` to the dead-letter table.
    pub fn dead_letter(&mut self, record: &KafkaRecord, kind: DeadLetterKind, error: String, now_us: i64) {
        self.dead.push(dead(record, kind, String::new(), error, now_us));
    }
}

fn concat_all(batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>, ArrowError> {
    match batches.first() {
        None => Ok(None),
        Some(first) => Ok(Some(concat_batches(&first.schema(), &batches)?)),
    }
}

/// Writer fields a table lacks, by path, each with the Iceberg type it would take (if any).
pub type WriterFields = Vec<(String, Option<ColumnType>)>;

/// How a contract's values are encoded.
#[derive(Debug, Clone)]
enum Values {
    Json(JsonDecoder),
    Avro(AvroDecoder),
    JsonSchema(JsonSchemaDecoder),
    Protobuf(ProtobufDecoder),
}

impl Values {
    fn decode(&self, values: &[&[u8]]) -> Result<Decoded, ArrowError> {
        match self {
            Values::Json(d) => d.decode(values),
            Values::Avro(d) => d.decode(values),
            Values::JsonSchema(d) => d.decode(values),
            Values::Protobuf(d) => d.decode(values),
        }
    }
}

/// Applies one contract's record rules.
#[derive(Debug, Clone)]
pub struct Router {
    decoder: Values,
    keys: Option<KeyDecoder>,
    tombstone: TombstonePolicy,
    /// How values are encoded.
    format: Format,
    /// Kafka keys carry the business key (tombstones can say which row they delete).
    key_in_kafka_key: bool,
    event: EventRule,
}

/// The contract's event-time rules.
#[derive(Debug, Clone)]
struct EventRule {
    /// The event-time column.
    column: String,
    /// The table's partition transform on it.
    grain: PartitionGrain,
    /// Under `late_data.policy = "dead-letter"`, the allowed lateness (µs).
    dead_letter_after: Option<i64>,
    /// Under `late_data.policy = "current-partition"`, the arrival column and the table's
    /// schema holding it: decoders never see the column (what a record carries under its
    /// name is not calve's arrival time), it is filled from each record's Kafka timestamp, and
    /// it is what the table is partitioned by, so it (not the event time) moves the watermark
    /// and names partitions.
    arrival: Option<(String, SchemaRef)>,
}

impl Router {
    /// A router for `contract`, decoding into `schema` (the table's Arrow schema), whose
    /// columns are `columns`: the contract's as the table has them (approved widenings
    /// included), and those calve added to the table, which the contract does not list.
    pub fn new(contract: &Contract, schema: SchemaRef, columns: &[ResolvedColumn]) -> Result<Self, IngestError> {
        let evolve = contract.schema.evolution == Evolution::Additive;
        let frozen = contract.schema.evolution == Evolution::Frozen;
        let event = EventRule {
            column: contract.event_time.column.clone(),
            grain: contract.event_time.partition,
            dead_letter_after: (contract.late_data.policy == LatePolicy::DeadLetter)
                .then_some(contract.late_data.allowed_lateness.0.as_micros() as i64),
            arrival: contract.arrival_column().map(|a| (a.to_string(), schema.clone())),
        };
        let (schema, columns) = match contract.arrival_column() {
            Some(arrival) => without_column(&schema, columns, arrival),
            None => (schema, columns.to_vec()),
        };
        let columns = columns.as_slice();
        let keys = match contract.deletes.tombstone {
            TombstonePolicy::DeleteRow => {
                let keys = KeyDecoder::new(&schema, &contract.keys.columns, columns)?;
                Some(match contract.keys.kafka_key_format {
                    KafkaKeyFormat::Registry => keys.reading_framed(contract.table.format, columns)?,
                    KafkaKeyFormat::Plain => keys,
                })
            }
            _ => None,
        };
        let decoder = match contract.table.format {
            Format::Avro | Format::DebeziumAvro => {
                let mut d = AvroDecoder::new(schema, columns)?
                    .with_renames(&contract.renames())
                    .inferring(evolve)
                    .refusing_undeclared(frozen);
                if contract.table.format == Format::DebeziumAvro {
                    let delete_rows = contract.deletes.tombstone == TombstonePolicy::DeleteRow;
                    d = d.changes(delete_rows.then_some(contract.keys.columns.as_slice()))?;
                }
                Values::Avro(d)
            }
            Format::Protobuf => Values::Protobuf(
                ProtobufDecoder::new(schema, columns)?
                    .with_renames(&contract.renames())
                    .inferring(evolve)
                    .refusing_undeclared(frozen),
            ),
            Format::Json | Format::DebeziumJson | Format::JsonSchema => {
                let json = JsonDecoder::new(schema, columns)?
                    .inferring(evolve)
                    .refusing_undeclared(frozen);
                match contract.table.format {
                    Format::JsonSchema => Values::JsonSchema(JsonSchemaDecoder::new(json)),
                    _ => Values::Json(json),
                }
            }
        };
        Ok(Router {
            decoder,
            keys,
            tombstone: contract.deletes.tombstone,
            format: contract.table.format,
            key_in_kafka_key: contract.keys.from_kafka_key,
            event,
        })
    }

    /// The writer schema ids `records` carry that must be looked up in the registry before
    /// they are routed (none unless the format is a registry one).
    pub fn schemas_needed(&self, records: &[KafkaRecord]) -> Vec<u32> {
        let values = || -> Vec<&[u8]> { records.iter().filter_map(|r| r.value.as_deref()).collect() };
        let mut ids = match &self.decoder {
            Values::Avro(d) => d.missing(&values()),
            Values::JsonSchema(d) => d.missing(&values()),
            Values::Protobuf(d) => d.missing(&values()),
            Values::Json(_) => Vec::new(),
        };
        // Tombstones' keys, which name the rows they delete.
        if let Some(keys) = &self.keys {
            let tombstones: Vec<&[u8]> = records
                .iter()
                .filter(|r| r.value.is_none())
                .filter_map(|r| r.key.as_deref())
                .collect();
            ids.extend(keys.missing(&tombstones));
            ids.sort_unstable();
            ids.dedup();
        }
        ids
    }

    /// Takes the registry's answer for schema `id`. `Err` when calve cannot read the schema
    /// (so far only said of Protobuf schemas that do not compile): calve's limit, which must
    /// stop the table rather than dead-letter its records.
    pub fn learn_schema(&mut self, id: u32, fetched: &Fetched) -> Result<(), String> {
        // Ids are the registry's, not the subject's: each is learnt by values and keys alike.
        if let Some(keys) = &mut self.keys {
            keys.learn(id, fetched)?;
        }
        match &mut self.decoder {
            Values::Avro(d) => return d.learn(id, fetched),
            Values::JsonSchema(d) => return d.learn(id, fetched),
            Values::Protobuf(d) => return d.learn(id, fetched),
            Values::Json(_) => {}
        }
        Ok(())
    }

    /// Takes over the writer schemas `old` (the router before a schema change) learnt.
    pub fn learn_schemas_of(&mut self, old: &Router) {
        if let (Some(new), Some(old)) = (&mut self.keys, &old.keys) {
            new.learn_from(old);
        }
        match (&mut self.decoder, &old.decoder) {
            (Values::Avro(new), Values::Avro(old)) => new.learn_from(old),
            (Values::JsonSchema(new), Values::JsonSchema(old)) => new.learn_from(old),
            (Values::Protobuf(new), Values::Protobuf(old)) => new.learn_from(old),
            _ => {}
        }
    }

    /// What the records of learnt writer schema `id` would do to the table: the writer's
    /// fields the table lacks (with the Iceberg type each would take), or why its records
    /// cannot enter. `None` for formats whose records are judged one by one (JSON, JSON
    /// Schema).
    pub fn judge_schema(&self, id: u32) -> Option<Result<WriterFields, String>> {
        match &self.decoder {
            Values::Avro(d) => Some(d.judge(id)),
            Values::Protobuf(d) => Some(d.judge(id)),
            Values::Json(_) | Values::JsonSchema(_) => None,
        }
    }

    /// Whether values are read with writer schemas from a registry.
    pub fn uses_registry(&self) -> bool {
        !matches!(self.decoder, Values::Json(_))
    }

    /// Routes `records`, judging event times by `clock`.
    pub fn route(&self, records: &[KafkaRecord], clock: EventClock) -> Result<Routed, IngestError> {
        let now_us = clock.now_us;
        let mut poll = Poll {
            records,
            now_us,
            deletes: Vec::new(),
            out: Routed::default(),
        };
        let mut values: Vec<&[u8]> = Vec::with_capacity(records.len());
        let mut origin: Vec<usize> = Vec::with_capacity(records.len());
        let mut after_images: Vec<(usize, &[u8])> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match &r.value {
                Some(v) if self.format == Format::DebeziumJson => match debezium::unwrap(v) {
                    Ok(Change::Upsert(after)) => after_images.push((i, after)),
                    Ok(Change::Delete(before)) => self.delete(&mut poll, i, Some(before.to_vec()), "Debezium delete"),
                    Err(reason) => poll.dead(i, DeadLetterKind::MalformedJson, reason),
                },
                Some(v) => {
                    values.push(v);
                    origin.push(i);
                }
                // Debezium follows every delete event with a tombstone for log compaction; the
                // delete event already did the work unless the Kafka key names the row too
                // (never read from an Avro key: with the Avro converter the key is Avro too).
                None if self.format == Format::DebeziumAvro => poll.out.ignored += 1,
                None if self.format.is_debezium()
                    && !self.key_in_kafka_key
                    && self.tombstone == TombstonePolicy::DeleteRow =>
                {
                    poll.out.ignored += 1
                }
                None => self.delete(&mut poll, i, r.key.clone(), "null value (tombstone)"),
            }
        }
        self.route_deletes(&mut poll)?;
        let mut out = poll.out;
        for (i, v) in &after_images {
            values.push(v);
            origin.push(*i);
        }
        let mut decoded = self.decoder.decode(&values)?;
        if !decoded.delete_kept.is_empty() {
            let origins: Vec<usize> = decoded.delete_kept.iter().map(|k| origin[*k]).collect();
            self.change_deletes(&mut out, decoded.deletes.take(), origins, records, now_us)?;
        }
        out.unknown_fields = std::mem::take(&mut decoded.unknown_fields);
        out.inferred = std::mem::take(&mut decoded.inferred);
        if let Some((arrival, _)) = &self.event.arrival {
            // The table has the column: a field of that name is replaced, not unknown.
            out.unknown_fields.remove(arrival);
            out.inferred.remove(arrival);
        }
        for r in decoded.rejected {
            let mut d = dead(&records[origin[r.index]], r.kind, r.path, r.reason, now_us);
            d.shows = r.shows;
            out.dead.push(d);
        }
        let Some(batch) = decoded.batch else { return Ok(out) };
        let row_origin: Vec<usize> = decoded.kept.iter().map(|k| origin[*k]).collect();
        self.place_in_time(&mut out, batch, row_origin, records, clock)?;
        Ok(out)
    }

    /// The event-time rules on the decoded rows `batch` (record `row_origin[i]` gave row
    /// `i`): late rows go to the dead-letter table when the contract says so; the rows kept
    /// become `out`'s rows, with the newest event time per Kafka partition and the complete
    /// partitions they reopen. Under `current-partition` each row's arrival time is stamped
    /// and stands in for the event time in both (nothing is late by arrival).
    fn place_in_time(
        &self,
        out: &mut Routed,
        mut batch: RecordBatch,
        mut row_origin: Vec<usize>,
        records: &[KafkaRecord],
        clock: EventClock,
    ) -> Result<(), ArrowError> {
        let rule = &self.event;
        if let Some((arrival, schema)) = &rule.arrival {
            // A record without a timestamp (a pre-0.10 message format) arrived when read.
            let arrivals = row_origin
                .iter()
                .map(|o| {
                    records[*o]
                        .timestamp_ms
                        .map_or(clock.now_us, |ms| ms.saturating_mul(1000))
                })
                .collect();
            batch = stamp_arrival(batch, schema, arrival, arrivals)?;
        }
        let time_column = rule.arrival.as_ref().map_or(rule.column.as_str(), |(a, _)| a.as_str());
        let mut micros = event_micros(&batch, time_column)?;
        if let (Some(lateness), Some(watermark)) = (rule.dead_letter_after, clock.watermark_us) {
            let cutoff = watermark.saturating_sub(lateness);
            let (kept, late) = split_late(&batch, &micros, cutoff)?;
            for row in &late {
                let t = micros[*row].unwrap_or_default();
                out.dead.push(dead(
                    &records[row_origin[*row]],
                    DeadLetterKind::Late,
                    rule.column.clone(),
                    format!(
                        "event time {} on column {} is older than the table's watermark {} minus the allowed lateness",
                        instant(t),
                        rule.column,
                        instant(watermark)
                    ),
                    clock.now_us,
                ));
            }
            if !late.is_empty() {
                let late: HashSet<usize> = late.into_iter().collect();
                (row_origin, micros) = row_origin
                    .into_iter()
                    .zip(micros)
                    .enumerate()
                    .filter(|(i, _)| !late.contains(i))
                    .map(|(_, kept)| kept)
                    .unzip();
                batch = kept;
            }
        }
        for (t, o) in micros.iter().zip(&row_origin) {
            let Some(t) = *t else { continue };
            let newest = out.newest_event.entry(records[*o].partition).or_insert(t);
            *newest = (*newest).max(t);
            if clock.complete_through_us.is_some_and(|c| t < c) {
                out.reopened
                    .insert(rule.grain.label(time_column, rule.grain.start_of(t)));
            }
        }
        out.rows = Some(batch);
        out.row_origin = row_origin;
        Ok(())
    }

    /// A delete request (a tombstone or a Debezium delete) of record `i`, handled per the
    /// contract's `[deletes] tombstone`: kept to delete the row its `key` bytes name, ignored,
    /// or dead-lettered with `what` as the reason.
    fn delete(&self, poll: &mut Poll<'_>, i: usize, key: Option<Vec<u8>>, what: &str) {
        match self.tombstone {
            TombstonePolicy::DeleteRow => poll.deletes.push((i, key)),
            TombstonePolicy::Ignore => poll.out.ignored += 1,
            TombstonePolicy::DeadLetter => poll.dead(i, DeadLetterKind::Tombstone, what.into()),
        }
    }

    /// Deletes of Avro change events (`origins` the records they came from, `keys` their key
    /// rows, decoded when the contract deletes rows), handled per the contract's `[deletes]
    /// tombstone` like any delete.
    fn change_deletes(
        &self,
        out: &mut Routed,
        keys: Option<RecordBatch>,
        origins: Vec<usize>,
        records: &[KafkaRecord],
        now_us: i64,
    ) -> Result<(), ArrowError> {
        match self.tombstone {
            TombstonePolicy::DeleteRow => {
                out.deletes = concat_all(out.deletes.take().into_iter().chain(keys).collect())?;
                out.delete_origin.extend(origins);
            }
            TombstonePolicy::Ignore => out.ignored += origins.len() as u64,
            TombstonePolicy::DeadLetter => {
                for o in origins {
                    let why = "Debezium delete".to_string();
                    out.dead
                        .push(dead(&records[o], DeadLetterKind::Tombstone, String::new(), why, now_us));
                }
            }
        }
        Ok(())
    }

    /// Deletes under `delete-row`: the key bytes become rows of the key columns.
    fn route_deletes(&self, poll: &mut Poll<'_>) -> Result<(), IngestError> {
        let Some(keys) = self.keys.as_ref().filter(|_| !poll.deletes.is_empty()) else {
            return Ok(());
        };
        let raw: Vec<Option<&[u8]>> = poll.deletes.iter().map(|(_, k)| k.as_deref()).collect();
        let decoded = keys.decode(&raw)?;
        for r in decoded.rejected {
            poll.dead(poll.deletes[r.index].0, r.kind, r.reason);
        }
        poll.out.delete_origin = decoded.kept.iter().map(|k| poll.deletes[*k].0).collect();
        poll.out.deletes = decoded.batch;
        Ok(())
    }
}

/// One poll being routed: its records, the clock lateness is judged by, the delete requests
/// found so far (record index and the bytes naming the key: a Kafka key or a Debezium `before`
/// image; `None` when a tombstone has no Kafka key), and the outcome.
struct Poll<'r> {
    records: &'r [KafkaRecord],
    now_us: i64,
    deletes: Vec<(usize, Option<Vec<u8>>)>,
    out: Routed,
}

impl Poll<'_> {
    /// Sends record `i` to the dead-letter table.
    fn dead(&mut self, i: usize, kind: DeadLetterKind, reason: String) {
        self.out.dead_letter(&self.records[i], kind, reason, self.now_us);
    }
}

/// An instant as RFC 3339 text, for messages.
fn instant(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map_or_else(|| us.to_string(), |t| t.to_rfc3339())
}

fn dead(r: &KafkaRecord, kind: DeadLetterKind, path: String, error: String, now_us: i64) -> DeadLetter {
    DeadLetter {
        record: r.clone(),
        kind,
        error,
        path,
        received_at_us: now_us,
        shows: None,
    }
}
