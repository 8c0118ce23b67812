//! Erasure of keys on request: every version of them removed from a table's storage and from
//! its dead-letter table's, checked, and recorded (who, when, a hash of each key — not the key)
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
use calve_contract::{Contract, Erasure};
use calve_ingest::KeyDecoder;
use calve_table::commit::restore::table_epoch;
use calve_table::commit::Committer;
use calve_table::ops::erase::{erase_rows, DeadLetterMatch, ErasureReport, KeyMatch, KeysInRecords, RawRecord};
use calve_table::write::data::arrow_schema;
use calve_table::{Catalog, CatalogConfig, TableError};
use sha2::{Digest, Sha256};

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

/// Appends the request to `<warehouse>/_calve/erasure-log.jsonl`: when, which table, who
/// asked, a SHA-256 of each key (never the key), what was removed and whether it verified.
pub fn log_erasure(
    warehouse: &Path,
    table: &str,
    keys: &[String],
    requested_by: &str,
    outcome: &ErasureOutcome,
) -> Result<(), ServiceError> {
    let (r, dead) = (&outcome.table, &outcome.dead_letters);
    let dir = warehouse.join("_calve");
    let hashes: Vec<String> = keys.iter().map(|k| hex::encode(Sha256::digest(k.as_bytes()))).collect();
    let line = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "table": table,
        "requested_by": requested_by,
        "key_sha256": hashes,
        "files_rewritten": r.files_with_key.len(),
        "rows_removed": r.rows_removed,
        "snapshots_expired": r.snapshots_expired,
        "dead_letters_removed": dead.rows_removed,
        "verified": outcome.verified(),
        "caveats": outcome.caveats,
    });
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("erasure-log.jsonl"))?;
        writeln!(f, "{line}")
    };
    write().map_err(|e| ServiceError::Io(format!("writing the erasure log under {}: {e}", dir.display())))
}
