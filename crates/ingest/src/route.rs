//! The contract stage: applies a table's per-record rules to polled records and splits them
//! into rows for the table and dead letters. Every input record ends up in exactly one of
//! `rows`, `deletes`, `dead` or the `ignored` count, so
//! `in = table changes + dead-letter (+ ignored)` holds.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use calve_contract::{Contract, LatePolicy, TombstonePolicy};

use crate::dead_letter::{DeadLetter, DeadLetterKind};
use crate::decode::JsonDecoder;
use crate::error::IngestError;
use crate::key::KeyDecoder;
use crate::late::split_late;
use crate::record::KafkaRecord;

/// Where a poll's records went.
#[derive(Debug, Default)]
pub struct Routed {
    /// Rows for the table.
    pub rows: Option<RecordBatch>,
    /// Index (into the routed records) of each row: its place in consumption order, which
    /// decides the winner when a key changes twice before a commit.
    pub row_origin: Vec<usize>,
    /// Keys to delete (key columns only), from tombstones under `delete-row`.
    pub deletes: Option<RecordBatch>,
    /// Index (into the routed records) of each delete.
    pub delete_origin: Vec<usize>,
    /// Records for the dead-letter table.
    pub dead: Vec<DeadLetter>,
    /// Tombstones skipped because the contract says `ignore`.
    pub ignored: u64,
}

/// Applies one contract's record rules.
#[derive(Debug, Clone)]
pub struct Router {
    decoder: JsonDecoder,
    keys: Option<KeyDecoder>,
    tombstone: TombstonePolicy,
    late: Option<(String, i64)>,
}

impl Router {
    /// A router for `contract`, decoding into `schema` (the table's Arrow schema).
    pub fn new(contract: &Contract, schema: SchemaRef) -> Result<Self, IngestError> {
        let late = (contract.late_data.policy == LatePolicy::DeadLetter).then(|| {
            (contract.event_time.column.clone(), contract.late_data.allowed_lateness.0.as_micros() as i64)
        });
        let keys = match contract.deletes.tombstone {
            TombstonePolicy::DeleteRow => Some(KeyDecoder::new(&schema, &contract.keys.columns)?),
            _ => None,
        };
        Ok(Router { decoder: JsonDecoder::new(schema)?, keys, tombstone: contract.deletes.tombstone, late })
    }

    /// Routes `records`, judging lateness against `now_us` (microseconds since the epoch).
    pub fn route(&self, records: &[KafkaRecord], now_us: i64) -> Result<Routed, IngestError> {
        let mut out = Routed::default();
        let mut values: Vec<&[u8]> = Vec::with_capacity(records.len());
        let mut origin: Vec<usize> = Vec::with_capacity(records.len());
        let mut tombstones: Vec<usize> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match (&r.value, self.tombstone) {
                (Some(v), _) => {
                    values.push(v);
                    origin.push(i);
                }
                (None, TombstonePolicy::Ignore) => out.ignored += 1,
                (None, TombstonePolicy::DeleteRow) => tombstones.push(i),
                (None, TombstonePolicy::DeadLetter) => {
                    out.dead.push(dead(r, DeadLetterKind::Tombstone, "null value (tombstone)".into(), now_us))
                }
            }
        }
        self.route_deletes(records, &tombstones, now_us, &mut out)?;
        let decoded = self.decoder.decode(&values)?;
        for (i, kind, reason) in decoded.rejected {
            out.dead.push(dead(&records[origin[i]], kind, reason, now_us));
        }
        let Some(batch) = decoded.batch else { return Ok(out) };
        let mut row_origin: Vec<usize> = decoded.kept.iter().map(|k| origin[*k]).collect();
        out.rows = Some(match &self.late {
            None => batch,
            Some((column, lateness)) => {
                let (kept, late) = split_late(&batch, column, now_us - lateness)?;
                for row in &late {
                    let r = &records[row_origin[*row]];
                    out.dead.push(dead(r, DeadLetterKind::Late, format!("event time older than allowed lateness on column {column}"), now_us));
                }
                let late: std::collections::HashSet<usize> = late.into_iter().collect();
                row_origin = row_origin.into_iter().enumerate().filter(|(i, _)| !late.contains(i)).map(|(_, o)| o).collect();
                kept
            }
        });
        out.row_origin = row_origin;
        Ok(out)
    }

    /// Tombstones under `delete-row`: their Kafka keys become keys to delete.
    fn route_deletes(&self, records: &[KafkaRecord], tombstones: &[usize], now_us: i64, out: &mut Routed) -> Result<(), IngestError> {
        let Some(keys) = self.keys.as_ref().filter(|_| !tombstones.is_empty()) else { return Ok(()) };
        let raw: Vec<Option<&[u8]>> = tombstones.iter().map(|i| records[*i].key.as_deref()).collect();
        let decoded = keys.decode(&raw)?;
        for (i, kind, reason) in decoded.rejected {
            out.dead.push(dead(&records[tombstones[i]], kind, reason, now_us));
        }
        out.delete_origin = decoded.kept.iter().map(|k| tombstones[*k]).collect();
        out.deletes = decoded.batch;
        Ok(())
    }
}

fn dead(r: &KafkaRecord, kind: DeadLetterKind, error: String, now_us: i64) -> DeadLetter {
    DeadLetter { record: r.clone(), kind, error, received_at_us: now_us }
}
