//! Row delta: add data files and position-delete files in one snapshot (operation
//! `overwrite`), the shape of an upsert commit.
//!
//! Sequence numbers make it correct: new data and delete files inherit the snapshot's sequence
//! number, and a position delete applies to data files whose data sequence number is not
//! greater than its own, so it can remove rows of older files (superseded versions) and, by
//! naming them, rows of files added in the same snapshot — never rows of a later snapshot.

use std::collections::HashMap;

use iceberg::spec::{DataContentType, DataFile, ManifestContentType, Operation};

use super::append::{merge_small_manifests, MergePolicy};
use super::{Produced, SnapshotContext, SnapshotOperation};
use crate::commit::restore::{self, WRITER_EPOCH_KEY};
use crate::commit::summary::SummaryBuilder;
use crate::error::{Result, TableError};

/// Data files and position-delete files committed together.
#[derive(Debug, Clone)]
pub struct RowDelta {
    /// New data files.
    pub data_files: Vec<DataFile>,
    /// New position-delete files.
    pub delete_files: Vec<DataFile>,
    /// Manifest merge settings for data manifests.
    pub merge: MergePolicy,
    /// Where the deletes' row positions were looked up; validated on every attempt.
    pub computed_at: Option<ComputedAt>,
}

/// The table version a row delta's positions were computed against (the key index's head)
/// and the writer that computed them. A later snapshot that may have moved or removed rows —
/// a `replace` that removed data files, any `delete`, an `overwrite` by another writer — makes the positions stale: the
/// commit fails rather than delete the wrong rows. Appends and this writer's own row deltas
/// are safe: they move no existing row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputedAt {
    /// The snapshot the positions describe (`None`: the empty table).
    pub snapshot_id: Option<i64>,
    /// The writer epoch whose own overwrites are known to the index.
    pub epoch: u64,
}

impl RowDelta {
    /// A row delta with the default merge policy and no position validation.
    pub fn new(data_files: Vec<DataFile>, delete_files: Vec<DataFile>) -> Self {
        RowDelta {
            data_files,
            delete_files,
            merge: MergePolicy::default(),
            computed_at: None,
        }
    }

    /// A row delta whose delete positions were computed at `computed_at`.
    pub fn computed_at(mut self, computed_at: ComputedAt) -> Self {
        self.computed_at = Some(computed_at);
        self
    }
}

/// Fails when a snapshot after `at` may have moved rows the deletes point at.
fn check_positions_still_valid(ctx: &SnapshotContext<'_>, at: ComputedAt) -> Result<()> {
    let meta = ctx.metadata();
    let stale = |reason: String| {
        Err(TableError::StaleDeletes {
            table: meta.location().to_string(),
            reason,
        })
    };
    if let Some(id) = at.snapshot_id {
        if meta.snapshot_by_id(id).is_none() {
            return stale(format!(
                "snapshot {id} the positions were computed at is no longer in the table"
            ));
        }
    }
    let epoch = at.epoch.to_string();
    for s in restore::ancestry(meta) {
        if Some(s.snapshot_id()) == at.snapshot_id {
            break;
        }
        let summary = s.summary();
        let ours = summary.additional_properties.get(WRITER_EPOCH_KEY) == Some(&epoch);
        // A `replace` that removed no data file (a manifest rewrite, dropping delete files
        // that no longer apply) moved no row.
        let moved_rows = summary
            .additional_properties
            .get("deleted-data-files")
            .is_some_and(|n| n != "0");
        match &summary.operation {
            Operation::Append => {}
            Operation::Overwrite if ours => {}
            Operation::Replace if !moved_rows => {}
            op => {
                return stale(format!(
                    "snapshot {} ({op:?}) changed files after the positions were computed",
                    s.snapshot_id()
                ))
            }
        }
    }
    Ok(())
}

impl SnapshotOperation for RowDelta {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        if let Some(f) = self
            .delete_files
            .iter()
            .find(|f| f.content_type() != DataContentType::PositionDeletes)
        {
            return Err(TableError::Unsupported(format!(
                "{} is not a position-delete file; calve writes no equality deletes",
                f.file_path()
            )));
        }
        if let Some(at) = self.computed_at {
            check_positions_still_valid(ctx, at)?;
        }
        let existing = ctx.current_manifests().await?;
        let mut manifests = Vec::with_capacity(existing.len() + 2);
        for (files, content) in [
            (&self.data_files, ManifestContentType::Data),
            (&self.delete_files, ManifestContentType::Deletes),
        ] {
            manifests.extend(ctx.added_manifest(content, files).await?);
        }
        manifests.extend(merge_small_manifests(ctx, existing, self.merge).await?);
        let mut summary = SummaryBuilder::for_table(ctx.metadata());
        self.data_files
            .iter()
            .chain(&self.delete_files)
            .for_each(|f| summary.added(f));
        let operation = if self.delete_files.is_empty() {
            Operation::Append
        } else {
            Operation::Overwrite
        };
        Ok(Produced {
            operation,
            manifests,
            summary: summary.build(extra),
        })
    }

    fn added_files(&self) -> Vec<&str> {
        self.data_files
            .iter()
            .chain(&self.delete_files)
            .map(DataFile::file_path)
            .collect()
    }
}
