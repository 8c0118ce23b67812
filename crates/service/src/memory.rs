//! `[memory]`: one budget for what all of a process's tables hold in memory, so a process with
//! many tables (hundreds of contracts at a one-minute band) stays within what its machine has
//! instead of multiplying per-table allowances (a buffer of up to 8 target file sizes, a key
//! index of `[key_index] memory`, librdkafka's prefetch queue of 64 MiB) by the table count.
//!
//! The budget is split three ways: half for keyed tables' indexes (each gets its share, at most
//! `[key_index] memory`; beyond it an index spills to disk), a tenth for Kafka prefetch (the
//! partition queues of the consumers the tables share), the rest for buffered records. Buffers are shared dynamically:
//! when together they pass their part, the tables holding at least the average commit early,
//! and the others stop taking records (their partitions rest, librdkafka's queue fills and
//! fetching stops) until the commits bring the total back: backpressure, never growth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use calve_contract::{ByteSize, Contract};
use calve_ingest::{KafkaClients, MIN_PARTITION_QUEUE};
use serde::Deserialize;

use crate::supervisor::Services;

/// `[memory]` in `calve.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// What all tables together may hold: buffered records, key indexes and Kafka prefetch
    /// (e.g. "4GiB"; leave room beyond it for Parquet encoding and maintenance).
    pub budget: ByteSize,
}

/// The smallest budget accepted: below it the floors below are most of it.
pub const MIN_BUDGET: u64 = 8 << 20;
/// The part of the budget keyed tables' indexes share.
const INDEX_PART: f64 = 0.5;
/// The part Kafka prefetch queues share.
const PREFETCH_PART: f64 = 0.1;
/// No key index gets less than this before it spills.
const MIN_INDEX: u64 = 8 << 20;

/// What a table should do about the budget after taking records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// The buffers are within their part.
    Fine,
    /// Over it, and this table holds at least the average: commit now.
    Commit,
    /// Over it, and others hold more: take no records until they have committed.
    Rest,
}

/// The buffers' part of the budget and what each table holds now.
#[derive(Debug)]
pub struct MemoryBudget {
    buffers: u64,
    held: Mutex<HashMap<String, u64>>,
    /// The most the buffers held together.
    peak: std::sync::atomic::AtomicU64,
}

impl MemoryBudget {
    /// The budget's part for buffers.
    pub fn buffers(&self) -> u64 {
        self.buffers
    }

    /// Records that `table` buffers `bytes` now, and says what it should do.
    pub fn hold(&self, table: &str, bytes: u64) -> Pressure {
        // A panic elsewhere while holding the lock leaves the map as good as it was.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match bytes {
            0 => held.remove(table),
            b => held.insert(table.to_string(), b),
        };
        let total: u64 = held.values().sum();
        self.peak.fetch_max(total, std::sync::atomic::Ordering::Relaxed);
        if total <= self.buffers {
            return Pressure::Fine;
        }
        match bytes > 0 && bytes.saturating_mul(held.len() as u64) >= total {
            true => Pressure::Commit,
            false => Pressure::Rest,
        }
    }

    /// What the buffers hold together now.
    pub fn total(&self) -> u64 {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    /// The most the buffers have held together.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many bytes one table may take in its next poll: the room left, shared by the
    /// tables holding records and one more, so that tables polling together overshoot the
    /// part by at most that room.
    pub fn room_each(&self) -> u64 {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let total: u64 = held.values().sum();
        self.buffers.saturating_sub(total) / (held.len() as u64 + 1)
    }
}

impl Services {
    /// Puts the process under `cfg`'s budget for `contracts`: key indexes and Kafka prefetch
    /// get their parts now, buffers share theirs while running.
    pub fn within_memory(&mut self, cfg: &MemoryConfig, contracts: &[Contract]) {
        let budget = cfg.budget.0 as f64;
        let keyed_tables = contracts.iter().filter(|c| c.is_keyed()).count();
        let keyed = keyed_tables.max(1) as f64;
        let index = ((budget * INDEX_PART / keyed) as u64).max(MIN_INDEX);
        self.key_index.memory_limit = self.key_index.memory_limit.min(index);
        let prefetch = (budget * PREFETCH_PART) as u64;
        let topics = contracts.iter().map(|c| c.table.topic.clone()).collect();
        self.kafka = Arc::new(KafkaClients::within_prefetch(
            self.kafka.config().clone(),
            prefetch,
            topics,
        ));
        let buffers = (budget * (1.0 - INDEX_PART - PREFETCH_PART)) as u64;
        // The floors win over the shares: say so rather than exceed the budget in silence.
        let floors = MIN_PARTITION_QUEUE * contracts.len() as u64 + MIN_INDEX * keyed_tables as u64;
        if floors as f64 > budget * (INDEX_PART + PREFETCH_PART) {
            tracing::warn!(
                budget = %cfg.budget, tables = contracts.len(),
                "the memory budget is too small for this many tables: each Kafka partition's queue takes at least \
                 64 KiB and each key index 8 MiB, {} in all; the process will use more than the budget",
                ByteSize(floors)
            );
        }
        tracing::info!(
            budget = %cfg.budget, buffers = %ByteSize(buffers), key_index_each = %ByteSize(self.key_index.memory_limit),
            prefetch = %ByteSize(prefetch), tables = contracts.len(),
            "tables share one memory budget"
        );
        self.memory = Some(std::sync::Arc::new(MemoryBudget {
            buffers,
            held: Mutex::new(HashMap::new()),
            peak: Default::default(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(buffers: u64) -> MemoryBudget {
        MemoryBudget {
            buffers,
            held: Mutex::new(HashMap::new()),
            peak: Default::default(),
        }
    }

    #[test]
    fn the_biggest_holders_commit_and_the_others_rest() {
        let b = budget(100);
        assert_eq!(b.hold("a", 60), Pressure::Fine);
        assert_eq!(b.hold("b", 30), Pressure::Fine);
        // 110 > 100: c holds less than the average (36.7) and rests; a holds more and commits.
        assert_eq!(b.hold("c", 20), Pressure::Rest);
        assert_eq!(b.hold("a", 60), Pressure::Commit);
        assert_eq!(b.hold("a", 0), Pressure::Fine, "a committed: 50 left");
        assert_eq!(b.total(), 50);
        // A table with nothing buffered never commits for the budget, it can only rest.
        assert_eq!(b.hold("b", 90), Pressure::Commit);
        assert_eq!(b.hold("d", 0), Pressure::Rest);
        assert_eq!(b.peak(), 110);
        assert_eq!(b.room_each(), 0, "no room while over");
        b.hold("b", 0);
        assert_eq!(b.room_each(), (100 - 20) / 2);
    }
}
