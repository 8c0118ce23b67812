//! `calve`: turns Kafka topics into Iceberg tables governed by table contracts.
//!
//! The binary only wires things together; every behaviour lives in the library crates.

mod check;
mod demo;
mod run;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "calve", version, about = "Kafka topics to Iceberg tables, exactly once, under a table contract")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate table contracts: prints `ok` or every problem with its field path.
    Check {
        /// Contract files.
        #[arg(required = true)]
        contracts: Vec<PathBuf>,
    },
    /// Run the tables of a configuration until SIGTERM/SIGINT (then flush, commit, exit 0).
    Run {
        /// Path to calve.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Exit once every table has committed everything its topic held (batch mode).
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Show each table's snapshots, rows, files, dead letters and restore point.
    Status {
        /// Path to calve.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Self-contained demo: in-process Kafka, sample events (some bad), a table you can query.
    Demo {
        /// Where to put the catalog and warehouse (default: a new directory under /tmp).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How many good events to produce.
        #[arg(long, default_value_t = 2000)]
        events: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Check { contracts } => check::run(&contracts),
            Command::Run { config, until_caught_up } => run::run(&config, until_caught_up).await,
            Command::Status { config } => status::run(&config).await,
            Command::Demo { dir, events } => demo::run(dir, events).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
