//! Rewrite manifests (operation `replace`, no file added or removed): the live entries of the
//! default partition spec, regrouped so each manifest covers a contiguous run of partitions.
//!
//! Appends add one manifest per commit (and row deltas one delete manifest), merged by size
//! only; after a day at a one-minute band a partition's files are spread over many manifests,
//! and a reader filtering on event time cannot skip any of them. Sorted by partition, each
//! manifest's partition bounds are narrow and a filter prunes whole manifests.
//!
//! Entries keep their snapshot ids and sequence numbers (status EXISTING), so every delete
//! keeps applying to exactly the rows it did: the rewrite is valid on any base, and a conflict
//! simply re-runs it on the fresh one.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{ManifestContentType, ManifestEntryRef, ManifestFile, Operation};

use super::{Produced, SnapshotContext, SnapshotOperation};
use crate::commit::summary::SummaryBuilder;
use crate::error::Result;

/// Regroup the default spec's manifests by partition.
#[derive(Debug, Clone, Copy)]
pub struct RewriteManifests {
    /// Most entries written to one manifest (about 8 MB of Avro at 20,000).
    pub entries_per_manifest: usize,
}

impl Default for RewriteManifests {
    fn default() -> Self {
        RewriteManifests {
            entries_per_manifest: 20_000,
        }
    }
}

impl SnapshotOperation for RewriteManifests {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        let spec_id = ctx.metadata().default_partition_spec_id();
        let io = ctx.catalog.file_io().clone();
        let (mine, mut manifests): (Vec<ManifestFile>, Vec<ManifestFile>) = ctx
            .current_manifests()
            .await?
            .into_iter()
            .partition(|m| m.partition_spec_id == spec_id);
        let replaced = mine.len();
        let kept = manifests.len();
        for content in [ManifestContentType::Data, ManifestContentType::Deletes] {
            // Partition (rendered) → entries with the manifest they came from.
            let mut by_partition: BTreeMap<String, Vec<(ManifestEntryRef, i64, i64)>> = BTreeMap::new();
            for m in mine.iter().filter(|m| m.content == content) {
                for e in crate::read::manifests::entries(&io, m)
                    .await?
                    .iter()
                    .filter(|e| e.is_alive())
                {
                    let key = format!("{:?}", e.data_file().partition());
                    by_partition
                        .entry(key)
                        .or_default()
                        .push((e.clone(), m.sequence_number, m.added_snapshot_id));
                }
            }
            let mut writer = None;
            let mut in_manifest = 0usize;
            for (e, manifest_seq, manifest_snapshot) in by_partition.into_values().flatten() {
                if writer.is_none() {
                    writer = Some(ctx.new_manifest_writer(content)?);
                }
                let w = writer.as_mut().expect("created above");
                let seq = e.sequence_number().unwrap_or(manifest_seq);
                let file_seq = e.file_sequence_number.or(Some(seq));
                w.add_existing_file(
                    e.data_file().clone(),
                    e.snapshot_id().unwrap_or(manifest_snapshot),
                    seq,
                    file_seq,
                )?;
                in_manifest += 1;
                if in_manifest >= self.entries_per_manifest {
                    manifests.push(writer.take().expect("present").write_manifest_file().await?);
                    in_manifest = 0;
                }
            }
            if let Some(w) = writer {
                manifests.push(w.write_manifest_file().await?);
            }
        }
        let mut summary = SummaryBuilder::for_table(ctx.metadata()).build(extra);
        summary.insert("manifests-created".into(), (manifests.len() - kept).to_string());
        summary.insert("manifests-kept".into(), kept.to_string());
        summary.insert("manifests-replaced".into(), replaced.to_string());
        Ok(Produced {
            operation: Operation::Replace,
            manifests,
            summary,
        })
    }
}
