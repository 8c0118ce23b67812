//! The key index: where the live row of every business key is (data file + row position).
//!
//! It is what lets calve turn an update or delete into a *position* delete — "row 812 of file
//! F is gone" — instead of an equality delete that every reader must join against forever.
//! Only the table's single committer holds it, so it is exact: it changes through that
//! committer's own commits ([`KeyIndex::apply`]) and through [`KeyIndex::refresh`], which
//! catches up with what others did to the table since (see [`refresh`]).
//!
//! It is built from the table when a pipeline opens (key columns of every live data file,
//! minus the positions live delete files remove), not persisted: the table is the one source
//! of truth, and a rebuild can never disagree with it. A row delta carries the snapshot its
//! positions were computed at, so a commit racing a compaction is refused, never wrong; the
//! committer refreshes and commits again.
//!
//! Keys are compared in Arrow's row format (`arrow-row`), which encodes any combination of
//! key column types into bytes that are equal exactly when the keys are. Entries live in a
//! [`store::KeyStore`]: in memory up to a limit, spilled to local disk beyond it.

mod refresh;
pub mod store;

use std::collections::{HashMap, HashSet};

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_select::filter::filter_record_batch;
use iceberg::spec::{DataFile, TableMetadata};

use crate::error::{Result, TableError};
use crate::write::data::{arrow_schema, Written};
use crate::write::deletes::PositionDelete;
use store::{KeyStore, Loc, Reader};

pub use refresh::Refreshed;
pub use store::IndexSettings;

/// A data file the index has read, and how many keys live in it.
struct Slot {
    file: DataFile,
    live: u64,
}

/// Rows or deleted keys, each with its place in consumption order (later wins).
#[derive(Debug, Clone)]
pub struct SeqBatch {
    /// Full rows (upserts) or key columns only (deletes).
    pub batch: RecordBatch,
    /// One sequence number per row.
    pub seq: Vec<u64>,
}

/// What one commit's changes do, resolved against the index.
#[derive(Default)]
pub struct Plan {
    /// The winning rows to write.
    pub rows: Vec<RecordBatch>,
    superseded: Vec<Loc>,
    deleted: Vec<Box<[u8]>>,
    /// Counts for logs and metrics.
    pub stats: PlanStats,
}

/// What a plan does, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlanStats {
    /// Rows for keys the table did not hold.
    pub inserts: u64,
    /// Rows replacing a live row.
    pub updates: u64,
    /// Live rows deleted.
    pub deletes: u64,
    /// Deletes of keys the table did not hold (nothing to do).
    pub deletes_of_absent_keys: u64,
    /// Changes overtaken by a later change of the same key in the same commit.
    pub collapsed: u64,
}

/// Key → live row, for one table.
pub struct KeyIndex {
    names: Vec<String>,
    field_ids: Vec<i32>,
    converter: RowConverter,
    settings: IndexSettings,
    /// Data files read or written, by id; an entry pointing at an id not here is dead.
    files: HashMap<u32, Slot>,
    by_path: HashMap<String, u32>,
    next_file: u32,
    /// Delete files whose positions the index reflects, with the file ids they name.
    seen_deletes: HashMap<String, Vec<u32>>,
    store: KeyStore,
    keys: u64,
    /// Memtable entries (about) still pointing at files that left the table.
    dead_entries: u64,
    head: Option<i64>,
}

impl KeyIndex {
    /// An empty index for `key_columns` of the table described by `meta`.
    pub fn empty(meta: &TableMetadata, key_columns: &[String], settings: &IndexSettings) -> Result<Self> {
        let schema = arrow_schema(meta)?;
        let mut fields = Vec::new();
        let mut ids = Vec::new();
        for name in key_columns {
            let field = schema
                .field_with_name(name)
                .map_err(|_| invalid(meta, format!("key column `{name}` is not in the table")))?;
            fields.push(SortField::new(field.data_type().clone()));
            let id = meta
                .current_schema()
                .field_by_name(name)
                .map(|f| f.id)
                .ok_or_else(|| invalid(meta, format!("no field id for `{name}`")))?;
            ids.push(id);
        }
        Ok(KeyIndex {
            names: key_columns.to_vec(),
            field_ids: ids,
            converter: RowConverter::new(fields).map_err(|e| invalid(meta, e.to_string()))?,
            settings: settings.clone(),
            files: HashMap::new(),
            by_path: HashMap::new(),
            next_file: 0,
            seen_deletes: HashMap::new(),
            store: KeyStore::new(settings),
            keys: 0,
            dead_entries: 0,
            head: None,
        })
    }

    /// Keys held (exact unless another engine wrote the same key into two live rows).
    pub fn len(&self) -> usize {
        self.keys as usize
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// The snapshot the index describes.
    pub fn head(&self) -> Option<i64> {
        self.head
    }

    /// Approximate bytes of memory held: memtable entries and the file table. The spilled
    /// part is on disk ([`KeyIndex::disk_bytes`]) behind a page cache bounded by the settings.
    pub fn approx_bytes(&self) -> usize {
        self.store.memory_bytes() + self.files.len() * 1024 + self.by_path.keys().map(String::len).sum::<usize>()
    }

    /// Bytes of the spill file (0 while everything fits in memory).
    pub fn disk_bytes(&self) -> u64 {
        self.store.disk_bytes()
    }

    /// The memory the index may use: its memtable share plus the spill tier's page cache.
    pub fn memory_limit(&self) -> usize {
        self.store.memory_limit()
    }

    /// The business keys of `batch` (full rows or key columns only), in row format.
    pub fn keys_of(&self, batch: &RecordBatch) -> Result<Rows> {
        let mut columns = Vec::with_capacity(self.names.len());
        for name in &self.names {
            let c = batch.column_by_name(name).ok_or_else(|| TableError::InvalidData {
                table: String::new(),
                reason: format!("rows lack key column `{name}`"),
            })?;
            columns.push(c.clone());
        }
        self.rows_of(&columns)
    }

    fn rows_of(&self, columns: &[ArrayRef]) -> Result<Rows> {
        self.converter
            .convert_columns(columns)
            .map_err(|e| TableError::InvalidData {
                table: String::new(),
                reason: e.to_string(),
            })
    }

    /// Where `key` lives now; entries of files gone from the table are dead.
    fn lookup(&self, reader: &Reader<'_>, key: &[u8]) -> Result<Option<Loc>> {
        Ok(reader.get(key)?.filter(|l| self.files.contains_key(&l.file)))
    }

    /// Resolves one commit's changes: per key the change with the highest sequence number
    /// wins; the live row of every changed key is superseded.
    pub fn plan(&self, upserts: &[SeqBatch], deletes: &[SeqBatch]) -> Result<Plan> {
        #[derive(Clone, Copy)]
        enum Win {
            Row(usize, usize),
            Delete,
        }
        let mut winners: HashMap<Box<[u8]>, (u64, Win)> = HashMap::new();
        let mut stats = PlanStats::default();
        let mut offer = |key: &[u8], seq: u64, win: Win| match winners.get_mut(key) {
            Some(w) => {
                stats.collapsed += 1;
                if seq > w.0 {
                    *w = (seq, win);
                }
            }
            None => {
                winners.insert(key.into(), (seq, win));
            }
        };
        for (b, sb) in upserts.iter().enumerate() {
            for (r, key) in self.keys_of(&sb.batch)?.iter().enumerate() {
                offer(key.as_ref(), sb.seq[r], Win::Row(b, r));
            }
        }
        for sb in deletes {
            for (r, key) in self.keys_of(&sb.batch)?.iter().enumerate() {
                offer(key.as_ref(), sb.seq[r], Win::Delete);
            }
        }
        let mut masks: Vec<Vec<bool>> = upserts.iter().map(|u| vec![false; u.batch.num_rows()]).collect();
        let mut plan = Plan {
            stats,
            ..Plan::default()
        };
        let reader = self.store.reader()?;
        for (key, (_, win)) in winners {
            let old = self.lookup(&reader, &key)?;
            plan.superseded.extend(old);
            match (win, old) {
                (Win::Row(b, r), old) => {
                    masks[b][r] = true;
                    if old.is_some() {
                        plan.stats.updates += 1
                    } else {
                        plan.stats.inserts += 1
                    }
                }
                (Win::Delete, Some(_)) => {
                    plan.stats.deletes += 1;
                    plan.deleted.push(key);
                }
                (Win::Delete, None) => plan.stats.deletes_of_absent_keys += 1,
            }
        }
        for (u, m) in upserts.iter().zip(masks) {
            let keep = filter_record_batch(&u.batch, &BooleanArray::from(m)).map_err(|e| TableError::InvalidData {
                table: String::new(),
                reason: e.to_string(),
            })?;
            if keep.num_rows() > 0 {
                plan.rows.push(keep);
            }
        }
        Ok(plan)
    }

    /// The position deletes that remove the rows `plan` supersedes.
    pub fn deletes_for(&self, plan: &Plan) -> Vec<PositionDelete<'_>> {
        plan.superseded
            .iter()
            .map(|l| PositionDelete {
                data_file: &self.files[&l.file].file,
                pos: l.pos as i64,
            })
            .collect()
    }

    /// Records a committed plan: superseded rows are gone, deleted keys removed, the rows
    /// written (in file order) are where their keys live now, and the delete files committed
    /// with them are known. `head` is the new snapshot.
    pub fn apply(
        &mut self,
        plan: Plan,
        written: &[Written],
        delete_files: &[DataFile],
        head: Option<i64>,
    ) -> Result<()> {
        let superseded: HashSet<u32> = plan.superseded.iter().map(|l| l.file).collect();
        for l in &plan.superseded {
            self.release(l.file);
        }
        for k in &plan.deleted {
            self.store.remove(k);
        }
        for w in written {
            self.apply_written(w)?;
        }
        for d in delete_files {
            let targets: Vec<u32> = superseded
                .iter()
                .copied()
                .filter(|id| self.files.get(id).is_some_and(|s| names(d, &s.file)))
                .collect();
            self.seen_deletes.insert(d.file_path().to_string(), targets);
        }
        self.head = head;
        self.store.spill_if_full()
    }

    fn apply_written(&mut self, w: &Written) -> Result<()> {
        let mut files = w.files.iter();
        let (mut id, mut left, mut pos) = (0u32, 0u64, 0u32);
        for batch in &w.rows {
            for key in self.keys_of(batch)?.iter() {
                while left == 0 {
                    let f = files.next().ok_or_else(|| TableError::InvalidData {
                        table: String::new(),
                        reason: "written rows outnumber the files' record counts".into(),
                    })?;
                    id = self.add_file(f.clone());
                    left = f.record_count();
                    // Counted up front: every row written to a file is a live key there.
                    self.claim(id, left);
                    pos = 0;
                }
                if self
                    .store
                    .insert(key.as_ref(), Loc { file: id, pos })
                    .is_some_and(|old| !self.files.contains_key(&old.file))
                {
                    self.dead_entries = self.dead_entries.saturating_sub(1);
                }
                pos += 1;
                left -= 1;
            }
        }
        Ok(())
    }

    fn add_file(&mut self, file: DataFile) -> u32 {
        let id = self.next_file;
        self.next_file += 1;
        self.by_path.insert(file.file_path().to_string(), id);
        self.files.insert(id, Slot { file, live: 0 });
        id
    }

    /// `n` keys now live in file `id`.
    fn claim(&mut self, id: u32, n: u64) {
        if let Some(s) = self.files.get_mut(&id) {
            s.live += n;
            self.keys += n;
        }
    }

    /// A key no longer lives in file `id`.
    fn release(&mut self, id: u32) {
        if let Some(s) = self.files.get_mut(&id) {
            if s.live > 0 {
                s.live -= 1;
                self.keys -= 1;
            }
        }
    }

    /// File `id` left the table: every entry pointing at it is dead.
    fn drop_file(&mut self, id: u32) {
        if let Some(s) = self.files.remove(&id) {
            self.keys -= s.live;
            self.dead_entries += s.live;
            self.by_path.remove(s.file.file_path());
        }
    }
}

/// Whether the position-delete file `delete` can name rows of `data` (same partition, or the
/// one file it references).
fn names(delete: &DataFile, data: &DataFile) -> bool {
    match delete.referenced_data_file() {
        Some(r) => r == data.file_path(),
        None => delete.partition() == data.partition(),
    }
}

fn invalid(meta: &TableMetadata, reason: String) -> TableError {
    TableError::InvalidData {
        table: meta.location().to_string(),
        reason,
    }
}
