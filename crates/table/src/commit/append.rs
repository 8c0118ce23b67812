//! Append: add data files in a new snapshot, merging small manifests as it goes.
//!
//! A fast-append that only ever adds a manifest makes every reader open one more file per
//! commit; at a one-second freshness band that is 86,400 manifests a day. So, like Java's
//! `MergeAppend`, once a spec's data manifests reach `min_count_to_merge`, the small ones are
//! rewritten into one. The cost per commit stays bounded: reading the manifest list (bounded by
//! the merge) and, every `min_count_to_merge` commits, reading that many small manifests.

use std::collections::HashMap;

use iceberg::spec::{DataFile, ManifestContentType, ManifestFile, Operation};

use super::{Produced, SnapshotContext, SnapshotOperation};
use crate::commit::summary::SummaryBuilder;
use crate::error::Result;

/// When and how manifests are merged.
#[derive(Debug, Clone, Copy)]
pub struct MergePolicy {
    /// Merge once a spec has this many data manifests (Java default: 100).
    pub min_count_to_merge: usize,
    /// Manifests at least this large are left alone (Java default: 8 MB).
    pub target_manifest_bytes: i64,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            min_count_to_merge: 100,
            target_manifest_bytes: 8 << 20,
        }
    }
}

/// Add data files (possibly none: a snapshot that only moves the restore point forward).
#[derive(Debug, Clone)]
pub struct Append {
    /// Files to add; all of the table's default partition spec.
    pub files: Vec<DataFile>,
    /// Manifest merge settings.
    pub merge: MergePolicy,
}

impl Append {
    /// An append of `files` with the default merge policy.
    pub fn new(files: Vec<DataFile>) -> Self {
        Append {
            files,
            merge: MergePolicy::default(),
        }
    }
}

impl SnapshotOperation for Append {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        let existing = ctx.current_manifests().await?;
        let mut manifests = Vec::with_capacity(existing.len() + 1);
        manifests.extend(ctx.added_manifest(ManifestContentType::Data, &self.files).await?);
        manifests.extend(merge_small_manifests(ctx, existing, self.merge).await?);
        let mut summary = SummaryBuilder::for_table(ctx.metadata());
        self.files.iter().for_each(|f| summary.added(f));
        Ok(Produced {
            operation: Operation::Append,
            manifests,
            summary: summary.build(extra),
        })
    }

    fn added_files(&self) -> Vec<&str> {
        self.files.iter().map(DataFile::file_path).collect()
    }
}

/// Returns the manifests to keep, with the small data manifests of the default spec merged
/// into one when there are enough of them. Entries keep their snapshot ids and sequence
/// numbers (status EXISTING), so delete files keep applying to exactly the rows they did.
pub(super) async fn merge_small_manifests(
    ctx: &mut SnapshotContext<'_>,
    existing: Vec<ManifestFile>,
    policy: MergePolicy,
) -> Result<Vec<ManifestFile>> {
    let spec_id = ctx.metadata().default_partition_spec_id();
    let (small, mut keep): (Vec<_>, Vec<_>) = existing.into_iter().partition(|m| {
        m.content == ManifestContentType::Data
            && m.partition_spec_id == spec_id
            && m.manifest_length < policy.target_manifest_bytes
    });
    // +1: the manifest this commit adds counts towards the threshold as Java counts it.
    if small.len() + 1 < policy.min_count_to_merge || small.len() < 2 {
        keep.extend(small);
        return Ok(keep);
    }
    let mut w = ctx.new_manifest_writer(ManifestContentType::Data)?;
    let file_io = ctx.catalog.file_io().clone();
    for m in &small {
        for e in crate::read::manifests::entries(&file_io, m).await?.iter() {
            if !e.is_alive() {
                continue;
            }
            let seq = e.sequence_number().unwrap_or(m.sequence_number);
            let file_seq = e.file_sequence_number.or(Some(seq));
            let snapshot_id = e.snapshot_id().unwrap_or(m.added_snapshot_id);
            w.add_existing_file(e.data_file().clone(), snapshot_id, seq, file_seq)?;
        }
    }
    tracing::debug!(merged = small.len(), "merged small manifests");
    keep.insert(0, w.write_manifest_file().await?);
    Ok(keep)
}
