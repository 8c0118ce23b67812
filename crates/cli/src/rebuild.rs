//! `calve rebuild`: the command line of [`calve_service::rebuild`] — the refusal that says what
//! would be lost, the swap's report, and `--abandon`. Interrupted (SIGTERM, SIGINT), it stops
//! where it is; running it again resumes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use calve_service::{
    abandon_rebuild, rebuild, Abandoned, Catalog, ReadFrom, RebuildOutcome, RebuildRequest, RunConfig, Services,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// What `calve rebuild` was asked.
#[derive(clap::Args)]
pub struct Request {
    /// Path to calve.toml.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The table (`namespace.name`, as in its contract).
    #[arg(long)]
    pub table: String,
    /// Where to re-read from: `earliest` (each partition's first retained offset) or an
    /// RFC 3339 instant.
    #[arg(long)]
    pub from: Option<String>,
    /// Go ahead although the rebuilt table will lack rows the live one has (records
    /// retention dropped, or before --from).
    #[arg(long)]
    pub accept_loss: bool,
    /// Go ahead although keys were erased from the table (`calve erase`): a rebuild reads
    /// their records back from Kafka while the topic still holds them.
    #[arg(long)]
    pub despite_erasures: bool,
    /// Give the rebuild under way up: its shadow tables go, the live table is untouched.
    #[arg(long, conflicts_with_all = ["from", "accept_loss", "despite_erasures"])]
    pub abandon: bool,
}

pub async fn run(req: Request) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(&req.config)?;
    let contract = crate::contract_for(&cfg, &req.config, &req.table)?;
    let catalog = Catalog::open(&cfg.catalog).await.context("opening the catalog")?;
    let services = Services::new(&cfg, catalog)?;
    if req.abandon {
        return Ok(match abandon_rebuild(&contract, &services).await? {
            Abandoned::Nothing => {
                println!("{}: no rebuild is under way", req.table);
                ExitCode::SUCCESS
            }
            Abandoned::Rebuild { id, locations } => {
                println!("{}: rebuild {id} abandoned; the live table is as it was", req.table);
                for l in locations {
                    println!("  its files under {l} are orphans now; maintenance's orphan cleanup removes them");
                }
                ExitCode::SUCCESS
            }
        });
    }
    let from = req
        .from
        .as_deref()
        .map(ReadFrom::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let request = RebuildRequest {
        from,
        accept_loss: req.accept_loss,
        despite_erasures: req.despite_erasures,
    };
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping the rebuild; run the command again to resume it");
        let _ = tx.send(true);
    });
    Ok(match rebuild(&contract, &services, &request, rx).await? {
        RebuildOutcome::Refused(lost) => {
            println!(
                "{}: REFUSED: the rebuilt table would lack rows the live table has (up to {} records):",
                req.table,
                lost.iter().map(|l| l.to - l.from).sum::<i64>()
            );
            for l in &lost {
                println!("  {l}");
            }
            println!("  (offsets the table recorded as never read are not counted; give --accept-loss to go ahead)");
            ExitCode::FAILURE
        }
        RebuildOutcome::Erased(entries) => {
            println!(
                "{}: REFUSED: keys were erased from this table ({} erasure request(s)); a rebuild reads their records \
                 back from Kafka while the topic still holds them:",
                req.table,
                entries.len()
            );
            for e in &entries {
                println!("  {e}");
            }
            println!("  (once the topic's retention has dropped them, give --despite-erasures to go ahead)");
            ExitCode::FAILURE
        }
        RebuildOutcome::Swapped {
            id,
            rows,
            dead_letters,
            restore_point,
            lost,
        } => {
            println!(
                "{}: rebuild {id} swapped in: {rows} rows, {dead_letters} dead letters, restore point {restore_point}",
                req.table
            );
            for l in &lost {
                println!("  accepted as lost: {l}");
            }
            ExitCode::SUCCESS
        }
        RebuildOutcome::Interrupted => {
            println!("{}: rebuild interrupted; run the command again to resume it", req.table);
            ExitCode::FAILURE
        }
    })
}
