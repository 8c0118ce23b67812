//! `calve erase`: remove every version of some keys from a table's storage, report what was
//! removed and what was checked, and record the request (who, when, a hash of each key — not
//! the key itself) in `<warehouse>/_calve/erasure-log.jsonl`.
//!
//! The table's dead-letter table is erased too: a record that failed to land still carries the
//! person's data in its raw bytes. A dead letter belongs to an erased key when its Kafka key,
//! or its value (the object itself, or a Debezium envelope's `before` or `after`), decodes to
//! one — the same decoding the pipeline applies, so a value too broken to decode at all is
//! found by its Kafka key or not at all, and the report says how many dead letters it removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use arrow::array::{AsArray, RecordBatch};
use calve_contract::Erasure;
use calve_ingest::KeyDecoder;
use calve_service::{dead_letter_definition, table_definition, RunConfig};
use calve_table::commit::Committer;
use calve_table::erase::{erase_rows, ErasureReport, KeyMatch, RowMatch};
use calve_table::restore::table_epoch;
use calve_table::writer::arrow_schema;
use calve_table::{Catalog, TableError};
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
        bail!(
            "{}: erasure needs the contract's [keys] columns to find a key's rows",
            req.table
        );
    }
    if contract.deletes.erasure == Erasure::Disabled {
        bail!(
            "{}: the contract says erasure = \"disabled\" (this table holds no personal data)",
            req.table
        );
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
    let keys_match = KeyMatch::new(&state.metadata, &contract.keys.columns, &batch)?;
    let report = erase_rows(&catalog, &committer, &keys_match).await?;
    let dlq_ident = dead_letter_definition(&contract)?.ident;
    let dead_letters = match catalog.exists(&dlq_ident).await? {
        false => ErasureReport::default(),
        true => {
            let dlq = catalog.load(&dlq_ident).await?;
            let rows = DeadLetterMatch {
                decoder,
                keys: &keys_match,
            };
            erase_rows(
                &catalog,
                &Committer::new(catalog.clone(), dlq_ident, table_epoch(&dlq.metadata)?),
                &rows,
            )
            .await?
        }
    };
    print_report(&req.table, keys.len(), &report, &dead_letters);
    log_request(Path::new(&cfg.catalog.warehouse), &req, &keys, &report, &dead_letters)?;
    Ok(if report.verified() && dead_letters.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Dead letters of the erased keys (see the module docs).
struct DeadLetterMatch<'a> {
    decoder: KeyDecoder,
    keys: &'a KeyMatch,
}

impl RowMatch for DeadLetterMatch<'_> {
    fn matches(&self, batch: &RecordBatch) -> Result<Vec<bool>, TableError> {
        // Iceberg's binary is Arrow's large binary as calve reads it; plain binary is accepted too.
        let bytes = |name: &str| -> Option<Vec<Option<&[u8]>>> {
            let c = batch.column_by_name(name)?;
            match (c.as_binary_opt::<i64>(), c.as_binary_opt::<i32>()) {
                (Some(b), _) => Some(b.iter().collect()),
                (None, Some(b)) => Some(b.iter().collect()),
                _ => None,
            }
        };
        let (Some(key), Some(value)) = (bytes("key"), bytes("value")) else {
            return Err(TableError::InvalidData {
                table: String::new(),
                reason: "dead letters lack binary `key` and `value` columns".into(),
            });
        };
        let (mut candidates, mut owner) = (Vec::new(), Vec::new());
        for row in 0..batch.num_rows() {
            let mut add = |c: Vec<u8>| {
                candidates.push(c);
                owner.push(row);
            };
            if let Some(k) = key[row] {
                add(k.to_vec());
            }
            if let Some(v) = value[row] {
                value_candidates(v).into_iter().for_each(&mut add);
            }
        }
        let mut out = vec![false; batch.num_rows()];
        let raw: Vec<Option<&[u8]>> = candidates.iter().map(|c| Some(c.as_slice())).collect();
        let decoded = self.decoder.decode(&raw).map_err(|e| TableError::InvalidData {
            table: String::new(),
            reason: e.to_string(),
        })?;
        if let Some(keys) = decoded.batch {
            for (j, hit) in self.keys.matches(&keys)?.into_iter().enumerate() {
                if hit {
                    out[owner[decoded.kept[j]]] = true;
                }
            }
        }
        Ok(out)
    }
}

/// What in a dead letter's value can carry the key: the value itself and, when it is a
/// Debezium envelope (schema-wrapped or not), its `before` and `after` images.
fn value_candidates(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec()];
    let Ok(serde_json::Value::Object(mut top)) = serde_json::from_slice::<serde_json::Value>(value) else {
        return out;
    };
    if let Some(serde_json::Value::Object(payload)) = top.remove("payload") {
        top = payload;
    }
    for image in ["before", "after"] {
        if let Some(obj @ serde_json::Value::Object(_)) = top.get(image) {
            out.push(obj.to_string().into_bytes());
        }
    }
    out
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

fn print_report(table: &str, keys: usize, r: &ErasureReport, dead: &ErasureReport) {
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
    let verified = r.verified() && dead.verified();
    println!(
        "  {}",
        if verified {
            "verified: the keys are gone from the table's and its dead-letter table's storage"
        } else {
            "NOT VERIFIED: see above"
        }
    );
}

fn log_request(
    warehouse: &Path,
    req: &Request,
    keys: &[String],
    r: &ErasureReport,
    dead: &ErasureReport,
) -> anyhow::Result<()> {
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
        "dead_letters_removed": dead.rows_removed,
        "verified": r.verified() && dead.verified(),
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("erasure-log.jsonl"))?;
    writeln!(f, "{line}")?;
    Ok(())
}
