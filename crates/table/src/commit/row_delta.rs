//! Row delta: add data files and position-delete files in one snapshot (operation
//! `overwrite`), the shape of an upsert commit.
//!
//! Sequence numbers make it correct: new data and delete files inherit the snapshot's sequence
//! number, and a position delete applies to data files whose data sequence number is not
//! greater than its own, so it can remove rows of older files (superseded versions) and, by
//! naming them, rows of files added in the same snapshot — never rows of a later snapshot.

use std::collections::HashMap;

use iceberg::spec::{DataContentType, DataFile, ManifestContentType, Operation};

use super::append::{INHERIT_SEQUENCE_NUMBER, MergePolicy, merge_small_manifests};
use super::{Produced, SnapshotContext, SnapshotOperation};
use crate::error::{Result, TableError};
use crate::summary::SummaryBuilder;

/// Data files and position-delete files committed together.
#[derive(Debug, Clone)]
pub struct RowDelta {
    /// New data files.
    pub data_files: Vec<DataFile>,
    /// New position-delete files.
    pub delete_files: Vec<DataFile>,
    /// Manifest merge settings for data manifests.
    pub merge: MergePolicy,
}

impl RowDelta {
    /// A row delta with the default merge policy.
    pub fn new(data_files: Vec<DataFile>, delete_files: Vec<DataFile>) -> Self {
        RowDelta { data_files, delete_files, merge: MergePolicy::default() }
    }
}

impl SnapshotOperation for RowDelta {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        if let Some(f) = self.delete_files.iter().find(|f| f.content_type() != DataContentType::PositionDeletes) {
            return Err(TableError::Unsupported(format!(
                "{} is not a position-delete file; calve writes no equality deletes", f.file_path()
            )));
        }
        let existing = ctx.current_manifests().await?;
        let mut manifests = Vec::with_capacity(existing.len() + 2);
        for (files, content) in [(&self.data_files, ManifestContentType::Data), (&self.delete_files, ManifestContentType::Deletes)] {
            if files.is_empty() {
                continue;
            }
            let mut w = ctx.new_manifest_writer(content)?;
            for f in files {
                w.add_file(f.clone(), INHERIT_SEQUENCE_NUMBER)?;
            }
            manifests.push(w.write_manifest_file().await?);
        }
        manifests.extend(merge_small_manifests(ctx, existing, self.merge).await?);
        let mut summary = SummaryBuilder::for_table(ctx.metadata());
        self.data_files.iter().chain(&self.delete_files).for_each(|f| summary.added(f));
        let operation = if self.delete_files.is_empty() { Operation::Append } else { Operation::Overwrite };
        Ok(Produced { operation, manifests, summary: summary.build(extra) })
    }
}
