//! `calve run`: the service, with graceful shutdown on SIGTERM and SIGINT.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use calve_service::Catalog;
use calve_service::{run_tables, RunConfig, Services, StopWhen};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

pub async fn run(config: &Path, until_caught_up: bool) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let contracts = cfg.contracts()?;
    let catalog = Catalog::open(&cfg.catalog).await.context("opening the catalog")?;
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: flushing and committing before exit"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: flushing and committing before exit"),
        }
        let _ = tx.send(true);
    });
    let stop = if until_caught_up {
        StopWhen::CaughtUp
    } else {
        StopWhen::Shutdown
    };
    let (outcomes, _) = run_tables(contracts, Services::new(&cfg, catalog)?, rx, stop).await;
    let mut failed = false;
    for (table, r) in outcomes {
        if let Err(e) = r {
            failed = true;
            eprintln!("table {table} failed: {e}");
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
