//! The per-table actor: one task owns a table's Kafka position, buffer, flush timer and both
//! committers (target and dead-letter table), so there is exactly one writer per table in a
//! process and no shared mutable state between tables.
//!
//! Order of a flush: dead letters first, then rows. Both commits carry the same restore point.
//! After a crash between the two, the target table's (older) restore point decides where to
//! resume, and dead letters below the dead-letter table's restore point are recognised as
//! already stored and skipped, so neither table gets a duplicate.

mod budget;
mod event_time;
mod observe;
mod rebuild;
mod registry;

pub use rebuild::Tables;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calve_contract::{ColumnType, Contract, Evolution, OnBreaking};
use calve_ingest::registry::Registry;
use calve_ingest::{
    dead_letters_to_batch, DeadLetter, DeadLetterKind, EventClock, Inferred, IngestError, KafkaRecord, KafkaSource,
    Routed, Router,
};
use calve_retry::{Classify, RetryClass};
use calve_table::commit::event_time::EventTimeMarks;
use calve_table::commit::hold::{Action, Applied, Hold, Rejection, SetHoldState};
use calve_table::commit::restore::{add_unknown_fields, Offsets, UNKNOWN_FIELDS_CAP};
use tokio::sync::watch;

use crate::buffer::Buffer;
use crate::error::ServiceError;
use crate::faults::{crash_point, panic_if_poisoned, panic_message, CrashPoint};
use crate::hold::{announce, changes_of, commit_approved, first_breaches, hold_for, promotion};
use crate::lost_records;
use crate::memory::MemoryBudget;
use crate::sink::{Progress, Sink};
use crate::size_trigger::SizeTrigger;
use crate::stats::{Committed, TableStats};
use crate::supervisor::Services;
use crate::target::Target;
use crate::watermark::Watermark;

/// Most records taken from the consumer per poll.
const POLL_MAX: usize = 10_000;
/// Longest wait in one poll: bounds how late periodic work and idle detection run.
const IDLE_POLL: Duration = Duration::from_millis(500);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the topic's partition count is re-read, so added partitions are consumed too.
const PARTITION_REFRESH: Duration = Duration::from_secs(30);
/// How long `--until-caught-up` rides out a broker that cannot tell the topic's end.
const ENDS_PATIENCE: Duration = Duration::from_secs(60);
/// How often consumer lag is brought up to date.
const LAG_EVERY: Duration = Duration::from_millis(500);

/// How a pipeline run should end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopWhen {
    /// Run until shutdown is signalled.
    #[default]
    Shutdown,
    /// Stop once everything in the topic at the time of a commit is committed (demo, bench).
    CaughtUp,
    /// Stop once everything below the bound set by [`Pipeline::run_until`] is committed
    /// (a rebuild catching up with the live table).
    Reached,
}

/// How a pipeline run ended without an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Shut down, or caught up.
    Done,
    /// Held for the approver at the record of this hold id (`topic/partition@offset`;
    /// everything before it is committed).
    Held(String),
    /// Paused for the swap of the rebuild of this id: everything buffered is committed, and
    /// the table's restore point stays where it is until the swap or the rebuild's lease ends.
    Paused(String),
}

/// A running table pipeline.
pub struct Pipeline {
    contract: Contract,
    source: KafkaSource,
    partitions: Vec<i32>,
    router: Router,
    main: Target,
    dlq: Sink,
    /// Dead letters below these offsets are already in the dead-letter table.
    dlq_covered: BTreeMap<i32, i64>,
    buffer: Buffer,
    stats: Arc<TableStats>,
    partitions_checked: Instant,
    lag_recorded: Instant,
    /// When the buffer is big enough to commit before the band ends.
    size: SizeTrigger,
    /// Since when the topic's end offsets could not be read (`--until-caught-up`).
    ends_unknown_since: Option<Instant>,
    /// Breaches the approver rejected: dead-lettered, not held.
    rejections: Vec<Rejection>,
    /// Set when a poll met a breach under `on_breaking = "hold"`: the poll was cut there.
    held: Option<Hold>,
    /// Where writer schemas come from (formats that need one).
    registry: Option<Arc<Registry>>,
    /// The table's event-time progress.
    watermark: Watermark,
    /// Where reading starts in partitions the table holds nothing of (a rebuild's `--from`).
    start: BTreeMap<i32, i64>,
    /// The bound of [`StopWhen::Reached`] and the partitions seen to reach it.
    bound: rebuild::Bound,
    /// When the table was last looked at for a rebuild asking it to pause.
    rebuild_looked: Instant,
    /// The budget the process's tables share, if any.
    memory: Option<Arc<MemoryBudget>>,
    /// What the buffer held when last told to the budget.
    buffered: u64,
    /// Whether the last poll was skipped for the budget.
    resting: bool,
}

impl Pipeline {
    /// Opens both tables, claims them, reads the restore point and positions the consumer.
    pub async fn open(contract: Contract, services: &Services, stats: Arc<TableStats>) -> Result<Self, ServiceError> {
        let tables = Tables::of(&contract)?;
        Self::open_into(contract, tables, services, stats).await
    }

    /// [`Pipeline::open`] on `tables` rather than the contract's own.
    pub async fn open_into(
        contract: Contract,
        tables: Tables,
        services: &Services,
        stats: Arc<TableStats>,
    ) -> Result<Self, ServiceError> {
        let main = Target::open(&contract, &tables.main, services).await?;
        let target_size = contract.maintenance.target_file_size.0;
        let dlq = Sink::open(&services.catalog, &tables.dead_letters, None, target_size).await?;
        let topic = contract.table.topic.clone();
        let mut source = services.kafka.source(&topic).await?;
        let partitions = source.first_partitions(METADATA_TIMEOUT).await?;
        let mut start = tables.start.clone();
        start.extend(main.sink().offsets.get(&topic).cloned().unwrap_or_default());
        source.assign(&partitions, &start)?;
        let dlq_covered = dlq.offsets.get(&topic).cloned().unwrap_or_default();
        tracing::info!(table = %contract.table.name, %topic, ?start, "resuming from the table's restore point");
        let router = Router::new(&contract, main.sink().schema().clone(), &main.sink().columns())?;
        if router.uses_registry() && services.registry.is_none() {
            return Err(ServiceError::Config(format!(
                "table {} reads values with registry schemas, and calve.toml has no [registry] to take them from",
                contract.table.name
            )));
        }
        let rejections = main.sink().holds().rejections.clone();
        let replay = replaying(&dlq_covered, &start).then(|| EventTimeMarks::carried(dlq.metadata()));
        let carried = EventTimeMarks::carried(main.sink().metadata());
        stats.sla.event_time(carried.complete_through_us, carried.watermark_us);
        stats.sla.reopened();
        let watermark = Watermark::resume(&contract, &carried, replay.as_ref());
        Ok(Pipeline {
            contract,
            source,
            partitions,
            router,
            main,
            dlq,
            dlq_covered,
            buffer: Buffer::default(),
            stats,
            partitions_checked: Instant::now(),
            lag_recorded: Instant::now(),
            size: SizeTrigger::new(target_size),
            ends_unknown_since: None,
            rejections,
            held: None,
            registry: services.registry.clone(),
            watermark,
            start: tables.start,
            bound: rebuild::Bound::default(),
            // Looked at first thing: a process opening the table just as a swap begins pauses.
            rebuild_looked: Instant::now()
                .checked_sub(Duration::from_secs(60))
                .unwrap_or_else(Instant::now),
            memory: services.memory.clone(),
            buffered: 0,
            resting: false,
        })
    }

    /// Applies the approver's decision on the table's hold, if there is one to apply; `true`
    /// when it changed the table's schema, so the pipeline must be opened again to use it.
    /// Approving changes the schema and ends the hold in one metadata update; rejecting
    /// records that breaches like the held one, up to the end of the topic now, go to the
    /// dead-letter table.
    pub async fn settle(&mut self) -> Result<bool, ServiceError> {
        let sink = self.main.sink();
        let state = sink.holds().clone();
        let Some((hold, decision)) = state.decided() else {
            if let Some(hold) = state
                .hold
                .as_ref()
                .filter(|_| self.contract.schema.on_breaking != OnBreaking::Hold)
            {
                tracing::warn!(
                    table = %self.contract.table.name, hold = %hold.id,
                    "the contract no longer holds breaking records (on_breaking = \"dead-letter\"); ending the hold: \
                     the held records go to the dead-letter table"
                );
                sink.committer().update_metadata(&SetHoldState::clear(&hold.id)).await?;
            }
            return Ok(false);
        };
        let name = &self.contract.table.name;
        let topic = &self.contract.table.topic;
        let committed = sink.offsets.get(topic).cloned().unwrap_or_default();
        // Rejections the restore point has passed cover nothing any more.
        let mut rejections: Vec<Rejection> = state
            .rejections
            .iter()
            .filter(|r| {
                r.through
                    .iter()
                    .any(|(p, t)| committed.get(p).copied().unwrap_or(0) < *t)
            })
            .cloned()
            .collect();
        let meta = sink.metadata();
        // The schema id it leaves the table at (an approval's own is set when it applies).
        let applied = Applied {
            decision: decision.clone(),
            hold: hold.clone(),
            schema_id: meta.current_schema_id(),
        };
        let changed = match decision.action {
            Action::Approve => {
                let changes = changes_of(name, &hold.proposal)?;
                commit_approved(sink.committer(), meta, &state, applied, changes, &rejections).await?;
                crash_point(CrashPoint::AfterApproval);
                true
            }
            Action::Reject => {
                rejections.push(Rejection {
                    hold_id: hold.id.clone(),
                    path: hold.path.clone(),
                    kind: hold.kind.clone(),
                    through: self.source.high_watermarks(&self.partitions, METADATA_TIMEOUT).await?,
                });
                let resolve = SetHoldState::resolve(&state, applied, &rejections);
                sink.committer().update_metadata(&resolve).await?;
                self.rejections = rejections;
                false
            }
        };
        tracing::info!(
            table = %name, hold = %hold.id, by = %decision.by, action = ?decision.action,
            proposal = ?hold.proposal, "the approver decided on the hold; resuming"
        );
        Ok(changed)
    }

    /// Consumes and commits until `shutdown` turns true (then flushes) or `stop` is met.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>, stop: StopWhen) -> Result<Ended, ServiceError> {
        self.drive(shutdown, stop).await
    }

    async fn drive(&mut self, mut shutdown: watch::Receiver<bool>, stop: StopWhen) -> Result<Ended, ServiceError> {
        let band = self.contract.sla.freshness.0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Never wait longer than IDLE_POLL, so periodic work and idle detection keep running
            // during long bands.
            let wait = match self.buffer.since {
                Some(t) => band
                    .saturating_sub(t.elapsed())
                    .clamp(Duration::from_millis(1), IDLE_POLL),
                None => IDLE_POLL,
            };
            let polled = tokio::select! {
                _ = shutdown.changed() => None,
                polled = self.take(wait) => Some(polled),
            };
            let idle = match polled {
                None => break,
                Some(records) => {
                    let mut records = records?;
                    self.bound.keep_below(&mut records);
                    if !self.learn_schemas(&records, &mut shutdown).await? {
                        break;
                    }
                    // A table resting for the memory budget is not idle: the topic may hold more.
                    let idle = records.is_empty() && !self.resting;
                    self.ingest(records)?;
                    if let Some(hold) = self.held.take() {
                        return self.hold(hold).await;
                    }
                    if self.source.take_out_of_range() {
                        self.read_on_past_lost_records().await?;
                    }
                    idle
                }
            };
            self.advance_watermark();
            let band_elapsed = self.buffer.since.is_some_and(|t| t.elapsed() >= band);
            let arrow = self.record_buffered();
            let dead = self.buffer.dead_bytes as u64;
            let size_full = self.size.full(arrow, dead);
            let full = self.budget_commits(arrow + dead, size_full || band_elapsed) || size_full;
            // In batch mode a drained topic is reason enough to commit: nothing more will come.
            let drained =
                stop == StopWhen::CaughtUp && idle && !self.buffer.is_empty() && self.caught_up_riding_out().await?;
            let flushed = band_elapsed || full || drained;
            if flushed {
                self.flush().await?;
            }
            self.record_lag(false);
            // Ready once the pipeline has shown it works: a commit, or nothing left to commit.
            if flushed || (idle && self.buffer.is_empty()) {
                self.stats.mark_running();
            }
            if self.partitions_checked.elapsed() >= PARTITION_REFRESH {
                self.refresh_partitions_riding_out().await?;
            }
            if stop == StopWhen::CaughtUp
                && self.buffer.is_empty()
                && !self.resting
                && self.caught_up_riding_out().await?
            {
                tracing::info!(table = %self.contract.table.name, "caught up with the topic");
                return Ok(Ended::Done);
            }
            if stop == StopWhen::Reached && self.bound.reached(&self.partitions, &self.positions()) {
                self.flush().await?;
                return Ok(Ended::Done);
            }
            if stop == StopWhen::Shutdown {
                if let Some(id) = self.rebuild_asks_pause().await {
                    return self.pause_for_rebuild(id).await;
                }
            }
        }
        self.flush().await?;
        Ok(Ended::Done)
    }

    /// Commits what came before the breach, then puts the table under `hold`.
    async fn hold(&mut self, hold: Hold) -> Result<Ended, ServiceError> {
        self.flush().await?;
        crash_point(CrashPoint::BeforeHold);
        self.main
            .sink()
            .committer()
            .update_metadata(&SetHoldState::hold(&hold))
            .await?;
        announce(&self.contract.table.name, &hold);
        Ok(Ended::Held(hold.id))
    }

    /// Under `on_breaking = "hold"`: when `routed` holds a breach no rejection covers, keeps
    /// only the records before the first breach of each partition and routes them again,
    /// and marks the pipeline held at the first breach of the poll.
    fn cut_at_breach(
        &mut self,
        records: &mut Vec<KafkaRecord>,
        routed: &mut Routed,
        clock: EventClock,
    ) -> Result<(), ServiceError> {
        if self.contract.schema.on_breaking != OnBreaking::Hold {
            return Ok(());
        }
        let first = first_breaches(&routed.dead, &self.rejections);
        let Some(at) = first.values().min_by_key(|d| {
            records
                .iter()
                .position(|r| r.partition == d.record.partition && r.offset == d.record.offset)
        }) else {
            return Ok(());
        };
        let sink = self.main.sink();
        self.held = Some(hold_for(at, &self.contract, sink.schema(), &sink.columns()));
        let cut: BTreeMap<i32, i64> = first.iter().map(|(p, d)| (*p, d.record.offset)).collect();
        records.retain(|r| cut.get(&r.partition).is_none_or(|c| r.offset < *c));
        *routed = self.route(records, clock)?;
        Ok(())
    }

    fn ingest(&mut self, mut records: Vec<KafkaRecord>) -> Result<(), ServiceError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.buffer.since.is_none() {
            tracing::info!(table = %self.contract.table.name, band = %self.contract.sla.freshness, "buffering records; the freshness band starts");
        }
        let now_us = chrono::Utc::now().timestamp_micros();
        self.stats.sla.consumed(now_us / 1000);
        let clock = self.watermark.clock(now_us);
        let mut routed = self.route(&records, clock)?;
        if self.evolve_for(&routed)? {
            // This poll is routed again so its rows have the new columns and types.
            let schema = self.main.sink().schema().clone();
            let mut router = Router::new(&self.contract, schema, &self.main.sink().columns())?;
            router.learn_schemas_of(&self.router);
            self.router = router;
            routed = self.route(&records, clock)?;
        }
        self.cut_at_breach(&mut records, &mut routed, clock)?;
        self.watermark.observe(&routed.newest_event, &routed.reopened, now_us);
        for r in &records {
            self.buffer.advance(r.partition, r.offset);
        }
        self.main.push(records.len(), &mut routed);
        let covered = &self.dlq_covered;
        let fresh = routed
            .dead
            .into_iter()
            .filter(|d: &DeadLetter| covered.get(&d.record.partition).is_none_or(|c| d.record.offset >= *c));
        self.buffer.push_dead(fresh);
        self.buffer.ignored += routed.ignored;
        let unknown = std::mem::take(&mut routed.unknown_fields);
        for path in unknown.keys() {
            let known = self.buffer.unknown_fields.contains_key(path) || self.stats.knows_unknown_field(path);
            // Once per field, and not once per key of a producer that uses keys as data.
            if !known && self.buffer.unknown_fields.len() < UNKNOWN_FIELDS_CAP {
                tracing::warn!(
                    table = %self.contract.table.name, field = %path,
                    "records carry a field the table has no column for; it is not stored (counted in the \
                     snapshot summary's calve.unknown-fields and in calve status)"
                );
            }
        }
        add_unknown_fields(&mut self.buffer.unknown_fields, &unknown);
        self.stats.record_consumed(
            records.len() as u64,
            records
                .iter()
                .map(|r| r.value.as_ref().map_or(0, Vec::len) as u64)
                .sum(),
        );
        self.buffer.records += records.len() as u64;
        let newest = records.iter().filter_map(|r| r.timestamp_ms).max();
        self.buffer.newest_ms = self.buffer.newest_ms.max(newest);
        Ok(())
    }

    /// A partition's next offset is outside what the broker holds, so librdkafka stopped
    /// reading it: finds the gaps and follows the contract (see [`lost_records`]). Reading
    /// on, the next commit's restore point passes the gap and records it.
    async fn read_on_past_lost_records(&mut self) -> Result<(), ServiceError> {
        let held = self.source.watermarks(&self.partitions, METADATA_TIMEOUT).await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let found = lost_records::compare(&self.contract.table.topic, &self.positions(), &held, now_ms);
        if found == lost_records::OutOfRange::default() {
            tracing::warn!(table = %self.contract.table.name, ?held, "a partition's offset was out of range, yet every position is within the broker's range now; reading on");
        }
        for gap in lost_records::judge(&self.contract, found)? {
            self.buffer.skip(gap);
        }
        // Assigning again is what makes librdkafka read the stopped partitions.
        self.source.assign(&self.partitions, &self.positions())?;
        Ok(())
    }

    /// `evolution = "additive"`: plans the schema changes `routed` asks for —
    /// new fields as optional columns, int columns whose values outgrew int as long — for the
    /// next commit, which makes them together with the rows that need them. Whether any was
    /// planned.
    fn evolve_for(&mut self, routed: &Routed) -> Result<bool, ServiceError> {
        if self.contract.schema.evolution != Evolution::Additive {
            return Ok(false);
        }
        let table = self.contract.table.name.clone();
        let new_columns = new_columns(routed, self.main.sink().schema());
        let mut planned = false;
        if !new_columns.is_empty() {
            let names = self.main.add_columns(&new_columns)?;
            if !names.is_empty() {
                let described: Vec<String> = new_columns
                    .iter()
                    .filter(|(n, _)| names.contains(n))
                    .map(|(n, t)| format!("{n} {t}"))
                    .collect();
                tracing::info!(
                    table, columns = %described.join(", "),
                    "events carry new fields; adding them as optional columns with the next commit"
                );
                planned = true;
            }
        }
        if !routed.dead.iter().any(|d| d.kind == DeadLetterKind::SchemaMismatch) {
            return Ok(planned);
        }
        let columns = self.main.sink().columns();
        let mut widen: Vec<(String, ColumnType)> = routed
            .dead
            .iter()
            .filter_map(|d| promotion(d, &columns, &self.contract.keys.columns))
            .collect();
        widen.sort_by(|a, b| a.0.cmp(&b.0));
        widen.dedup();
        if !widen.is_empty() {
            let names = self.main.widen_columns(&widen)?;
            if !names.is_empty() {
                tracing::info!(
                    table, columns = %names.join(", "),
                    "values outgrew their columns' type; widening them (int → long, decimal precision up) with the next commit"
                );
                planned = true;
            }
        }
        Ok(planned)
    }

    /// Routes one poll. Routing reads record contents, so it is where a bug meets the one
    /// record that triggers it: a panic here is caught, and the poll is routed again one
    /// record at a time so that only the records that panic go to the dead-letter table (with
    /// the panic message) and everything else lands as usual. A panic is deterministic in
    /// the record, so a restart would only meet it again.
    fn route(&self, records: &[KafkaRecord], clock: EventClock) -> Result<Routed, ServiceError> {
        let message = match self.try_route(records, clock) {
            Ok(routed) => return Ok(routed?),
            Err(panic) => panic_message(&*panic),
        };
        tracing::error!(
            table = %self.contract.table.name, records = records.len(),
            "routing a poll panicked ({message}); routing its records one by one to set aside the ones that panic"
        );
        let mut parts = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match self.try_route(std::slice::from_ref(record), clock) {
                Ok(routed) => parts.push((routed?, i)),
                Err(panic) => {
                    let message = panic_message(&*panic);
                    tracing::error!(
                        table = %self.contract.table.name, partition = record.partition, offset = record.offset,
                        "record panicked calve while routing ({message}); sent to the dead-letter table as kind `panic`"
                    );
                    let mut dead = Routed::default();
                    let reason = format!("routing this record panicked: {message}");
                    dead.dead_letter(record, DeadLetterKind::Panicked, reason, clock.now_us);
                    parts.push((dead, i));
                }
            }
        }
        Ok(Routed::merge(parts)?)
    }

    /// Routes `records` with a panic caught rather than unwound through the pipeline.
    fn try_route(
        &self,
        records: &[KafkaRecord],
        clock: EventClock,
    ) -> std::thread::Result<Result<Routed, IngestError>> {
        catch_unwind(AssertUnwindSafe(|| {
            panic_if_poisoned(records);
            self.router.route(records, clock)
        }))
    }

    /// Commits what is buffered: dead letters first, then rows, both with the same restore point.
    async fn flush(&mut self) -> Result<(), ServiceError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.source.check_strayed()?;
        let started = Instant::now();
        let topic = self.contract.table.topic.clone();
        let mut to: Offsets = self.main.sink().offsets.clone();
        to.insert(topic.clone(), self.positions());
        // The dead-letter table's restore point never goes back: a replay that commits before
        // it has passed what that table holds must not make it take those dead letters again.
        let mut dlq_to = to.clone();
        let covered = dlq_to.entry(topic.clone()).or_default();
        for (p, o) in &self.dlq_covered {
            let at = covered.entry(*p).or_insert(*o);
            *at = (*at).max(*o);
        }
        let dead = std::mem::take(&mut self.buffer.dead);
        let dead_files = match dead.is_empty() {
            true => Vec::new(),
            false => {
                self.dlq
                    .write(&[dead_letters_to_batch(&dead, self.dlq.schema().clone())?])
                    .await?
            }
        };
        let arrow = self.main.bytes() as u64;
        let written = self.main.write().await?;
        crash_point(CrashPoint::FilesWritten);
        if !dead_files.is_empty() {
            let mut progress = Progress::to(&dlq_to);
            let judged = self.watermark.judged_against();
            progress.event_time = Some(&judged);
            self.dlq.commit(dead_files, &progress).await?;
            crash_point(CrashPoint::DeadLettersCommitted);
        }
        self.advance_watermark_for_commit().await;
        let b = &self.buffer;
        let marks = self.watermark.marks();
        let progress = Progress {
            to: &to,
            unknown: &b.unknown_fields,
            lost: &b.lost,
            event_time: Some(&marks),
        };
        let report = self.main.commit(written, &progress).await?;
        crash_point(CrashPoint::BothCommitted);
        self.size.learn(arrow, report.bytes);
        self.stats.record_unknown_fields(&self.buffer.unknown_fields);
        for gap in &self.buffer.lost {
            self.stats.record_lost(gap.partition, gap.len());
        }
        self.dlq_covered = dlq_to[&topic].clone();
        self.published(&marks);
        self.source.report_progress(&to[&topic]);
        self.stats.record_commit(&Committed {
            records: self.buffer.records,
            rows: report.rows,
            dead_letter_kinds: dead.iter().map(|d| d.kind.as_str()).collect(),
            ignored: self.buffer.ignored,
            files: report.files as u64,
            took: started.elapsed(),
            newest_ms: self.buffer.newest_ms,
        });
        if let Some((keys, memory, spilled)) = self.main.key_index_size() {
            self.stats.record_key_index(keys, memory, spilled);
        }
        tracing::info!(
            table = %self.contract.table.name,
            rows = report.rows, files = report.files, delete_files = report.delete_files, bytes = report.bytes,
            dead_letters = dead.len(), ignored = self.buffer.ignored,
            took_ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        self.buffer.clear();
        self.record_buffered();
        self.budget_says(0);
        self.record_lag(true);
        Ok(())
    }

    /// [`Pipeline::refresh_partitions`], riding out a broker that cannot answer: librdkafka
    /// reconnects by itself, and tearing the pipeline down for it would claim the table again
    /// (a new writer epoch) and rebuild a keyed table's index. Looked at again next interval.
    async fn refresh_partitions_riding_out(&mut self) -> Result<(), ServiceError> {
        match self.refresh_partitions().await {
            Err(e) if e.class() == RetryClass::Temporary => {
                tracing::warn!(table = %self.contract.table.name, "cannot see the topic's partitions, reading on and looking again in {PARTITION_REFRESH:?}: {e}");
                Ok(())
            }
            other => other,
        }
    }

    /// [`Pipeline::caught_up`], riding out a broker that cannot answer (not caught up yet) for
    /// [`ENDS_PATIENCE`]; past it the error ends the pipeline, and the supervisor's backoff
    /// and `TABLE FAILING` take over, rather than a batch run waiting in silence forever.
    async fn caught_up_riding_out(&mut self) -> Result<bool, ServiceError> {
        match self.caught_up().await {
            Err(e) if e.class() == RetryClass::Temporary => {
                let since = *self.ends_unknown_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ENDS_PATIENCE {
                    return Err(e);
                }
                tracing::warn!(table = %self.contract.table.name, "cannot read the topic's end offsets, reading on: {e}");
                Ok(false)
            }
            other => {
                self.ends_unknown_since = None;
                other
            }
        }
    }

    /// Adds partitions created since the last look; known partitions keep their position.
    async fn refresh_partitions(&mut self) -> Result<(), ServiceError> {
        self.partitions_checked = Instant::now();
        let now = self.source.partitions(METADATA_TIMEOUT).await?;
        if now.iter().all(|p| self.partitions.contains(p)) {
            return Ok(());
        }
        self.source.assign(&now, &self.positions())?;
        tracing::info!(table = %self.contract.table.name, from = self.partitions.len(), to = now.len(), "topic gained partitions");
        self.partitions = now;
        Ok(())
    }

    /// Next offset to read per partition: what is buffered, else what the table holds. Buffered
    /// positions are always ahead of committed ones: consumption starts at the restore point.
    fn positions(&self) -> BTreeMap<i32, i64> {
        let mut next = self.start.clone();
        let committed = self.main.sink().offsets.get(&self.contract.table.topic);
        next.extend(committed.into_iter().flatten().map(|(p, o)| (*p, *o)));
        next.extend(self.buffer.next.iter().map(|(p, o)| (*p, *o)));
        next
    }

    /// Whether everything up to each partition's high watermark is committed or buffered.
    async fn caught_up(&self) -> Result<bool, ServiceError> {
        let hw = self.source.high_watermarks(&self.partitions, METADATA_TIMEOUT).await?;
        let next = self.positions();
        Ok(hw.iter().all(|(p, h)| *h <= next.get(p).copied().unwrap_or(0)))
    }
}

/// Whether the dead-letter table holds records past the table's restore point `committed`
/// (`covered`, its own restore point): a crash came between the two commits of a flush.
fn replaying(covered: &BTreeMap<i32, i64>, committed: &BTreeMap<i32, i64>) -> bool {
    covered.iter().any(|(p, o)| *o > committed.get(p).copied().unwrap_or(0))
}

/// The new columns (and, by dotted path, new fields of struct columns) a routed poll's
/// inferred fields ask for: those with one type that the table does not have.
fn new_columns(routed: &Routed, schema: &arrow_schema::SchemaRef) -> Vec<(String, ColumnType)> {
    routed
        .inferred
        .iter()
        .filter(|(name, _)| schema.field_with_name(name).is_err())
        .filter_map(|(name, inferred)| match inferred {
            Inferred::Type(ty) => Some((name.clone(), ty.clone())),
            _ => None,
        })
        .collect()
}
