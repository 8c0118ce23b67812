//! Claiming a table: bump the writer epoch so any older owner is fenced.
//!
//! Ownership is recorded in the table itself (property `calve.writer-epoch`), so it holds for
//! every process sharing the catalog without another coordination service. A committer checks
//! the epoch on every attempt after reloading; the compare-and-swap guarantees that a claim
//! landing between that check and the swap makes the swap fail, so the stale owner reloads,
//! sees the higher epoch and stops.

use std::collections::HashMap;

use iceberg::spec::TableMetadataBuilder;
use iceberg::TableIdent;

use super::swap_and_clean;
use crate::catalog::Catalog;
use crate::error::{Result, TableError};
use crate::restore::{self, WRITER_EPOCH_KEY};

const CLAIM_ATTEMPTS: u32 = 16;

/// Makes this process the table's owner and returns its new epoch.
pub async fn claim_epoch(catalog: &Catalog, ident: &TableIdent) -> Result<u64> {
    for _ in 0..CLAIM_ATTEMPTS {
        let base = catalog.load(ident).await?;
        let epoch = restore::table_epoch(&base.metadata)? + 1;
        let props = HashMap::from([(WRITER_EPOCH_KEY.to_string(), epoch.to_string())]);
        let built = TableMetadataBuilder::new_from_metadata(
            base.metadata.as_ref().clone(),
            Some(base.metadata_location.clone()),
        )
        .set_properties(props)?
        .build()?;
        if swap_and_clean(catalog, &base, built).await?.is_some() {
            tracing::info!(table = %ident, epoch, "claimed table");
            return Ok(epoch);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(TableError::Conflict { table: ident.to_string(), attempts: CLAIM_ATTEMPTS })
}
