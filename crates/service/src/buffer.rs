//! What a pipeline has consumed since its last commit, besides the target table's rows (those
//! wait in [`crate::target::Target`], in the shape the table's mode needs).

use std::collections::BTreeMap;
use std::time::Instant;

use calve_ingest::DeadLetter;

/// Dead letters and Kafka progress not yet committed.
#[derive(Default)]
pub struct Buffer {
    /// Records for the dead-letter table.
    pub dead: Vec<DeadLetter>,
    /// Next offset to read per partition, for partitions consumed since the last commit.
    pub next: BTreeMap<i32, i64>,
    /// Tombstones ignored per the contract.
    pub ignored: u64,
    /// Fields the records carried that the table has no column for, by path, with counts.
    pub unknown_fields: BTreeMap<String, u64>,
    /// When the oldest uncommitted record arrived: the freshness band runs from here.
    pub since: Option<Instant>,
}

impl Buffer {
    /// Whether anything (even only progress) awaits a commit.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
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
