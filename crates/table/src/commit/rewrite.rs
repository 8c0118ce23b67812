//! Rewrite (operation `replace`): swap a set of files for new ones holding the same live rows —
//! compaction, and erasure's file rewrites.
//!
//! It is only correct if the table did not change under it in ways that touch its inputs, so
//! each attempt validates against the fresh base: every file being replaced must still be live,
//! and no position delete committed after the rewrite was planned may point into a file being
//! replaced (its rows would come back). Either failure abandons the rewrite with
//! [`TableError::RewriteConflict`]; it is never committed wrong. Replacement files get the new
//! snapshot's sequence number, so older deletes (already applied while rewriting) no longer
//! match them.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{DataContentType, DataFile, Datum, ManifestContentType, ManifestEntryRef, ManifestFile, Operation};

use super::{Produced, SnapshotContext, SnapshotOperation};
use crate::commit::restore::ancestry;
use crate::commit::summary::SummaryBuilder;
use crate::error::{Result, TableError};
use crate::write::deletes::FILE_PATH_FIELD_ID;

/// Replace `removed` (data files, and delete files that only touch them) by `added`.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Files to remove: data files and the position-delete files that only touch them.
    pub removed: Vec<DataFile>,
    /// New files with the same live rows: data files, or position-delete files deleting
    /// exactly what the removed delete files did (delete files merged).
    pub added: Vec<DataFile>,
    /// The snapshot the rewrite read its inputs from.
    pub planned_at: Option<i64>,
}

impl SnapshotOperation for Rewrite {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        produce(self, ctx, extra, Removed::MarkDeleted).await
    }
}

/// A rewrite for erasure: the new manifests do not list the replaced files at all. A normal
/// rewrite keeps them as DELETED entries, and an entry keeps its file's column bounds — the
/// erased values, in plain text — for as long as the snapshot lives.
#[derive(Debug, Clone)]
pub struct ForgettingRewrite(pub Rewrite);

impl SnapshotOperation for ForgettingRewrite {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        // Checked on the base this attempt commits on: a rebuild that began after the erasure
        // did may already hold the keys' rows in its shadow, and its swap would bring them back.
        if let Some(mark) = super::swap::RebuildMark::of(ctx.metadata())? {
            return Err(TableError::RebuildChanged {
                table: ctx.base.ident.to_string(),
                reason: format!(
                    "rebuild {} is under way; its shadow table would bring the erased rows back. Finish or abandon \
                     it, then erase",
                    mark.id
                ),
            });
        }
        produce(&self.0, ctx, extra, Removed::Forget).await
    }
}

/// How replaced files appear in the rewritten manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removed {
    MarkDeleted,
    Forget,
}

async fn produce(
    op: &Rewrite,
    ctx: &mut SnapshotContext<'_>,
    extra: &HashMap<String, String>,
    how: Removed,
) -> Result<Produced> {
    let meta = ctx.metadata();
    let removed: HashSet<&str> = op.removed.iter().map(|f| f.file_path()).collect();
    let data_removed: HashSet<&str> = op
        .removed
        .iter()
        .filter(|f| f.content_type() == DataContentType::Data)
        .map(|f| f.file_path())
        .collect();
    let newer = snapshots_since(ctx, op.planned_at);
    let io = ctx.catalog.file_io().clone();
    let mut manifests = Vec::new();
    let mut found = 0usize;
    for mf in ctx.current_manifests().await? {
        let entries = crate::read::manifests::entries(&io, &mf).await?;
        for e in entries.iter().filter(|e| e.is_alive()) {
            if e.content_type() != DataContentType::Data && e.snapshot_id().is_some_and(|s| newer.contains(&s)) {
                check_new_delete(ctx, e.data_file(), &data_removed)?;
            }
        }
        let hits = entries
            .iter()
            .filter(|e| e.is_alive() && removed.contains(e.file_path()))
            .count();
        if hits == 0 {
            manifests.push(mf);
            continue;
        }
        if mf.partition_spec_id != meta.default_partition_spec_id() {
            return Err(TableError::Unsupported(
                "rewriting files of an older partition spec".into(),
            ));
        }
        found += hits;
        manifests.push(rewrite_manifest(ctx, &mf, &entries, &removed, how).await?);
    }
    if found != removed.len() {
        return Err(conflict(
            ctx,
            format!(
                "{} of the {} files to replace are no longer in the table",
                removed.len() - found,
                removed.len()
            ),
        ));
    }
    for content in [ManifestContentType::Deletes, ManifestContentType::Data] {
        let files: Vec<&DataFile> = op
            .added
            .iter()
            .filter(|f| (f.content_type() == DataContentType::Data) == (content == ManifestContentType::Data))
            .collect();
        if let Some(eq) = files
            .iter()
            .find(|f| f.content_type() == DataContentType::EqualityDeletes)
        {
            return Err(TableError::Unsupported(format!(
                "{} is an equality delete; calve writes none",
                eq.file_path()
            )));
        }
        if let Some(m) = ctx.added_manifest(content, files).await? {
            manifests.insert(0, m);
        }
    }
    let mut summary = SummaryBuilder::for_table(meta);
    op.added.iter().for_each(|f| summary.added(f));
    op.removed.iter().for_each(|f| summary.removed(f));
    Ok(Produced {
        operation: Operation::Replace,
        manifests,
        summary: summary.build(extra),
    })
}

/// Snapshots committed after `planned_at` on the main branch.
fn snapshots_since(ctx: &SnapshotContext<'_>, planned_at: Option<i64>) -> HashSet<i64> {
    ancestry(ctx.metadata())
        .map(|s| s.snapshot_id())
        .take_while(|id| Some(*id) != planned_at)
        .collect()
}

/// A position delete committed after planning must not point into a file being replaced.
fn check_new_delete(ctx: &SnapshotContext<'_>, delete: &DataFile, removed: &HashSet<&str>) -> Result<()> {
    if delete.content_type() == DataContentType::EqualityDeletes {
        return Err(conflict(
            ctx,
            format!("equality delete {} was committed meanwhile", delete.file_path()),
        ));
    }
    let touches = match delete.referenced_data_file() {
        Some(p) => removed.contains(p.as_str()),
        None => {
            let bound = |m: &HashMap<i32, Datum>| m.get(&FILE_PATH_FIELD_ID).map(|d| d.to_string());
            match (bound(delete.lower_bounds()), bound(delete.upper_bounds())) {
                // Datum's Display quotes strings; compare the bare values.
                (Some(lo), Some(hi)) => {
                    let (lo, hi) = (lo.trim_matches('"').to_string(), hi.trim_matches('"').to_string());
                    removed.iter().any(|p| lo.as_str() <= *p && *p <= hi.as_str())
                }
                _ => true,
            }
        }
    };
    if touches {
        return Err(conflict(
            ctx,
            format!(
                "position delete {} was committed meanwhile against a file being replaced",
                delete.file_path()
            ),
        ));
    }
    Ok(())
}

/// `mf` again, with the entries of `removed` marked DELETED and the rest EXISTING.
async fn rewrite_manifest(
    ctx: &mut SnapshotContext<'_>,
    mf: &ManifestFile,
    entries: &[ManifestEntryRef],
    removed: &HashSet<&str>,
    how: Removed,
) -> Result<ManifestFile> {
    let mut w = ctx.new_manifest_writer(mf.content)?;
    for e in entries.iter().filter(|e| e.is_alive()) {
        let seq = e.sequence_number().unwrap_or(mf.sequence_number);
        let file_seq = e.file_sequence_number.or(Some(seq));
        if removed.contains(e.file_path()) {
            if how == Removed::Forget {
                continue;
            }
            w.add_delete_file(e.data_file().clone(), seq, file_seq)?;
        } else {
            w.add_existing_file(
                e.data_file().clone(),
                e.snapshot_id().unwrap_or(mf.added_snapshot_id),
                seq,
                file_seq,
            )?;
        }
    }
    Ok(w.write_manifest_file().await?)
}

fn conflict(ctx: &SnapshotContext<'_>, reason: String) -> TableError {
    TableError::RewriteConflict {
        table: ctx.base.ident.to_string(),
        reason,
    }
}
