//! The key index: where the live row of every business key is (data file + row position).
//!
//! It is what lets calve turn an update or delete into a *position* delete — "row 812 of file
//! F is gone" — instead of an equality delete that every reader must join against forever.
//! Only the table's single committer holds it, so it is exact: it changes only through that
//! committer's own commits ([`KeyIndex::apply`]).
//!
//! It is rebuilt from the table when a pipeline opens (key columns of every live data file,
//! minus the positions live delete files remove), not persisted: the table is the one source
//! of truth, and a rebuild can never disagree with it. Commits that change files behind its
//! back (compaction by another process) are caught by the row delta's validation, which
//! fails the commit; the pipeline reopens and rebuilds.
//!
//! Keys are compared in Arrow's row format (`arrow-row`), which encodes any combination of
//! key column types into bytes that are equal exactly when the keys are.

use std::collections::HashMap;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_select::filter::filter_record_batch;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, TableMetadata};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::deletes::PositionDelete;
use crate::error::{Result, TableError};
use crate::live::live_files;
use crate::read::read_deletes;
use crate::writer::{Written, arrow_schema};

/// A row's place: index of its file in the index's file table, and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    file: u32,
    pos: u32,
}

struct Slot {
    file: DataFile,
    /// Rows of the file the index still points at; the slot is freed at zero.
    live: u32,
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
    files: Vec<Option<Slot>>,
    free: Vec<u32>,
    keys: HashMap<Box<[u8]>, Loc>,
    head: Option<i64>,
}

impl KeyIndex {
    /// An empty index for `key_columns` of the table described by `meta`.
    pub fn empty(meta: &TableMetadata, key_columns: &[String]) -> Result<Self> {
        let schema = arrow_schema(meta)?;
        let mut fields = Vec::new();
        let mut ids = Vec::new();
        for name in key_columns {
            let field = schema.field_with_name(name).map_err(|_| invalid(meta, format!("key column `{name}` is not in the table")))?;
            fields.push(SortField::new(field.data_type().clone()));
            let id = meta.current_schema().field_by_name(name).map(|f| f.id).ok_or_else(|| invalid(meta, format!("no field id for `{name}`")))?;
            ids.push(id);
        }
        Ok(KeyIndex {
            names: key_columns.to_vec(),
            field_ids: ids,
            converter: RowConverter::new(fields).map_err(|e| invalid(meta, e.to_string()))?,
            files: Vec::new(),
            free: Vec::new(),
            keys: HashMap::new(),
            head: None,
        })
    }

    /// Builds the index of the table's current snapshot: reads the key columns of every live
    /// data file and skips the positions that live position-delete files remove.
    pub async fn build(file_io: &FileIO, meta: &TableMetadata, key_columns: &[String]) -> Result<Self> {
        let mut index = Self::empty(meta, key_columns)?;
        let live = live_files(file_io, meta).await?;
        if let Some(eq) = live.equality_deletes.first() {
            return Err(TableError::Unsupported(format!(
                "{} has equality deletes ({}); calve keys tables by position only", meta.location(), eq.file.file_path()
            )));
        }
        let deleted = read_deletes(file_io, &live).await?.positions;
        let mut duplicates = 0u64;
        for f in &live.data {
            duplicates += index.load_file(file_io, meta, &f.file, deleted.get(f.file.file_path())).await?;
        }
        if duplicates > 0 {
            tracing::warn!(table = meta.location(), duplicates, "keys live in more than one row (written by another engine); the index keeps one");
        }
        index.head = meta.current_snapshot_id();
        Ok(index)
    }

    async fn load_file(&mut self, io: &FileIO, meta: &TableMetadata, file: &DataFile, deleted: Option<&Vec<i64>>) -> Result<u64> {
        let bytes = io.new_input(file.file_path())?.read().await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| invalid(meta, e.to_string()))?;
        let descr = builder.parquet_schema();
        let roots = descr.root_schema().get_fields();
        let mut picked = Vec::new();
        for id in &self.field_ids {
            let i = roots.iter().position(|f| f.get_basic_info().has_id() && f.get_basic_info().id() == *id);
            picked.push(i.ok_or_else(|| invalid(meta, format!("{} lacks key field {id}", file.file_path())))?);
        }
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        let mask = ProjectionMask::roots(descr, sorted.iter().copied());
        let reader = builder.with_projection(mask).with_batch_size(64 * 1024).build().map_err(|e| invalid(meta, e.to_string()))?;
        let slot = self.add_file(file.clone(), 0);
        let (mut pos, mut duplicates, mut next_deleted) = (0u32, 0u64, 0usize);
        for batch in reader {
            let batch = batch.map_err(|e| invalid(meta, e.to_string()))?;
            // Projected columns come back in file order; put them in key order.
            let columns: Vec<ArrayRef> = picked.iter().map(|p| batch.column(sorted.iter().position(|s| s == p).expect("picked")).clone()).collect();
            let rows = self.rows_of(&columns)?;
            for key in rows.iter() {
                let is_deleted = deleted.is_some_and(|d| {
                    while next_deleted < d.len() && d[next_deleted] < pos as i64 {
                        next_deleted += 1;
                    }
                    d.get(next_deleted) == Some(&(pos as i64))
                });
                if !is_deleted {
                    if let Some(old) = self.keys.insert(key.as_ref().into(), Loc { file: slot, pos }) {
                        duplicates += 1;
                        self.release(old.file);
                    }
                    self.slot_mut(slot).live += 1;
                }
                pos += 1;
            }
        }
        if self.slot_mut(slot).live == 0 {
            self.release_slot(slot);
        }
        Ok(duplicates)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The snapshot the index describes.
    pub fn head(&self) -> Option<i64> {
        self.head
    }

    /// Approximate heap bytes held: key bytes, map entries and file slots.
    pub fn approx_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Box<[u8]>, Loc)>() + 1;
        let key_bytes: usize = self.keys.keys().map(|k| k.len().max(16)).sum();
        self.keys.capacity() * entry + key_bytes + self.files.len() * 512
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
        self.converter.convert_columns(columns).map_err(|e| TableError::InvalidData { table: String::new(), reason: e.to_string() })
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
        let mut plan = Plan { stats, ..Plan::default() };
        for (key, (_, win)) in winners {
            let old = self.keys.get(&key).copied();
            plan.superseded.extend(old);
            match (win, old) {
                (Win::Row(b, r), old) => {
                    masks[b][r] = true;
                    if old.is_some() { plan.stats.updates += 1 } else { plan.stats.inserts += 1 }
                }
                (Win::Delete, Some(_)) => {
                    plan.stats.deletes += 1;
                    plan.deleted.push(key);
                }
                (Win::Delete, None) => plan.stats.deletes_of_absent_keys += 1,
            }
        }
        for (u, m) in upserts.iter().zip(masks) {
            let keep = filter_record_batch(&u.batch, &BooleanArray::from(m)).map_err(|e| TableError::InvalidData { table: String::new(), reason: e.to_string() })?;
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
            .map(|l| PositionDelete { data_file: &self.files[l.file as usize].as_ref().expect("live slot").file, pos: l.pos as i64 })
            .collect()
    }

    /// Records a committed plan: superseded rows are gone, deleted keys removed, and the rows
    /// written (in file order) are where their keys live now. `head` is the new snapshot.
    pub fn apply(&mut self, plan: Plan, written: &[Written], head: Option<i64>) -> Result<()> {
        for l in &plan.superseded {
            self.release(l.file);
        }
        for k in &plan.deleted {
            self.keys.remove(k);
        }
        for w in written {
            let mut files = w.files.iter();
            let (mut slot, mut left, mut pos) = (0u32, 0u64, 0u32);
            for batch in &w.rows {
                for key in self.keys_of(batch)?.iter() {
                    while left == 0 {
                        let f = files.next().ok_or_else(|| TableError::InvalidData {
                            table: String::new(),
                            reason: "written rows outnumber the files' record counts".into(),
                        })?;
                        slot = self.add_file(f.clone(), 0);
                        left = f.record_count();
                        pos = 0;
                    }
                    self.keys.insert(key.as_ref().into(), Loc { file: slot, pos });
                    self.slot_mut(slot).live += 1;
                    pos += 1;
                    left -= 1;
                }
            }
        }
        self.head = head;
        Ok(())
    }

    fn add_file(&mut self, file: DataFile, live: u32) -> u32 {
        let slot = Slot { file, live };
        let i = match self.free.pop() {
            Some(i) => {
                self.files[i as usize] = Some(slot);
                i
            }
            None => {
                self.files.push(Some(slot));
                (self.files.len() - 1) as u32
            }
        };
        i
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot {
        self.files[i as usize].as_mut().expect("live slot")
    }

    fn release(&mut self, i: u32) {
        let s = self.slot_mut(i);
        s.live = s.live.saturating_sub(1);
        if s.live == 0 {
            self.release_slot(i);
        }
    }

    fn release_slot(&mut self, i: u32) {
        if self.files[i as usize].take().is_some() {
            self.free.push(i);
        }
    }
}

fn invalid(meta: &TableMetadata, reason: String) -> TableError {
    TableError::InvalidData { table: meta.location().to_string(), reason }
}
