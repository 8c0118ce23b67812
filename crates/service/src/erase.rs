//! Erasure of keys on request: every version of them removed from a table's storage and from
//! its dead-letter table's, checked, and recorded (who, when, a keyed hash of each key — not the key)
//! in `<warehouse>/_calve/erasure-log.jsonl`.
//!
//! A record that failed to land still carries the person's data in its raw bytes, so the
//! dead-letter table is erased too: a dead letter belongs to an erased key when its Kafka key,
//! its value, or a Debezium envelope's `before` or `after` image decodes to one — the same
//! decoding the pipeline applies ([`calve_ingest::key_candidates`]). A value too broken to
//! decode at all is found by its Kafka key or not at all. The rewriting, expiring and checking
//! is [`calve_table::ops::erase`]; this module wires the contract, the decoder and the log.

use std::io::Write;
use std::path::Path;

use arrow_array::RecordBatch;
use calve_contract::Secret;
use calve_contract::{Contract, Erasure};
use calve_ingest::KeyDecoder;
use calve_table::commit::restore::table_epoch;
use calve_table::commit::Committer;
use calve_table::ops::erase::{erase_rows, DeadLetterMatch, ErasureReport, KeyMatch, KeysInRecords, RawRecord};
use calve_table::write::data::arrow_schema;
use calve_table::{Catalog, CatalogConfig, TableError};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::definition::{dead_letter_definition, table_definition};
use crate::error::ServiceError;

/// What an erasure removed and checked, in the table and in its dead-letter table.
#[derive(Debug, Clone, Default)]
pub struct ErasureOutcome {
    /// The target table.
    pub table: ErasureReport,
    /// Its dead-letter table.
    pub dead_letters: ErasureReport,
    /// What the erasure could not search, said plainly (empty when it searched everything).
    pub caveats: Vec<String>,
}

impl ErasureOutcome {
    /// Whether the keys are gone from both tables' storage.
    pub fn verified(&self) -> bool {
        self.table.verified() && self.dead_letters.verified()
    }
}

/// Erases `keys` (as a person writes them: `17`, `"abc"`, or a JSON object of the key
/// columns) from `contract`'s table and its dead letters. Record the request with
/// [`log_erasure`] once its outcome is reported.
pub async fn erase_keys(
    catalog: &CatalogConfig,
    contract: &Contract,
    keys: &[String],
) -> Result<ErasureOutcome, ServiceError> {
    let table = &contract.table.name;
    if !contract.is_keyed() {
        return Err(refused(
            table,
            "erasure needs the contract's [keys] columns to find a key's rows",
        ));
    }
    if contract.deletes.erasure == Erasure::Disabled {
        return Err(refused(
            table,
            "the contract says erasure = \"disabled\" (this table holds no personal data)",
        ));
    }
    let catalog = &Catalog::open(catalog).await?;
    let ident = table_definition(contract)?.ident;
    let state = catalog.load(&ident).await?;
    let decoder = KeyDecoder::new(
        &arrow_schema(&state.metadata)?,
        &contract.keys.columns,
        contract.columns(),
    )?;
    let raw: Vec<Option<&[u8]>> = keys.iter().map(|k| Some(k.as_bytes())).collect();
    let decoded = decoder.decode(&raw)?;
    if let Some(r) = decoded.rejected.first() {
        return Err(refused(
            table,
            &format!("key `{}` is not a key of this table: {}", keys[r.index], r.reason),
        ));
    }
    let batch = decoded.batch.ok_or_else(|| refused(table, "no keys given"))?;
    let keys_match = KeyMatch::new(&state.metadata, &contract.keys.columns, &batch)?;
    let committer = Committer::new(catalog.clone(), ident, table_epoch(&state.metadata)?);
    let mut outcome = ErasureOutcome {
        table: erase_rows(catalog, &committer, &keys_match).await?,
        ..Default::default()
    };
    if contract.table.format.uses_registry() {
        // Registry-framed dead letters are often undecodable by definition (unknown schema,
        // corrupt body); their values are not searched for the key, and the report says so
        // rather than let "verified" suggest otherwise.
        outcome.caveats.push(
            "dead letters of a schema-registry topic (Avro, Protobuf, JSON Schema) were matched by their \
             Kafka key only, and only by a plain (text or JSON) one: a dead letter whose Kafka key does not \
             name the person that way may still hold their data"
                .into(),
        );
    }
    let dlq_ident = dead_letter_definition(contract)?.ident;
    if catalog.exists(&dlq_ident).await? {
        let dlq = catalog.load(&dlq_ident).await?;
        let committer = Committer::new(catalog.clone(), dlq_ident, table_epoch(&dlq.metadata)?);
        let rows = DeadLetterMatch {
            keys: &keys_match,
            decoder: CarriedKeys(decoder),
        };
        outcome.dead_letters = erase_rows(catalog, &committer, &rows).await?;
    }
    Ok(outcome)
}

/// Keys carried by a dead letter's raw bytes, decoded as the pipeline decodes them.
struct CarriedKeys(KeyDecoder);

impl KeysInRecords for CarriedKeys {
    fn decode(&self, records: &[RawRecord<'_>]) -> calve_table::Result<Option<(RecordBatch, Vec<usize>)>> {
        self.0.decode_carried(records).map_err(|e| TableError::InvalidData {
            table: String::new(),
            reason: e.to_string(),
        })
    }
}

fn refused(table: &str, why: &str) -> ServiceError {
    ServiceError::Config(format!("{table}: {why}"))
}

/// `[erasure]` in `calve.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErasureConfig {
    /// The key of the HMAC-SHA256 that the erasure log records instead of each erased key
    /// (write `"${env:NAME}"` or `"${file:/path}"`). Kept away from the warehouse, it makes the
    /// log useless for guessing keys: whoever holds it can still check that a given key was
    /// erased. Unset: a random key is created once beside the log
    /// (`_calve/erasure-log.key`, mode 0600), which defeats precomputed tables but not someone
    /// who can read both files.
    #[serde(default)]
    pub hmac_key: Option<Secret>,
}

/// Appends the request to `<warehouse>/_calve/erasure-log.jsonl`: when, which table, who
/// asked, an HMAC-SHA256 of each key (never the key, nor a plain hash a dictionary over a small
/// key space would reverse), what was removed and whether it verified.
pub fn log_erasure(
    warehouse: &Path,
    cfg: &ErasureConfig,
    table: &str,
    keys: &[String],
    requested_by: &str,
    outcome: &ErasureOutcome,
) -> Result<(), ServiceError> {
    let (r, dead) = (&outcome.table, &outcome.dead_letters);
    let dir = warehouse.join("_calve");
    let io_error =
        |e: std::io::Error| ServiceError::Io(format!("writing the erasure log under {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io_error)?;
    let (hmac_key, key_source) = match &cfg.hmac_key {
        Some(k) => (k.expose().as_bytes().to_vec(), "config"),
        None => (
            warehouse_hmac_key(&dir.join("erasure-log.key")).map_err(io_error)?,
            "warehouse",
        ),
    };
    let hashes: Vec<String> = keys.iter().map(|k| key_hmac(&hmac_key, k)).collect();
    let line = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "table": table,
        "requested_by": requested_by,
        "key_hmac_sha256": hashes,
        "hmac_key": key_source,
        "files_rewritten": r.files_with_key.len(),
        "rows_removed": r.rows_removed,
        "snapshots_expired": r.snapshots_expired,
        "dead_letters_removed": dead.rows_removed,
        "verified": outcome.verified(),
        "caveats": outcome.caveats,
    });
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("erasure-log.jsonl"))?;
        writeln!(f, "{line}")
    };
    write().map_err(io_error)
}

/// HMAC-SHA256 of an erased key as the log records it (hex): how a holder of the HMAC key
/// checks that the log covers a given key.
pub fn key_hmac(hmac_key: &[u8], key: &str) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(hmac_key).expect("HMAC accepts any key length");
    mac.update(key.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The warehouse's own HMAC key: 32 random bytes (hex) created once, readable by the owner only.
fn warehouse_hmac_key(path: &Path) -> std::io::Result<Vec<u8>> {
    if !path.exists() {
        // Written whole under another name and linked into place, which fails if a concurrent
        // erasure got there first: nobody ever reads a half-written key.
        let tmp = path.with_extension(format!("key.{:016x}", rand::random::<u64>()));
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let mut f = open.open(&tmp)?;
        f.write_all(hex::encode(rand::random::<[u8; 32]>()).as_bytes())?;
        f.sync_all()?;
        let linked = std::fs::hard_link(&tmp, path);
        std::fs::remove_file(&tmp)?;
        match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(std::fs::read_to_string(path)?.trim().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_records_an_hmac_under_the_configured_key() {
        // RFC 4231, test case 2: this is HMAC-SHA256 and not some other keyed hash.
        assert_eq!(
            key_hmac(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let warehouse = tempfile::tempdir().unwrap();
        let cfg = ErasureConfig {
            hmac_key: Some(Secret::new("from-the-vault")),
        };
        let keys = ["99".to_string(), "100".to_string()];
        log_erasure(
            warehouse.path(),
            &cfg,
            "crm.customers",
            &keys,
            "dpo",
            &ErasureOutcome::default(),
        )
        .unwrap();
        let log = std::fs::read_to_string(warehouse.path().join("_calve/erasure-log.jsonl")).unwrap();
        let entry: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
        assert_eq!(entry["hmac_key"], "config");
        assert_eq!(
            entry["key_hmac_sha256"],
            serde_json::json!([key_hmac(b"from-the-vault", "99"), key_hmac(b"from-the-vault", "100")])
        );
        assert!(!log.contains("from-the-vault") && !log.contains("\"99\""));
        assert!(
            !warehouse.path().join("_calve/erasure-log.key").exists(),
            "no key of its own when one is configured"
        );
    }
}
