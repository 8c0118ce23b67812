//! The background maintenance of one table and its dead-letter table inside `calve run`.
//!
//! It runs beside the table's pipeline, never in its way: every maintenance change is its own
//! compare-and-swap commit, a compaction whose inputs changed is abandoned, and a keyed
//! pipeline whose positions a compaction made stale catches its key index up (reading only
//! the files compaction wrote) and commits again.
//! A failed cycle is logged and tried again at the next interval; maintenance never stops
//! ingestion.

use std::sync::Arc;

use calve_contract::Contract;
use calve_maintain::{CycleReport, Maintainer, MaintenancePolicy, NoProgress};
use calve_retry::{Classify, RetryClass};
use calve_table::Catalog;
use tokio::sync::{watch, Semaphore};

use crate::config::MaintenanceConfig;
use crate::definition::{dead_letter_definition, table_definition};
use crate::error::ServiceError;
use crate::faults::panic_message;
use crate::maintenance_threads::cycle_permit;
use crate::stats::TableStats;

/// [`maintain`] in a task of its own, started again after a panic (a bug in one cycle must
/// not end a table's maintenance for the life of the process).
pub async fn maintain_supervised(
    contract: Contract,
    catalog: Catalog,
    warehouse: String,
    cfg: MaintenanceConfig,
    stats: Arc<TableStats>,
    stop: watch::Receiver<bool>,
    cycles: Arc<Semaphore>,
) {
    loop {
        let task = tokio::spawn(maintain(
            contract.clone(),
            catalog.clone(),
            warehouse.clone(),
            cfg.clone(),
            stats.clone(),
            stop.clone(),
            cycles.clone(),
        ));
        match task.await {
            Ok(()) => return,
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(p) => panic_message(&*p),
                    Err(e) => e.to_string(),
                };
                tracing::error!(table = %contract.table.name, "maintenance panicked ({why}); starting it again");
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Maintains `contract`'s tables every `cfg.interval` until `stop` turns true; each cycle
/// first takes a permit from `cycles`, which bounds the cycles all tables run at once.
pub async fn maintain(
    contract: Contract,
    catalog: Catalog,
    warehouse: String,
    cfg: MaintenanceConfig,
    stats: Arc<TableStats>,
    mut stop: watch::Receiver<bool>,
    cycles: Arc<Semaphore>,
) {
    let mut maintainers = match maintainers(&contract, &catalog, &warehouse) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(table = %contract.table.name, "maintenance not started: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval.0) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        for m in &mut maintainers {
            let _permit = cycle_permit(&cycles).await;
            run_cycle(&catalog, m, &stats).await;
        }
    }
}

fn maintainers(c: &Contract, catalog: &Catalog, warehouse: &str) -> Result<Vec<Maintainer>, ServiceError> {
    let now = chrono::Utc::now().timestamp_millis();
    let policy = MaintenancePolicy::from_contract(c);
    let main = table_definition(c)?.ident;
    let dlq = dead_letter_definition(c)?.ident;
    Ok(vec![
        Maintainer::new(catalog.clone(), main, policy.clone(), now).publish_status_to(warehouse.to_string()),
        Maintainer::new(catalog.clone(), dlq, policy.for_dead_letters(), now).publish_status_to(warehouse.to_string()),
    ])
}

async fn run_cycle(catalog: &Catalog, m: &mut Maintainer, stats: &TableStats) {
    match catalog.exists(m.ident()).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(table = %m.ident(), "maintenance skipped a cycle: {e}");
            return;
        }
    }
    match m.cycle(chrono::Utc::now().timestamp_millis(), false, &NoProgress).await {
        Ok(r) => {
            stats.record_maintenance(&r);
            log_cycle(&r)
        }
        Err(e) if e.class() == RetryClass::Temporary => {
            tracing::warn!(table = %m.ident(), "maintenance cycle failed, retrying next interval: {e}")
        }
        Err(e) => tracing::error!(table = %m.ident(), "maintenance cycle failed: {e}"),
    }
}

fn log_cycle(r: &CycleReport) {
    let did_something =
        r.jobs_run + r.snapshots_expired + r.orphans_removed + r.delete_files_dropped + r.delete_files_merged > 0
            || r.manifests_rewritten;
    if !did_something {
        return;
    }
    tracing::info!(
        table = %r.table, jobs = r.jobs_run, deferred = r.jobs_deferred, abandoned = r.jobs_abandoned,
        files_in = r.files_in, files_out = r.files_out, bytes_in = r.bytes_in, bytes_out = r.bytes_out,
        deletes_applied = r.deletes_applied, delete_files_dropped = r.delete_files_dropped,
        delete_files_merged = r.delete_files_merged, delete_files_written = r.delete_files_written,
        snapshots_expired = r.snapshots_expired, files_expired = r.files_expired,
        manifests_rewritten = r.manifests_rewritten, orphans = r.orphans_removed,
        "maintained"
    );
}
