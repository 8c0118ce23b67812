//! Which files a set of snapshots needs: the walk behind expiry cleanup and orphan cleanup.
//!
//! A content file counts as needed only through a live (ADDED or EXISTING) manifest entry; a
//! DELETED entry records that the snapshot no longer holds the file.

use std::collections::HashSet;

use iceberg::io::FileIO;
use iceberg::spec::{SnapshotRef, TableMetadata};

use crate::error::Result;
use crate::read::manifests::manifest_list;

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
        for mf in manifest_list(file_io, meta, s).await? {
            if !r.manifests.insert(mf.manifest_path.clone()) {
                continue;
            }
            for e in crate::read::manifests::entries(file_io, &mf).await?.iter() {
                if e.is_alive() {
                    r.content.insert(e.file_path().to_string());
                }
            }
        }
    }
    Ok(r)
}
