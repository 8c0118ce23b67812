//! Erasure of keys on request: every version of them removed from a table's storage and from
//! its dead-letter table's, and checked; [`crate::erasure_log`] keeps the record of it.
//!
//! A record that failed to land still carries the person's data in its raw bytes, so the
//! dead-letter table is erased too: a dead letter belongs to an erased key when its Kafka key,
//! its value, or a Debezium envelope's `before` or `after` image decodes to one — the same
//! decoding the pipeline applies ([`calve_ingest::key_candidates`]). A value too broken to
//! decode at all is found by its Kafka key or not at all. The rewriting, expiring and checking
//! is [`calve_table::ops::erase`]; this module wires the contract, the decoder and the log.

use arrow_array::RecordBatch;
use calve_contract::{Contract, Erasure};
use calve_ingest::KeyDecoder;
use calve_table::commit::restore::table_epoch;
use calve_table::commit::Committer;
use calve_table::ops::erase::{erase_rows, DeadLetterMatch, ErasureReport, KeyMatch, KeysInRecords, RawRecord};
use calve_table::write::data::arrow_schema;
use calve_table::{Catalog, CatalogConfig, TableError};

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
/// columns) from `contract`'s table and its dead letters. Record the request in an
/// [`crate::ErasureLog`] opened beforehand, once its outcome is reported.
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
    let orphan_min_age = contract.maintenance.orphan_min_age.0;
    let state = catalog.load(&ident).await?;
    // The shadow would keep the keys' rows and its swap bring them back.
    if let Some(mark) = calve_table::commit::swap::RebuildMark::of(&state.metadata)? {
        return Err(refused(
            table,
            &format!(
                "rebuild {} is under way; its shadow table would bring the keys' rows back. Finish it (or abandon it: \
                 calve rebuild --abandon), then erase",
                mark.id
            ),
        ));
    }
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
        table: erase_rows(catalog, &committer, &keys_match, orphan_min_age).await?,
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
    if catalog.storage().is_object_store() {
        // Deleting an object in a versioned bucket only hides it; calve cannot tell from here
        // whether the bucket keeps versions, so the report says what it did not remove.
        outcome.caveats.push(
            "the warehouse is in an object store: calve deleted the current objects that held the keys; if the \
             bucket keeps object versions, their earlier versions still hold the data until a lifecycle rule \
             or a person removes them"
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
        outcome.dead_letters = erase_rows(catalog, &committer, &rows, orphan_min_age).await?;
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
