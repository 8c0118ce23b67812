//! Running a compaction job: the live rows of a partition's files (deleted rows dropped),
//! sorted, written to target-size files.
//!
//! The new files are not committed here: a cycle commits every job's output in one `replace`
//! snapshot (see `cycle`), so a busy table gets one maintenance snapshot per cycle, not one per
//! partition. The rows are sorted by the table's Iceberg sort order when it has one, else by
//! the contract's `maintenance.sort_by` (the event-time column by default): then every file's
//! column bounds on those columns are tight and readers skip files and row groups on them.

use arrow_array::{BooleanArray, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::SortOptions;
use arrow_select::concat::concat_batches;
use arrow_select::filter::filter_record_batch;
use arrow_select::take::take_record_batch;
use calve_table::read::{DeleteMap, read_data_file};
use calve_table::writer::{DataWriter, arrow_schema};
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, NullOrder, SortDirection, TableMetadata, Transform};

use crate::error::{MaintainError, Result};
use crate::plan::CompactionJob;

/// One column rows are sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Column name.
    pub column: String,
    /// Largest first.
    pub descending: bool,
    /// Nulls before values.
    pub nulls_first: bool,
}

/// What a job wrote.
#[derive(Debug, Clone)]
pub struct Compacted {
    /// The files it replaces.
    pub removed: Vec<DataFile>,
    /// The files holding their live rows.
    pub added: Vec<DataFile>,
    /// Live rows written.
    pub rows: u64,
    /// Deleted rows left out.
    pub deletes_applied: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// The sort keys of a table: its Iceberg sort order (identity fields) when it has one,
/// otherwise `fallback` ascending, nulls first (Iceberg's default for ascending).
pub fn sort_keys(meta: &TableMetadata, fallback: &[String]) -> Vec<SortKey> {
    let schema = meta.current_schema();
    let order = meta.default_sort_order();
    let from_table: Vec<SortKey> = order
        .fields
        .iter()
        .filter(|f| f.transform == Transform::Identity)
        .filter_map(|f| {
            let column = schema.field_by_id(f.source_id)?.name.clone();
            Some(SortKey { column, descending: f.direction == SortDirection::Descending, nulls_first: f.null_order == NullOrder::First })
        })
        .collect();
    if !from_table.is_empty() {
        return from_table;
    }
    fallback
        .iter()
        .filter(|c| schema.field_by_name(c).is_some())
        .map(|c| SortKey { column: c.clone(), descending: false, nulls_first: true })
        .collect()
}

/// Rewrites the files of `job`: rows minus `deletes`, sorted by `sort`, in target-size files.
pub async fn compact(io: &FileIO, meta: &TableMetadata, job: &CompactionJob, deletes: &DeleteMap, sort: &[SortKey], target: u64) -> Result<Compacted> {
    let fail = |reason: String| MaintainError::Compact { table: meta.location().to_string(), reason };
    let mut live = Vec::new();
    let mut deletes_applied = 0u64;
    for f in &job.files {
        let dead = deletes.of(f.file_path());
        let mut pos = 0i64;
        for b in read_data_file(io, meta, f.file_path()).await? {
            let keep: BooleanArray = (0..b.num_rows() as i64).map(|i| Some(dead.binary_search(&(pos + i)).is_err())).collect();
            pos += b.num_rows() as i64;
            let kept = filter_record_batch(&b, &keep).map_err(|e| fail(e.to_string()))?;
            deletes_applied += (b.num_rows() - kept.num_rows()) as u64;
            if kept.num_rows() > 0 {
                live.push(kept);
            }
        }
    }
    let rows: u64 = live.iter().map(|b| b.num_rows() as u64).sum();
    let batches = match sort.is_empty() || live.is_empty() {
        true => live,
        false => vec![sorted(meta, &live, sort).map_err(fail)?],
    };
    let added = DataWriter::new(meta, io.clone(), target)?.write(&batches).await?;
    Ok(Compacted {
        removed: job.files.clone(),
        bytes_in: job.bytes,
        bytes_out: added.iter().map(|f| f.file_size_in_bytes()).sum(),
        added,
        rows,
        deletes_applied,
    })
}

/// All of `batches` as one batch, sorted by `sort`.
fn sorted(meta: &TableMetadata, batches: &[RecordBatch], sort: &[SortKey]) -> std::result::Result<RecordBatch, String> {
    let schema = arrow_schema(meta).map_err(|e| e.to_string())?;
    let all = concat_batches(&schema, batches).map_err(|e| e.to_string())?;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for k in sort {
        let col = all.column_by_name(&k.column).ok_or_else(|| format!("no column `{}` to sort by", k.column))?;
        fields.push(SortField::new_with_options(col.data_type().clone(), SortOptions { descending: k.descending, nulls_first: k.nulls_first }));
        columns.push(col.clone());
    }
    let converter = RowConverter::new(fields).map_err(|e| e.to_string())?;
    let rows = converter.convert_columns(&columns).map_err(|e| e.to_string())?;
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    // Stable: rows with equal keys keep their commit order.
    order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    take_record_batch(&all, &UInt32Array::from(order)).map_err(|e| e.to_string())
}
