//! What a pipeline has consumed since its last commit.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow_array::RecordBatch;
use calve_ingest::DeadLetter;

/// Rows, dead letters and Kafka progress not yet committed.
#[derive(Default)]
pub struct Buffer {
    /// Rows for the table.
    pub rows: Vec<RecordBatch>,
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
