//! What a pipeline does for a rebuild (see [`crate::rebuild`]), on either side of it: the
//! rebuild's own pipeline reads into shadow tables and never past the live table's restore
//! point (the swap needs the two to meet exactly), and the live table's pipeline pauses when
//! a rebuild that has caught up asks it to, so the restore point stops moving for the swap.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use calve_contract::Contract;
use calve_ingest::KafkaRecord;
use calve_retry::{Classify, RetryClass};
use calve_table::commit::swap::RebuildMark;
use calve_table::TableDefinition;
use tokio::sync::watch;

use super::{Ended, Pipeline, StopWhen};
use crate::definition::{dead_letter_definition, table_definition};
use crate::error::ServiceError;
use crate::rebuild::answer;

/// How often a running table looks for a rebuild asking it to pause: the longest a caught-up
/// rebuild waits for the live owner (one catalog read per table per period).
const REBUILD_LOOK: Duration = Duration::from_secs(2);

/// The tables a pipeline writes and where it starts when they hold nothing yet: the
/// contract's own tables, or a rebuild's shadows.
pub struct Tables {
    /// The target table.
    pub main: TableDefinition,
    /// Its dead-letter table.
    pub dead_letters: TableDefinition,
    /// Next offset per partition when the target table has no restore point (else the
    /// beginning of each partition).
    pub start: BTreeMap<i32, i64>,
}

impl Tables {
    /// The contract's own tables, read from the beginning.
    pub fn of(contract: &Contract) -> Result<Self, ServiceError> {
        Ok(Tables {
            main: table_definition(contract)?,
            dead_letters: dead_letter_definition(contract)?,
            start: BTreeMap::new(),
        })
    }
}

/// The offsets [`StopWhen::Reached`] reads up to (exclusive), per partition.
#[derive(Debug, Default)]
pub(super) struct Bound {
    until: Option<BTreeMap<i32, i64>>,
    /// Partitions a record at or past the bound was seen in: nothing below it is left to read
    /// there even if the position never gets to the bound (offsets a compaction or a
    /// transaction marker took).
    seen_past: BTreeSet<i32>,
}

impl Bound {
    fn limit(until: &BTreeMap<i32, i64>, partition: i32) -> i64 {
        // A partition the live table holds nothing of is read nowhere.
        until.get(&partition).copied().unwrap_or(0)
    }

    /// Drops the records at or past the bound.
    pub(super) fn keep_below(&mut self, records: &mut Vec<KafkaRecord>) {
        let Some(until) = &self.until else {
            return;
        };
        for r in records.iter().filter(|r| r.offset >= Self::limit(until, r.partition)) {
            self.seen_past.insert(r.partition);
        }
        records.retain(|r| r.offset < Self::limit(until, r.partition));
    }

    /// Whether every partition has been read up to the bound (`next`: the positions).
    pub(super) fn reached(&self, partitions: &[i32], next: &BTreeMap<i32, i64>) -> bool {
        let Some(until) = &self.until else {
            return false;
        };
        // A partition the live table read and this pipeline does not is not reached.
        until.keys().all(|p| partitions.contains(p))
            && partitions
                .iter()
                .all(|p| self.seen_past.contains(p) || next.get(p).copied().unwrap_or(0) >= Self::limit(until, *p))
    }
}

impl Pipeline {
    /// Reads and commits everything below `until` (next offsets per partition, as a restore
    /// point), and nothing at or past it. Called again with a later bound, it reads on from
    /// where it stopped.
    pub async fn run_until(
        &mut self,
        until: &BTreeMap<i32, i64>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Ended, ServiceError> {
        self.bound = Bound {
            until: Some(until.clone()),
            seen_past: BTreeSet::new(),
        };
        // Partitions the live table reads that this pipeline has not seen yet: added to the
        // topic since it looked.
        if until.keys().any(|p| !self.partitions.contains(p)) {
            self.refresh_partitions().await?;
        }
        // Records past the old bound were fetched and dropped: read again from the positions.
        self.source.assign(&self.partitions, &self.positions())?;
        self.drive(shutdown, StopWhen::Reached).await
    }

    /// The id of a rebuild that asks this table to pause, looked for every [`REBUILD_LOOK`].
    /// A catalog that cannot answer is asked again next time: the rebuild waits, nothing else.
    pub(super) async fn rebuild_asks_pause(&mut self) -> Option<String> {
        if self.rebuild_looked.elapsed() < REBUILD_LOOK {
            return None;
        }
        self.rebuild_looked = Instant::now();
        let table = &self.contract.table.name;
        let state = match self.main.sink().committer().current().await {
            Ok(s) => s,
            Err(e) if e.class() == RetryClass::Temporary => {
                tracing::debug!(table, "cannot look for a rebuild now: {e}");
                return None;
            }
            Err(e) => {
                tracing::warn!(table, "cannot look for a rebuild: {e}");
                return None;
            }
        };
        let mark = match RebuildMark::of(&state.metadata) {
            Ok(mark) => mark?,
            Err(e) => {
                tracing::warn!(table, "the table's rebuild mark is unreadable; not pausing for it: {e}");
                return None;
            }
        };
        mark.asks_pause(chrono::Utc::now().timestamp_millis())
            .then_some(mark.id)
    }

    /// Commits what is buffered, tells the rebuild `id` that the restore point is final, and
    /// ends the run; the supervisor reopens the table after the swap (or the lease's end).
    pub(super) async fn pause_for_rebuild(&mut self, id: String) -> Result<Ended, ServiceError> {
        self.flush().await?;
        let sink = self.main.sink();
        answer(sink.catalog(), sink.ident(), &id).await?;
        let at = calve_table::commit::restore::format_offsets(&self.main.sink().offsets);
        tracing::info!(
            table = %self.contract.table.name, rebuild = %id, restore_point = %at,
            "a rebuild has caught up and asks the table to pause for its swap; everything read is committed, \
             pausing"
        );
        Ok(Ended::Paused(id))
    }
}
