//! Orphan cleanup: delete files under a table's location that no retained metadata references.
//!
//! Orphans come from commit attempts whose outcome was unknown, crashes between writing files
//! and committing them, and other engines. A file younger than the safety age may belong to a
//! writer that has not committed yet, so it is never touched.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use iceberg::TableIdent;

use crate::catalog::{Catalog, TableState};
use crate::commit::swap::RebuildMark;
use crate::error::{Result, TableError};
use crate::read::reachable::reachable;
use crate::storage::Listed;

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
    let now = SystemTime::now();
    let mut report = OrphanReport::default();
    for file in unreferenced(catalog, &catalog.load(ident).await?).await? {
        let age = now.duration_since(file.modified).unwrap_or_default();
        if age < min_age {
            report.too_young.push(file.location);
            continue;
        }
        if !dry_run {
            delete(catalog, &file.location).await?;
        }
        report.orphans.push(file.location);
    }
    report.orphans.sort();
    report.too_young.sort();
    Ok(report)
}

/// Deletes one unreferenced file.
pub(crate) async fn delete(catalog: &Catalog, location: &str) -> Result<()> {
    catalog
        .file_io()
        .delete(location)
        .await
        .map_err(|e| TableError::Catalog(format!("deleting {location}: {e}")))
}

/// The files under the location of `st` (a table as just loaded) that no retained metadata
/// references, with when each
/// was written: what a crashed or fenced writer and abandoned commit attempts left, and what
/// a running writer has written but not committed yet.
///
/// Only the table's own `data/` and `metadata/` directories are listed (a nested namespace's
/// tables can live under a table's location, and must not be taken for its files), and only
/// after checking that every referenced file under them was listed: a referenced file the
/// listing spells differently would otherwise look unreferenced, so a mismatch refuses.
pub async fn unreferenced(catalog: &Catalog, st: &TableState) -> Result<Vec<Listed>> {
    let ident = &st.ident;
    let meta = st.metadata.as_ref();
    let location = meta.location().trim_end_matches('/');
    let root_like = match location.split_once("://") {
        Some((_, rest)) => !rest.trim_end_matches('/').contains('/'),
        None => location.is_empty(),
    };
    if root_like {
        return Err(TableError::Unsupported(format!(
            "orphan cleanup of {ident}: its location {location} is a bucket or file system root"
        )));
    }
    let roots = [format!("{location}/data"), format!("{location}/metadata")];
    let mut listed = Vec::new();
    for root in &roots {
        listed.extend(catalog.storage().list(root).await?);
    }
    let snapshots: Vec<_> = meta.snapshots().cloned().collect();
    let keep = reachable(catalog.file_io(), meta, &snapshots).await?;
    // Everything a snapshot reads, and the current metadata, must be in storage; older
    // metadata files and statistics may be gone by design (metadata cleanup, a dropped
    // statistics file) and are only kept if present.
    let needed: Vec<String> = keep
        .manifest_lists
        .iter()
        .chain(&keep.manifests)
        .chain(&keep.content)
        .chain(std::iter::once(&st.metadata_location))
        .map(|p| comparable(p))
        .collect();
    let optional = meta
        .metadata_log()
        .iter()
        .map(|l| &l.metadata_file)
        .chain(meta.statistics_iter().map(|s| &s.statistics_path))
        .chain(meta.partition_statistics_iter().map(|s| &s.statistics_path))
        .map(|p| comparable(p));
    let listed_names: HashSet<String> = listed.iter().map(|f| comparable(&f.location)).collect();
    let under_roots: Vec<String> = roots.iter().map(|r| format!("{}/", comparable(r))).collect();
    if let Some(missing) = needed
        .iter()
        .filter(|p| under_roots.iter().any(|r| p.starts_with(r.as_str())))
        .find(|p| !listed_names.contains(*p))
    {
        return Err(TableError::Catalog(format!(
            "orphan cleanup of {ident} refused: {missing} is referenced but was not listed under {location} \
             (a file missing from storage, or a spelling of its path the listing does not share); nothing deleted"
        )));
    }
    let referenced: HashSet<String> = needed.into_iter().chain(optional).collect();
    // A rebuild under way stages its shadow table's files under this table's data/; once it
    // is abandoned (the mark is gone) they are orphans like any other.
    let staging = RebuildMark::of(meta)?.map(|m| m.location(location));
    Ok(listed
        .into_iter()
        .filter(|f| !referenced.contains(&comparable(&f.location)))
        .filter(|f| staging.as_ref().is_none_or(|dir| !is_under(&f.location, dir)))
        .collect())
}

/// Whether `location` is inside the directory `dir`, however either spells its path.
pub(crate) fn is_under(location: &str, dir: &str) -> bool {
    comparable(location).starts_with(&format!("{}/", comparable(dir).trim_end_matches('/')))
}

/// A location as listing and metadata can both spell it: `file:///w/x` and `/w/x` are one
/// file, so are `s3a://b/k` and `s3://b/k`, and runs of `/` are one `/` (the object store
/// normalises them away when it writes, metadata keeps them as written).
fn comparable(location: &str) -> String {
    let (scheme, rest) = match location.split_once("://") {
        Some(("file", rest)) => ("", rest),
        Some(("s3a" | "s3n" | "s3", rest)) => ("s3://", rest),
        Some((_, _)) => ("", location),
        None => ("", location.strip_prefix("file:").unwrap_or(location)),
    };
    let mut out = String::with_capacity(location.len());
    out.push_str(scheme);
    let mut previous_slash = false;
    for c in rest.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::comparable;

    #[test]
    fn one_file_has_one_comparable_spelling() {
        for (a, b) in [
            ("file:///w/t/data/x.parquet", "/w/t/data/x.parquet"),
            ("file:/w/t/x", "/w/t/x"),
            ("s3a://lake/wh/t/x", "s3://lake/wh/t/x"),
            ("s3n://lake/wh/t/x", "s3://lake/wh/t/x"),
            ("s3://lake/wh//ns/t/data//x", "s3://lake/wh/ns/t/data/x"),
            ("/w//t/x", "/w/t/x"),
        ] {
            assert_eq!(comparable(a), comparable(b), "{a} and {b}");
        }
        assert_ne!(comparable("s3://lake/a/x"), comparable("s3://other/a/x"));
        assert_ne!(
            comparable("s3://lake/a/ts_day=1/x"),
            comparable("s3://lake/a/ts_day=2/x")
        );
    }
}
