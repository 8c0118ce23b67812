//! `calve-bench tables [n]`: many tables in one process (#16). `n` contracts (default 1,000) at
//! the example contract's one-minute band, each reading a topic of its own (one partition,
//! `CALVE_BENCH_EVENTS` orders each, default 1,000), run by one supervisor under `[memory]
//! budget` (default 256 MiB, `CALVE_BENCH_BUDGET`; the orders together are more than its
//! buffer part, so the budget is under pressure). The records are produced first, so every
//! table has its band's worth waiting when the process starts.
//!
//! Prints the process's resident memory (before the tables start, and its peak while they
//! run), its threads, the buffers' peak against their part, and the commit lag: for each
//! table, the time from the process's start until its first commit, beside the band it should
//! keep. After a graceful shutdown every table must hold all its records.

use std::time::{Duration, Instant};

use calve_service::{run_tables, Observed, RunConfig, Services, StopWhen};
use calve_table::Catalog;
use calve_testkit::broker::Broker;
use calve_testkit::kafka::{create_topics, produce_to_many, RawMessage};
use calve_testkit::workload::order_json;
use tokio::sync::watch;

const BAND: Duration = Duration::from_secs(60);

pub fn tables(n: usize) -> anyhow::Result<()> {
    let per_table: u64 = std::env::var("CALVE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let budget = std::env::var("CALVE_BENCH_BUDGET").unwrap_or_else(|_| "256MiB".into());
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    let topics: Vec<String> = (0..n).map(|i| format!("t{i:04}")).collect();
    std::fs::create_dir(dir.path().join("contracts"))?;
    for t in &topics {
        let contract = include_str!("../../../examples/contracts/orders.toml")
            .replace("shop.orders", &format!("bench.{t}"))
            .replace("topic = \"orders\"", &format!("topic = \"{t}\""));
        std::fs::write(dir.path().join(format!("contracts/{t}.toml")), contract)?;
    }
    let made = Instant::now();
    create_topics(&broker.bootstrap(), &topics, 1);
    let batches: Vec<(String, Vec<RawMessage>)> = topics
        .iter()
        .map(|t| {
            let msgs = (0..per_table)
                .map(|id| (format!("k{id}"), Some(order_json(id).into_bytes()), None))
                .collect();
            (t.clone(), msgs)
        })
        .collect();
    produce_to_many(&broker.bootstrap(), &batches);
    println!(
        "workload: {n} tables, {per_table} orders each on a topic of their own, a {}s band, [memory] budget {budget}; topics made and filled in {:.1}s",
        BAND.as_secs(),
        made.elapsed().as_secs_f64()
    );
    let d = dir.path().display();
    let config = dir.path().join("calve.toml");
    // Maintenance is off: what is measured is ingestion's footprint.
    std::fs::write(
        &config,
        format!(
            "contracts = [\"contracts\"]\n\n[catalog]\nuri = \"sqlite:{d}/catalog.db\"\nwarehouse = \"{d}/warehouse\"\n\n\
             [kafka]\nbrokers = \"{}\"\n\n[maintenance]\nenabled = false\n\n[memory]\nbudget = \"{budget}\"\n",
            broker.bootstrap()
        ),
    )?;
    let cfg = RunConfig::load(&config)?;
    let contracts = cfg.contracts()?;
    let observed = Observed::of(&contracts);
    let rss_start = proc_status("VmRSS");
    // The peak below is the tables' alone, not the producing's.
    reset_peak_rss();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (lags, opened, threads, budget_peak, incomplete) = rt.block_on(async {
        let catalog = Catalog::open(&cfg.catalog).await?;
        let mut services = Services::new(&cfg, catalog.clone())?;
        services.within_memory(cfg.memory.as_ref().expect("[memory]"), &contracts);
        let memory = services.memory.clone().expect("a budget");
        let (shutdown, rx) = watch::channel(false);
        let started = Instant::now();
        let (tables, obs) = (contracts.clone(), observed.clone());
        let service = tokio::spawn(async move { run_tables(tables, services, &obs, rx, StopWhen::Shutdown).await });
        let mut lags: Vec<Option<f64>> = vec![None; n];
        // When each table first held records it read: what opening costs, apart from the band.
        let mut opened: Vec<Option<f64>> = vec![None; n];
        let mut threads = 0;
        let deadline = started + BAND * 3;
        while lags.iter().any(Option::is_none) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            threads = threads.max(proc_status("Threads"));
            let now = started.elapsed().as_secs_f64();
            for (((_, stats), lag), open) in observed.iter().zip(lags.iter_mut()).zip(opened.iter_mut()) {
                if lag.is_none() && stats.newest_committed_ms().is_some() {
                    *lag = Some(now);
                }
                if open.is_none() && (stats.sla.pending_since_ms().is_some() || lag.is_some()) {
                    *open = Some(now);
                }
            }
        }
        let _ = shutdown.send(true);
        for (table, r) in service.await? {
            if let Err(e) = r {
                anyhow::bail!("table {table}: {e}");
            }
        }
        let mut incomplete = 0;
        for c in &contracts {
            let ident = calve_service::table_definition(c)?.ident;
            let held: i64 = calve_service::summarize(&catalog, &ident)
                .await?
                .restore
                .unwrap_or_default()
                .values()
                .flat_map(|p| p.values())
                .sum();
            incomplete += usize::from(held != per_table as i64);
        }
        anyhow::Ok((lags, opened, threads, (memory.peak(), memory.buffers()), incomplete))
    })?;
    anyhow::ensure!(incomplete == 0, "{incomplete} tables lack records after the shutdown");
    let missing = lags.iter().filter(|l| l.is_none()).count();
    let lags = sorted(lags);
    let opened = sorted(opened);
    let at = |q: f64| quantile(&lags, q);
    let within = lags.iter().filter(|l| **l <= BAND.as_secs_f64() * 1.1).count();
    println!(
        "memory: RSS {} MiB before the tables started, peak {} MiB while they ran (budget {budget}); buffers peaked at {} MiB together (their part {} MiB); {threads} threads at most",
        rss_start / 1024,
        proc_status("VmHWM") / 1024,
        budget_peak.0 >> 20,
        budget_peak.1 >> 20
    );
    println!(
        "commit lag from the process's start: p50 {:.1}s p99 {:.1}s max {:.1}s; {within} of {n} tables within 1.1x the {}s band{}",
        at(0.5),
        at(0.99),
        at(1.0),
        BAND.as_secs(),
        match missing {
            0 => String::new(),
            m => format!("; {m} never committed within {}s", (BAND * 3).as_secs()),
        }
    );
    println!(
        "first records read from the process's start: p50 {:.1}s p99 {:.1}s max {:.1}s",
        quantile(&opened, 0.5),
        quantile(&opened, 0.99),
        quantile(&opened, 1.0)
    );
    Ok(())
}

/// Starts this process's peak RSS (`VmHWM`) over from its current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A number from this process's /proc status (kB for memory lines).
fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The times that came, in order.
fn sorted(times: Vec<Option<f64>>) -> Vec<f64> {
    let mut times: Vec<f64> = times.into_iter().flatten().collect();
    times.sort_by(f64::total_cmp);
    times
}

/// The `q` quantile of sorted `times` (NaN when there are none).
fn quantile(times: &[f64], q: f64) -> f64 {
    times
        .get(((times.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}
