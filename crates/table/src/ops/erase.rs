//! Erasure: remove every version of some keys from the table's storage, not just from its
//! current state.
//!
//! A position delete only hides a row; its bytes stay in the data file, and time travel still
//! reaches older snapshots. So erasure (1) rewrites every live data file that holds any row of
//! the keys — current or superseded — without those rows and without the rows live deletes
//! already removed, committed as a `replace` that carries the restore point forward; (2)
//! expires every snapshot but the new head (whose manifests do not even list the old files), which physically deletes the old files and the
//! manifests that held statistics of them; (3) checks its work by reading every remaining data
//! file, deletes ignored, for the keys.
//!
//! The commit is made under the table's current writer epoch without claiming the table, so a
//! running pipeline is not fenced; its next row delta sees a `replace` it did not make,
//! refuses its stale positions, and catches its key index up.
//!
//! Which rows belong to the keys is a [`RowMatch`]: [`KeyMatch`] compares a table's key
//! columns; [`DeadLetterMatch`] finds them in a dead-letter table's raw bytes, decoded by the
//! caller's [`KeysInRecords`] (which bytes carry a key, and how they decode, is the ingest
//! side's knowledge).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use arrow_array::cast::AsArray;
use arrow_array::{BooleanArray, RecordBatch};
use arrow_select::filter::filter_record_batch;
use calve_contract::dead_letter;
use iceberg::spec::DataFile;

use crate::commit::{Committer, ExpirePolicy, ForgettingRewrite, Rewrite};
use crate::error::{Result, TableError};
use crate::keyed::index::KeyIndex;
use crate::ops::orphans;
use crate::read::live::live_files;
use crate::read::{read_data_file as read_rows, read_deletes};
use crate::write::data::DataWriter;
use crate::{Catalog, TableState};

/// What an erasure did and what it verified.
#[derive(Debug, Clone, Default)]
pub struct ErasureReport {
    /// Data files that held a row of an erased key (now rewritten and deleted).
    pub files_with_key: Vec<String>,
    /// Rows removed from those files (every version of the keys).
    pub rows_removed: u64,
    /// Snapshots expired so time travel cannot reach the old files.
    pub snapshots_expired: usize,
    /// Files physically deleted by the expiry.
    pub files_deleted: usize,
    /// Files that held the key and still exist (must be empty).
    pub still_on_storage: Vec<String>,
    /// Data files read back for the check.
    pub files_checked: usize,
    /// Rows of the keys found in those files, deletes ignored (must be 0).
    pub rows_found_after: u64,
    /// Files no snapshot references (left by a crashed or fenced writer, or an abandoned
    /// commit attempt) older than the orphan safety age: deleted, whatever they held.
    pub orphans_deleted: Vec<String>,
    /// Unreferenced data files younger than the safety age, read for the keys.
    pub young_files_checked: usize,
    /// Unreferenced files younger than the safety age that hold a row of the keys, or that
    /// cannot be read for them (manifests, whose column bounds may quote a key). They may be
    /// a running writer's next commit, so they are left alone, and the erasure is not
    /// verified while any is left (must be empty): erase again once they are older.
    pub young_unreferenced: Vec<String>,
}

impl ErasureReport {
    /// Whether the keys are gone from storage.
    pub fn verified(&self) -> bool {
        self.still_on_storage.is_empty() && self.rows_found_after == 0 && self.young_unreferenced.is_empty()
    }
}

/// Which rows of a batch belong to the keys being erased.
pub trait RowMatch: Sync {
    /// One flag per row of `batch`: true for a row of an erased key.
    fn matches(&self, batch: &RecordBatch) -> Result<Vec<bool>>;
}

/// Rows whose key columns hold one of the given keys.
pub struct KeyMatch {
    index: KeyIndex,
    targets: HashSet<Box<[u8]>>,
}

impl KeyMatch {
    /// Matches the keys in `keys` (a batch of the key columns) in tables described by `meta`.
    pub fn new(meta: &iceberg::spec::TableMetadata, key_columns: &[String], keys: &RecordBatch) -> Result<Self> {
        let index = KeyIndex::empty(meta, key_columns, &Default::default())?;
        let targets = index.keys_of(keys)?.iter().map(|r| r.as_ref().into()).collect();
        Ok(KeyMatch { index, targets })
    }
}

impl RowMatch for KeyMatch {
    fn matches(&self, batch: &RecordBatch) -> Result<Vec<bool>> {
        Ok(self
            .index
            .keys_of(batch)?
            .iter()
            .map(|k| self.targets.contains(k.as_ref()))
            .collect())
    }
}

/// A dead letter's raw Kafka key and raw value.
pub type RawRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Decodes the business keys a dead letter's raw Kafka key and value may carry.
pub trait KeysInRecords: Sync {
    /// Decodes every key each record (raw Kafka key, raw value) may carry: a batch of the key
    /// columns and, per row of it, the index of the record it came from. `None` when no record
    /// carries a decodable key.
    fn decode(&self, records: &[RawRecord<'_>]) -> Result<Option<(RecordBatch, Vec<usize>)>>;
}

/// Dead letters of the erased keys: rows whose raw Kafka key or value decodes to one of them.
pub struct DeadLetterMatch<'a, K> {
    /// The keys being erased.
    pub keys: &'a KeyMatch,
    /// How keys are found in a record's bytes.
    pub decoder: K,
}

impl<K: KeysInRecords> RowMatch for DeadLetterMatch<'_, K> {
    fn matches(&self, batch: &RecordBatch) -> Result<Vec<bool>> {
        let (key, value) = (
            binary_column(batch, dead_letter::KEY)?,
            binary_column(batch, dead_letter::VALUE)?,
        );
        let records: Vec<_> = key.into_iter().zip(value).collect();
        let mut out = vec![false; batch.num_rows()];
        if let Some((keys, owner)) = self.decoder.decode(&records)? {
            for (row, hit) in owner.into_iter().zip(self.keys.matches(&keys)?) {
                out[row] |= hit;
            }
        }
        Ok(out)
    }
}

/// A binary column of a dead-letter batch by name. Iceberg's binary is Arrow's large binary as
/// calve reads it; plain binary is accepted too.
fn binary_column<'b>(batch: &'b RecordBatch, name: &str) -> Result<Vec<Option<&'b [u8]>>> {
    let c = batch.column_by_name(name);
    match c.map(|c| (c.as_binary_opt::<i64>(), c.as_binary_opt::<i32>())) {
        Some((Some(b), _)) => Ok(b.iter().collect()),
        Some((None, Some(b))) => Ok(b.iter().collect()),
        _ => Err(TableError::InvalidData {
            table: String::new(),
            reason: format!("dead letters lack a binary `{name}` column"),
        }),
    }
}

/// Erases the rows `rows` matches from the table `committer` writes (see the module docs).
/// Unreferenced files older than `orphan_min_age` (the contract's orphan safety age) are
/// deleted; younger ones are checked (see [`ErasureReport::young_unreferenced`]).
pub async fn erase_rows(
    catalog: &Catalog,
    committer: &Committer,
    rows: &dyn RowMatch,
    orphan_min_age: Duration,
) -> Result<ErasureReport> {
    let io = catalog.file_io();
    let base = catalog.load(committer.ident()).await?;
    let meta = base.metadata.as_ref();
    let live = live_files(io, meta).await?;
    let deleted = read_deletes(io, &live).await?;
    let writer = DataWriter::new(meta, io.clone(), 512 << 20)?;
    let mut report = ErasureReport::default();
    let (mut removed, mut added): (Vec<DataFile>, Vec<DataFile>) = (Vec::new(), Vec::new());
    for f in &live.data {
        let batches = read_rows(io, meta, f.file.file_path()).await?;
        let dead = deleted.of(f.file.file_path());
        let (kept, hits) = without_rows(rows, &batches, dead)?;
        if hits == 0 {
            continue;
        }
        report.rows_removed += hits;
        report.files_with_key.push(f.file.file_path().to_string());
        removed.push(f.file.clone());
        added.extend(writer.write(&kept).await?);
    }
    if removed.is_empty() {
        // Nothing held the keys: the check still reads every file, so the report says so.
        check_storage(catalog, committer, rows, orphan_min_age, &mut report).await?;
        return Ok(report);
    }
    // Delete files that only name rewritten files go with them; shared ones keep naming paths
    // that no longer exist, which is harmless.
    let gone: HashSet<&str> = removed.iter().map(|f| f.file_path()).collect();
    let only_gone: Vec<DataFile> = live
        .position_deletes
        .iter()
        .filter(|d| d.file.referenced_data_file().is_some_and(|r| gone.contains(r.as_str())))
        .map(|d| d.file.clone())
        .collect();
    removed.extend(only_gone);
    committer
        .commit_maintenance(&ForgettingRewrite(Rewrite {
            removed,
            added,
            planned_at: meta.current_snapshot_id(),
        }))
        .await?;
    let expired = committer
        .expire_snapshots(
            ExpirePolicy {
                max_age: std::time::Duration::ZERO,
                retain_last: 1,
                retain_at_most: None,
            },
            i64::MAX / 2,
        )
        .await?;
    report.snapshots_expired = expired.expired_snapshots.len();
    report.files_deleted = expired.deleted_files.len();
    check_storage(catalog, committer, rows, orphan_min_age, &mut report).await?;
    Ok(report)
}

/// What the erasure leaves in storage, on the table as it now is: unreferenced files swept,
/// then every file the table references read for the keys.
async fn check_storage(
    catalog: &Catalog,
    committer: &Committer,
    rows: &dyn RowMatch,
    orphan_min_age: Duration,
    report: &mut ErasureReport,
) -> Result<()> {
    let after = catalog.load(committer.ident()).await?;
    sweep_unreferenced(catalog, &after, rows, orphan_min_age, report).await?;
    verify(catalog, &after, rows, report).await
}

/// Files no snapshot references hold bytes too: what a crashed or fenced writer or an
/// abandoned commit attempt left. Those older than `min_age` are deleted, the rule orphan
/// cleanup follows (nothing will reference them). Younger ones may be a running writer's
/// next commit, whose files must not vanish under it: data files among them are read for the
/// keys (position-delete files hold paths and positions, no values), and any that holds them
/// or cannot be read for them is reported instead.
async fn sweep_unreferenced(
    catalog: &Catalog,
    after: &TableState,
    rows: &dyn RowMatch,
    min_age: Duration,
    report: &mut ErasureReport,
) -> Result<()> {
    let io = catalog.file_io();
    let meta = &after.metadata;
    let data_dir = format!("{}/data", meta.location().trim_end_matches('/'));
    let now = SystemTime::now();
    for file in orphans::unreferenced(catalog, after).await? {
        if now.duration_since(file.modified).unwrap_or_default() >= min_age {
            orphans::delete(catalog, &file.location).await?;
            report.orphans_deleted.push(file.location);
            continue;
        }
        let in_data = orphans::is_under(&file.location, &data_dir);
        if in_data && file.location.contains("-deletes") {
            continue;
        }
        let holds_keys = match in_data {
            true => match read_rows(io, meta, &file.location).await {
                Ok(batches) => {
                    report.young_files_checked += 1;
                    without_rows(rows, &batches, &[])?.1 > 0
                }
                Err(_) => true,
            },
            // Manifests and lists quote column bounds; metadata files hold no row values.
            false => !file.location.ends_with(".metadata.json"),
        };
        if holds_keys {
            report.young_unreferenced.push(file.location);
        }
    }
    report.orphans_deleted.sort();
    report.young_unreferenced.sort();
    Ok(())
}

async fn verify(catalog: &Catalog, after: &TableState, rows: &dyn RowMatch, report: &mut ErasureReport) -> Result<()> {
    let io = catalog.file_io();
    for path in &report.files_with_key {
        if io.exists(path).await? {
            report.still_on_storage.push(path.clone());
        }
    }
    for f in live_files(io, &after.metadata).await?.data {
        let batches = read_rows(io, &after.metadata, f.file.file_path()).await?;
        let (_, hits) = without_rows(rows, &batches, &[])?;
        report.rows_found_after += hits;
        report.files_checked += 1;
    }
    Ok(())
}

/// The rows of `batches` that are neither deleted (`dead`: sorted positions) nor matched, and
/// how many rows matched (deleted ones included: they are bytes on storage).
fn without_rows(rows: &dyn RowMatch, batches: &[RecordBatch], dead: &[i64]) -> Result<(Vec<RecordBatch>, u64)> {
    let (mut out, mut hits, mut pos) = (Vec::new(), 0u64, 0i64);
    for b in batches {
        let mut keep = Vec::with_capacity(b.num_rows());
        for target in rows.matches(b)? {
            hits += target as u64;
            keep.push(!target && dead.binary_search(&pos).is_err());
            pos += 1;
        }
        let kept = filter_record_batch(b, &BooleanArray::from(keep)).map_err(|e| TableError::InvalidData {
            table: String::new(),
            reason: e.to_string(),
        })?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
    }
    Ok((out, hits))
}
