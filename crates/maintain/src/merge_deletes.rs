//! Merging position-delete files: every commit that updates a partition adds a delete file
//! to it, and a reader opens each one. Rewriting the data files would apply them, at the
//! cost of the data's whole size; merging them into one file per partition costs only their
//! own few kilobytes and leaves readers one extra file per partition.
//!
//! The merged file holds the positions of the data files still live (positions into files a
//! compaction removed are dropped), and is committed as a `replace`: the same rows stay
//! deleted, which is what lets a running pipeline's key index take it as already applied.

use std::collections::HashSet;

use calve_table::read::live::LiveFiles;
use calve_table::read::DeleteMap;
use calve_table::write::deletes::{PositionDelete, PositionDeleteWriter};
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, TableMetadata};

use crate::error::Result;
use crate::plan::{partition_label, DeleteMerge};

/// What a merge wrote, not yet committed.
#[derive(Debug, Clone, Default)]
pub struct MergedDeletes {
    /// The delete files it replaces.
    pub removed: Vec<DataFile>,
    /// The merged files (none for a partition whose deletes name only removed files).
    pub added: Vec<DataFile>,
    /// Positions the merged files hold.
    pub positions: u64,
}

/// Writes one delete file per partition of `merges`, from what `deletes` (read from `live`)
/// says about the partition's live data files.
pub async fn merge_deletes(
    io: &FileIO,
    meta: &TableMetadata,
    merges: &[DeleteMerge],
    live: &LiveFiles,
    deletes: &DeleteMap,
) -> Result<MergedDeletes> {
    let partitions: HashSet<&str> = merges.iter().map(|m| m.partition.as_str()).collect();
    let spec_id = meta.default_partition_spec_id();
    let mut positions = Vec::new();
    for f in live
        .data
        .iter()
        .filter(|f| f.spec_id == spec_id && partitions.contains(partition_label(meta, &f.file).as_str()))
    {
        positions.extend(deletes.of(f.file.file_path()).iter().map(|p| PositionDelete {
            data_file: &f.file,
            pos: *p,
        }));
    }
    let added = match positions.is_empty() {
        true => Vec::new(),
        false => PositionDeleteWriter::new(meta, io.clone())?.write(&positions).await?,
    };
    Ok(MergedDeletes {
        removed: merges.iter().flat_map(|m| m.files.iter().cloned()).collect(),
        added,
        positions: positions.len() as u64,
    })
}
