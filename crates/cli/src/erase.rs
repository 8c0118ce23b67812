//! `calve erase`: remove every version of some keys from a table's storage, report what was
//! removed and what was checked, and record the request (who, when, a hash of each key — not
//! the key itself) in `<warehouse>/_calve/erasure-log.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use calve_contract::Erasure;
use calve_ingest::KeyDecoder;
use calve_service::{RunConfig, table_definition};
use calve_table::Catalog;
use calve_table::commit::Committer;
use calve_table::erase::{ErasureReport, erase};
use calve_table::restore::table_epoch;
use calve_table::writer::arrow_schema;
use sha2::{Digest, Sha256};

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
    let contract = cfg
        .contracts()?
        .into_iter()
        .find(|c| c.table.name == req.table)
        .with_context(|| format!("no contract for table `{}` in {}", req.table, req.config.display()))?;
    if !contract.is_keyed() {
        bail!("{}: erasure needs the contract's [keys] columns to find a key's rows", req.table);
    }
    if contract.deletes.erasure == Erasure::Disabled {
        bail!("{}: the contract says erasure = \"disabled\" (this table holds no personal data)", req.table);
    }
    let keys = collect_keys(&req.keys, req.key_file.as_deref())?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    let ident = table_definition(&contract)?.ident;
    let state = catalog.load(&ident).await?;
    let decoder = KeyDecoder::new(&arrow_schema(&state.metadata)?, &contract.keys.columns)?;
    let raw: Vec<Option<&[u8]>> = keys.iter().map(|k| Some(k.as_bytes())).collect();
    let decoded = decoder.decode(&raw)?;
    if let Some((i, _, reason)) = decoded.rejected.first() {
        bail!("key `{}` is not a key of {}: {reason}", keys[*i], req.table);
    }
    let batch = decoded.batch.context("no keys given")?;
    let committer = Committer::new(catalog.clone(), ident.clone(), table_epoch(&state.metadata)?);
    let report = erase(&catalog, &committer, &contract.keys.columns, &batch).await?;
    print_report(&req.table, keys.len(), &report);
    log_request(Path::new(&cfg.catalog.warehouse), &req, &keys, &report)?;
    Ok(if report.verified() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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

fn print_report(table: &str, keys: usize, r: &ErasureReport) {
    println!("erasure of {keys} key(s) from {table}");
    println!("  files that held the keys: {}", r.files_with_key.len());
    for f in &r.files_with_key {
        let state = if r.still_on_storage.contains(f) { "STILL ON STORAGE" } else { "deleted from storage" };
        println!("    {f}: {state}");
    }
    println!("  rows removed (every version): {}", r.rows_removed);
    println!("  snapshots expired (no time travel to the old files): {}", r.snapshots_expired);
    println!("  files deleted by expiry: {}", r.files_deleted);
    println!("  check: read all {} remaining data files, found {} row(s) of the keys", r.files_checked, r.rows_found_after);
    println!("  {}", if r.verified() { "verified: the keys are gone from the table's storage" } else { "NOT VERIFIED: see above" });
}

fn log_request(warehouse: &Path, req: &Request, keys: &[String], r: &ErasureReport) -> anyhow::Result<()> {
    let dir = warehouse.join("_calve");
    std::fs::create_dir_all(&dir)?;
    let hashes: Vec<String> = keys.iter().map(|k| hex::encode(Sha256::digest(k.as_bytes()))).collect();
    let line = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "table": req.table,
        "requested_by": req.requested_by,
        "key_sha256": hashes,
        "files_rewritten": r.files_with_key.len(),
        "rows_removed": r.rows_removed,
        "snapshots_expired": r.snapshots_expired,
        "verified": r.verified(),
    });
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("erasure-log.jsonl"))?;
    writeln!(f, "{line}")?;
    Ok(())
}
