//! `calve schema pending | approve | reject`: what a held table proposes, and the approver's
//! decision on it. The decision is recorded in the table; the running `calve run` that owns
//! the table (or the next one to start) applies it and resumes.

use std::path::Path;
use std::process::ExitCode;

use calve_service::{decide_hold, schema_holds, Action, Catalog, Hold, RunConfig};

/// Prints every held table's hold, or that none is held.
pub async fn pending(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    let mut held = 0;
    for c in cfg.contracts()? {
        let state = schema_holds(&catalog, &c).await?;
        let Some(hold) = &state.hold else { continue };
        held += 1;
        print_hold(&c.table.name, hold);
        if let Some(d) = state.decided().map(|(_, d)| d) {
            println!(
                "  decided: {:?} by {} at {} (applied when the table's pipeline resumes)",
                d.action,
                d.by,
                time(d.at_ms)
            );
        }
    }
    if held == 0 {
        println!("no table is held");
    }
    Ok(ExitCode::SUCCESS)
}

/// Records `by`'s `action` on `table`'s hold.
pub async fn decide(config: &Path, table: &str, action: Action, by: &str) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    let contract = crate::contract_for(&cfg, config, table)?;
    let hold = decide_hold(&catalog, &contract, action, by).await?;
    let what = match action {
        Action::Approve => format!(
            "approved: {}",
            hold.proposal
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::Reject => "rejected: records breaking the schema this way go to the dead-letter table".into(),
    };
    println!(
        "{table}: hold at {} {what} (by {by}); the table resumes when its pipeline picks this up",
        hold.id
    );
    Ok(ExitCode::SUCCESS)
}

/// A hold, as `pending` and `status` show it.
pub fn print_hold(table: &str, hold: &Hold) {
    println!(
        "{table}: HELD since {} at {} (approver: {})",
        time(hold.since_ms),
        hold.id,
        hold.approver
    );
    let edit = hold.kind == "contract-edit";
    match edit {
        true => println!("  the contract edit breaks readers: {}", hold.reason),
        false => {
            println!("  column: {} ({}): {}", hold.path, hold.kind, hold.reason);
            println!("  first offending record: {}", hold.sample);
        }
    }
    match hold.proposal.is_empty() {
        true if edit => println!("  proposal: none (no schema change makes this edit; restore the contract)"),
        true => println!(
            "  proposal: none (no schema change admits it; `reject` sends the held records to the dead-letter table)"
        ),
        false => {
            for p in &hold.proposal {
                println!("  proposal: {p}");
            }
        }
    }
}

/// Milliseconds since the epoch as RFC 3339.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}
