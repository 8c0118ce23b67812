//! Whether each table keeps what its contract's `[sla]` promises, measured rather than
//! declared: the band makes calve commit often enough, but only a measurement shows a table
//! that a frozen broker, a failing catalog or a hold has left behind. A breach is logged with
//! the table's owner and contact, shown by `calve status` and on `/metrics`, and so is the
//! recovery.
//!
//! **Freshness** is the age of the oldest thing a consumer of the table cannot see yet:
//! `now − fresh as of`, where the table is *fresh as of* T when it holds everything the topic
//! held at T. Two things bound T: per partition, the last time the broker was heard from
//! while calve had read everything it reported (`read through`; a broker that stops answering
//! stops it, since nothing then shows the topic has nothing new), and the moment the oldest
//! record consumed but not committed yet was read (a commit that does not come stops it). A
//! healthy table's freshness peaks at about one band plus the commit; the measurement's
//! resolution is librdkafka's statistics interval (1 s), so a breach is judged against the
//! SLA plus a tolerance of `max(2 s, SLA / 10)`.
//!
//! **Completeness** (`sla.completeness = "watermark"`): with events on time, the partition
//! holding `now − SLA − allowed lateness − tolerance` has begun, so every partition before it
//! should be declared complete; `calve.complete-through` short of that start is a breach (a
//! stalled watermark: a quiet or stuck partition, a held table, a producer sending old events).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use calve_contract::{Completeness, Contract, PartitionGrain};
use calve_ingest::PartitionEnds;
use calve_table::commit::event_time::format_instant;
use metrics::gauge;
use serde::{Deserialize, Serialize};

/// Dead-letter rate and commit latency are measured over this window.
const WINDOW_MS: i64 = 5 * 60 * 1000;
/// The least tolerance: the measurement's resolution (statistics every second, a poll every
/// half second).
const MIN_TOLERANCE: Duration = Duration::from_secs(2);
/// A lasting breach is logged again this often.
const REMIND_EVERY_MS: i64 = 5 * 60 * 1000;
/// A broker not heard from for this long past the tolerance is named as the reason.
const SILENT_MS: i64 = 1_500;

/// What a table's contract promises, as the judge needs it.
#[derive(Debug, Clone)]
pub struct SlaTerms {
    /// `sla.freshness`.
    pub freshness: Duration,
    /// Under `sla.completeness = "watermark"`: the partition grain and the allowed lateness.
    pub completeness: Option<(PartitionGrain, Duration)>,
    /// `owner.team`.
    pub team: String,
    /// `owner.contact`.
    pub contact: String,
}

impl SlaTerms {
    /// The terms `c` states.
    pub fn of(c: &Contract) -> Self {
        SlaTerms {
            freshness: c.sla.freshness.0,
            completeness: (c.sla.completeness == Completeness::Watermark)
                .then_some((c.event_time.partition, c.late_data.allowed_lateness.0)),
            team: c.owner.team.clone(),
            contact: c.owner.contact.clone(),
        }
    }

    /// Freshness alone, with nobody to call (statistics made without a contract).
    pub fn freshness_only(freshness: Duration) -> Self {
        SlaTerms {
            freshness,
            completeness: None,
            team: "(unknown)".into(),
            contact: "(unknown)".into(),
        }
    }

    /// How far past the SLA freshness may be before it counts as a breach.
    pub fn tolerance(&self) -> Duration {
        MIN_TOLERANCE.max(self.freshness / 10)
    }
}

/// One commit, for the window's rates.
#[derive(Debug, Clone, Copy)]
struct CommitSample {
    at_ms: i64,
    records: u64,
    dead_letters: u64,
    took: Duration,
}

/// What the pipeline has shown so far (wall-clock ms since the epoch throughout: the page
/// shows instants).
#[derive(Debug, Default)]
struct Seen {
    started_ms: i64,
    /// Per partition: calve had read everything the topic held at this instant.
    read_through_ms: BTreeMap<i32, i64>,
    /// Per partition: when its broker was last heard from.
    heard_ms: BTreeMap<i32, Option<i64>>,
    /// Per partition: records the topic holds that the table does not.
    lag: BTreeMap<i32, i64>,
    /// When the oldest record consumed and not committed yet was read.
    pending_since_ms: Option<i64>,
    complete_through_us: Option<i64>,
    watermark_us: Option<i64>,
    commits: VecDeque<CommitSample>,
    last_commit_ms: Option<i64>,
    /// Kafka timestamp of the newest record committed.
    newest_committed_ms: Option<i64>,
    freshness_breach_ms: Option<i64>,
    completeness_breach_ms: Option<i64>,
    /// When the lasting breaches were last logged.
    reminded_ms: i64,
    completeness_reminded_ms: i64,
}

/// One table's SLA measurements and breach state, fed by its pipeline, judged every second
/// by [`SlaTracker::check`] (from [`crate::sla_watch`]) and read by [`SlaTracker::report`].
#[derive(Debug)]
pub struct SlaTracker {
    table: String,
    terms: SlaTerms,
    seen: Mutex<Seen>,
}

/// Freshness as judged now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FreshnessReport {
    /// `sla.freshness`.
    pub sla_seconds: f64,
    /// How far past it counts as a breach.
    pub tolerance_seconds: f64,
    /// Age of the oldest thing consumers cannot see yet (`now − fresh_as_of`).
    pub lag_seconds: f64,
    /// The table holds everything the topic held at this instant.
    pub fresh_as_of: String,
    /// Age of the oldest record consumed and not committed yet.
    pub oldest_uncommitted_seconds: Option<f64>,
    /// Age of the newest record committed by this process (by its Kafka timestamp): on a
    /// topic that goes quiet it grows although the table is fresh.
    pub newest_committed_seconds: Option<f64>,
    /// Whether the lag is past the SLA plus the tolerance.
    pub breached: bool,
    /// Since when (as this process saw it).
    pub breached_since: Option<String>,
    /// What holds the table back, when something does.
    pub reason: Option<String>,
}

/// Completeness as judged now (`sla.completeness = "watermark"` only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletenessReport {
    /// What the table last declared complete through.
    pub complete_through: Option<String>,
    /// The event-time watermark it was derived from (it moves only with events).
    pub watermark: Option<String>,
    /// `now − complete_through`.
    pub lag_seconds: Option<f64>,
    /// With events on time, complete-through is at least this.
    pub expected_through: String,
    /// Whether complete-through is short of it.
    pub breached: bool,
    /// Since when (as this process saw it).
    pub breached_since: Option<String>,
}

/// Dead letters among the records committed in the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetterRate {
    /// The window's length.
    pub window_seconds: f64,
    /// Records committed in it (rows, dead letters and ignored tombstones).
    pub records: u64,
    /// Dead letters among them.
    pub dead_letters: u64,
    /// `dead_letters / records` (0 without records).
    pub share: f64,
    /// Dead letters per minute.
    pub per_minute: f64,
}

/// Commit latency in the window (time from the start of a flush to its commit).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommitLatency {
    /// Commits in the window.
    pub commits: usize,
    /// The last one's in the window.
    pub last_seconds: Option<f64>,
    /// The slowest in the window.
    pub max_seconds: Option<f64>,
    /// When the last commit of this process was made.
    pub last_commit: Option<String>,
}

/// Everything the SLA page says about a table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlaReport {
    /// `owner.team`.
    pub team: String,
    /// `owner.contact`.
    pub contact: String,
    /// Freshness.
    pub freshness: FreshnessReport,
    /// Completeness, when the contract promises it.
    pub completeness: Option<CompletenessReport>,
    /// Per Kafka partition: records the topic holds that the table does not.
    pub lag_records: BTreeMap<i32, i64>,
    /// The dead-letter rate.
    pub dead_letters: DeadLetterRate,
    /// Commit latency.
    pub commits: CommitLatency,
}

fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms).max(0) as f64 / 1000.0
}

fn instant_ms(ms: i64) -> String {
    format_instant(ms.saturating_mul(1000))
}

impl SlaTracker {
    /// A tracker for `table` under `terms`, started at `now_ms` (freshness is never claimed
    /// from before it).
    pub fn new(table: &str, terms: SlaTerms, now_ms: i64) -> Self {
        SlaTracker {
            table: table.to_string(),
            terms,
            seen: Mutex::new(Seen {
                started_ms: now_ms,
                reminded_ms: now_ms,
                ..Seen::default()
            }),
        }
    }

    /// The terms judged against.
    pub fn terms(&self) -> &SlaTerms {
        &self.terms
    }

    /// The state; a panic elsewhere while it was held left nothing half-done that matters
    /// more than going on measuring.
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in a look at the topic: each partition's ends as librdkafka last saw them, how
    /// far calve has read it (`read`, next offsets) and how many records of it the table lacks
    /// (`lag`). A partition of `partitions` librdkafka reports nothing of counts as not heard
    /// from.
    pub fn observe_read(
        &self,
        partitions: &[i32],
        ends: &BTreeMap<i32, PartitionEnds>,
        read: &BTreeMap<i32, i64>,
        lag: &BTreeMap<i32, i64>,
    ) {
        let mut s = self.seen();
        for p in partitions {
            s.heard_ms.entry(*p).or_insert(None);
        }
        for (p, e) in ends {
            s.heard_ms.insert(*p, e.heard_ms);
            let (Some(heard), Some(at)) = (e.heard_ms, read.get(p)) else {
                continue;
            };
            if *at >= e.end {
                let through = s.read_through_ms.entry(*p).or_insert(heard);
                *through = (*through).max(heard);
            }
        }
        s.lag.extend(lag.iter().map(|(p, n)| (*p, (*n).max(0))));
    }

    /// The table's pipeline opens again (after a failure or an approval): what the last one
    /// read and did not commit is read again, so it was not read through after all.
    pub fn reopened(&self) {
        let mut s = self.seen();
        if let Some(pending) = s.pending_since_ms {
            for at in s.read_through_ms.values_mut() {
                *at = (*at).min(pending);
            }
        }
    }

    /// Records were consumed at `now_ms` (the oldest uncommitted one's time is kept until a
    /// commit, across pipeline restarts: their records are read again).
    pub fn consumed(&self, now_ms: i64) {
        self.seen().pending_since_ms.get_or_insert(now_ms);
    }

    /// Since when (ms since the epoch) the table holds records it read and has not committed.
    pub fn pending_since_ms(&self) -> Option<i64> {
        self.seen().pending_since_ms
    }

    /// A commit at `now_ms` made everything consumed visible: `records` records, of which
    /// `dead_letters` went to the dead-letter table, in `took`; the newest had the Kafka
    /// timestamp `newest_ms`.
    pub fn committed(&self, now_ms: i64, records: u64, dead_letters: u64, took: Duration, newest_ms: Option<i64>) {
        let mut s = self.seen();
        s.pending_since_ms = None;
        s.last_commit_ms = Some(now_ms);
        s.newest_committed_ms = s.newest_committed_ms.max(newest_ms);
        s.commits.push_back(CommitSample {
            at_ms: now_ms,
            records,
            dead_letters,
            took,
        });
        while s.commits.front().is_some_and(|c| c.at_ms < now_ms - WINDOW_MS) {
            s.commits.pop_front();
        }
    }

    /// The Kafka timestamp (ms) of the newest record committed by this process.
    pub fn newest_committed_ms(&self) -> Option<i64> {
        self.seen().newest_committed_ms
    }

    /// The table published event-time marks: complete through `complete_us`, derived from
    /// the watermark `watermark_us` (µs since the epoch).
    pub fn event_time(&self, complete_us: Option<i64>, watermark_us: Option<i64>) {
        let mut s = self.seen();
        s.complete_through_us = s.complete_through_us.max(complete_us);
        s.watermark_us = s.watermark_us.max(watermark_us);
    }

    /// Judges the table at `now_ms`: logs a breach (with the owner's contact) when one begins,
    /// reminds while it lasts, logs the recovery, sets the SLA series, and returns the page.
    pub fn check(&self, now_ms: i64) -> SlaReport {
        let mut s = self.seen();
        let mut r = self.judge(&s, now_ms);
        self.track_freshness(&mut s, &mut r, now_ms);
        self.track_completeness(&mut s, &mut r, now_ms);
        let t = self.table.clone();
        gauge!("calve_sla_freshness_lag_seconds", "table" => t.clone()).set(r.freshness.lag_seconds);
        gauge!("calve_sla_freshness_breached", "table" => t.clone()).set(f64::from(u8::from(r.freshness.breached)));
        if let Some(c) = &r.completeness {
            if let Some(lag) = c.lag_seconds {
                gauge!("calve_sla_completeness_lag_seconds", "table" => t.clone()).set(lag);
            }
            gauge!("calve_sla_completeness_breached", "table" => t).set(f64::from(u8::from(c.breached)));
        }
        r
    }

    fn track_freshness(&self, s: &mut Seen, r: &mut SlaReport, now_ms: i64) {
        let f = &mut r.freshness;
        let (table, team, contact) = (&self.table, &self.terms.team, &self.terms.contact);
        let reason = f.reason.as_deref().unwrap_or("");
        // Over the SLA plus tolerance begins a breach, back within the SLA ends it: a table
        // whose commits take about the tolerance does not log a breach and a recovery a band.
        let recovered = f.lag_seconds <= f.sla_seconds;
        match (f.breached, s.freshness_breach_ms) {
            (true, None) => {
                s.freshness_breach_ms = Some(now_ms);
                s.reminded_ms = now_ms;
                tracing::error!(
                    table, owner = %team, contact = %contact, lag_s = f.lag_seconds, sla_s = f.sla_seconds,
                    "SLA BREACH: table {table} is {:.0} s behind, its freshness SLA is {} s: {reason}; owner {team}, contact {contact}",
                    f.lag_seconds, f.sla_seconds
                );
            }
            (true, Some(_)) if now_ms - s.reminded_ms >= REMIND_EVERY_MS => {
                s.reminded_ms = now_ms;
                tracing::error!(
                    table, owner = %team, contact = %contact, lag_s = f.lag_seconds,
                    "SLA BREACH continues: table {table} is {:.0} s behind: {reason}; contact {contact}",
                    f.lag_seconds
                );
            }
            (false, Some(since)) if recovered => {
                s.freshness_breach_ms = None;
                tracing::info!(
                    table, owner = %team, contact = %contact, lag_s = f.lag_seconds, breach_s = seconds_between(since, now_ms),
                    "SLA recovered: table {table} is fresh again ({:.0} s behind, SLA {} s) after {:.0} s in breach; contact {contact}",
                    f.lag_seconds, f.sla_seconds, seconds_between(since, now_ms)
                );
            }
            _ => {}
        }
        f.breached = s.freshness_breach_ms.is_some() || f.breached;
        f.breached_since = s.freshness_breach_ms.map(instant_ms);
    }

    fn track_completeness(&self, s: &mut Seen, r: &mut SlaReport, now_ms: i64) {
        let Some(c) = r.completeness.as_mut() else {
            return;
        };
        let (table, contact) = (&self.table, &self.terms.contact);
        let through = c.complete_through.as_deref().unwrap_or("nothing");
        let watermark = c.watermark.as_deref().unwrap_or("none yet");
        let remind = now_ms - s.completeness_reminded_ms >= REMIND_EVERY_MS;
        match (c.breached, s.completeness_breach_ms) {
            (true, since) if since.is_none() || remind => {
                s.completeness_breach_ms = since.or(Some(now_ms));
                s.completeness_reminded_ms = now_ms;
                tracing::error!(
                    table, owner = %self.terms.team, contact = %contact,
                    "SLA BREACH{}: table {table} is complete through {through}, with events on time it would be through {} \
                     (the event-time watermark, which moves only with events, is at {watermark}); owner {}, contact {contact}",
                    if since.is_some() { " continues" } else { "" },
                    c.expected_through, self.terms.team
                );
            }
            (false, Some(since)) => {
                s.completeness_breach_ms = None;
                tracing::info!(
                    table, contact = %contact,
                    "SLA recovered: table {table} is complete through {through} after {:.0} s in breach; contact {contact}",
                    seconds_between(since, now_ms)
                );
            }
            _ => {}
        }
        c.breached_since = s.completeness_breach_ms.map(instant_ms);
    }

    /// The page at `now_ms`, for `/status`: judged afresh, with the breaches as the last
    /// [`SlaTracker::check`] recorded them (reading it logs nothing and changes nothing).
    pub fn report(&self, now_ms: i64) -> SlaReport {
        let s = self.seen();
        let mut r = self.judge(&s, now_ms);
        r.freshness.breached |= s.freshness_breach_ms.is_some();
        r.freshness.breached_since = s.freshness_breach_ms.map(instant_ms);
        if let Some(c) = r.completeness.as_mut() {
            c.breached_since = s.completeness_breach_ms.map(instant_ms);
        }
        r
    }

    /// The page at `now_ms` from what `s` holds (no breach bookkeeping).
    fn judge(&self, s: &Seen, now_ms: i64) -> SlaReport {
        SlaReport {
            team: self.terms.team.clone(),
            contact: self.terms.contact.clone(),
            freshness: self.freshness(s, now_ms),
            completeness: self.completeness(s, now_ms),
            lag_records: s.lag.clone(),
            dead_letters: dead_letter_rate(s, now_ms),
            commits: commit_latency(s, now_ms),
        }
    }

    fn freshness(&self, s: &Seen, now_ms: i64) -> FreshnessReport {
        // The partition read through least recently; one never read to its end counts from
        // the start of this process (what came before is unknown here).
        let oldest_read = s
            .heard_ms
            .keys()
            .map(|p| (Some(*p), s.read_through_ms.get(p).copied().unwrap_or(s.started_ms)))
            .min_by_key(|(_, at)| *at)
            .unwrap_or((None, s.started_ms));
        let fresh_as_of = s.pending_since_ms.map_or(oldest_read.1, |p| p.min(oldest_read.1));
        let lag_seconds = seconds_between(fresh_as_of, now_ms);
        let sla = self.terms.freshness.as_secs_f64();
        let tolerance = self.terms.tolerance().as_secs_f64();
        let breached = lag_seconds > sla + tolerance;
        let reason = (lag_seconds > sla).then(|| self.reason(s, oldest_read, now_ms));
        FreshnessReport {
            sla_seconds: sla,
            tolerance_seconds: tolerance,
            lag_seconds,
            fresh_as_of: instant_ms(fresh_as_of),
            oldest_uncommitted_seconds: s.pending_since_ms.map(|p| seconds_between(p, now_ms)),
            newest_committed_seconds: s.newest_committed_ms.map(|n| seconds_between(n, now_ms)),
            breached,
            breached_since: None,
            reason,
        }
    }

    /// What holds the table back: a commit that does not come, a broker that does not
    /// answer, records not read yet.
    fn reason(&self, s: &Seen, (partition, read_ms): (Option<i32>, i64), now_ms: i64) -> String {
        let since_commit = match s.last_commit_ms {
            Some(at) => format!("the last commit was {:.0} s ago", seconds_between(at, now_ms)),
            None => "this process has not committed yet".into(),
        };
        if let Some(pending) = s.pending_since_ms.filter(|p| *p <= read_ms) {
            return format!(
                "records read {:.0} s ago are not committed yet ({since_commit})",
                seconds_between(pending, now_ms)
            );
        }
        let Some(p) = partition else {
            return "calve has not seen the topic's partitions yet (the broker has not answered)".into();
        };
        let tolerance_ms = self.terms.tolerance().as_millis() as i64;
        match s.heard_ms.get(&p).copied().flatten() {
            None => format!("the broker leading partition {p} is not connected; nothing shows the table holds what the topic has"),
            Some(heard) if now_ms - heard > SILENT_MS + tolerance_ms => format!(
                "the broker leading partition {p} has not answered for {:.0} s; nothing shows the table holds what the topic has",
                seconds_between(heard, now_ms)
            ),
            Some(_) => format!(
                "partition {p}: {} records in Kafka are not in the table; calve last read it to its end {:.0} s ago ({since_commit})",
                s.lag.get(&p).copied().unwrap_or(0),
                seconds_between(read_ms, now_ms)
            ),
        }
    }

    fn completeness(&self, s: &Seen, now_ms: i64) -> Option<CompletenessReport> {
        let (grain, lateness) = self.terms.completeness?;
        let behind = self.terms.freshness + lateness + self.terms.tolerance();
        let behind_us = i64::try_from(behind.as_micros()).unwrap_or(i64::MAX);
        let expected = grain.start_of(now_ms.saturating_mul(1000).saturating_sub(behind_us));
        let through = s.complete_through_us;
        Some(CompletenessReport {
            complete_through: through.map(format_instant),
            watermark: s.watermark_us.map(format_instant),
            lag_seconds: through.map(|c| seconds_between(c / 1000, now_ms)),
            expected_through: format_instant(expected),
            // A table that never saw an event declares nothing and misses nothing.
            breached: through.is_some_and(|c| c < expected),
            breached_since: None,
        })
    }
}

/// Over the window, or since the process started when that is shorter.
fn dead_letter_rate(s: &Seen, now_ms: i64) -> DeadLetterRate {
    let window_ms = (now_ms - s.started_ms).clamp(1_000, WINDOW_MS);
    let in_window = || s.commits.iter().filter(|c| c.at_ms >= now_ms - window_ms);
    let records: u64 = in_window().map(|c| c.records).sum();
    let dead_letters: u64 = in_window().map(|c| c.dead_letters).sum();
    DeadLetterRate {
        window_seconds: window_ms as f64 / 1000.0,
        records,
        dead_letters,
        share: match records {
            0 => 0.0,
            n => dead_letters as f64 / n as f64,
        },
        per_minute: dead_letters as f64 / (window_ms as f64 / 60_000.0),
    }
}

fn commit_latency(s: &Seen, now_ms: i64) -> CommitLatency {
    let in_window = || s.commits.iter().filter(|c| c.at_ms >= now_ms - WINDOW_MS);
    CommitLatency {
        commits: in_window().count(),
        last_seconds: in_window().next_back().map(|c| c.took.as_secs_f64()),
        max_seconds: in_window().map(|c| c.took.as_secs_f64()).reduce(f64::max),
        last_commit: s.last_commit_ms.map(instant_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn tracker(freshness_s: u64) -> SlaTracker {
        SlaTracker::new(
            "shop.orders",
            SlaTerms::freshness_only(Duration::from_secs(freshness_s)),
            T0,
        )
    }

    fn ends(end: i64, heard_ms: Option<i64>) -> BTreeMap<i32, PartitionEnds> {
        BTreeMap::from([(0, PartitionEnds { low: 0, end, heard_ms })])
    }

    /// Partition 0 ends at `end`, its broker was heard at `heard_ms`, calve has read to
    /// `read`, and the table lacks `lag` records of it.
    fn look(t: &SlaTracker, end: i64, heard_ms: i64, read: i64, lag: i64) {
        t.observe_read(
            &[0],
            &ends(end, Some(heard_ms)),
            &BTreeMap::from([(0, read)]),
            &BTreeMap::from([(0, lag)]),
        );
    }

    #[test]
    fn a_table_read_to_the_end_and_committed_is_fresh() {
        let t = tracker(10);
        look(&t, 50, T0 + 5_000, 50, 0);
        let r = t.check(T0 + 6_000);
        assert_eq!(r.freshness.lag_seconds, 1.0);
        assert!(!r.freshness.breached && r.freshness.reason.is_none(), "{r:?}");
        assert_eq!(r.lag_records, BTreeMap::from([(0, 0)]));
    }

    #[test]
    fn records_that_wait_for_a_commit_breach_it_and_the_commit_recovers() {
        let t = tracker(10);
        look(&t, 50, T0, 50, 0);
        t.consumed(T0 + 1_000);
        // Heard from the broker all along, read to the end: only the commit is missing.
        look(&t, 60, T0 + 13_000, 60, 0);
        let within = t.check(T0 + 12_900);
        assert!(
            !within.freshness.breached,
            "10 s + 2 s tolerance is not past: {within:?}"
        );
        let r = t.check(T0 + 13_100);
        assert!(r.freshness.breached && r.freshness.breached_since.is_some(), "{r:?}");
        assert_eq!(r.freshness.oldest_uncommitted_seconds, Some(12.1));
        let why = r.freshness.reason.unwrap();
        assert!(why.contains("records read 12 s ago are not committed yet"), "{why}");
        t.committed(T0 + 13_500, 10, 0, Duration::from_millis(400), Some(T0 + 1_000));
        let after = t.check(T0 + 13_600);
        assert!(
            !after.freshness.breached && after.freshness.breached_since.is_none(),
            "{after:?}"
        );
        assert_eq!(after.commits.last_seconds, Some(0.4));
        assert_eq!(after.freshness.newest_committed_seconds, Some(12.6));
    }

    #[test]
    fn a_broker_that_stops_answering_is_a_breach_named_as_such() {
        let t = tracker(5);
        look(&t, 50, T0 + 1_000, 50, 0);
        // librdkafka keeps reporting the old ends, heard at the same instant.
        look(&t, 50, T0 + 1_000, 50, 0);
        let r = t.check(T0 + 9_000);
        assert!(r.freshness.breached, "{r:?}");
        let why = r.freshness.reason.unwrap();
        assert!(why.contains("partition 0 has not answered for 8 s"), "{why}");
    }

    #[test]
    fn a_backlog_is_a_breach_once_the_table_was_last_read_through_too_long_ago() {
        let t = tracker(5);
        look(&t, 50, T0 + 1_000, 50, 0);
        look(&t, 900, T0 + 9_000, 400, 500);
        let r = t.check(T0 + 9_000);
        assert!(r.freshness.breached, "{r:?}");
        assert_eq!(r.freshness.lag_seconds, 8.0);
        let why = r.freshness.reason.unwrap();
        assert!(
            why.contains("partition 0: 500 records in Kafka are not in the table"),
            "{why}"
        );
    }

    #[test]
    fn freshness_is_never_claimed_from_before_the_process_started() {
        let t = tracker(5);
        let r = t.check(T0 + 8_000);
        assert!(r.freshness.breached && r.freshness.lag_seconds == 8.0, "{r:?}");
        assert!(r.freshness.reason.unwrap().contains("has not answered"));
    }

    #[test]
    fn completeness_is_breached_when_complete_through_stops_short_of_on_time_events() {
        let terms = SlaTerms {
            completeness: Some((PartitionGrain::Day, Duration::from_secs(3600))),
            ..SlaTerms::freshness_only(Duration::from_secs(60))
        };
        let t = SlaTracker::new("t", terms, T0);
        let day = 86_400_000_i64;
        let now = T0 + 2 * day + 2 * 3_600_000; // 2026-01-03T02:00Z
        t.event_time(Some((T0 + 2 * day) * 1000), None);
        let ok = t.check(now).completeness.unwrap();
        assert!(!ok.breached, "{ok:?}");
        assert_eq!(ok.expected_through, "2026-01-03T00:00:00.000000Z");
        let t = SlaTracker::new(
            "t",
            SlaTerms {
                completeness: Some((PartitionGrain::Day, Duration::from_secs(3600))),
                ..SlaTerms::freshness_only(Duration::from_secs(60))
            },
            T0,
        );
        t.event_time(Some((T0 + day) * 1000), Some((T0 + 2 * day) * 1000));
        let late = t.check(now).completeness.unwrap();
        assert!(late.breached && late.breached_since.is_some(), "{late:?}");
        // Nothing declared (no events yet) misses nothing.
        let t = SlaTracker::new(
            "t",
            SlaTerms {
                completeness: Some((PartitionGrain::Day, Duration::from_secs(3600))),
                ..SlaTerms::freshness_only(Duration::from_secs(60))
            },
            T0,
        );
        assert!(!t.check(now).completeness.unwrap().breached);
    }

    #[test]
    fn the_dead_letter_rate_covers_the_window_or_the_process_so_far() {
        let t = tracker(60);
        t.committed(T0 + 30_000, 100, 5, Duration::from_millis(10), None);
        t.committed(T0 + 60_000, 100, 0, Duration::from_millis(30), None);
        let r = t.check(T0 + 60_000);
        assert_eq!(r.dead_letters.records, 200);
        assert_eq!(r.dead_letters.dead_letters, 5);
        assert_eq!(r.dead_letters.share, 0.025);
        assert_eq!(r.dead_letters.per_minute, 5.0);
        assert_eq!(r.commits.max_seconds, Some(0.03));
        // Ten minutes on, both commits have left the five-minute window.
        let later = t.check(T0 + 11 * 60_000);
        assert_eq!(later.dead_letters.records, 0);
    }

    #[test]
    fn a_breach_ends_only_back_within_the_sla_and_a_restart_forgets_what_it_had_not_committed() {
        let t = tracker(10);
        look(&t, 50, T0, 50, 0);
        assert!(t.check(T0 + 12_500).freshness.breached);
        // 11 s behind: under SLA + tolerance, not yet within the SLA: still in breach.
        look(&t, 50, T0 + 1_500, 50, 0);
        let r = t.check(T0 + 12_500);
        assert!(r.freshness.breached && r.freshness.breached_since.is_some(), "{r:?}");
        assert_eq!(
            t.report(T0 + 12_500).freshness.breached_since,
            r.freshness.breached_since
        );
        look(&t, 50, T0 + 12_000, 50, 0);
        assert!(!t.check(T0 + 12_500).freshness.breached);

        // Read at 13 s, read through at 20 s, never committed; the pipeline fails and reopens.
        t.consumed(T0 + 13_000);
        look(&t, 60, T0 + 20_000, 60, 0);
        t.reopened();
        // The new pipeline commits what it read again: the table is fresh only as of 13 s.
        t.committed(T0 + 21_000, 10, 0, Duration::from_millis(5), None);
        assert_eq!(t.report(T0 + 21_000).freshness.lag_seconds, 8.0);
    }

    #[test]
    fn a_partition_librdkafka_knows_nothing_of_holds_freshness_back() {
        let t = tracker(5);
        t.observe_read(
            &[0, 1],
            &ends(50, Some(T0 + 7_000)),
            &BTreeMap::from([(0, 50)]),
            &BTreeMap::new(),
        );
        let r = t.check(T0 + 8_000);
        assert!(r.freshness.breached, "{r:?}");
        assert!(r.freshness.reason.unwrap().contains("partition 1 is not connected"));
    }
}
