//! The contract stage: applies a table's per-record rules to polled records and splits them
//! into rows for the table and dead letters. Every input record ends up in exactly one of
//! `rows`, `dead` or the `ignored` count, so `in = table + dead-letter (+ ignored)` holds.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use calve_contract::{Contract, LatePolicy, TombstonePolicy};

use crate::dead_letter::{DeadLetter, DeadLetterKind};
use crate::decode::JsonDecoder;
use crate::error::IngestError;
use crate::late::split_late;
use crate::record::KafkaRecord;

/// Where a poll's records went.
#[derive(Debug, Default)]
pub struct Routed {
    /// Rows for the table.
    pub rows: Option<RecordBatch>,
    /// Records for the dead-letter table.
    pub dead: Vec<DeadLetter>,
    /// Tombstones skipped because the contract says `ignore`.
    pub ignored: u64,
}

/// Applies one contract's record rules.
#[derive(Debug, Clone)]
pub struct Router {
    decoder: JsonDecoder,
    tombstone: TombstonePolicy,
    late: Option<(String, i64)>,
}

impl Router {
    /// A router for `contract`, decoding into `schema` (the table's Arrow schema).
    pub fn new(contract: &Contract, schema: SchemaRef) -> Result<Self, IngestError> {
        let late = (contract.late_data.policy == LatePolicy::DeadLetter).then(|| {
            (contract.event_time.column.clone(), contract.late_data.allowed_lateness.0.as_micros() as i64)
        });
        Ok(Router { decoder: JsonDecoder::new(schema)?, tombstone: contract.deletes.tombstone, late })
    }

    /// Routes `records`, judging lateness against `now_us` (microseconds since the epoch).
    pub fn route(&self, records: &[KafkaRecord], now_us: i64) -> Result<Routed, IngestError> {
        let mut out = Routed::default();
        let mut values: Vec<&[u8]> = Vec::with_capacity(records.len());
        let mut origin: Vec<usize> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match (&r.value, self.tombstone) {
                (Some(v), _) => {
                    values.push(v);
                    origin.push(i);
                }
                (None, TombstonePolicy::Ignore) => out.ignored += 1,
                (None, _) => out.dead.push(dead(r, DeadLetterKind::Tombstone, "null value (tombstone)".into(), now_us)),
            }
        }
        let decoded = self.decoder.decode(&values)?;
        for (i, kind, reason) in decoded.rejected {
            out.dead.push(dead(&records[origin[i]], kind, reason, now_us));
        }
        let Some(batch) = decoded.batch else { return Ok(out) };
        out.rows = Some(match &self.late {
            None => batch,
            Some((column, lateness)) => {
                let (kept, late) = split_late(&batch, column, now_us - lateness)?;
                for row in late {
                    let r = &records[origin[decoded.kept[row]]];
                    out.dead.push(dead(r, DeadLetterKind::Late, format!("event time older than allowed lateness on column {column}"), now_us));
                }
                kept
            }
        });
        Ok(out)
    }
}

fn dead(r: &KafkaRecord, kind: DeadLetterKind, error: String, now_us: i64) -> DeadLetter {
    DeadLetter { record: r.clone(), kind, error, received_at_us: now_us }
}
