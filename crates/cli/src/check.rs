//! `calve check`: contract validation for people and CI pipelines. With `--config`, also what
//! the next start would do to each table: the schema changes it applies on its own, the ones
//! that would hold the table for its approver, and the columns calve added from events that
//! the contract does not list yet; for registry formats, what the latest schema registered for
//! the topic would do to the table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use calve_contract::{Contract, Evolution, OnBreaking};
use calve_service::{
    check_registry_schema, check_schema_against_table, human_bytes, Catalog, MetadataBudget, Registry, RegistryCheck,
    RegistryVerdict, RunConfig,
};

pub fn run(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for p in paths {
        match Contract::from_file(p) {
            Ok(c) => {
                println!("ok: {} (table {}, topic {})", p.display(), c.table.name, c.table.topic);
                print_metadata_budget(&c);
            }
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
    let registry = cfg.registry.as_ref().map(Registry::new).transpose()?;
    let mut breaking = false;
    for c in &contracts {
        println!("ok: contract of table {} (topic {})", c.table.name, c.table.topic);
        print_metadata_budget(c);
        let check = check_schema_against_table(&catalog, c).await?;
        if check.new_table {
            println!("  the table does not exist yet: the first start creates it");
        }
        if let Some(refusal) = &check.partitioning {
            breaking = true;
            println!("  WOULD NOT START: {refusal}");
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
        if let (Some(registry), true) = (&registry, c.table.format.uses_registry()) {
            match check_registry_schema(&catalog, c, registry).await {
                Ok(check) => breaking |= print_registry_check(&check, c),
                Err(e) => {
                    breaking = true;
                    println!("  registry: cannot check the latest schema: {e}");
                }
            }
        }
    }
    Ok(if breaking { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What the contract's band and retention imply for the table's metadata, with a warning when
/// it is more than readers and commits should pay.
fn print_metadata_budget(c: &Contract) {
    let b = MetadataBudget::of(c);
    let keep = &c.maintenance.keep_snapshots;
    let why = match b.capped {
        true => format!("capped by keep_snapshots.max = {}", b.snapshots),
        false => format!(
            "a commit per {} band for {}, at least {}",
            c.sla.freshness, keep.max_age, keep.min
        ),
    };
    println!(
        "  metadata: about {} snapshots retained ({why}); metadata.json about {}, each commit about {:.0} ms",
        b.snapshots,
        human_bytes(b.metadata_bytes),
        b.commit_ms
    );
    if b.too_big() {
        println!(
            "  WARNING: every reader parses that metadata before its first row and every commit rewrites it; \
             cap it with maintenance.keep_snapshots.max (e.g. max = {}) or shorten max_age",
            calve_service::WARN_SNAPSHOTS
        );
    }
}

/// Prints what the latest registered schema would do; whether its records would not enter.
fn print_registry_check(check: &RegistryCheck, c: &Contract) -> bool {
    let subject = &check.subject;
    let Some((version, id)) = check.latest else {
        println!("  registry: {subject} has no schema yet (subjects named otherwise are not checked)");
        return false;
    };
    let latest = format!("{subject} version {version} (schema id {id})");
    match &check.verdict {
        RegistryVerdict::NoSubject => false,
        RegistryVerdict::NotJudged => {
            println!("  registry: {latest}: its records are checked one by one as they are read");
            false
        }
        RegistryVerdict::Fits(adds) if adds.is_empty() => {
            println!("  registry: {latest} fits the table");
            false
        }
        RegistryVerdict::Fits(adds) => {
            let fields: Vec<String> = adds
                .iter()
                .map(|(path, ty)| match ty {
                    Some(ty) => format!("{path} {ty}"),
                    None => format!("{path} (no Iceberg type)"),
                })
                .collect();
            let what = match c.schema.evolution {
                Evolution::Additive => "its records would add the columns",
                _ => "fields the table does not keep",
            };
            println!("  registry: {latest} fits the table; {what}: {}", fields.join(", "));
            false
        }
        RegistryVerdict::Breaks(why) => {
            let then = match c.schema.on_breaking {
                OnBreaking::Hold => format!("its records would hold the table for {}", c.schema.approver),
                OnBreaking::DeadLetter => "its records would go to the dead-letter table".to_string(),
            };
            println!("  registry: {latest} WOULD NOT ENTER THE TABLE ({then}): {why}");
            true
        }
    }
}
