//! Delete files (operation `delete`): drop whole data files, for erasure and partition drops.
//!
//! It is a rewrite that adds nothing, planned against the base it commits on: the removed files
//! must still be live, and position deletes pointing into them simply stop mattering.

use std::collections::HashMap;

use iceberg::spec::{DataFile, Operation};

use super::rewrite::Rewrite;
use super::{Produced, SnapshotContext, SnapshotOperation};
use crate::error::Result;

/// Remove `files` (data files, and delete files that only touch them) from the table.
#[derive(Debug, Clone)]
pub struct DeleteFiles {
    /// Files to remove.
    pub files: Vec<DataFile>,
}

impl SnapshotOperation for DeleteFiles {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        let planned_at = ctx.metadata().current_snapshot_id();
        let rewrite = Rewrite {
            removed: self.files.clone(),
            added: Vec::new(),
            planned_at,
        };
        let produced = rewrite.produce(ctx, extra).await?;
        Ok(Produced {
            operation: Operation::Delete,
            ..produced
        })
    }
}
