//! Orphan cleanup: delete files under a table's location that no retained metadata references.
//!
//! Orphans come from commit attempts whose outcome was unknown, crashes between writing files
//! and committing them, and other engines. A file younger than the safety age may belong to a
//! writer that has not committed yet, so it is never touched.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use iceberg::TableIdent;

use crate::catalog::Catalog;
use crate::error::{Result, TableError};
use crate::read::reachable::reachable;

/// What an orphan sweep found and did.
#[derive(Debug, Clone, Default)]
pub struct OrphanReport {
    /// Unreferenced files older than the safety age (deleted unless a dry run).
    pub orphans: Vec<String>,
    /// Unreferenced files younger than the safety age, left alone.
    pub too_young: Vec<String>,
}

/// Finds (and unless `dry_run`, deletes) orphan files of `ident` older than `min_age`.
pub async fn remove_orphans(
    catalog: &Catalog,
    ident: &TableIdent,
    min_age: Duration,
    dry_run: bool,
) -> Result<OrphanReport> {
    let st = catalog.load(ident).await?;
    let meta = st.metadata.as_ref();
    let listed = catalog.storage().list(meta.location()).await?;
    let snapshots: Vec<_> = meta.snapshots().cloned().collect();
    let keep = reachable(catalog.file_io(), meta, &snapshots).await?;
    let metadata_files =
        std::iter::once(&st.metadata_location).chain(meta.metadata_log().iter().map(|l| &l.metadata_file));
    let referenced: HashSet<&str> = keep
        .manifest_lists
        .iter()
        .chain(&keep.manifests)
        .chain(&keep.content)
        .chain(metadata_files)
        .map(|p| comparable(p))
        .collect();
    let now = SystemTime::now();
    let mut report = OrphanReport::default();
    for file in listed {
        if referenced.contains(comparable(&file.location)) {
            continue;
        }
        let age = now.duration_since(file.modified).unwrap_or_default();
        if age < min_age {
            report.too_young.push(file.location);
            continue;
        }
        if !dry_run {
            catalog
                .file_io()
                .delete(&file.location)
                .await
                .map_err(|e| TableError::Catalog(format!("deleting {}: {e}", file.location)))?;
        }
        report.orphans.push(file.location);
    }
    report.orphans.sort();
    report.too_young.sort();
    Ok(report)
}

/// A location as listing and metadata can both spell it: local metadata may say
/// `file:///w/x` where the directory walk finds `/w/x`.
fn comparable(location: &str) -> &str {
    location
        .strip_prefix("file://")
        .or_else(|| location.strip_prefix("file:"))
        .unwrap_or(location)
}
