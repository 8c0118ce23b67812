//! Which files a set of snapshots needs: the walk behind expiry cleanup and orphan cleanup.
//!
//! A content file counts as needed only through a live (ADDED or EXISTING) manifest entry; a
//! DELETED entry records that the snapshot no longer holds the file.

use std::collections::HashSet;

use iceberg::io::FileIO;
use iceberg::spec::{ManifestList, SnapshotRef, TableMetadata};

use crate::error::Result;

/// Files reachable from some snapshots.
#[derive(Debug, Default, Clone)]
pub struct Reachable {
    /// Manifest-list files.
    pub manifest_lists: HashSet<String>,
    /// Manifest files.
    pub manifests: HashSet<String>,
    /// Data and delete files.
    pub content: HashSet<String>,
}

impl Reachable {
    /// Whether `path` is any of the reachable files.
    pub fn contains(&self, path: &str) -> bool {
        self.manifest_lists.contains(path) || self.manifests.contains(path) || self.content.contains(path)
    }
}

/// Walks `snapshots` of `meta`, reading each manifest once.
pub async fn reachable(file_io: &FileIO, meta: &TableMetadata, snapshots: &[SnapshotRef]) -> Result<Reachable> {
    let mut r = Reachable::default();
    for s in snapshots {
        if !r.manifest_lists.insert(s.manifest_list().to_string()) {
            continue;
        }
        let bytes = file_io.new_input(s.manifest_list())?.read().await?;
        let manifests: Vec<_> = ManifestList::parse_with_version(&bytes, meta.format_version())?
            .consume_entries()
            .into_iter()
            .collect();
        for mf in manifests {
            if !r.manifests.insert(mf.manifest_path.clone()) {
                continue;
            }
            for e in crate::manifests::entries(file_io, &mf).await?.iter() {
                if e.is_alive() {
                    r.content.insert(e.file_path().to_string());
                }
            }
        }
    }
    Ok(r)
}
