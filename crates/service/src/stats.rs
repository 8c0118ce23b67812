//! Per-table counters, shared read-only with status reporting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use calve_table::commit::restore::add_unknown_fields;

/// Counters of one table since the process started.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Records consumed from Kafka (including replays after a restart of the pipeline).
    pub consumed: AtomicU64,
    /// Value bytes consumed.
    pub consumed_bytes: AtomicU64,
    /// Rows committed to the table.
    pub rows: AtomicU64,
    /// Records committed to the dead-letter table.
    pub dead_letters: AtomicU64,
    /// Tombstones ignored per the contract.
    pub ignored: AtomicU64,
    /// Data files committed.
    pub files: AtomicU64,
    /// Commits.
    pub commits: AtomicU64,
    /// Fields committed records carried that the table has no column for, by path.
    pub unknown_fields: Mutex<BTreeMap<String, u64>>,
}

impl TableStats {
    pub(crate) fn record_consumed(&self, records: u64, bytes: u64) {
        self.consumed.fetch_add(records, Relaxed);
        self.consumed_bytes.fetch_add(bytes, Relaxed);
    }

    /// Whether committed records already carried `path` (so it was reported once).
    pub(crate) fn knows_unknown_field(&self, path: &str) -> bool {
        self.unknown_fields.lock().is_ok_and(|u| u.contains_key(path))
    }

    pub(crate) fn record_unknown_fields(&self, committed: &BTreeMap<String, u64>) {
        if let Ok(mut u) = self.unknown_fields.lock() {
            add_unknown_fields(&mut u, committed);
        }
    }

    pub(crate) fn record_commit(&self, rows: u64, dead: u64, ignored: u64, files: u64) {
        self.rows.fetch_add(rows, Relaxed);
        self.dead_letters.fetch_add(dead, Relaxed);
        self.ignored.fetch_add(ignored, Relaxed);
        self.files.fetch_add(files, Relaxed);
        self.commits.fetch_add(1, Relaxed);
    }
}
