//! What a pipeline has consumed since its last commit, besides the target table's rows (those
//! wait in [`crate::target::Target`], in the shape the table's mode needs).

use std::collections::BTreeMap;
use std::time::Instant;

use calve_ingest::DeadLetter;
use calve_table::commit::lost::LostRange;

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
    /// Records consumed since the last commit (rows, dead letters and ignored alike).
    pub records: u64,
    /// Kafka timestamp (ms) of the newest record consumed since the last commit.
    pub newest_ms: Option<i64>,
    /// Memory the dead letters hold (their records and reasons): it counts toward the flush
    /// trigger like rows do, so a stream of bad records cannot grow memory without bound.
    pub dead_bytes: usize,
    /// Records Kafka deleted before they were read, which the next commit skips.
    pub lost: Vec<LostRange>,
}

/// About the memory one dead letter holds.
fn dead_letter_bytes(d: &DeadLetter) -> usize {
    let r = &d.record;
    let headers: usize = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    std::mem::size_of::<DeadLetter>()
        + r.key.as_ref().map_or(0, Vec::len)
        + r.value.as_ref().map_or(0, Vec::len)
        + r.topic.len()
        + headers
        + d.error.len()
        + d.path.len()
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

    /// Records that `gap` is skipped: reading goes on at its end.
    pub fn skip(&mut self, gap: LostRange) {
        let next = self.next.entry(gap.partition).or_insert(gap.to);
        *next = (*next).max(gap.to);
        self.since.get_or_insert_with(Instant::now);
        self.lost.push(gap);
    }

    /// Takes dead letters for the dead-letter table.
    pub fn push_dead(&mut self, letters: impl IntoIterator<Item = DeadLetter>) {
        for d in letters {
            self.dead_bytes += dead_letter_bytes(&d);
            self.dead.push(d);
        }
    }

    /// Empties the buffer after a commit.
    pub fn clear(&mut self) {
        *self = Buffer::default();
    }
}
