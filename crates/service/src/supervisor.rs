//! Runs one pipeline per contract. A pipeline that fails with a temporary error is reopened
//! from its table's restore point after a backoff (which is always safe: the table, not the
//! process, knows what has been consumed); one that fails permanently stops loudly while the
//! other tables go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calve_contract::Contract;
use calve_ingest::registry::Registry;
use calve_ingest::KafkaClients;
use calve_retry::{Classify, RetryClass};
use calve_table::keyed::index::IndexSettings;
use calve_table::{Catalog, TableError};
use tokio::sync::watch;

use crate::config::{MaintenanceConfig, RunConfig};
use crate::definition::{dead_letter_definition, table_definition};
use crate::duty::Duty;
use crate::error::ServiceError;
use crate::faults::panic_message;
use crate::health::TableState;
use crate::hold::{announce, schema_holds, wait_for_decision, waiting_on};
use crate::maintenance::maintain_supervised;
use crate::maintenance_threads::MaintenanceThreads;
use crate::memory::MemoryBudget;
use crate::pipeline::{Ended, Pipeline, StopWhen};
use crate::rebuild::{fenced_by_rebuild, pause_at_open, wait_for_swap};
use crate::sla_watch::watch_slas;
use crate::stats::{Observed, TableStats};

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A pipeline that ran this long before failing was healthy: backoff and the failure count
/// start over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long a table claimed away from this process, although the group gives it to this one,
/// waits before claiming it back (a misconfigured group must not fence at full speed).
const DISPUTED_BACKOFF: Duration = Duration::from_secs(30);
/// How long a fenced table waits for word from the group before it takes the fence for a
/// dispute: a process whose session the group dropped hears of it within a few polls.
const HANDOVER_GRACE: Duration = Duration::from_secs(10);
/// How long a table that stopped for good waits for the group to move its duty: in effect,
/// until it does.
const UNTIL_MOVED: Duration = Duration::from_secs(365 * 86_400);

/// How each table's pipeline ended.
pub type Outcomes = BTreeMap<String, Result<(), ServiceError>>;

/// Where the tables live and how they are maintained: what every table's tasks share.
#[derive(Clone)]
pub struct Services {
    /// The catalog.
    pub catalog: Catalog,
    /// Kafka: the consumers the tables share.
    pub kafka: Arc<KafkaClients>,
    /// Where calve's own files go (maintenance publishes its status under it): `[catalog]
    /// state`, else the warehouse.
    pub warehouse: String,
    /// Background maintenance settings.
    pub maintenance: MaintenanceConfig,
    /// Keyed tables' index memory and spill space.
    pub key_index: IndexSettings,
    /// The schema registry, with its cache of writer schemas (one for all tables).
    pub registry: Option<Arc<Registry>>,
    /// This process's share of the tables when it shares them with a group (`[group]`);
    /// `None`: it commits every table.
    pub duty: Option<Arc<Duty>>,
    /// The budget all tables' buffers share (`[memory]`, see [`Services::within_memory`]).
    pub memory: Option<Arc<MemoryBudget>>,
}

impl Services {
    /// Where the write that failed with `e` went: the key index's spill directory, or the
    /// warehouse (and calve's state, when it lives elsewhere). The storage errors themselves
    /// seldom name a path.
    fn storage_written(&self, e: &ServiceError) -> String {
        match e {
            ServiceError::Table(TableError::KeyIndexSpill(_)) => {
                return format!("the key index spill directory {}", self.key_index.spill_dir.display())
            }
            ServiceError::Table(TableError::Catalog(_)) => return "the catalog's database".into(),
            _ => {}
        }
        let storage = self.catalog.storage();
        match storage.state_root() == storage.root() {
            true => format!("the warehouse {}", storage.root()),
            false => format!(
                "the warehouse {} or calve's state {}",
                storage.root(),
                storage.state_root()
            ),
        }
    }

    /// The services `cfg` describes, on an opened `catalog`.
    /// Fails when the registry's credentials cannot be read.
    pub fn new(cfg: &RunConfig, catalog: Catalog) -> Result<Self, ServiceError> {
        Ok(Services {
            warehouse: catalog.storage().state_root().to_string(),
            catalog,
            kafka: Arc::new(KafkaClients::new(cfg.kafka.clone())),
            maintenance: cfg.maintenance.clone(),
            key_index: cfg.key_index.settings(),
            registry: cfg.registry.as_ref().map(Registry::new).transpose()?.map(Arc::new),
            duty: None,
            memory: None,
        })
    }
}

/// Runs every contract until shutdown (or until caught up, with [`StopWhen::CaughtUp`]): per
/// table, its pipeline and, beside it, its maintenance, which stops when the pipeline ends.
/// Each table records what it does and how it is in its entry of `observed` (made by
/// [`Observed::of`] from the same contracts).
pub async fn run_tables(
    contracts: Vec<Contract>,
    services: Services,
    observed: &Observed,
    shutdown: watch::Receiver<bool>,
    stop: StopWhen,
) -> Outcomes {
    // A batch run (until caught up) is judged by its schedule, not by the band.
    let slas = (stop == StopWhen::Shutdown).then(|| tokio::spawn(watch_slas(observed.clone(), shutdown.clone())));
    let mut tasks = Vec::new();
    for c in contracts {
        let s = match observed.get(&c.table.name) {
            Some(s) => s.clone(),
            None => Arc::new(TableStats::of(&c)),
        };
        let services = services.clone();
        let shutdown = shutdown.clone();
        let name = c.table.name.clone();
        tasks.push((name, tokio::spawn(table_tasks(c, services, shutdown, stop, s))));
    }
    let mut outcomes = Outcomes::new();
    for (name, t) in tasks {
        let r = t
            .await
            .unwrap_or_else(|e| Err(ServiceError::Config(format!("pipeline task panicked: {e}"))));
        outcomes.insert(name, r);
    }
    if let Some(slas) = slas {
        slas.abort();
    }
    outcomes
}

async fn table_tasks(
    c: Contract,
    services: Services,
    shutdown: watch::Receiver<bool>,
    stop: StopWhen,
    stats: Arc<TableStats>,
) -> Result<(), ServiceError> {
    match services.duty.clone() {
        Some(duty) => shared_table_tasks(c, services, duty, shutdown, stop, stats).await,
        None => owned_table_tasks(c, services, shutdown, stop, stats).await,
    }
}

/// A table whose commit duty the group hands around: run while this process has it, stand by
/// otherwise. Losing the duty ends the pipeline as a shutdown does (flush, commit, stop); the
/// new owner's claim fences whatever that could not finish.
async fn shared_table_tasks(
    c: Contract,
    services: Services,
    duty: Arc<Duty>,
    mut shutdown: watch::Receiver<bool>,
    stop: StopWhen,
    stats: Arc<TableStats>,
) -> Result<(), ServiceError> {
    let name = c.table.name.clone();
    // The permanent failure the table stopped with, if it did: what the process exits with.
    let mut stopped = None;
    loop {
        if stopped.is_none() {
            stats.set_state(TableState::Standby);
        }
        if !duty.until_owned(&name, &mut shutdown).await? {
            return match stopped {
                Some(e) => Err(e),
                None => {
                    stats.set_state(TableState::Done);
                    Ok(())
                }
            };
        }
        stats.set_state(TableState::Starting);
        let generation = duty.generation();
        let owned = duty.while_owned(&name, shutdown.clone());
        let result = owned_table_tasks(c.clone(), services.clone(), owned, stop, stats.clone()).await;
        stopped = None;
        if *shutdown.borrow() {
            // A fence met on the way out is a handover too: the table is in good hands.
            return result.or_else(|e| if e.is_fenced() { Ok(()) } else { Err(e) });
        }
        let Err(e) = result else { continue };
        // The duty moved meanwhile (perhaps away and back, or this process's session was
        // dropped and it has not heard yet): a handover.
        if e.is_fenced() && duty.changed_since(generation, HANDOVER_GRACE, &mut shutdown).await {
            tracing::info!(table = %name, "handed the table over: {e}");
            continue;
        }
        if e.is_fenced() {
            // Only a process that maps tables to duty partitions differently (other
            // contracts) or runs outside the group claims a table the group left with us.
            tracing::error!(
                table = %name,
                "another process claimed the table while the group gives its commit duty to this one; do all \
                 processes of the group run the same contracts, and none without [group]? Claiming it back in \
                 {DISPUTED_BACKOFF:?}: {e}"
            );
            stats.set_state(TableState::Failing {
                failures: 1,
                error: format!("claimed by another process while this one has its commit duty: {e}"),
            });
        }
        // A table stopped for good here stays stopped until the group moves its duty (a
        // process elsewhere may fare better) rather than holding its duty partition idle.
        let wait = match e.is_fenced() {
            true => DISPUTED_BACKOFF,
            false => {
                stopped = Some(e);
                UNTIL_MOVED
            }
        };
        duty.changed_since(duty.generation(), wait, &mut shutdown).await;
    }
}

/// A table this process commits (alone, or while the group gives it the duty): its pipeline
/// under the supervisor and, beside it, its maintenance.
async fn owned_table_tasks(
    c: Contract,
    services: Services,
    shutdown: watch::Receiver<bool>,
    stop: StopWhen,
    stats: Arc<TableStats>,
) -> Result<(), ServiceError> {
    let (maintenance_stop, maintenance_rx) = watch::channel(false);
    let maintenance = match services.maintenance.enabled {
        true => start_maintenance(&c, &services, &stats, maintenance_rx),
        false => None,
    };
    let result = supervise(c, &services, shutdown, stop, stats).await;
    let _ = maintenance_stop.send(true);
    if let Some(m) = maintenance {
        let _ = m.await;
    }
    result
}

/// The table's maintenance, on the maintenance threads (see [`MaintenanceThreads`]).
fn start_maintenance(
    c: &Contract,
    services: &Services,
    stats: &Arc<TableStats>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let threads = match MaintenanceThreads::get(services.maintenance.threads) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(table = %c.table.name, "maintenance not started: {e}");
            return None;
        }
    };
    Some(threads.spawn(maintain_supervised(
        c.clone(),
        services.catalog.clone(),
        services.warehouse.clone(),
        services.maintenance.clone(),
        stats.clone(),
        stop,
        threads.cycles(),
    )))
}

async fn supervise(
    contract: Contract,
    services: &Services,
    mut shutdown: watch::Receiver<bool>,
    stop: StopWhen,
    stats: Arc<TableStats>,
) -> Result<(), ServiceError> {
    let name = contract.table.name.clone();
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        match attempt(&contract, services, &shutdown, stop, &stats).await {
            Ok(Ended::Done) => {
                stats.set_state(TableState::Done);
                return Ok(());
            }
            Ok(Ended::Held(hold)) if stop == StopWhen::CaughtUp => {
                let since_ms = held_since(services, &contract).await;
                stats.set_state(TableState::Held {
                    hold: hold.clone(),
                    since_ms,
                });
                return Err(ServiceError::Held { table: name, hold });
            }
            Ok(Ended::Held(hold)) => {
                if !matches!(stats.state().0, TableState::Held { .. }) {
                    let since_ms = held_since(services, &contract).await;
                    stats.set_state(TableState::Held { hold, since_ms });
                }
                let ident = table_definition(&contract)?.ident;
                match wait_for_decision(&services.catalog, &ident, &mut shutdown).await {
                    Ok(true) => {
                        stats.set_state(TableState::Starting);
                        (failures, backoff) = (0, MIN_BACKOFF);
                        continue;
                    }
                    Ok(false) => {
                        stats.set_state(TableState::Done);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!(table = %name, "reading the hold failed; trying again in {backoff:?}: {e}")
                    }
                }
            }
            Ok(Ended::Paused(rebuild)) => {
                stats.set_state(TableState::Paused { rebuild });
                let ident = table_definition(&contract)?.ident;
                // Reopening before the rebuild lets go would commit under it: ask again.
                loop {
                    match wait_for_swap(&services.catalog, &ident, &mut shutdown).await {
                        Ok(true) => break,
                        Ok(false) => {
                            stats.set_state(TableState::Done);
                            return Ok(());
                        }
                        Err(e) => {
                            tracing::warn!(table = %name, "reading the rebuild's state failed; asking again: {e}");
                            tokio::time::sleep(MIN_BACKOFF).await;
                        }
                    }
                }
                stats.set_state(TableState::Starting);
                (failures, backoff) = (0, MIN_BACKOFF);
                continue;
            }
            Err(e)
                if fenced_by_rebuild(
                    &services.catalog,
                    [
                        &table_definition(&contract)?.ident,
                        &dead_letter_definition(&contract)?.ident,
                    ],
                    &e,
                )
                .await =>
            {
                tracing::info!(table = %name, "a rebuild swapped itself in under the table; reopening on the swapped-in table: {e}");
                stats.set_state(TableState::Starting);
                continue;
            }
            // Sharing the tables, a fence is a handover, said by the caller (shared_table_tasks).
            Err(e) if e.is_fenced() && services.duty.is_some() => return Err(e),
            Err(e) if e.class() == RetryClass::Permanent => {
                tracing::error!(table = %name, "table stopped: {e}");
                stats.set_state(TableState::Stopped { error: e.to_string() });
                return Err(e);
            }
            Err(e) => {
                // A pipeline that ran a while before failing starts a new series of failures.
                if started.elapsed() > HEALTHY_RUN {
                    (failures, backoff) = (0, MIN_BACKOFF);
                }
                failures += 1;
                // A full disk or a refused permission needs a person from the first failure.
                let fault = e.storage_fault();
                let error = match fault {
                    Some(fault) => format!("{fault} under {}: {e}", services.storage_written(&e)),
                    None => e.to_string(),
                };
                stats.set_state(TableState::Failing {
                    failures,
                    error: error.clone(),
                });
                match (fault, failures) {
                    (Some(_), n) => tracing::error!(
                        table = %name, failures = n,
                        "{error}; the table reopens from its restore point in {backoff:?} (nothing is lost) and goes on once \
                         the storage takes writes again"
                    ),
                    (None, 1 | 2) => {
                        tracing::warn!(table = %name, "pipeline failed, reopening from the table in {backoff:?}: {e}")
                    }
                    (None, n) => tracing::error!(
                        table = %name, failures = n,
                        "TABLE FAILING: {n} failures in a row, reopening from the table in {backoff:?}: {e}"
                    ),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {
                stats.set_state(TableState::Done);
                return Ok(());
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// When the table's hold began (it may predate this process), else now.
async fn held_since(services: &Services, contract: &Contract) -> i64 {
    schema_holds(&services.catalog, contract)
        .await
        .ok()
        .and_then(|h| h.hold.map(|h| h.since_ms))
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
}

/// Opens and runs the pipeline once, in a task of its own: a panic anywhere in it (a bug)
/// ends this attempt as a temporary failure of this table only, never the process or the
/// other tables. A table held for its approver is not opened (nor claimed) until the
/// approver decides; then the decision is applied first.
async fn attempt(
    contract: &Contract,
    services: &Services,
    shutdown: &watch::Receiver<bool>,
    stop: StopWhen,
    stats: &Arc<TableStats>,
) -> Result<Ended, ServiceError> {
    let (contract, services, shutdown, stats) = (contract.clone(), services.clone(), shutdown.clone(), stats.clone());
    let task = tokio::spawn(async move {
        let holds = schema_holds(&services.catalog, &contract).await?;
        if let Some(hold) = waiting_on(&holds, &contract) {
            announce(&contract.table.name, hold);
            return Ok(Ended::Held(hold.id.clone()));
        }
        // A process started while a rebuild swaps (or holds the table paused) waits for it.
        if let Some(rebuild) = pause_at_open(&services.catalog, &table_definition(&contract)?.ident).await? {
            return Ok(Ended::Paused(rebuild));
        }
        loop {
            let mut pipeline = Pipeline::open(contract.clone(), &services, stats.clone()).await?;
            if !pipeline.settle().await? {
                return pipeline.run(shutdown, stop).await;
            }
        }
    });
    match task.await {
        Ok(Err(ServiceError::Held { hold, .. })) => Ok(Ended::Held(hold)),
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(ServiceError::Panicked(panic_message(&*e.into_panic()))),
        Err(e) => Err(ServiceError::Panicked(e.to_string())),
    }
}
