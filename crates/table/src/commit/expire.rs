//! Expire snapshots: drop snapshots past retention from the metadata, then delete the files
//! only they needed (manifest lists, manifests, data and delete files).
//!
//! The restore point is never expired: every snapshot of the main branch from the head down to
//! the newest one carrying `calve.offsets` is kept whatever its age, so the walk that finds the
//! offsets on restart always reaches them.

use std::collections::HashSet;
use std::time::Duration;

use iceberg::spec::Snapshot;

use super::Committer;
use crate::commit::restore::{ancestry, OFFSETS_KEY};
use crate::error::Result;
use crate::read::reachable::reachable;

/// Snapshot retention (the contract's `maintenance.keep_snapshots`).
#[derive(Debug, Clone, Copy)]
pub struct ExpirePolicy {
    /// Snapshots younger than this are kept.
    pub max_age: Duration,
    /// The newest `retain_last` snapshots of the main branch are kept whatever their age.
    pub retain_last: usize,
    /// At most this many snapshots of the main branch are kept however young (never fewer
    /// than `retain_last`, and never the restore point's).
    pub retain_at_most: Option<usize>,
}

/// What an expiry did.
#[derive(Debug, Clone, Default)]
pub struct ExpireReport {
    /// Snapshots removed from the metadata.
    pub expired_snapshots: Vec<i64>,
    /// Files deleted because only expired snapshots needed them.
    pub deleted_files: Vec<String>,
}

impl ExpirePolicy {
    /// The snapshots of `meta` this policy expires as of `now_ms` (what a dry run reports).
    pub fn expirable(&self, meta: &iceberg::spec::TableMetadata, now_ms: i64) -> Vec<i64> {
        select_expired(meta, *self, now_ms)
    }
}

impl Committer {
    /// Expires snapshots per `policy` as of `now_ms` and deletes the files they alone needed.
    pub async fn expire_snapshots(&self, policy: ExpirePolicy, now_ms: i64) -> Result<ExpireReport> {
        let swapped = self
            .swap_metadata(|meta, builder| {
                let expired = select_expired(meta, policy, now_ms);
                Ok((!expired.is_empty()).then(|| (builder.remove_snapshots(&expired), expired)))
            })
            .await?;
        let Some((base, after, expired)) = swapped else {
            return Ok(ExpireReport::default());
        };
        let (meta, after) = (base.metadata.as_ref(), after.metadata.as_ref());
        let io = self.catalog.file_io();
        let gone_snapshots: Vec<_> = meta
            .snapshots()
            .filter(|s| expired.contains(&s.snapshot_id()))
            .cloned()
            .collect();
        let kept_snapshots: Vec<_> = after.snapshots().cloned().collect();
        let gone = reachable(io, meta, &gone_snapshots).await?;
        let kept = reachable(io, after, &kept_snapshots).await?;
        let mut deleted = Vec::new();
        for path in gone.manifest_lists.iter().chain(&gone.manifests).chain(&gone.content) {
            if !kept.contains(path) {
                io.delete(path).await?;
                deleted.push(path.clone());
            }
        }
        tracing::info!(table = %self.ident, snapshots = expired.len(), files = deleted.len(), "expired snapshots");
        Ok(ExpireReport {
            expired_snapshots: expired,
            deleted_files: deleted,
        })
    }
}

fn select_expired(meta: &iceberg::spec::TableMetadata, policy: ExpirePolicy, now_ms: i64) -> Vec<i64> {
    let cutoff = now_ms - policy.max_age.as_millis() as i64;
    let main: Vec<&Snapshot> = ancestry(meta).collect();
    let mut keep = ref_heads(meta);
    // Head down to the restore point, then the newest `retain_last`, then the young ones.
    for s in &main {
        keep.insert(s.snapshot_id());
        if s.summary().additional_properties.contains_key(OFFSETS_KEY) {
            break;
        }
    }
    let capped = |i: usize| policy.retain_at_most.is_some_and(|most| i >= most);
    for (i, s) in main.iter().enumerate() {
        if i < policy.retain_last || (s.timestamp_ms() >= cutoff && !capped(i)) {
            keep.insert(s.snapshot_id());
        }
    }
    let on_main: HashSet<i64> = main.iter().map(|s| s.snapshot_id()).collect();
    meta.snapshots()
        .filter(|s| !keep.contains(&s.snapshot_id()))
        // Off the main branch (a rolled-back line): expire by age alone.
        .filter(|s| on_main.contains(&s.snapshot_id()) || s.timestamp_ms() < cutoff)
        .map(|s| s.snapshot_id())
        .collect()
}

/// Snapshots that branches and tags point at. `TableMetadata` has no public accessor for its
/// refs, so they are read from its serialized form; a tag another engine made must survive.
fn ref_heads(meta: &iceberg::spec::TableMetadata) -> HashSet<i64> {
    let json = serde_json::to_value(meta).unwrap_or_default();
    json["refs"]
        .as_object()
        .map(|refs| refs.values().filter_map(|r| r["snapshot-id"].as_i64()).collect())
        .unwrap_or_default()
}
