//! What one table has done since the process started, and how it is doing now: the Prometheus
//! series `/metrics` serves (see [`crate::http`]) and the state `/readyz` judges. One place
//! records each event, so the metrics and the health endpoint cannot disagree.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calve_contract::Contract;
use calve_maintain::CycleReport;
use calve_table::commit::event_time::EventTimeMarks;
use calve_table::commit::restore::{add_unknown_fields, OTHER_UNKNOWN_FIELDS};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::health::TableState;
use crate::sla::{SlaTerms, SlaTracker};

/// Every table's statistics, shared by the tables' tasks and the HTTP endpoint.
#[derive(Debug, Clone, Default)]
pub struct Observed(Arc<BTreeMap<String, Arc<TableStats>>>);

impl Observed {
    /// Fresh statistics for each of `contracts`' tables.
    pub fn of(contracts: &[Contract]) -> Self {
        Observed(Arc::new(
            contracts
                .iter()
                .map(|c| (c.table.name.clone(), Arc::new(TableStats::of(c))))
                .collect(),
        ))
    }

    /// The statistics of `table`.
    pub fn get(&self, table: &str) -> Option<&Arc<TableStats>> {
        self.0.get(table)
    }

    /// Every table's, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<TableStats>)> {
        self.0.iter()
    }
}

/// Counters of one table since the process started.
#[derive(Debug)]
pub struct TableStats {
    /// The table's name (the `table` label of its series).
    pub table: String,
    /// Fields committed records carried that the table has no column for, by path.
    pub unknown_fields: Mutex<BTreeMap<String, u64>>,
    /// The SLA measurements and breach state (the newest committed record's timestamp too).
    pub sla: SlaTracker,
    state: Mutex<(TableState, Instant)>,
    series: Series,
}

/// The table's Prometheus series (handles: recording is an atomic add, no label lookup).
#[derive(Debug)]
struct Series {
    consumed: Counter,
    consumed_bytes: Counter,
    rows: Counter,
    ignored: Counter,
    files: Counter,
    commits: Counter,
    commit_seconds: Histogram,
    failures: Counter,
    newest_committed: Gauge,
    freshness: Gauge,
    buffered_records: Gauge,
    buffered_dead_letters: Gauge,
    buffered_bytes: Gauge,
    held: Gauge,
    lag: Mutex<BTreeMap<i32, Gauge>>,
}

impl Series {
    fn new(table: &str) -> Self {
        let t = table.to_string();
        Series {
            consumed: counter!("calve_records_consumed_total", "table" => t.clone()),
            consumed_bytes: counter!("calve_record_bytes_consumed_total", "table" => t.clone()),
            rows: counter!("calve_rows_committed_total", "table" => t.clone()),
            ignored: counter!("calve_tombstones_ignored_total", "table" => t.clone()),
            files: counter!("calve_data_files_committed_total", "table" => t.clone()),
            commits: counter!("calve_commits_total", "table" => t.clone()),
            commit_seconds: histogram!("calve_commit_duration_seconds", "table" => t.clone()),
            failures: counter!("calve_pipeline_failures_total", "table" => t.clone()),
            newest_committed: gauge!("calve_newest_committed_record_timestamp_seconds", "table" => t.clone()),
            freshness: gauge!("calve_freshness_seconds", "table" => t.clone()),
            buffered_records: gauge!("calve_buffered_records", "table" => t.clone()),
            buffered_dead_letters: gauge!("calve_buffered_dead_letters", "table" => t.clone()),
            buffered_bytes: gauge!("calve_buffered_bytes", "table" => t.clone()),
            held: gauge!("calve_schema_held", "table" => t),
            lag: Mutex::new(BTreeMap::new()),
        }
    }
}

/// What a commit committed, for [`TableStats::record_commit`].
#[derive(Debug, Default)]
pub(crate) struct Committed<'a> {
    /// Records consumed that it made visible (rows, dead letters, ignored tombstones).
    pub records: u64,
    pub rows: u64,
    /// Dead-letter kinds of the dead letters committed with it.
    pub dead_letter_kinds: Vec<&'a str>,
    pub ignored: u64,
    pub files: u64,
    pub took: Duration,
    /// Kafka timestamp (ms) of the newest record it committed.
    pub newest_ms: Option<i64>,
}

impl TableStats {
    /// The statistics of `table`, whose contract's freshness band is `freshness`; its state
    /// starts as [`TableState::Starting`].
    pub fn new(table: &str, freshness: Duration) -> Self {
        Self::with_terms(table, SlaTerms::freshness_only(freshness))
    }

    /// The statistics of `contract`'s table, judged against its `[sla]` with its owner named.
    pub fn of(contract: &Contract) -> Self {
        Self::with_terms(&contract.table.name, SlaTerms::of(contract))
    }

    fn with_terms(table: &str, terms: SlaTerms) -> Self {
        let stats = TableStats {
            table: table.to_string(),
            unknown_fields: Mutex::new(BTreeMap::new()),
            sla: SlaTracker::new(table, terms, chrono::Utc::now().timestamp_millis()),
            state: Mutex::new((TableState::Starting, Instant::now())),
            series: Series::new(table),
        };
        stats.set_state(TableState::Starting);
        stats
    }

    pub(crate) fn record_consumed(&self, records: u64, bytes: u64) {
        self.series.consumed.increment(records);
        self.series.consumed_bytes.increment(bytes);
    }

    /// Counts offsets of `partition` that Kafka deleted before the table read them.
    pub(crate) fn record_lost(&self, partition: i32, offsets: u64) {
        counter!("calve_lost_records_total", "table" => self.table.clone(), "partition" => partition.to_string())
            .increment(offsets);
    }

    /// Whether committed records already carried `path` (so it was reported once).
    pub(crate) fn knows_unknown_field(&self, path: &str) -> bool {
        self.unknown_fields.lock().is_ok_and(|u| u.contains_key(path))
    }

    /// Counts fields committed records carried without a column. A path gets its own series
    /// only while the process-wide count holds it (at most `UNKNOWN_FIELDS_CAP` paths); later
    /// ones count under `OTHER_UNKNOWN_FIELDS`, so producers that use keys as field names
    /// cannot grow the series without bound.
    pub(crate) fn record_unknown_fields(&self, committed: &BTreeMap<String, u64>) {
        let Ok(mut u) = self.unknown_fields.lock() else {
            return;
        };
        add_unknown_fields(&mut u, committed);
        for (path, n) in committed {
            let field = match u.contains_key(path) {
                true => path.clone(),
                false => OTHER_UNKNOWN_FIELDS.to_string(),
            };
            counter!("calve_unknown_field_values_total", "table" => self.table.clone(), "field" => field).increment(*n);
        }
    }

    pub(crate) fn record_commit(&self, c: &Committed<'_>) {
        let s = &self.series;
        s.rows.increment(c.rows);
        s.ignored.increment(c.ignored);
        s.files.increment(c.files);
        s.commits.increment(1);
        s.commit_seconds.record(c.took.as_secs_f64());
        let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
        for k in &c.dead_letter_kinds {
            *kinds.entry(k).or_default() += 1;
        }
        for (kind, n) in kinds {
            counter!("calve_dead_letters_total", "table" => self.table.clone(), "kind" => kind.to_string())
                .increment(n);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let dead = c.dead_letter_kinds.len() as u64;
        self.sla.committed(now, c.records, dead, c.took, c.newest_ms);
        if let (Some(_), Some(newest)) = (c.newest_ms, self.newest_committed_ms()) {
            s.newest_committed.set(newest as f64 / 1000.0);
        }
        self.refresh(now);
    }

    /// What waits for the next commit: records consumed, the dead letters among them, and the
    /// memory rows and dead letters hold.
    pub(crate) fn record_buffered(&self, records: u64, dead_letters: u64, bytes: u64) {
        self.series.buffered_records.set(records as f64);
        self.series.buffered_dead_letters.set(dead_letters as f64);
        self.series.buffered_bytes.set(bytes as f64);
    }

    /// Records per partition between the end of the topic (the last stable offset librdkafka
    /// last saw) and the table's restore point: what Kafka holds that the table does not yet.
    pub(crate) fn record_lag(&self, lag: impl IntoIterator<Item = (i32, i64)>) {
        let Ok(mut gauges) = self.series.lag.lock() else {
            return;
        };
        for (partition, records) in lag {
            gauges
                .entry(partition)
                .or_insert_with(|| {
                    gauge!("calve_consumer_lag_records", "table" => self.table.clone(), "partition" => partition.to_string())
                })
                .set(records.max(0) as f64);
        }
    }

    /// Records a finished maintenance cycle of the table (or of its dead-letter table).
    pub(crate) fn record_maintenance(&self, r: &CycleReport) {
        let labels = [("table", self.table.clone()), ("of", r.table.clone())];
        counter!("calve_maintenance_cycles_total", &labels).increment(1);
        counter!("calve_maintenance_jobs_total", &labels).increment(r.jobs_run as u64);
        counter!("calve_maintenance_bytes_rewritten_total", &labels).increment(r.bytes_in);
        counter!("calve_maintenance_snapshots_expired_total", &labels).increment(r.snapshots_expired as u64);
        counter!("calve_maintenance_orphans_removed_total", &labels).increment(r.orphans_removed as u64);
        gauge!("calve_maintenance_backlog_bytes", &labels).set(r.after.compaction_bytes as f64);
        gauge!("calve_maintenance_backlog_jobs", &labels).set(r.after.compaction_jobs as f64);
        gauge!("calve_maintenance_small_files", &labels).set(r.after.small_files as f64);
    }

    /// Records the event-time progress a commit published.
    pub(crate) fn record_event_time(&self, marks: &EventTimeMarks) {
        let t = self.table.clone();
        let seconds = |us: i64| us as f64 / 1e6;
        if let Some(w) = marks.watermark_us {
            gauge!("calve_event_time_watermark_seconds", "table" => t.clone()).set(seconds(w));
        }
        if let Some(c) = marks.complete_through_us {
            gauge!("calve_complete_through_seconds", "table" => t.clone()).set(seconds(c));
        }
        self.sla.event_time(marks.complete_through_us, marks.watermark_us);
        counter!("calve_partitions_reopened_total", "table" => t).increment(marks.reopened.len() as u64);
    }

    /// Records the key index's size after a commit of a keyed table.
    pub(crate) fn record_key_index(&self, keys: usize, memory_bytes: usize, spill_bytes: u64) {
        let t = self.table.clone();
        gauge!("calve_key_index_keys", "table" => t.clone()).set(keys as f64);
        gauge!("calve_key_index_memory_bytes", "table" => t.clone()).set(memory_bytes as f64);
        gauge!("calve_key_index_spill_bytes", "table" => t).set(spill_bytes as f64);
    }

    /// Moves the table to `state` (a failure also counts in `calve_pipeline_failures_total`).
    pub(crate) fn set_state(&self, state: TableState) {
        if matches!(state, TableState::Failing { .. }) {
            self.series.failures.increment(1);
        }
        self.series
            .held
            .set(f64::from(u8::from(matches!(state, TableState::Held { .. }))));
        for name in TableState::NAMES {
            gauge!("calve_table_state", "table" => self.table.clone(), "state" => name)
                .set(f64::from(u8::from(state.name() == name)));
        }
        if let Ok(mut s) = self.state.lock() {
            *s = (state, Instant::now());
        }
    }

    /// Marks the table running, unless it is already (cheap enough for every poll).
    pub(crate) fn mark_running(&self) {
        let running = self.state.lock().is_ok_and(|s| s.0 == TableState::Running);
        if !running {
            self.set_state(TableState::Running);
        }
    }

    /// The table's state and how long it has been in it (a hold: since it began, which may
    /// be before this process started).
    pub fn state(&self) -> (TableState, Duration) {
        match self.state.lock() {
            Ok(s) => {
                let for_ = match &s.0 {
                    TableState::Held { since_ms, .. } => {
                        let ms = chrono::Utc::now().timestamp_millis() - since_ms;
                        Duration::from_millis(ms.max(0) as u64)
                    }
                    _ => s.1.elapsed(),
                };
                (s.0.clone(), for_)
            }
            Err(_) => (
                TableState::Failing {
                    failures: 0,
                    error: "state unreadable".into(),
                },
                Duration::ZERO,
            ),
        }
    }

    /// The Kafka timestamp (ms) of the newest record committed to the table by this process.
    pub fn newest_committed_ms(&self) -> Option<i64> {
        self.sla.newest_committed_ms()
    }

    /// The contract's freshness band: how long a hold may last before the table is unready.
    pub fn freshness(&self) -> Duration {
        self.sla.terms().freshness
    }

    /// Brings the series that age on their own up to `now_ms` (called before each scrape).
    pub fn refresh(&self, now_ms: i64) {
        if let Some(newest) = self.newest_committed_ms() {
            self.series.freshness.set((now_ms - newest).max(0) as f64 / 1000.0);
        }
    }
}

/// The commit-duration buckets (seconds): from a fast local commit to a slow remote catalog.
pub const COMMIT_SECONDS_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Gives every series its help text (once, when the exporter is installed).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "calve_records_consumed_total",
        Unit::Count,
        "Records read from Kafka, replays after a pipeline restart included."
    );
    describe_gauge!(
        "calve_event_time_watermark_seconds",
        Unit::Seconds,
        "The table's event-time watermark as last committed (seconds since the epoch)."
    );
    describe_gauge!(
        "calve_complete_through_seconds",
        Unit::Seconds,
        "Every event-time partition ending at or before this instant is complete (sla.completeness = \"watermark\")."
    );
    describe_counter!(
        "calve_partitions_reopened_total",
        Unit::Count,
        "Event-time partitions declared complete that late events landed in afterwards."
    );
    describe_gauge!(
        "calve_sla_freshness_lag_seconds",
        Unit::Seconds,
        "Age of the oldest thing consumers cannot see yet: now minus the instant through which the table holds everything the topic held."
    );
    describe_gauge!(
        "calve_sla_freshness_breached",
        Unit::Count,
        "1 while the freshness lag is past sla.freshness plus its tolerance (max(2 s, SLA/10))."
    );
    describe_gauge!(
        "calve_sla_completeness_lag_seconds",
        Unit::Seconds,
        "Now minus calve.complete-through (sla.completeness = \"watermark\")."
    );
    describe_gauge!(
        "calve_sla_completeness_breached",
        Unit::Count,
        "1 while complete-through is short of where on-time events would have brought it."
    );
    describe_counter!(
        "calve_lost_records_total",
        Unit::Count,
        "Offsets Kafka deleted (retention) before the table read them, skipped by this process's commits."
    );
    describe_counter!(
        "calve_record_bytes_consumed_total",
        Unit::Bytes,
        "Bytes of record values read from Kafka."
    );
    describe_counter!(
        "calve_rows_committed_total",
        Unit::Count,
        "Rows committed to the table by this process."
    );
    describe_counter!(
        "calve_dead_letters_total",
        Unit::Count,
        "Records committed to the dead-letter table, by kind."
    );
    describe_counter!(
        "calve_tombstones_ignored_total",
        Unit::Count,
        "Tombstones ignored as the contract says."
    );
    describe_counter!(
        "calve_data_files_committed_total",
        Unit::Count,
        "Data files committed to the table."
    );
    describe_counter!(
        "calve_commits_total",
        Unit::Count,
        "Commits of consumed records (rows, dead letters and restore point)."
    );
    describe_histogram!(
        "calve_commit_duration_seconds",
        Unit::Seconds,
        "Time from the start of a flush to its commit: writing files and committing them."
    );
    describe_counter!(
        "calve_commit_conflicts_total",
        Unit::Count,
        "Commit attempts that lost the catalog's compare-and-swap and were retried."
    );
    describe_counter!(
        "calve_pipeline_failures_total",
        Unit::Count,
        "Pipeline failures the supervisor reopened the table after."
    );
    describe_gauge!(
        "calve_consumer_lag_records",
        Unit::Count,
        "Records in the partition (up to its last stable offset) that the table does not hold yet."
    );
    describe_gauge!(
        "calve_newest_committed_record_timestamp_seconds",
        Unit::Seconds,
        "Kafka timestamp of the newest record this process committed."
    );
    describe_gauge!(
        "calve_freshness_seconds",
        Unit::Seconds,
        "Age of the newest record this process committed, at scrape time."
    );
    describe_gauge!(
        "calve_buffered_records",
        Unit::Count,
        "Records consumed and waiting for the next commit."
    );
    describe_gauge!(
        "calve_buffered_dead_letters",
        Unit::Count,
        "Dead letters waiting for the next commit (they count toward memory too)."
    );
    describe_gauge!("calve_buffered_bytes", Unit::Bytes, "Memory held by rows and dead letters waiting for the next commit (the size trigger commits when their estimated Parquet bytes reach the target file size, or at 8 times it).");
    describe_gauge!(
        "calve_schema_held",
        Unit::Count,
        "1 while the table is held for its approver (on_breaking = \"hold\")."
    );
    describe_gauge!(
        "calve_table_state",
        Unit::Count,
        "1 for the state the table is in (starting, running, failing, held, stopped, done)."
    );
    describe_counter!(
        "calve_unknown_field_values_total",
        Unit::Count,
        "Values of fields the table has no column for, by field path (not stored)."
    );
    describe_gauge!("calve_key_index_keys", Unit::Count, "Keys in a keyed table's index.");
    describe_gauge!(
        "calve_key_index_memory_bytes",
        Unit::Bytes,
        "Memory held by a keyed table's index."
    );
    describe_gauge!(
        "calve_key_index_spill_bytes",
        Unit::Bytes,
        "Bytes a keyed table's index spilled to local disk."
    );
    describe_counter!(
        "calve_maintenance_cycles_total",
        Unit::Count,
        "Maintenance cycles run (label `of`: the table maintained, the dead-letter table included)."
    );
    describe_counter!(
        "calve_maintenance_jobs_total",
        Unit::Count,
        "Compaction jobs committed by maintenance."
    );
    describe_counter!(
        "calve_maintenance_bytes_rewritten_total",
        Unit::Bytes,
        "Bytes compaction read and rewrote."
    );
    describe_counter!(
        "calve_maintenance_snapshots_expired_total",
        Unit::Count,
        "Snapshots expired by maintenance."
    );
    describe_counter!(
        "calve_maintenance_orphans_removed_total",
        Unit::Count,
        "Orphan files removed by maintenance."
    );
    describe_gauge!(
        "calve_maintenance_backlog_bytes",
        Unit::Bytes,
        "Bytes compaction would still rewrite after the last cycle (the compaction debt)."
    );
    describe_gauge!(
        "calve_maintenance_backlog_jobs",
        Unit::Count,
        "Compaction jobs left after the last cycle."
    );
    describe_gauge!(
        "calve_maintenance_small_files",
        Unit::Count,
        "Live data files under 3/4 of the target size after the last cycle."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn a_commit_shows_in_the_prometheus_page() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let t = TableStats::new("shop.orders", Duration::from_secs(60));
            t.record_consumed(12, 1_200);
            t.record_commit(&Committed {
                records: 12,
                rows: 9,
                dead_letter_kinds: vec!["malformed-json", "tombstone", "malformed-json"],
                ignored: 0,
                files: 2,
                took: Duration::from_millis(40),
                newest_ms: Some(1_700_000_000_000),
            });
            t.record_lag([(0, 5), (1, -3)]);
            t.set_state(TableState::Running);
        });
        let page = handle.render();
        for line in [
            "calve_records_consumed_total{table=\"shop.orders\"} 12",
            "calve_rows_committed_total{table=\"shop.orders\"} 9",
            "calve_dead_letters_total{table=\"shop.orders\",kind=\"malformed-json\"} 2",
            "calve_dead_letters_total{table=\"shop.orders\",kind=\"tombstone\"} 1",
            "calve_data_files_committed_total{table=\"shop.orders\"} 2",
            "calve_newest_committed_record_timestamp_seconds{table=\"shop.orders\"} 1700000000",
            "calve_consumer_lag_records{table=\"shop.orders\",partition=\"0\"} 5",
            // A table ahead of what librdkafka last reported is not behind.
            "calve_consumer_lag_records{table=\"shop.orders\",partition=\"1\"} 0",
            "calve_table_state{table=\"shop.orders\",state=\"running\"} 1",
            "calve_table_state{table=\"shop.orders\",state=\"starting\"} 0",
        ] {
            assert!(page.contains(line), "missing `{line}` in\n{page}");
        }
    }

    #[test]
    fn failures_are_counted_and_holds_flagged() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let t = metrics::with_local_recorder(&recorder, || {
            let t = TableStats::new("t", Duration::from_secs(60));
            t.set_state(TableState::Failing {
                failures: 1,
                error: "broker".into(),
            });
            t.set_state(TableState::Held {
                hold: "t/0@3".into(),
                since_ms: 0,
            });
            t
        });
        let page = handle.render();
        assert!(page.contains("calve_pipeline_failures_total{table=\"t\"} 1"), "{page}");
        assert!(page.contains("calve_schema_held{table=\"t\"} 1"), "{page}");
        let (state, for_) = t.state();
        assert!(matches!(state, TableState::Held { .. }));
        assert!(
            for_ > Duration::from_secs(50 * 365 * 86_400),
            "a hold's age counts from its start"
        );
    }
}
