//! What a pipeline has consumed since its last commit.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow_array::RecordBatch;
use calve_ingest::DeadLetter;
use calve_table::key_index::SeqBatch;

/// Rows, dead letters and Kafka progress not yet committed.
#[derive(Default)]
pub struct Buffer {
    /// Rows for an append table.
    pub rows: Vec<RecordBatch>,
    /// Keyed tables: rows, each with its place in consumption order (the later change of a
    /// key wins).
    pub upserts: Vec<SeqBatch>,
    /// Keyed tables: keys to delete, with their place in consumption order.
    pub deletes: Vec<SeqBatch>,
    /// Records consumed since the last commit: the next record's place in consumption order.
    pub consumed: u64,
    /// Arrow bytes held in `rows`.
    pub bytes: usize,
    /// Records for the dead-letter table.
    pub dead: Vec<DeadLetter>,
    /// Next offset to read per partition, for partitions consumed since the last commit.
    pub next: BTreeMap<i32, i64>,
    /// Tombstones ignored per the contract.
    pub ignored: u64,
    /// When the oldest uncommitted record arrived: the freshness band runs from here.
    pub since: Option<Instant>,
}

impl Buffer {
    /// Whether anything (even only progress) awaits a commit.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Adds rows.
    pub fn push_rows(&mut self, batch: RecordBatch) {
        self.bytes += batch.get_array_memory_size();
        self.rows.push(batch);
    }

    /// Adds a keyed table's changes from one poll of `records` records; `*_origin` are indices
    /// into that poll.
    pub fn push_changes(
        &mut self,
        records: usize,
        rows: Option<(RecordBatch, Vec<usize>)>,
        deletes: Option<(RecordBatch, Vec<usize>)>,
    ) {
        let base = self.consumed;
        let seq = |origin: Vec<usize>| origin.into_iter().map(|o| base + o as u64).collect();
        if let Some((batch, origin)) = rows {
            self.bytes += batch.get_array_memory_size();
            self.upserts.push(SeqBatch {
                batch,
                seq: seq(origin),
            });
        }
        if let Some((batch, origin)) = deletes {
            self.bytes += batch.get_array_memory_size();
            self.deletes.push(SeqBatch {
                batch,
                seq: seq(origin),
            });
        }
        self.consumed += records as u64;
    }

    /// Records that offsets up to `offset` of `partition` were consumed.
    pub fn advance(&mut self, partition: i32, offset: i64) {
        let next = self.next.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Empties the buffer after a commit.
    pub fn clear(&mut self) {
        *self = Buffer::default();
    }
}
