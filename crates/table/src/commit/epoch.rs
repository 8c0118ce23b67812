//! Claiming a table: bump the writer epoch so any older owner is fenced.
//!
//! Ownership is recorded in the table itself (property `calve.writer-epoch`), so it holds for
//! every process sharing the catalog without another coordination service. A committer checks
//! the epoch on every attempt after reloading; the compare-and-swap guarantees that a claim
//! landing between that check and the swap makes the swap fail, so the stale owner reloads,
//! sees the higher epoch and stops.
//!
//! A REST catalog has no compare-and-swap of the whole metadata, only requirements, and none
//! of them can assert a property. Every calve commit there asserts the head of `main`, so on
//! REST the claim is an empty snapshot (it adds no rows and carries the restore point forward)
//! committed together with the new epoch: it moves `main`, and a stale owner's next commit
//! fails its requirement, reloads, and sees the higher epoch.

use std::collections::HashMap;

use iceberg::spec::TableMetadataBuilder;
use iceberg::TableIdent;

use super::{swap_and_clean, Append, Committer};
use crate::catalog::Catalog;
use crate::commit::restore::{self, COMMITTER_KEY, WRITER_EPOCH_KEY};
use crate::error::{Result, TableError};

const CLAIM_ATTEMPTS: u32 = 16;

/// Makes this process the table's owner and returns its new epoch.
pub async fn claim_epoch(catalog: &Catalog, ident: &TableIdent) -> Result<u64> {
    for _ in 0..CLAIM_ATTEMPTS {
        let base = catalog.load(ident).await?;
        let epoch = restore::table_epoch(&base.metadata)? + 1;
        if catalog.fences_by_ref() {
            if claim_with_snapshot(catalog, ident, epoch).await? {
                tracing::info!(table = %ident, epoch, "claimed table");
                return Ok(epoch);
            }
        } else if claim_property(catalog, &base, epoch).await? {
            tracing::info!(table = %ident, epoch, "claimed table");
            return Ok(epoch);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(TableError::Conflict {
        table: ident.to_string(),
        attempts: CLAIM_ATTEMPTS,
    })
}

/// The table properties a claim sets: the new epoch, and who holds it.
pub(crate) fn claim_properties(epoch: u64) -> HashMap<String, String> {
    HashMap::from([
        (WRITER_EPOCH_KEY.to_string(), epoch.to_string()),
        (COMMITTER_KEY.to_string(), restore::committer_name().to_string()),
    ])
}

/// SQL catalogs: the properties alone; the pointer swap fences.
async fn claim_property(catalog: &Catalog, base: &crate::catalog::TableState, epoch: u64) -> Result<bool> {
    let built =
        TableMetadataBuilder::new_from_metadata(base.metadata.as_ref().clone(), Some(base.metadata_location.clone()))
            .set_properties(claim_properties(epoch))?
            .build()?;
    Ok(swap_and_clean(catalog, base, built).await?.is_some())
}

/// One attempt at claiming `epoch` with an empty snapshot; `false` when another claim or commit
/// got there first (the caller reloads and tries the next epoch).
async fn claim_with_snapshot(catalog: &Catalog, ident: &TableIdent, epoch: u64) -> Result<bool> {
    let committer = Committer::claiming(catalog.clone(), ident.clone(), epoch);
    match committer.commit_maintenance(&Append::new(Vec::new())).await {
        Ok(_) => Ok(true),
        Err(TableError::Conflict { .. } | TableError::Fenced { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
