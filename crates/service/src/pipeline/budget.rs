//! The pipeline's side of the process's memory budget (`[memory]`, [`crate::memory`]): it says
//! what its buffer holds after every poll, takes no more per poll than its share of the room
//! left, commits early when told to, and pauses its partitions while others must commit first.

use std::time::Duration;

use calve_ingest::{IngestError, KafkaRecord};

use super::{Pipeline, POLL_MAX};
use crate::memory::Pressure;

/// How long a resting table waits in one poll before asking the budget again.
const REST: Duration = Duration::from_millis(100);
/// What a record is assumed to take before the table has buffered any.
const FIRST_GUESS: u64 = 1024;
/// A poll takes at least this many records, so a table always moves.
const MIN_POLL: usize = 100;

impl Pipeline {
    /// The next records. While the budget is spent by others the table's partitions are paused
    /// (nothing is fetched, the client's callbacks are still served) and polls are short.
    pub(super) async fn take(&mut self, wait: Duration) -> Result<Vec<KafkaRecord>, IngestError> {
        let rest = self.budget_says(self.buffered) == Pressure::Rest;
        // Paused again on every rest: partitions the topic gained meanwhile are assigned running.
        if rest || self.resting {
            self.source.set_paused(rest)?;
        }
        if rest != self.resting {
            tracing::debug!(table = %self.contract.table.name, rest, "partitions paused for the memory budget");
            self.resting = rest;
        }
        let wait = if rest { wait.min(REST) } else { wait };
        self.source.poll(self.poll_allowance(), wait).await
    }

    /// Records the next poll may take: without a budget [`POLL_MAX`]; with one, this table's
    /// share of the room left, at the bytes per record its buffer shows.
    fn poll_allowance(&self) -> usize {
        let Some(m) = &self.memory else {
            return POLL_MAX;
        };
        let per_record = match self.buffer.records {
            0 => FIRST_GUESS,
            n => (self.buffered / n).max(1),
        };
        ((m.room_each() / per_record) as usize).clamp(MIN_POLL, POLL_MAX)
    }

    /// Tells the budget the buffer holds `bytes` (rows as Arrow plus dead letters), and what
    /// the table should do about it.
    pub(super) fn budget_says(&mut self, bytes: u64) -> Pressure {
        self.buffered = bytes;
        match &self.memory {
            Some(m) => m.hold(&self.contract.table.name, bytes),
            None => Pressure::Fine,
        }
    }

    /// Whether the budget wants this table's buffer committed now (`anyway`: it commits for
    /// another reason), saying so when the budget is the reason.
    pub(super) fn budget_commits(&mut self, bytes: u64, anyway: bool) -> bool {
        let commit = self.budget_says(bytes) == Pressure::Commit;
        if let (true, false, Some(m)) = (commit, anyway, &self.memory) {
            tracing::info!(
                table = %self.contract.table.name, buffered = bytes, all_tables = m.total(), part = m.buffers(),
                "committing before the band ends: the tables' buffers hold more than the memory budget gives them"
            );
        }
        commit
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // What a failed or finished pipeline buffered is gone: it must not keep others resting.
        self.budget_says(0);
    }
}
