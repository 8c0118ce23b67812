//! `calve erase`: the command line of [`calve_service::erase_keys`] — keys from arguments or a
//! key file in, the report of what was removed and checked out. Exits non-zero unless the keys
//! are verified gone from the table's and its dead-letter table's storage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use calve_service::ErasureReport;
use calve_service::{erase_keys, Catalog, ErasureLog, ErasureOutcome, RunConfig};

/// What `calve erase` was asked.
pub struct Request {
    pub config: PathBuf,
    pub table: String,
    pub keys: Vec<String>,
    pub key_file: Option<PathBuf>,
    pub requested_by: String,
}

pub async fn run(req: Request) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(&req.config)?;
    let contract = crate::contract_for(&cfg, &req.config, &req.table)?;
    let keys = collect_keys(&req.keys, req.key_file.as_deref())?;
    // Opened first: an erasure that could not be recorded must not happen.
    let catalog = Catalog::open(&cfg.catalog).await.context("opening the catalog")?;
    let log = ErasureLog::open(&catalog, &cfg.erasure).await?;
    let outcome = erase_keys(&cfg.catalog, &contract, &keys).await?;
    print_report(&req.table, keys.len(), &outcome);
    let entry = log.record(&req.table, &keys, &req.requested_by, &outcome).await?;
    println!("recorded in {entry}");
    Ok(if outcome.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn collect_keys(args: &[String], file: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let mut keys = args.to_vec();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading key file {}", f.display()))?;
        keys.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    if keys.is_empty() {
        bail!("give the keys to erase with --key or --key-file");
    }
    Ok(keys)
}

fn print_report(table: &str, keys: usize, outcome: &ErasureOutcome) {
    let (r, dead): (&ErasureReport, &ErasureReport) = (&outcome.table, &outcome.dead_letters);
    println!("erasure of {keys} key(s) from {table}");
    println!("  files that held the keys: {}", r.files_with_key.len());
    for f in &r.files_with_key {
        let state = if r.still_on_storage.contains(f) {
            "STILL ON STORAGE"
        } else {
            "deleted from storage"
        };
        println!("    {f}: {state}");
    }
    println!("  rows removed (every version): {}", r.rows_removed);
    println!(
        "  snapshots expired (no time travel to the old files): {}",
        r.snapshots_expired
    );
    println!("  files deleted by expiry: {}", r.files_deleted);
    println!(
        "  check: read all {} remaining data files, found {} row(s) of the keys",
        r.files_checked, r.rows_found_after
    );
    print_unreferenced(r);
    println!(
        "  dead letters of the keys removed: {} (from {} file(s), {} deleted from storage)",
        dead.rows_removed,
        dead.files_with_key.len(),
        dead.files_with_key.len() - dead.still_on_storage.len()
    );
    println!(
        "  check: read all {} remaining dead-letter files, found {} of the keys",
        dead.files_checked, dead.rows_found_after
    );
    print_unreferenced(dead);
    for caveat in &outcome.caveats {
        println!("  caveat: {caveat}");
    }
    let verified = outcome.verified();
    println!(
        "  {}",
        if verified && !outcome.caveats.is_empty() {
            "verified where searched (see the caveats): the keys are gone from what was searched"
        } else if verified {
            "verified: the keys are gone from the table's and its dead-letter table's storage"
        } else {
            "NOT VERIFIED: see above"
        }
    );
}

/// What the erasure found among files no snapshot references.
fn print_unreferenced(r: &ErasureReport) {
    println!(
        "  unreferenced files (crashed or fenced writers, abandoned commits): {} past the orphan safety age deleted, \
         {} younger read for the keys",
        r.orphans_deleted.len(),
        r.young_files_checked
    );
    for f in &r.young_unreferenced {
        println!("    {f}: MAY HOLD THE KEYS, younger than the orphan safety age (maybe a running writer's); erase again once it is older");
    }
}
