//! The table's event-time watermark: how far event time has progressed across every Kafka
//! partition the table reads, which decides what is late and which event-time partitions
//! are complete.
//!
//! Each Kafka partition's progress is the newest event time read from it. The watermark is the
//! least of them over the partitions that still have records to read, because any of those
//! may still hold older events; a partition that is caught up with the broker's end is idle
//! and holds nothing back, so one quiet partition does not stall the table (what it sends
//! later is judged against the allowed lateness like any late event). A partition with records
//! to read and none read yet since calve started holds the watermark where it is: nothing is
//! known of what it holds. Event times in the future count as now, so one record with a wrong
//! clock cannot declare days complete. The watermark never goes back, across restarts too:
//! it is restored from the table.
//!
//! Records are judged late against the watermark of the last commit, not the live one: a
//! record's fate must not depend on how polls happened to group records, because after a
//! crash between the dead-letter commit and the table's commit the replay must route every
//! record as before (the dead letters already stored are skipped, not written again). The
//! dead-letter commit records the watermark its dead letters were judged against, and a
//! replay keeps judging against it until it has passed what that commit covered.
//!
//! An event-time partition is complete once the watermark has passed its end by the allowed
//! lateness; the table publishes the end of the last complete partition (see
//! [`calve_table::commit::event_time`]).

use std::collections::{BTreeMap, BTreeSet};

use calve_contract::{Completeness, Contract, PartitionGrain};
use calve_ingest::EventClock;
use calve_table::commit::event_time::EventTimeMarks;

/// One table's event-time progress.
#[derive(Debug, Clone)]
pub struct Watermark {
    grain: PartitionGrain,
    lateness_us: i64,
    /// The contract promises completeness (`sla.completeness = "watermark"`).
    publishes_completeness: bool,
    /// Newest event time read from each Kafka partition since the pipeline opened.
    newest: BTreeMap<i32, i64>,
    /// The watermark; never goes back.
    current: Option<i64>,
    /// The watermark records are judged late against (the last commit's, see the module
    /// docs).
    routing: Option<i64>,
    /// Complete through, as the table last published it.
    published: Option<i64>,
    /// Partitions that rows waiting for the next commit reopen, by name.
    reopened: BTreeSet<String>,
}

impl Watermark {
    /// The watermark of `contract`'s table, resumed from what the table last published
    /// (`marks`) and, when the dead-letter table's last commit is ahead of the table's (a crash
    /// came between the two), what that commit judged its records against (`replay`).
    pub fn resume(contract: &Contract, marks: &EventTimeMarks, replay: Option<&EventTimeMarks>) -> Self {
        let publishes_completeness = contract.sla.completeness == Completeness::Watermark;
        let routing = replay.map_or(marks.watermark_us, |r| r.watermark_us);
        Watermark {
            grain: contract.event_time.partition,
            lateness_us: contract.late_data.allowed_lateness.0.as_micros() as i64,
            publishes_completeness,
            newest: BTreeMap::new(),
            current: marks.watermark_us.max(routing),
            routing,
            published: marks.complete_through_us.filter(|_| publishes_completeness),
            reopened: BTreeSet::new(),
        }
    }

    /// What the next poll is routed against.
    pub fn clock(&self, now_us: i64) -> EventClock {
        EventClock {
            now_us,
            watermark_us: self.routing,
            complete_through_us: self.published,
        }
    }

    /// Takes in what a routed poll showed: each Kafka partition's newest event time (future
    /// ones count as `now_us`) and the complete partitions its rows reopen.
    pub fn observe(&mut self, newest: &BTreeMap<i32, i64>, reopened: &BTreeSet<String>, now_us: i64) {
        for (p, t) in newest {
            let t = (*t).min(now_us);
            let seen = self.newest.entry(*p).or_insert(t);
            *seen = (*seen).max(t);
        }
        self.reopened.extend(reopened.iter().cloned());
    }

    /// Moves the watermark on, given the table's Kafka `partitions` and which of them are
    /// `idle` (read up to the broker's end).
    pub fn advance(&mut self, partitions: &[i32], idle: impl Fn(i32) -> bool) {
        let busy: Vec<i32> = partitions.iter().copied().filter(|p| !idle(*p)).collect();
        let candidate = if busy.is_empty() {
            // Everything the broker has is read: event time has reached the newest event.
            self.newest.values().copied().max()
        } else if busy.iter().all(|p| self.newest.contains_key(p)) {
            busy.iter().map(|p| self.newest[p]).min()
        } else {
            None
        };
        if let Some(c) = candidate {
            self.current = Some(self.current.map_or(c, |w| w.max(c)));
        }
    }

    /// The watermark, once the table has one.
    #[cfg(test)]
    fn current(&self) -> Option<i64> {
        self.current
    }

    /// Complete through, as the table last published it.
    pub fn published(&self) -> Option<i64> {
        self.published
    }

    /// Complete through, as of the watermark now: the end of the last partition the watermark
    /// has passed by the allowed lateness (`None` unless the contract promises completeness).
    /// A promise once published is never taken back, even when the contract's lateness grows.
    pub fn complete_through(&self) -> Option<i64> {
        let w = self.current.filter(|_| self.publishes_completeness)?;
        let now = self.grain.start_of(w.saturating_sub(self.lateness_us));
        Some(self.published.map_or(now, |p| p.max(now)))
    }

    /// The marks for the next commit, naming the partitions its rows reopen.
    pub fn marks(&self) -> EventTimeMarks {
        EventTimeMarks {
            watermark_us: self.current,
            complete_through_us: self.complete_through(),
            reopened: self.reopened.iter().cloned().collect(),
        }
    }

    /// What the dead-letter table's commit records: the watermark its dead letters were
    /// judged against.
    pub fn judged_against(&self) -> EventTimeMarks {
        EventTimeMarks {
            watermark_us: self.routing,
            ..EventTimeMarks::default()
        }
    }

    /// The commit carrying [`Watermark::marks`] has landed. While `replaying` (the dead-letter
    /// table already holds the judgement of records past this commit), records go on being
    /// judged against the watermark they were judged against before.
    pub fn committed(&mut self, marks: &EventTimeMarks, replaying: bool) {
        self.published = marks.complete_through_us.or(self.published);
        if !replaying {
            self.routing = marks.watermark_us.or(self.routing);
        }
        self.reopened.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn contract(lateness: &str) -> Contract {
        let text = include_str!("../../../examples/contracts/orders.toml")
            .replace(
                "allowed_lateness = \"3d\"",
                &format!("allowed_lateness = \"{lateness}\""),
            )
            .replace("completeness = \"none\"", "completeness = \"watermark\"");
        Contract::parse(&text, "orders.toml").unwrap()
    }

    #[test]
    fn a_quiet_partition_holds_nothing_back_and_a_lagging_one_does() {
        let mut w = Watermark::resume(&contract("1h"), &EventTimeMarks::default(), None);
        let now = 1000 * HOUR;
        w.observe(&BTreeMap::from([(0, 10 * HOUR), (1, 5 * HOUR)]), &BTreeSet::new(), now);
        // Partition 1 still has records to read: it decides.
        w.advance(&[0, 1], |_| false);
        assert_eq!(w.current(), Some(5 * HOUR));
        // Caught up, it is idle: partition 0 decides.
        w.advance(&[0, 1], |p| p == 1);
        assert_eq!(w.current(), Some(10 * HOUR));
        // Partition 2 appeared with records and none read yet: the watermark waits.
        w.observe(&BTreeMap::from([(0, 20 * HOUR)]), &BTreeSet::new(), now);
        w.advance(&[0, 1, 2], |p| p == 1);
        assert_eq!(w.current(), Some(10 * HOUR));
        // It never goes back.
        w.observe(&BTreeMap::from([(2, 2 * HOUR)]), &BTreeSet::new(), now);
        w.advance(&[0, 1, 2], |p| p == 1);
        assert_eq!(w.current(), Some(10 * HOUR));
        // All caught up: the newest event read.
        w.advance(&[0, 1, 2], |_| true);
        assert_eq!(w.current(), Some(20 * HOUR));
    }

    #[test]
    fn a_future_event_counts_as_now() {
        let mut w = Watermark::resume(&contract("1h"), &EventTimeMarks::default(), None);
        w.observe(&BTreeMap::from([(0, 900 * HOUR)]), &BTreeSet::new(), 100 * HOUR);
        w.advance(&[0], |_| true);
        assert_eq!(w.current(), Some(100 * HOUR));
    }

    #[test]
    fn a_day_is_complete_once_the_watermark_passes_its_end_by_the_lateness() {
        let day = 24 * HOUR;
        let mut w = Watermark::resume(&contract("1h"), &EventTimeMarks::default(), None);
        let now = 1000 * day;
        w.observe(&BTreeMap::from([(0, 10 * day + HOUR / 2)]), &BTreeSet::new(), now);
        w.advance(&[0], |_| true);
        assert_eq!(w.complete_through(), Some(9 * day), "day 9 is still open: 00:30 - 1h");
        w.observe(&BTreeMap::from([(0, 10 * day + HOUR)]), &BTreeSet::new(), now);
        w.advance(&[0], |_| true);
        assert_eq!(w.complete_through(), Some(10 * day), "day 9 is complete");
        let marks = w.marks();
        assert_eq!(
            w.clock(now).watermark_us,
            None,
            "records are judged against the last commit's"
        );
        w.committed(&marks, false);
        assert_eq!(w.clock(now).complete_through_us, Some(10 * day));
        assert_eq!(w.clock(now).watermark_us, Some(10 * day + HOUR));
        // A longer lateness in the contract does not take the promise back.
        let mut longer = Watermark::resume(&contract("2d"), &marks, None);
        longer.advance(&[0], |_| true);
        assert_eq!(longer.complete_through(), Some(10 * day));
    }

    #[test]
    fn a_replay_judges_records_as_before_until_it_passes_the_dead_letters() {
        let committed = EventTimeMarks {
            watermark_us: Some(50 * HOUR),
            ..EventTimeMarks::default()
        };
        let judged = EventTimeMarks {
            watermark_us: Some(40 * HOUR),
            ..EventTimeMarks::default()
        };
        let mut w = Watermark::resume(&contract("1h"), &committed, Some(&judged));
        assert_eq!(w.clock(0).watermark_us, Some(40 * HOUR));
        w.committed(&committed, true);
        assert_eq!(w.clock(0).watermark_us, Some(40 * HOUR));
        w.committed(&committed, false);
        assert_eq!(w.clock(0).watermark_us, Some(50 * HOUR));
    }

    #[test]
    fn it_resumes_from_what_the_table_published() {
        let marks = EventTimeMarks {
            watermark_us: Some(50 * HOUR),
            complete_through_us: Some(24 * HOUR),
            reopened: Vec::new(),
        };
        let mut w = Watermark::resume(&contract("1h"), &marks, None);
        assert_eq!(w.clock(0).watermark_us, Some(50 * HOUR));
        assert_eq!(w.clock(0).complete_through_us, Some(24 * HOUR));
        let reopened = BTreeSet::from(["ts_day=1970-01-01".to_string()]);
        w.observe(&BTreeMap::from([(0, 3 * HOUR)]), &reopened, 1000 * HOUR);
        w.advance(&[0], |_| true);
        assert_eq!(w.current(), Some(50 * HOUR));
        assert_eq!(w.marks().reopened, vec!["ts_day=1970-01-01".to_string()]);
    }
}
