//! `calve`: turns Kafka topics into Iceberg tables governed by table contracts.
//!
//! The binary only wires things together; every behaviour lives in the library crates.

mod check;
mod demo;
mod erase;
mod maintain;
mod rebuild;
mod run;
mod schema;
mod status;
mod status_print;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "calve",
    version,
    about = "Kafka topics to Iceberg tables, exactly once, under a table contract"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate table contracts: prints `ok` or every problem with its field path.
    Check {
        /// Contract files.
        #[arg(required_unless_present = "config")]
        contracts: Vec<PathBuf>,
        /// A calve.toml: check its contracts and compare each with its table.
        #[arg(long, short, conflicts_with = "contracts")]
        config: Option<PathBuf>,
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
    /// The on-call page: per table its state (running, behind, held, failing, stopped),
    /// freshness and completeness against the SLA, lag per partition, dead-letter rate, commit
    /// latency, schema version, rows, files, snapshots, restore point and maintenance backlog.
    Status {
        /// Path to calve.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove every version of some keys from a table's storage (files rewritten, old
    /// snapshots expired, then checked), and log the request.
    Erase {
        /// Path to calve.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// The table (`namespace.name`, as in its contract).
        #[arg(long)]
        table: String,
        /// A key to erase: `17`, `"abc"` or a JSON object of the key columns. Repeatable.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// A file with one key per line.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Who asked (recorded in the erasure log).
        #[arg(long)]
        requested_by: String,
    },
    /// Maintain tables now: compact small files and deletes, expire snapshots, regroup
    /// manifests, remove orphans; prints what it did.
    Maintain {
        /// Path to calve.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this table (`namespace.name`, as in its contract) and its dead-letter table.
        #[arg(long)]
        table: Option<String>,
        /// Measure and plan only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Spend no more than the contract's budget (default: work off the whole backlog).
        #[arg(long)]
        respect_budget: bool,
    },
    /// Re-read a table's topic under its current contract into a shadow table while the live
    /// table keeps ingesting, then swap it in with one commit (the running `calve run`
    /// pauses for it). Running it again resumes an interrupted rebuild.
    Rebuild(rebuild::Request),
    /// Breaking schema changes held for the approver (`on_breaking = "hold"`): show, approve,
    /// reject.
    Schema {
        #[command(subcommand)]
        action: SchemaCommand,
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

#[derive(Subcommand)]
enum SchemaCommand {
    /// Show what each held table proposes: the change, the first offending record, its offset.
    Pending {
        /// Path to calve.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Apply the held table's proposal and resume it (nothing lost, nothing doubled).
    Approve(Decide),
    /// Send the held records (those breaking the schema the same way, up to the end of the
    /// topic now) to the dead-letter table and resume.
    Reject(Decide),
}

/// Who decides on which table's hold.
#[derive(clap::Args)]
struct Decide {
    /// Path to calve.toml.
    #[arg(long, short)]
    config: PathBuf,
    /// The table (`namespace.name`, as in its contract).
    #[arg(long)]
    table: String,
    /// Who decides (recorded in the table with the time and the change).
    #[arg(long)]
    by: String,
}

/// `table`'s contract among those `cfg` (read from `config`) lists.
fn contract_for(
    cfg: &calve_service::RunConfig,
    config: &std::path::Path,
    table: &str,
) -> anyhow::Result<calve_contract::Contract> {
    use anyhow::Context;
    cfg.contracts()?
        .into_iter()
        .find(|c| c.table.name == table)
        .with_context(|| format!("no contract for table `{table}` in {}", config.display()))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for people: log files and collectors get plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Check { contracts, config } => match config {
                Some(config) => check::run_config(&config).await,
                None => check::run(&contracts),
            },
            Command::Run {
                config,
                until_caught_up,
            } => run::run(&config, until_caught_up).await,
            Command::Status { config, json } => status::run(&config, json).await,
            Command::Maintain {
                config,
                table,
                dry_run,
                respect_budget,
            } => {
                maintain::run(maintain::Request {
                    config: &config,
                    table,
                    dry_run,
                    respect_budget,
                })
                .await
            }
            Command::Demo { dir, events } => demo::run(dir, events).await,
            Command::Rebuild(req) => rebuild::run(req).await,
            Command::Schema { action } => match action {
                SchemaCommand::Pending { config } => schema::pending(&config).await,
                SchemaCommand::Approve(d) => {
                    schema::decide(&d.config, &d.table, calve_service::Action::Approve, &d.by).await
                }
                SchemaCommand::Reject(d) => {
                    schema::decide(&d.config, &d.table, calve_service::Action::Reject, &d.by).await
                }
            },
            Command::Erase {
                config,
                table,
                keys,
                key_file,
                requested_by,
            } => {
                erase::run(erase::Request {
                    config,
                    table,
                    keys,
                    key_file,
                    requested_by,
                })
                .await
            }
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
