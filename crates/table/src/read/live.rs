//! The files a table's current snapshot holds, read from its manifests: what the key index is
//! rebuilt from and what compaction plans over.

use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, TableMetadata};

use crate::error::Result;
use crate::read::manifests::manifest_list;

/// One live content file with the data sequence number its manifest entry carries.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// The file.
    pub file: DataFile,
    /// Data sequence number (which deletes apply to it).
    pub sequence_number: i64,
    /// Partition spec of its manifest.
    pub spec_id: i32,
    /// The snapshot that added it.
    pub added_by: i64,
}

/// Live data files and live delete files of the current snapshot.
#[derive(Debug, Default, Clone)]
pub struct LiveFiles {
    /// Data files.
    pub data: Vec<LiveFile>,
    /// Position-delete files.
    pub position_deletes: Vec<LiveFile>,
    /// Equality-delete files (calve writes none; counted so callers can refuse them).
    pub equality_deletes: Vec<LiveFile>,
}

/// Reads the current snapshot's manifests of `meta`.
pub async fn live_files(file_io: &FileIO, meta: &TableMetadata) -> Result<LiveFiles> {
    let mut out = LiveFiles::default();
    let Some(s) = meta.current_snapshot() else {
        return Ok(out);
    };
    for mf in manifest_list(file_io, meta, s).await? {
        let entries = crate::read::manifests::entries(file_io, &mf).await?;
        for e in entries.iter().filter(|e| e.is_alive()) {
            let live = LiveFile {
                file: e.data_file().clone(),
                sequence_number: e.sequence_number().unwrap_or(mf.sequence_number),
                spec_id: mf.partition_spec_id,
                added_by: e.snapshot_id().unwrap_or(mf.added_snapshot_id),
            };
            match e.content_type() {
                DataContentType::Data => out.data.push(live),
                DataContentType::PositionDeletes => out.position_deletes.push(live),
                DataContentType::EqualityDeletes => out.equality_deletes.push(live),
            }
        }
    }
    Ok(out)
}

/// Equality-delete files in any snapshot the table retains (calve's promise: zero).
pub async fn equality_deletes_in_any_snapshot(file_io: &FileIO, meta: &TableMetadata) -> Result<usize> {
    let mut n = 0;
    for s in meta.snapshots() {
        for mf in manifest_list(file_io, meta, s).await? {
            let entries = crate::read::manifests::entries(file_io, &mf).await?;
            n += entries
                .iter()
                .filter(|e| e.content_type() == DataContentType::EqualityDeletes)
                .count();
        }
    }
    Ok(n)
}
