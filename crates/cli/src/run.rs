//! `calve run`: the service, with graceful shutdown on SIGTERM and SIGINT.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use calve_service::Catalog;
use calve_service::{
    bind_http, install_exporter, run_tables, serve_http, Duty, Observed, RunConfig, Services, StopWhen,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The exit status when every table was taken over by a newer `calve run` (its writer epoch
/// fenced this process out): a supervisor that restarted this process would only
/// take the tables back, so the systemd unit lists it in `RestartPreventExitStatus=`.
pub const EXIT_TAKEN_OVER: u8 = 3;

pub async fn run(config: &Path, until_caught_up: bool) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    // Every secret in it prints as <redacted> (crates/cli/tests/secrets.rs holds it to that).
    tracing::debug!(config = ?cfg, "configuration loaded");
    let contracts = cfg.contracts()?;
    if until_caught_up && cfg.group.is_some() {
        anyhow::bail!(
            "--until-caught-up runs every table in this process, and calve.toml shares them with a group ([group]); \
             run the batch with a calve.toml without [group], while the group is stopped"
        );
    }
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
    // The exporter goes in before the tables' statistics exist: their series handles bind to
    // the recorder installed when they are made.
    let http = match &cfg.http {
        Some(http) => Some((install_exporter()?, bind_http(http).await?)),
        None => None,
    };
    let observed = Observed::of(&contracts);
    if let Some((metrics, listener)) = http {
        tokio::spawn(serve_http(listener, observed.clone(), metrics, rx.clone()));
    }
    let mut services = Services::new(&cfg, catalog)?;
    if let Some(memory) = &cfg.memory {
        services.within_memory(memory, &contracts);
    }
    if let Some(group) = &cfg.group {
        let duty = Duty::join(&cfg.kafka, group, &contracts)
            .await
            .context("joining the group")?;
        services.duty = Some(Arc::new(duty));
    }
    let memory = services.memory.clone();
    let outcomes = run_tables(contracts, services, &observed, rx, stop).await;
    if let Some(m) = memory {
        tracing::info!(
            peak = m.peak(),
            part = m.buffers(),
            "memory budget: the tables' buffers held at most {} bytes together (their part: {})",
            m.peak(),
            m.buffers()
        );
    }
    let mut failed = false;
    // Every table ended by a takeover (none stopped at SIGTERM, none failed otherwise).
    let mut all_taken_over = !outcomes.is_empty();
    for (table, r) in outcomes {
        all_taken_over &= r.as_ref().is_err_and(|e| e.is_fenced());
        if let Err(e) = r {
            failed = true;
            eprintln!("table {table} failed: {e}");
        }
    }
    Ok(match (failed, all_taken_over) {
        (false, _) => ExitCode::SUCCESS,
        (true, true) => ExitCode::from(EXIT_TAKEN_OVER),
        (true, false) => ExitCode::FAILURE,
    })
}
