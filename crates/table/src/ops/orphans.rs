//! Orphan cleanup: delete files under a table's location that no retained metadata references.
//!
//! Orphans come from commit attempts whose outcome was unknown, crashes between writing files
//! and committing them, and other engines. A file younger than the safety age may belong to a
//! writer that has not committed yet, so it is never touched.

use std::path::{Path, PathBuf};
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
    let root = local_path(meta.location())?;
    let listed = list_files(&root).map_err(|e| TableError::Catalog(format!("listing {}: {e}", root.display())))?;
    let snapshots: Vec<_> = meta.snapshots().cloned().collect();
    let keep = reachable(catalog.file_io(), meta, &snapshots).await?;
    let metadata_files =
        std::iter::once(&st.metadata_location).chain(meta.metadata_log().iter().map(|l| &l.metadata_file));
    let referenced: std::collections::HashSet<PathBuf> = keep
        .manifest_lists
        .iter()
        .chain(&keep.manifests)
        .chain(&keep.content)
        .chain(metadata_files)
        .filter_map(|p| local_path(p).ok())
        .collect();
    let now = SystemTime::now();
    let mut report = OrphanReport::default();
    for (path, modified) in listed {
        if referenced.contains(&path) {
            continue;
        }
        let age = now.duration_since(modified).unwrap_or_default();
        let name = path.display().to_string();
        if age < min_age {
            report.too_young.push(name);
            continue;
        }
        if !dry_run {
            std::fs::remove_file(&path).map_err(|e| TableError::Catalog(format!("deleting {name}: {e}")))?;
        }
        report.orphans.push(name);
    }
    report.orphans.sort();
    report.too_young.sort();
    Ok(report)
}

/// Table locations are plain paths or `file:` URLs in the embedded setup.
fn local_path(location: &str) -> Result<PathBuf> {
    let p = location
        .strip_prefix("file://")
        .or_else(|| location.strip_prefix("file:"))
        .unwrap_or(location);
    if p.contains("://") {
        return Err(TableError::Unsupported(format!(
            "orphan cleanup on {location}: only local warehouses in this build"
        )));
    }
    Ok(PathBuf::from(p))
}

fn list_files(root: &Path) -> std::io::Result<Vec<(PathBuf, SystemTime)>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let md = entry.metadata()?;
            if md.is_dir() {
                dirs.push(entry.path());
            } else {
                out.push((entry.path(), md.modified()?));
            }
        }
    }
    Ok(out)
}
