//! `calve check`: contract validation for people and CI pipelines. With `--config`, also what
//! the next start would do to each table: the schema changes it applies on its own, the ones
//! that would hold the table for its approver, and the columns calve added from events that
//! the contract does not list yet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use calve_contract::Contract;
use calve_service::{check_schema_against_table, Catalog, RunConfig};

pub fn run(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for p in paths {
        match Contract::from_file(p) {
            Ok(c) => println!("ok: {} (table {}, topic {})", p.display(), c.table.name, c.table.topic),
            Err(e) => {
                failed = true;
                println!("{e}");
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Checks every contract of `config` and compares each with its table.
pub async fn run_config(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let contracts = cfg.contracts()?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    let mut breaking = false;
    for c in &contracts {
        println!("ok: contract of table {} (topic {})", c.table.name, c.table.topic);
        let check = check_schema_against_table(&catalog, c).await?;
        if check.new_table {
            println!("  the table does not exist yet: the first start creates it");
        }
        if check.breaking.is_empty() {
            for change in &check.additive {
                println!("  the next start applies: {change}");
            }
        }
        for change in &check.breaking {
            breaking = true;
            println!("  WOULD HOLD THE TABLE FOR ITS APPROVER: {change}");
        }
        if !check.breaking.is_empty() {
            match check.approving.is_empty() {
                true => println!("  no schema change makes this edit: restore the contract"),
                false => {
                    let all: Vec<&String> = check.approving.iter().chain(&check.additive).collect();
                    let all: Vec<&str> = all.into_iter().map(String::as_str).collect();
                    println!("  approving (calve schema approve) would: {}", all.join(", "))
                }
            }
        }
        for note in &check.looser {
            println!("  the table is looser than the contract (approved; adopt it in the contract): {note}");
        }
        if !check.added_from_events.is_empty() {
            println!(
                "  in the table, not in the contract (added from events; adopt them in the contract): {}",
                check.added_from_events.join(", ")
            );
        }
    }
    Ok(if breaking { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
