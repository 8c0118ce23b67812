//! `calve-bench isolation [rows]`: whether one table's maintenance delays another table's
//! commits. A table on a 1 s band ingests a steady trickle (20 records a second) through the
//! service; meanwhile two other tables, each holding `rows` (default 4M) order rows in 40
//! small files, are compacted by the service's maintenance.
//!
//! Two runs, each on fresh tables: the baseline spawns the same maintenance on the runtime
//! that ingests (as calve did before maintenance had threads of its own); the second runs it
//! where `calve run` does, on [`MaintenanceThreads`]. Each prints the fast table's freshness
//! (now minus the Kafka timestamp of its newest committed record, sampled every 50 ms from a
//! thread of its own) while nothing compacts and while the compactions run, the longest gap
//! between its commits, and how long the compactions took.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use calve_contract::HumanDuration;
use calve_service::{
    maintain, run_tables, MaintenanceConfig, MaintenanceThreads, Observed, RunConfig, Services, StopWhen, TableStats,
};
use calve_table::read::live::live_files;
use calve_table::Catalog;
use calve_testkit::broker::Broker;
use calve_testkit::kafka::{create_topic, produce_steadily};
use calve_testkit::workload::order_json;
use tokio::sync::{watch, Semaphore};

use crate::compaction::{small_files, FILES};
use crate::day::SimTable;

const BULK_TABLES: usize = 2;
const TRICKLE: Duration = Duration::from_millis(50);
const SAMPLE: Duration = Duration::from_millis(50);
/// How long the fast table runs alone before maintenance starts (its undisturbed freshness).
const QUIET: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq)]
enum Placement {
    /// On the runtime that ingests.
    IngestRuntime,
    /// On the maintenance threads.
    OwnThreads,
}

/// What one run measured.
struct Measured {
    quiet: Vec<f64>,
    compacting: Vec<f64>,
    longest_commit_gap: f64,
    compaction_secs: f64,
}

pub fn isolation(rows: i64) -> anyhow::Result<()> {
    let broker = Broker::start();
    println!(
        "workload: a 1 s band table fed {} records/s; {BULK_TABLES} other tables of {rows} rows in 40 small files each, compacted",
        1000 / TRICKLE.as_millis()
    );
    let baseline = measure(&broker, "a", rows, Placement::IngestRuntime)?;
    let isolated = measure(&broker, "b", rows, Placement::OwnThreads)?;
    println!();
    report("baseline: maintenance on the ingest runtime", &baseline);
    report("calve   : maintenance on its own threads   ", &isolated);
    println!(
        "ratio   : while compacting, the 1 s table's p99 freshness is {:.2}x and its longest commit gap {:.2}x the baseline's; compactions took {:.2}x as long",
        percentile(&isolated.compacting, 0.99) / percentile(&baseline.compacting, 0.99),
        isolated.longest_commit_gap / baseline.longest_commit_gap,
        isolated.compaction_secs / baseline.compaction_secs,
    );
    Ok(())
}

fn report(label: &str, m: &Measured) {
    let f = |v: &[f64]| {
        format!(
            "p50 {:.2}s p99 {:.2}s max {:.2}s",
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        )
    };
    println!(
        "{label}: freshness alone {} | while compacting {} | longest commit gap {:.2}s | compactions {:.1}s",
        f(&m.quiet),
        f(&m.compacting),
        m.longest_commit_gap,
        m.compaction_secs
    );
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[((n - 1) as f64 * q).round() as usize],
    }
}

fn measure(broker: &Broker, run: &str, rows: i64, placement: Placement) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let topic = format!("fast_{run}");
    create_topic(&broker.bootstrap(), &topic, 1);
    let contract = include_str!("../../../examples/contracts/orders.toml")
        .replace("shop.orders", &format!("bench.fast_{run}"))
        .replace("topic = \"orders\"", &format!("topic = \"{topic}\""))
        .replace("freshness = \"1m\"", "freshness = \"1s\"");
    std::fs::write(dir.path().join("fast.toml"), contract)?;
    let d = dir.path().display();
    let config = dir.path().join("calve.toml");
    // The fast table's own maintenance is off: only the other tables' may get in its way.
    std::fs::write(
        &config,
        format!("contracts = [\"fast.toml\"]\n\n[catalog]\nuri = \"sqlite:{d}/catalog.db\"\nwarehouse = \"{d}/warehouse\"\n\n[kafka]\nbrokers = \"{}\"\n\n[maintenance]\nenabled = false\n", broker.bootstrap()),
    )?;
    let cfg = RunConfig::load(&config)?;
    let contracts = cfg.contracts()?;
    let observed = Observed::of(&contracts);
    let fast = observed.iter().next().map(|(_, s)| s.clone()).expect("one table");

    let stop_producing = Arc::new(AtomicBool::new(false));
    let producer = produce_steadily(&broker.bootstrap(), &topic, TRICKLE, stop_producing.clone(), order_json);
    let sampler = Sampler::start(fast.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let measured = rt.block_on(async {
        let catalog = Catalog::open(&cfg.catalog).await?;
        let (shutdown, rx) = watch::channel(false);
        let services = Services::new(&cfg, catalog.clone())?;
        let (tables, observed) = (contracts.clone(), observed.clone());
        let service =
            tokio::spawn(async move { run_tables(tables, services, &observed, rx, StopWhen::Shutdown).await });
        let bulk = bulk_tables(dir.path(), rows).await?;
        while fast.newest_committed_ms().is_none() {
            tokio::time::sleep(SAMPLE).await;
        }
        sampler.mark();
        tokio::time::sleep(QUIET).await;
        let started = Instant::now();
        sampler.mark();
        let (stop_maintenance, maintenance) = start_maintenance(&bulk, dir.path(), placement);
        for (t, _) in &bulk {
            while live_files(t.catalog.file_io(), &t.state().await?.metadata)
                .await?
                .data
                .len()
                >= FILES as usize
            {
                tokio::time::sleep(SAMPLE).await;
            }
        }
        let compaction_secs = started.elapsed().as_secs_f64();
        let (window_start, window_end) = sampler.mark();
        let _ = stop_maintenance.send(true);
        for m in maintenance {
            m.await?;
        }
        stop_producing.store(true, Ordering::Relaxed);
        let _ = shutdown.send(true);
        for (table, r) in service.await? {
            r.with_context(|| format!("table {table}"))?;
        }
        let ident = calve_service::table_definition(&contracts[0])?.ident;
        let snapshots: Vec<i64> = catalog
            .load(&ident)
            .await?
            .metadata
            .snapshots()
            .map(|s| s.timestamp_ms())
            .collect();
        anyhow::Ok((compaction_secs, longest_gap(snapshots, window_start, window_end)))
    });
    let sent = producer.join().expect("producer");
    let (compaction_secs, longest_commit_gap) = measured?;
    let (quiet, compacting) = sampler.stop();
    println!(
        "run {run}: {sent} records sent, {} + {} freshness samples",
        quiet.len(),
        compacting.len()
    );
    Ok(Measured {
        quiet,
        compacting,
        longest_commit_gap,
        compaction_secs,
    })
}

/// The bulk tables, each filled with `rows` rows in small files.
async fn bulk_tables(dir: &std::path::Path, rows: i64) -> anyhow::Result<Vec<(SimTable, calve_contract::Contract)>> {
    let mut out = Vec::new();
    for i in 0..BULK_TABLES {
        let (t, contract) = SimTable::create(dir, &format!("bulk{i}")).await?;
        small_files(&t, rows).await?;
        out.push((t, contract));
    }
    Ok(out)
}

fn start_maintenance(
    bulk: &[(SimTable, calve_contract::Contract)],
    dir: &std::path::Path,
    placement: Placement,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (stop, rx) = watch::channel(false);
    let cfg = MaintenanceConfig {
        interval: HumanDuration(Duration::from_millis(100)),
        ..MaintenanceConfig::default()
    };
    let threads = MaintenanceThreads::get(cfg.threads).expect("maintenance threads");
    let tasks = bulk
        .iter()
        .map(|(t, contract)| {
            let stats = Arc::new(TableStats::new(&contract.table.name, contract.sla.freshness.0));
            let warehouse = dir.join(contract.table.name.replace('.', "_")).display().to_string();
            let cycles = match placement {
                // As before: every table's maintenance a task beside the pipelines, unbounded.
                Placement::IngestRuntime => Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
                Placement::OwnThreads => threads.cycles(),
            };
            let task = maintain(
                contract.clone(),
                t.catalog.clone(),
                warehouse,
                cfg.clone(),
                stats,
                rx.clone(),
                cycles,
            );
            match placement {
                Placement::IngestRuntime => tokio::spawn(task),
                Placement::OwnThreads => threads.spawn(task),
            }
        })
        .collect();
    (stop, tasks)
}

/// The longest time without a commit inside `[from, to]` (ms), counting from the last commit
/// before it and to its end.
fn longest_gap(mut commits: Vec<i64>, from: i64, to: i64) -> f64 {
    commits.sort_unstable();
    let last_before = commits.iter().rev().find(|t| **t < from).copied().unwrap_or(from);
    let mut points = vec![last_before];
    points.extend(commits.iter().filter(|t| (from..=to).contains(*t)));
    points.push(to);
    points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as f64 / 1000.0
}

/// Samples a table's freshness from a thread of its own, so a stalled runtime cannot delay
/// the sampling; [`Sampler::mark`] starts the next phase.
struct Sampler {
    phase: Arc<std::sync::Mutex<(usize, Vec<i64>)>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<f64>>>,
}

impl Sampler {
    fn start(stats: Arc<TableStats>) -> Sampler {
        let phase = Arc::new(std::sync::Mutex::new((0usize, Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (phase.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut phases: Vec<Vec<f64>> = vec![Vec::new(); 4];
            while !s.load(Ordering::Relaxed) {
                let now = chrono::Utc::now().timestamp_millis();
                let i = p.lock().map(|p| p.0).unwrap_or(0);
                if let Some(newest) = stats.newest_committed_ms() {
                    phases[i.min(3)].push((now - newest) as f64 / 1000.0);
                }
                std::thread::sleep(SAMPLE);
            }
            phases
        });
        Sampler { phase, stop, thread }
    }

    /// Starts the next phase; returns the times (ms) the phase that ends began and ended.
    fn mark(&self) -> (i64, i64) {
        let now = chrono::Utc::now().timestamp_millis();
        let mut p = self.phase.lock().expect("sampler");
        p.0 += 1;
        p.1.push(now);
        let began = p.1.iter().rev().nth(1).copied().unwrap_or(now);
        (began, now)
    }

    /// The samples alone (phase 1) and while compacting (phase 2).
    fn stop(self) -> (Vec<f64>, Vec<f64>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut phases = self.thread.join().expect("sampler");
        (std::mem::take(&mut phases[1]), std::mem::take(&mut phases[2]))
    }
}
