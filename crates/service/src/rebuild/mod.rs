//! `calve rebuild`: re-read a table's topic under the current contract (after a contract
//! change or a decoding fix) into shadow tables beside the live ones, while the live table's
//! owner keeps committing, then swap the result in with one commit per table — readers see
//! the old table or the new one, never a half-built one, and exactly-once holds across it.
//!
//! The steps, each safe to crash in and resumed by running the command again:
//! 1. Mark the live tables ([`RebuildMark`]), after saying what the rebuilt table would not
//!    have (records retention dropped, or `--from` skips) and refusing unless that is accepted.
//! 2. Read the topic into the shadows, never past the live table's restore point, which keeps
//!    moving: chase it.
//! 3. Caught up, ask the live owner to pause (a lease, renewed); it commits what it buffered
//!    and says so. Chase its final restore point.
//! 4. Swap the dead-letter table, then the target table (whose swap removes the mark); drop the
//!    shadows. The owner reopens on the swapped-in table.
//!
//! Abandoning removes the mark and the shadows; their files are orphans of the live tables,
//! which maintenance's orphan cleanup removes.

mod owner;
mod shadow;
mod start;
mod swap;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calve_contract::Contract;
use calve_ingest::KafkaSource;
use calve_retry::{Classify, RetryClass};
use calve_table::commit::lost::{lost_records, LostRange};
use calve_table::commit::restore::{format_offsets, restore_point, Offsets};
use calve_table::commit::swap::{paused_for, swapped_in, Expect, RebuildMark, SetRebuildMark};
use calve_table::read::inspect::current_total;
use calve_table::{Catalog, TableError};
use iceberg::spec::{TableMetadata, TableMetadataRef};
use iceberg::TableIdent;
use tokio::sync::watch;

pub(crate) use owner::{answer, fenced_by_rebuild, pause_at_open, wait_for_swap};
pub use start::{Loss, ReadFrom};

use crate::error::ServiceError;
use crate::hold::update_unclaimed;
use crate::pipeline::{Ended, Pipeline, Tables};
use crate::stats::TableStats;
use crate::supervisor::Services;
use swap::{claim_pair, preflight, swap_pair, Pair};

/// How long the live owner stays paused unless the rebuild renews the request: a rebuild
/// that dies stalls the table for at most this long.
const LEASE: Duration = Duration::from_secs(30);
/// The request is renewed when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(20);
/// How often the lease is looked at while the shadows read.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long a rebuild waits for a running owner to pause (plus the table's band, the longest
/// a flush of the owner may take to come round) before taking no answer as no owner.
const OWNER_PATIENCE: Duration = Duration::from_secs(30);

/// What `calve rebuild` was asked.
#[derive(Debug, Clone, Default)]
pub struct RebuildRequest {
    /// Where to re-read from (`None`: earliest, or the rebuild under way's own).
    pub from: Option<ReadFrom>,
    /// Go ahead even though the rebuilt table will lack rows the live one has.
    pub accept_loss: bool,
    /// Go ahead although keys were erased from the table: their records come back from
    /// Kafka while the topic still holds them.
    pub despite_erasures: bool,
}

/// How a rebuild ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RebuildOutcome {
    /// Not started: the rebuilt table would lack these rows, and that was not accepted.
    Refused(Vec<Loss>),
    /// Not started: keys were erased from the table (these erasure log entries), and the
    /// rebuild would read their records back.
    Erased(Vec<String>),
    /// Swapped in.
    Swapped {
        /// The rebuild's id.
        id: String,
        /// Rows of the target table swapped in.
        rows: u64,
        /// Dead letters swapped in.
        dead_letters: u64,
        /// The restore point the table holds (unchanged by the swap).
        restore_point: String,
        /// What was accepted as lost.
        lost: Vec<Loss>,
    },
    /// Shutdown came first; running the command again resumes.
    Interrupted,
}

/// How an abandon ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Abandoned {
    /// The rebuild `id` is gone; its files under `locations` are orphans now.
    Rebuild {
        /// Its id.
        id: String,
        /// Where its files are.
        locations: Vec<String>,
    },
    /// There was none (leftover shadow tables, if any, were dropped).
    Nothing,
}

/// The live pair of tables and their shadows.
struct Names {
    main: Pair,
    dead_letters: Pair,
}

impl Names {
    fn of(tables: &Tables) -> Result<Self, ServiceError> {
        let pair = |live: &TableIdent| -> Result<Pair, ServiceError> {
            Ok(Pair {
                live: live.clone(),
                shadow: shadow::shadow_ident(live)?,
            })
        };
        Ok(Names {
            main: pair(&tables.main.ident)?,
            dead_letters: pair(&tables.dead_letters.ident)?,
        })
    }

    fn shadows(&self) -> [TableIdent; 2] {
        [self.main.shadow.clone(), self.dead_letters.shadow.clone()]
    }
}

/// Rebuilds `contract`'s table (see the module docs); resumes the rebuild under way, if any.
pub async fn rebuild(
    contract: &Contract,
    services: &Services,
    req: &RebuildRequest,
    shutdown: watch::Receiver<bool>,
) -> Result<RebuildOutcome, ServiceError> {
    let catalog = &services.catalog;
    let mut tables = Tables::of(contract)?;
    let names = Names::of(&tables)?;
    if !catalog.exists(&names.main.live).await? {
        return Err(ServiceError::Config(format!(
            "{}: the table does not exist yet (calve run creates it); there is nothing to rebuild",
            contract.table.name
        )));
    }
    catalog.ensure_table(&tables.dead_letters).await?;
    let live = catalog.load(&names.main.live).await?.metadata;
    let source = services.kafka.source(&contract.table.topic).await?;
    let partitions = source.first_partitions(Duration::from_secs(10)).await?;
    let (mark, start, lost) = match RebuildMark::of(&live)? {
        Some(mark) => {
            let mark = resume(contract, req, mark)?;
            let from = ReadFrom::parse(&mark.from).map_err(ServiceError::Config)?;
            // A shadow that exists keeps where it first started (see `shadow::ensure`).
            let (start, _) = plan(&source, &partitions, from, contract, &live).await?;
            (mark, start, Vec::new())
        }
        None => {
            if let Some(done) = finished_before(catalog, &names).await? {
                return Ok(done);
            }
            let erased = erasures(catalog, &contract.table.name).await?;
            if !erased.is_empty() && !req.despite_erasures {
                return Ok(RebuildOutcome::Erased(
                    erased.into_iter().map(|(entry, _)| entry).collect(),
                ));
            }
            let from = req.from.unwrap_or(ReadFrom::Earliest);
            let (start, lost) = plan(&source, &partitions, from, contract, &live).await?;
            if !lost.is_empty() && !req.accept_loss {
                return Ok(RebuildOutcome::Refused(lost));
            }
            (begin(catalog, &names, from).await?, start, lost)
        }
    };
    drop(source);
    // The dead-letter table's mark mirrors the target table's (a crash may have come between
    // the two writes): it keeps orphan cleanup away from the dead-letter shadow's files.
    let mirror = SetRebuildMark {
        expect: Expect::Any,
        // Only where the shadow's files are: the pause and the swap's progress are the target
        // table's business (and a mirrored `swapping` could never be cleared).
        mark: Some(RebuildMark {
            pause_until_ms: None,
            swapping: false,
            ..mark.clone()
        }),
    };
    update_unclaimed(catalog, &names.dead_letters.live, &mirror).await?;
    let dlq_live = catalog.load(&names.dead_letters.live).await?.metadata;
    tables.main = shadow::definition(&tables.main, &live, &mark, &start)?;
    tables.dead_letters = shadow::definition(&tables.dead_letters, &dlq_live, &mark, &start)?;
    let start = shadow::ensure(catalog, &tables.main, &live).await?;
    shadow::ensure(catalog, &tables.dead_letters, &dlq_live).await?;
    tables.start = start.clone();
    tracing::info!(
        table = %contract.table.name, rebuild = %mark.id, from = %mark.from, ?start,
        "rebuilding into {}", names.main.shadow
    );
    let stats = Arc::new(TableStats::of(contract));
    let pipeline = Pipeline::open_into(contract.clone(), tables, services, stats).await?;
    let mut chase = Chase {
        contract,
        catalog,
        names: &names,
        pipeline,
        mark,
        start,
        asked: None,
    };
    chase.run(shutdown, lost).await
}

/// The rebuild under way, when `req` does not ask for another.
fn resume(contract: &Contract, req: &RebuildRequest, mark: RebuildMark) -> Result<RebuildMark, ServiceError> {
    if let Some(from) = req.from.filter(|f| f.to_string() != mark.from) {
        return Err(ServiceError::Config(format!(
            "{}: rebuild {} from {} is under way, not from {from}; run calve rebuild --table {} to finish it, or \
             --abandon it first",
            contract.table.name, mark.id, mark.from, contract.table.name
        )));
    }
    tracing::info!(table = %contract.table.name, rebuild = %mark.id, from = %mark.from, swapping = mark.swapping, "resuming the rebuild under way");
    Ok(mark)
}

/// The erasure log's entries for `table`: a rebuild reads their records back from Kafka while
/// the topic holds them (the log keeps only keyed hashes, so they cannot be filtered out).
async fn erasures(catalog: &Catalog, table: &str) -> Result<Vec<(String, std::time::SystemTime)>, ServiceError> {
    let dir = format!("{}/_calve/erasure-log", catalog.storage().state_root());
    let listed = match catalog.storage().list(&dir).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("no erasure log to read at {dir}: {e}");
            return Ok(Vec::new());
        }
    };
    let marker = format!("-{table}-");
    Ok(listed
        .into_iter()
        .filter(|f| f.location.rsplit('/').next().is_some_and(|name| name.contains(&marker)))
        .map(|f| (f.location, f.modified))
        .collect())
}

/// Where the shadows start, and what the live table holds that they would not.
async fn plan(
    source: &KafkaSource,
    partitions: &[i32],
    from: ReadFrom,
    contract: &Contract,
    live: &TableMetadata,
) -> Result<(BTreeMap<i32, i64>, Vec<Loss>), ServiceError> {
    let held = restore_point(live)?
        .and_then(|r| r.get(&contract.table.topic).cloned())
        .unwrap_or_default();
    start::plan(source, partitions, from, &held, &lost_records(live)?).await
}

/// A crash after the target table's swap leaves only the shadows behind: finishes that.
async fn finished_before(catalog: &Catalog, names: &Names) -> Result<Option<RebuildOutcome>, ServiceError> {
    if !catalog.exists(&names.main.shadow).await? {
        return Ok(None);
    }
    let shadow = catalog.load(&names.main.shadow).await?.metadata;
    let Some(id) = shadow::rebuild_of(&shadow).cloned() else {
        return Ok(None);
    };
    let live = catalog.load(&names.main.live).await?.metadata;
    clear_dead_letter_mark(catalog, &names.dead_letters.live).await?;
    shadow::drop_all(catalog, &names.shadows()).await?;
    if !swapped_in(&live, &id) {
        tracing::warn!(rebuild = %id, "dropped the shadow tables of a rebuild that is no longer under way");
        return Ok(None);
    }
    Ok(Some(RebuildOutcome::Swapped {
        id,
        rows: current_total(&live, "total-records"),
        dead_letters: current_total(&catalog.load(&names.dead_letters.live).await?.metadata, "total-records"),
        restore_point: format_offsets(&restore_point(&live)?.unwrap_or_default()),
        lost: Vec::new(),
    }))
}

/// Marks the target table: a rebuild from `from` is under way (the dead-letter table's mark
/// follows).
async fn begin(catalog: &Catalog, names: &Names, from: ReadFrom) -> Result<RebuildMark, ServiceError> {
    let mark = RebuildMark {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        from: from.to_string(),
        started_ms: chrono::Utc::now().timestamp_millis(),
        pause_until_ms: None,
        swapping: false,
    };
    let set = SetRebuildMark {
        expect: Expect::Nothing,
        mark: Some(mark.clone()),
    };
    update_unclaimed(catalog, &names.main.live, &set).await?;
    Ok(mark)
}

/// Step 2 to 4 of the module docs.
struct Chase<'a> {
    contract: &'a Contract,
    catalog: &'a Catalog,
    names: &'a Names,
    pipeline: Pipeline,
    mark: RebuildMark,
    /// Where the shadows started reading, per partition.
    start: BTreeMap<i32, i64>,
    /// When the live owner was asked to pause (since the lease last ran out).
    asked: Option<Instant>,
}

impl Chase<'_> {
    async fn run(&mut self, shutdown: watch::Receiver<bool>, lost: Vec<Loss>) -> Result<RebuildOutcome, ServiceError> {
        let patience = OWNER_PATIENCE + self.contract.sla.freshness.0;
        loop {
            if *shutdown.borrow() {
                return Ok(RebuildOutcome::Interrupted);
            }
            let live = self.live().await?;
            let target = restore_point(&live)?.unwrap_or_default();
            let until = target.get(&self.contract.table.topic).cloned().unwrap_or_default();
            match self.read_until(&until, &shutdown).await? {
                Ended::Held(hold) => {
                    return Err(ServiceError::Config(format!(
                        "{}: the rebuild met a breaking change the contract holds for its approver ({hold}); \
                         change the contract (or its on_breaking) and run the rebuild again",
                        self.contract.table.name
                    )))
                }
                Ended::Done | Ended::Paused(_) => {}
            }
            if *shutdown.borrow() {
                return Ok(RebuildOutcome::Interrupted);
            }
            self.ask_owner_to_pause().await?;
            let after = self.live().await?;
            if restore_point(&after)?.unwrap_or_default() != target {
                continue;
            }
            let paused = paused_for(&after) == Some(self.mark.id.as_str());
            let waited = self.asked.is_some_and(|t| t.elapsed() >= patience);
            if !(paused || waited || self.mark.swapping) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if !paused && !self.mark.swapping {
                tracing::warn!(table = %self.contract.table.name, "no running calve paused the table within {patience:?}; swapping without it (an owner still running is fenced by the swap and reopens)");
            }
            match self.swap(&target).await {
                Ok(rows) => {
                    let dead_letters = self.catalog.load(&self.names.dead_letters.live).await?.metadata;
                    return Ok(RebuildOutcome::Swapped {
                        id: self.mark.id.clone(),
                        rows,
                        dead_letters: current_total(&dead_letters, "total-records"),
                        restore_point: format_offsets(&target),
                        lost,
                    });
                }
                // The table moved before the claims, or a process opened it meanwhile and
                // claimed it after them: the swap did not begin, or finishes on the next round.
                Err(ServiceError::Table(e @ (TableError::RebuildOvertaken { .. } | TableError::Fenced { .. }))) => {
                    tracing::warn!(table = %self.contract.table.name, "{e}; catching up again");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads into the shadows up to `until`, renewing the owner's lease meanwhile (catching up
    /// with the owner's last flush may take longer than the lease).
    async fn read_until(
        &mut self,
        until: &BTreeMap<i32, i64>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Ended, ServiceError> {
        let Chase {
            pipeline,
            catalog,
            names,
            mark,
            ..
        } = self;
        let reading = pipeline.run_until(until, shutdown.clone());
        tokio::pin!(reading);
        let mut renew = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                ended = &mut reading => return ended,
                _ = renew.tick() => {
                    if mark.pause_until_ms.is_some_and(|t| t > now_ms()) {
                        match renew_lease(catalog, &names.main.live, mark).await {
                            Err(e) if e.class() == RetryClass::Temporary => {
                                tracing::warn!(table = %names.main.live, "renewing the pause failed; trying again: {e}")
                            }
                            other => other?,
                        }
                    }
                }
            }
        }
    }

    /// The live table, which must still carry this rebuild's mark (an abandon stops it).
    async fn live(&mut self) -> Result<TableMetadataRef, ServiceError> {
        let live = self.catalog.load(&self.names.main.live).await?.metadata;
        match RebuildMark::of(&live)? {
            Some(m) if m.id == self.mark.id => {
                self.mark = m;
                Ok(live)
            }
            _ => Err(ServiceError::Config(format!(
                "{}: rebuild {} was abandoned meanwhile",
                self.contract.table.name, self.mark.id
            ))),
        }
    }

    /// Asks the live owner to pause (again, once the lease ran out: the owner may have resumed,
    /// and the wait for its answer starts over).
    async fn ask_owner_to_pause(&mut self) -> Result<(), ServiceError> {
        let lapsed = self.mark.pause_until_ms.is_none_or(|t| t <= now_ms());
        if lapsed {
            self.asked = None;
        }
        renew_lease(self.catalog, &self.names.main.live, &mut self.mark).await?;
        if self.asked.is_none() {
            tracing::info!(table = %self.contract.table.name, rebuild = %self.mark.id, "caught up with the live table; asking its owner to pause for the swap");
            self.asked = Some(Instant::now());
        }
        Ok(())
    }

    /// Checks that the shadows can replace the live tables, marks the swap begun, swaps.
    /// Claims both live tables (nothing else commits to them from here), checks that the table
    /// still holds `target` and that the shadows fit, marks the swap begun, and swaps. Every
    /// check that can refuse comes before the mark: a refused swap leaves the rebuild abandonable
    /// and the owner's pause to its lease.
    async fn swap(&mut self, target: &Offsets) -> Result<u64, ServiceError> {
        let (catalog, names) = (self.catalog, self.names);
        let claims = claim_pair(catalog, &names.main, &names.dead_letters, target).await?;
        preflight(catalog, [&names.main, &names.dead_letters]).await?;
        if !self.mark.swapping {
            self.no_new_erasures().await?;
            let mut mark = self.mark.clone();
            mark.swapping = true;
            set_mark(catalog, &names.main.live, &mut self.mark, mark).await?;
        }
        let gaps = self.gaps(target).await?;
        let rows = swap_pair(
            catalog,
            &names.main,
            &names.dead_letters,
            &self.mark,
            claims,
            target,
            gaps,
        )
        .await?;
        // The dead-letter table kept its mark through its swap (its shadow's files stay out of
        // orphan cleanup until the table's swap is done too).
        clear_dead_letter_mark(catalog, &names.dead_letters.live).await?;
        shadow::drop_all(catalog, &names.shadows()).await?;
        Ok(rows)
    }

    /// Refuses the swap when keys were erased from the table since the rebuild began (their
    /// records may be in the shadow, read back from Kafka).
    async fn no_new_erasures(&self) -> Result<(), ServiceError> {
        // A minute's slack for the clocks of the machines that wrote the entries.
        let since = std::time::UNIX_EPOCH + Duration::from_millis((self.mark.started_ms - 60_000).max(0) as u64);
        let newer: Vec<String> = erasures(self.catalog, &self.contract.table.name)
            .await?
            .into_iter()
            .filter(|(_, at)| *at >= since)
            .map(|(entry, _)| entry)
            .collect();
        if newer.is_empty() {
            return Ok(());
        }
        Err(ServiceError::Config(format!(
            "{}: keys were erased from the table while rebuild {} ran ({}); its shadow may hold them again. Abandon \
             it (calve rebuild --abandon) and start again",
            self.contract.table.name,
            self.mark.id,
            newer.join(", ")
        )))
    }

    /// The offsets the rebuilt table never read: the live table's recorded gaps, and what lay
    /// before the shadows' start (retention, or `--from`) that the live table had.
    async fn gaps(&self, target: &Offsets) -> Result<Vec<LostRange>, ServiceError> {
        let topic = &self.contract.table.topic;
        let live = lost_records(&self.catalog.load(&self.names.main.live).await?.metadata)?;
        let held = target.get(topic).cloned().unwrap_or_default();
        let found_ms = now_ms();
        let mut gaps = live.clone();
        for (p, first) in &self.start {
            let to = (*first).min(held.get(p).copied().unwrap_or(0));
            gaps.extend(start::uncovered(*p, 0, to, &live).map(|(from, to)| LostRange {
                topic: topic.clone(),
                partition: *p,
                from,
                to,
                found_ms,
            }));
        }
        Ok(gaps)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Extends the owner's lease to [`LEASE`] from now, unless more than [`RENEW_BEFORE`] is left.
async fn renew_lease(catalog: &Catalog, live: &TableIdent, mark: &mut RebuildMark) -> Result<(), ServiceError> {
    let now = now_ms();
    if mark
        .pause_until_ms
        .is_some_and(|t| t - now > RENEW_BEFORE.as_millis() as i64)
    {
        return Ok(());
    }
    let mut renewed = mark.clone();
    renewed.pause_until_ms = Some(now + LEASE.as_millis() as i64);
    set_mark(catalog, live, mark, renewed).await
}

/// Replaces the target table's mark `mark` by `to` (refused if the table no longer carries it).
async fn set_mark(
    catalog: &Catalog,
    live: &TableIdent,
    mark: &mut RebuildMark,
    to: RebuildMark,
) -> Result<(), ServiceError> {
    let set = SetRebuildMark {
        expect: Expect::Rebuild(mark.id.clone()),
        mark: Some(to.clone()),
    };
    update_unclaimed(catalog, live, &set).await?;
    *mark = to;
    Ok(())
}

/// Abandons `contract`'s rebuild: the marks and the shadow tables go (refused once the swap
/// has begun); the shadows' files stay as orphans of the live tables.
pub async fn abandon(contract: &Contract, services: &Services) -> Result<Abandoned, ServiceError> {
    let catalog = &services.catalog;
    let tables = Tables::of(contract)?;
    let names = Names::of(&tables)?;
    if !catalog.exists(&names.main.live).await? {
        return Ok(Abandoned::Nothing);
    }
    let live = catalog.load(&names.main.live).await?.metadata;
    let Some(mark) = RebuildMark::of(&live)? else {
        clear_dead_letter_mark(catalog, &names.dead_letters.live).await?;
        shadow::drop_all(catalog, &names.shadows()).await?;
        return Ok(Abandoned::Nothing);
    };
    if mark.swapping {
        return Err(ServiceError::Config(format!(
            "{}: the swap of rebuild {} has begun; run calve rebuild --table {} to finish it",
            contract.table.name, mark.id, contract.table.name
        )));
    }
    // The target table's mark first (refused if the swap began meanwhile); the dead-letter
    // table's only mirrors it, and a stale one goes with the next abandon or rebuild.
    let clear = SetRebuildMark {
        expect: Expect::Rebuild(mark.id.clone()),
        mark: None,
    };
    update_unclaimed(catalog, &names.main.live, &clear).await?;
    clear_dead_letter_mark(catalog, &names.dead_letters.live).await?;
    let dlq = catalog.load(&names.dead_letters.live).await?.metadata;
    shadow::drop_all(catalog, &names.shadows()).await?;
    Ok(Abandoned::Rebuild {
        locations: vec![mark.location(live.location()), mark.location(dlq.location())],
        id: mark.id,
    })
}

/// Removes the dead-letter table's mark, if it has one.
async fn clear_dead_letter_mark(catalog: &Catalog, ident: &TableIdent) -> Result<(), ServiceError> {
    if !catalog.exists(ident).await? || RebuildMark::of(&catalog.load(ident).await?.metadata)?.is_none() {
        return Ok(());
    }
    let clear = SetRebuildMark {
        expect: Expect::Any,
        mark: None,
    };
    update_unclaimed(catalog, ident, &clear).await
}
