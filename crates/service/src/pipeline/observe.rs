//! What the pipeline tells its table's statistics between commits. Only the pipeline knows
//! what waits in its buffer and how far it has read, and the metrics and the SLA judge must
//! see both without waiting for a commit that may never come; kept apart from the data path
//! in `mod.rs`, which they only observe.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Pipeline, LAG_EVERY};

impl Pipeline {
    /// Publishes what waits for the next commit (rows and dead letters, and the memory they
    /// hold); returns the rows' Arrow bytes, which the size trigger weighs (summed once per
    /// poll).
    pub(super) fn record_buffered(&self) -> u64 {
        let b = &self.buffer;
        let arrow = self.main.bytes() as u64;
        self.stats
            .record_buffered(b.records, b.dead.len() as u64, arrow + b.dead_bytes as u64);
        arrow
    }

    /// Per partition, how far the table is behind the end of the topic (at most every
    /// [`LAG_EVERY`]: librdkafka reports the ends only that often anyway), and how far calve
    /// has read it, which the table's freshness is judged by.
    pub(super) fn record_lag(&mut self, now: bool) {
        if !now && self.lag_recorded.elapsed() < LAG_EVERY {
            return;
        }
        self.lag_recorded = Instant::now();
        let ends = self.source.partition_ends();
        if ends.is_empty() {
            return;
        }
        let consumer = self.source.positions();
        let held = self.main.sink().offsets.get(&self.contract.table.topic);
        // Per partition: how far calve has read, and how much of the topic the table lacks.
        let mut read = BTreeMap::new();
        let mut lag = BTreeMap::new();
        for (p, e) in &ends {
            // Records that retention removed are neither lag nor unread: nobody can read them.
            let committed = held.and_then(|h| h.get(p)).copied().unwrap_or(0).max(e.low);
            let passed = consumer.get(p).copied().unwrap_or(0);
            let buffered = self.buffer.next.get(p).copied();
            // With nothing of `p` waiting for a commit, what the consumer has passed is in the
            // table or was never data (transaction markers, aborted records).
            let in_table = match buffered {
                Some(_) => committed,
                None => committed.max(passed),
            };
            lag.insert(*p, e.end - in_table);
            read.insert(*p, in_table.max(passed).max(buffered.unwrap_or(0)));
        }
        self.stats.record_lag(lag.iter().map(|(p, n)| (*p, *n)));
        self.stats.sla.observe_read(&self.partitions, &ends, &read, &lag);
    }
}
