//! Catching the key index up with the table: building it from nothing, and following what
//! other writers did since it last looked.
//!
//! Data files are immutable and a row's position in one never changes, so the live rows of a
//! table change in only three ways: data files appear, data files disappear, and position
//! deletes appear. The index compares the table's live files with the files it knows:
//!
//! - a file it knows that left the table (compacted, erased) takes every entry pointing at it
//!   with it — those entries are dead, however many there are, without touching them;
//! - a file it does not know is read (key columns only) and its keys point there now — for a
//!   compaction's output, that re-points every key the removed files held;
//! - a delete file it has not seen removes the keys at the positions it names — unless a
//!   `replace` added it (merged delete files): a replace changes no row by the spec, so such a
//!   file deletes nothing the index has not already removed, and is taken as read.
//!
//! So after a compaction the index reads only the files compaction wrote, and after a merge
//! of delete files nothing at all. A build is the same walk from an empty index. Only what
//! cannot be followed this way — the table rolled back behind the index, or deletes withdrawn
//! by a non-replace snapshot while their rows stayed — starts over from empty.

use std::collections::HashSet;

use arrow_array::ArrayRef;
use futures::StreamExt;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, Operation, TableMetadata};
use parquet::arrow::ProjectionMask;

use super::store::{KeyStore, Loc};
use super::{invalid, IndexSettings, KeyIndex};
use crate::commit::restore::ancestry;
use crate::error::{Result, TableError};
use crate::read::live::{live_files, LiveFiles};
use crate::read::{ranged_parquet, read_deletes, DeleteMap};

/// What a refresh found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The index started over from empty (the table could not be followed).
    pub rebuilt: bool,
    /// Files that left the table.
    pub files_dropped: usize,
    /// Files read.
    pub files_read: usize,
    /// Delete files read and applied.
    pub deletes_applied: usize,
    /// Delete files a `replace` added, taken as applied without reading them.
    pub deletes_restated: usize,
    /// Files already indexed whose keys were read to apply new deletes.
    pub files_scanned: usize,
    /// Keys that live in more than one row (written by another engine; the index keeps one).
    pub duplicates: u64,
    /// How long the refresh took (wall clock).
    pub took: std::time::Duration,
}

impl KeyIndex {
    /// Builds the index of the table's current snapshot: reads the key columns of every live
    /// data file and skips the positions that live position-delete files remove.
    pub async fn build(
        file_io: &FileIO,
        meta: &TableMetadata,
        key_columns: &[String],
        settings: &IndexSettings,
    ) -> Result<Self> {
        let mut index = Self::empty(meta, key_columns, settings)?;
        index.refresh(file_io, meta).await?;
        Ok(index)
    }

    /// Brings the index to the table's current snapshot `meta`, reading only what changed
    /// since its head (see the module docs).
    pub async fn refresh(&mut self, io: &FileIO, meta: &TableMetadata) -> Result<Refreshed> {
        let started = std::time::Instant::now();
        let live = live_files(io, meta).await?;
        if let Some(eq) = live.equality_deletes.first() {
            return Err(TableError::Unsupported(format!(
                "{} has equality deletes ({}); calve keys tables by position only",
                meta.location(),
                eq.file.file_path()
            )));
        }
        let mut done = Refreshed::default();
        if !self.follows(meta, &live) {
            self.reset();
            done.rebuilt = true;
        }
        done.files_dropped = self.drop_gone_files(&live);
        let (unseen, restated) = self.unseen_deletes(meta, &live);
        done.deletes_restated = restated.len();
        for path in restated {
            self.seen_deletes.insert(path, Vec::new());
        }
        let deleted = read_deletes(io, &unseen).await?;
        let known: HashSet<u32> = self.files.keys().copied().collect();
        let added: Vec<&DataFile> = live
            .data
            .iter()
            .map(|f| &f.file)
            .filter(|f| !self.by_path.contains_key(f.file_path()))
            .collect();
        for f in added {
            done.duplicates += self.load_file(io, meta, f, deleted.of(f.file_path())).await?;
            done.files_read += 1;
        }
        for id in known {
            let path = self.files[&id].file.file_path().to_string();
            let positions = deleted.of(&path);
            if !positions.is_empty() {
                self.apply_deletes(io, meta, id, positions).await?;
                done.files_scanned += 1;
            }
        }
        done.deletes_applied = unseen.position_deletes.len();
        self.sweep_dead_entries();
        self.remember_deletes(&live, &deleted);
        self.head = meta.current_snapshot_id();
        if done.duplicates > 0 {
            tracing::warn!(
                table = meta.location(),
                duplicates = done.duplicates,
                "keys live in more than one row (written by another engine); the index keeps one"
            );
        }
        self.store.spill_if_full()?;
        done.took = started.elapsed();
        Ok(done)
    }

    /// Delete files the index has not applied, split in two: those to read, and those a
    /// `replace` snapshot that added no data file added (merged delete files: by the spec a
    /// replace changes no row, so they delete only rows of files the index knows that it has
    /// already removed; they are taken as applied, unread).
    fn unseen_deletes(&self, meta: &TableMetadata, live: &LiveFiles) -> (LiveFiles, Vec<String>) {
        let mut to_read = LiveFiles::default();
        let mut restated = Vec::new();
        for d in live
            .position_deletes
            .iter()
            .filter(|d| !self.seen_deletes.contains_key(d.file.file_path()))
        {
            let by_replace = meta.snapshot_by_id(d.added_by).is_some_and(|s| {
                let added_data = s.summary().additional_properties.get("added-data-files");
                s.summary().operation == Operation::Replace && added_data.is_none_or(|n| n == "0")
            });
            match by_replace && self.head.is_some() {
                true => restated.push(d.file.file_path().to_string()),
                false => to_read.position_deletes.push(d.clone()),
            }
        }
        (to_read, restated)
    }

    /// Whether the table moved on from the index's head in ways the index can follow: the
    /// head is an ancestor of the current snapshot, and no delete file the index applied was
    /// withdrawn while rows it named are still in the table (which would bring them back).
    /// Only a snapshot that is neither an append nor a replace can withdraw deletes that way.
    fn follows(&self, meta: &TableMetadata, live: &LiveFiles) -> bool {
        if let Some(head) = self.head {
            if !ancestry(meta).any(|s| s.snapshot_id() == head) {
                return false;
            }
            let may_withdraw = ancestry(meta).take_while(|s| s.snapshot_id() != head).any(|s| {
                let summary = s.summary();
                // Writers (Java, PyIceberg, calve) record this count only when it is positive.
                let removed = summary.additional_properties.get("removed-delete-files");
                !matches!(summary.operation, Operation::Append | Operation::Replace)
                    && removed.is_some_and(|n| n != "0")
            });
            if !may_withdraw {
                return true;
            }
        }
        let live_data: HashSet<&str> = live.data.iter().map(|f| f.file.file_path()).collect();
        let live_deletes: HashSet<&str> = live.position_deletes.iter().map(|f| f.file.file_path()).collect();
        !self.seen_deletes.iter().any(|(path, targets)| {
            !live_deletes.contains(path.as_str())
                && targets.iter().any(|t| {
                    self.files
                        .get(t)
                        .is_some_and(|s| live_data.contains(s.file.file_path()))
                })
        })
    }

    /// Back to an empty index with the same key and settings.
    fn reset(&mut self) {
        self.files.clear();
        self.by_path.clear();
        self.seen_deletes.clear();
        self.store = KeyStore::new(&self.settings);
        self.keys = 0;
        self.dead_entries = 0;
        self.head = None;
    }

    /// Forgets the files that left the table; returns how many.
    fn drop_gone_files(&mut self, live: &LiveFiles) -> usize {
        let live_data: HashSet<&str> = live.data.iter().map(|f| f.file.file_path()).collect();
        let gone: Vec<u32> = self
            .by_path
            .iter()
            .filter(|(p, _)| !live_data.contains(p.as_str()))
            .map(|(_, id)| *id)
            .collect();
        for id in &gone {
            self.drop_file(*id);
        }
        gone.len()
    }

    /// Removes memtable entries of files that left the table once they are a tenth of it.
    /// Most are re-pointed for free when the compaction output is read (a compacted key
    /// comes back in the new file); what stays dead is erased or foreign-deleted keys, and a
    /// scan of the whole memtable per compaction would cost more than they do.
    fn sweep_dead_entries(&mut self) {
        if self.dead_entries * 10 <= self.store.len() as u64 {
            return;
        }
        let files = &self.files;
        self.store.retain_files(|id| files.contains_key(&id));
        self.dead_entries = 0;
    }

    /// Records the live delete files as applied, with the file ids they name.
    fn remember_deletes(&mut self, live: &LiveFiles, deleted: &DeleteMap) {
        let live_deletes: HashSet<&str> = live.position_deletes.iter().map(|f| f.file.file_path()).collect();
        self.seen_deletes.retain(|p, _| live_deletes.contains(p.as_str()));
        for (path, targets) in &deleted.targets {
            let ids = targets.iter().filter_map(|t| self.by_path.get(t).copied()).collect();
            self.seen_deletes.insert(path.clone(), ids);
        }
    }

    /// Reads the keys of a file new to the index; keys at `deleted` positions are skipped.
    /// Returns how many keys already lived in another file.
    async fn load_file(&mut self, io: &FileIO, meta: &TableMetadata, file: &DataFile, deleted: &[i64]) -> Result<u64> {
        let id = self.add_file(file.clone());
        let mut duplicates = 0;
        let mut next_deleted = 0usize;
        for_each_key_batch(self, io, meta, file, |index, first, rows| {
            let mut claimed = 0;
            for (i, key) in rows.iter().enumerate() {
                let pos = first + i as u32;
                while next_deleted < deleted.len() && deleted[next_deleted] < pos as i64 {
                    next_deleted += 1;
                }
                if deleted.get(next_deleted) == Some(&(pos as i64)) {
                    continue;
                }
                if let Some(old) = index.store.insert(key.as_ref(), Loc { file: id, pos }) {
                    match index.files.contains_key(&old.file) {
                        true => {
                            duplicates += 1;
                            index.release(old.file);
                        }
                        false => index.dead_entries = index.dead_entries.saturating_sub(1),
                    }
                }
                claimed += 1;
            }
            index.claim(id, claimed);
            index.store.spill_if_full()
        })
        .await?;
        Ok(duplicates)
    }

    /// Applies new position deletes (sorted `positions`) to a file the index already holds:
    /// the keys at those positions are gone if they still live there.
    async fn apply_deletes(&mut self, io: &FileIO, meta: &TableMetadata, id: u32, positions: &[i64]) -> Result<()> {
        let file = self.files[&id].file.clone();
        let mut dead: Vec<Box<[u8]>> = Vec::new();
        for_each_key_batch(self, io, meta, &file, |index, first, rows| {
            let end = first as i64 + rows.num_rows() as i64;
            let from = positions.partition_point(|p| *p < first as i64);
            let reader = index.store.reader()?;
            for p in positions[from..].iter().take_while(|p| **p < end) {
                let key = rows.row((*p - first as i64) as usize);
                if reader.get(key.as_ref())?
                    == Some(Loc {
                        file: id,
                        pos: *p as u32,
                    })
                {
                    dead.push(key.as_ref().into());
                }
            }
            Ok(())
        })
        .await?;
        for k in dead {
            self.store.remove(&k);
            self.release(id);
        }
        Ok(())
    }
}

/// Reads the key columns of `file` batch by batch, calling `f(index, first position, keys)`.
async fn for_each_key_batch<F>(
    index: &mut KeyIndex,
    io: &FileIO,
    meta: &TableMetadata,
    file: &DataFile,
    mut f: F,
) -> Result<()>
where
    F: FnMut(&mut KeyIndex, u32, &arrow_row::Rows) -> Result<()>,
{
    let builder = ranged_parquet(io, meta, file).await?;
    let descr = builder.parquet_schema();
    let roots = descr.root_schema().get_fields();
    let mut picked = Vec::new();
    for id in &index.field_ids {
        let i = roots
            .iter()
            .position(|f| f.get_basic_info().has_id() && f.get_basic_info().id() == *id);
        picked.push(i.ok_or_else(|| invalid(meta, format!("{} lacks key field {id}", file.file_path())))?);
    }
    let mut sorted = picked.clone();
    sorted.sort_unstable();
    let mask = ProjectionMask::roots(descr, sorted.iter().copied());
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| invalid(meta, e.to_string()))?;
    let mut first = 0u32;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| invalid(meta, e.to_string()))?;
        // Projected columns come back in file order; put them in key order.
        let columns: Vec<ArrayRef> = picked
            .iter()
            .map(|p| {
                batch
                    .column(sorted.iter().position(|s| s == p).expect("picked"))
                    .clone()
            })
            .collect();
        let rows = index.rows_of(&columns)?;
        f(index, first, &rows)?;
        first += batch.num_rows() as u32;
    }
    Ok(())
}
