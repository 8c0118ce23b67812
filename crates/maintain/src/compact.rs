//! Running a compaction job: the live rows of a partition's files (deleted rows dropped),
//! sorted, written to target-size files.
//!
//! The new files are not committed here: a cycle commits every job's output in one `replace`
//! snapshot (see `cycle`), so a busy table gets one maintenance snapshot per cycle, not one per
//! partition. A job holds its live rows once: the sorted output is assembled and written a
//! piece at a time from them (memory ≈ the job's rows decompressed, plus one piece). The rows are sorted by the table's Iceberg sort order when it has one, else by
//! the contract's `maintenance.sort_by` (the event-time column by default): then every file's
//! column bounds on those columns are tight and readers skip files and row groups on them.

use arrow_array::{BooleanArray, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{ArrowError, SortOptions};
use arrow_select::filter::filter_record_batch;
use arrow_select::interleave::interleave_record_batch;
use calve_table::read::{read_data_file, DeleteMap};
use calve_table::write::data::DataWriter;
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
            Some(SortKey {
                column,
                descending: f.direction == SortDirection::Descending,
                nulls_first: f.null_order == NullOrder::First,
            })
        })
        .collect();
    if !from_table.is_empty() {
        return from_table;
    }
    fallback
        .iter()
        .filter(|c| schema.field_by_name(c).is_some())
        .map(|c| SortKey {
            column: c.clone(),
            descending: false,
            nulls_first: true,
        })
        .collect()
}

/// Rows per output piece: the sorted output is assembled and written this many rows at a
/// time, so a job holds its live input once plus one piece, never a second sorted copy.
const PIECE_ROWS: usize = 64 * 1024;

/// Rewrites the files of `job`: rows minus `deletes`, sorted by `sort`, in target-size files.
pub async fn compact(
    io: &FileIO,
    meta: &TableMetadata,
    job: &CompactionJob,
    deletes: &DeleteMap,
    sort: &[SortKey],
    target: u64,
) -> Result<Compacted> {
    let fail = |reason: String| MaintainError::Compact {
        table: meta.location().to_string(),
        reason,
    };
    // The output is written under the inputs' partition value, so they must share one.
    if job.files.windows(2).any(|w| w[0].partition() != w[1].partition()) {
        return Err(fail(format!("job for {} spans partitions", job.partition)));
    }
    let mut live = Vec::new();
    let mut deletes_applied = 0u64;
    for f in &job.files {
        let dead = deletes.of(f.file_path());
        let mut pos = 0i64;
        for b in read_data_file(io, meta, f.file_path()).await? {
            let n = b.num_rows();
            let kept = match dead.is_empty() {
                true => b,
                false => {
                    let keep: BooleanArray = (0..n as i64)
                        .map(|i| Some(dead.binary_search(&(pos + i)).is_err()))
                        .collect();
                    filter_record_batch(&b, &keep).map_err(|e| fail(e.to_string()))?
                }
            };
            pos += n as i64;
            deletes_applied += (n - kept.num_rows()) as u64;
            if kept.num_rows() > 0 {
                live.push(kept);
            }
        }
    }
    let rows: u64 = live.iter().map(|b| b.num_rows() as u64).sum();
    let partition = job.files.first().map(|f| f.partition().clone());
    let writer = DataWriter::new(meta, io.clone(), target)?;
    let mut out = writer.partition_writer(partition);
    match sort.is_empty() {
        true => {
            for b in &live {
                out.write(b).await?;
            }
        }
        false => {
            let order = sort_order(&live, sort).map_err(fail)?;
            for piece in pieces(&live, &order, PIECE_ROWS) {
                out.write(&piece.map_err(|e| fail(e.to_string()))?).await?;
            }
        }
    }
    let added = out.close().await?;
    Ok(Compacted {
        removed: job.files.clone(),
        bytes_in: job.bytes,
        bytes_out: added.iter().map(|f| f.file_size_in_bytes()).sum(),
        added,
        rows,
        deletes_applied,
    })
}

/// The rows of `batches` in `sort` order, as indexes into their concatenation: only the sort
/// columns are copied (into one row-format buffer), the rows themselves stay where they are.
fn sort_order(batches: &[RecordBatch], sort: &[SortKey]) -> std::result::Result<Vec<u32>, String> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let mut fields = Vec::new();
    for k in sort {
        let col = first
            .column_by_name(&k.column)
            .ok_or_else(|| format!("no column `{}` to sort by", k.column))?;
        fields.push(SortField::new_with_options(
            col.data_type().clone(),
            SortOptions {
                descending: k.descending,
                nulls_first: k.nulls_first,
            },
        ));
    }
    let converter = RowConverter::new(fields).map_err(|e| e.to_string())?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if total > u32::MAX as usize {
        return Err(format!("{total} rows in one job; at most {} fit", u32::MAX));
    }
    let mut rows = converter.empty_rows(total, 0);
    for b in batches {
        let columns: Vec<_> = sort
            .iter()
            .map(|k| {
                b.column_by_name(&k.column)
                    .cloned()
                    .ok_or_else(|| format!("no column `{}`", k.column))
            })
            .collect::<std::result::Result<_, _>>()?;
        converter.append(&mut rows, &columns).map_err(|e| e.to_string())?;
    }
    let mut order: Vec<u32> = (0..total as u32).collect();
    // Stable: rows with equal keys keep their commit order.
    order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    Ok(order)
}

/// The rows of `batches` in `order` (indexes into their concatenation), `piece_rows` at a time.
fn pieces<'a>(
    batches: &'a [RecordBatch],
    order: &'a [u32],
    piece_rows: usize,
) -> impl Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + 'a {
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let starts: Vec<u32> = batches
        .iter()
        .scan(0u32, |at, b| Some(std::mem::replace(at, *at + b.num_rows() as u32)))
        .collect();
    order.chunks(piece_rows).map(move |chunk| {
        let at: Vec<(usize, usize)> = chunk
            .iter()
            .map(|&i| {
                let b = starts.partition_point(|s| *s <= i) - 1;
                (b, (i - starts[b]) as usize)
            })
            .collect();
        interleave_record_batch(&refs, &at)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn batch(ts: &[Option<i64>], tag: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Int64, true),
            Field::new("tag", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ts.to_vec())),
                Arc::new(StringArray::from(tag.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_of_all_batches_are_ordered_together_and_ties_keep_commit_order() {
        let batches = [
            batch(&[Some(5), None, Some(1)], &["a", "b", "c"]),
            batch(&[Some(1), Some(3)], &["d", "e"]),
            batch(&[Some(5)], &["f"]),
        ];
        let key = |descending| {
            [SortKey {
                column: "ts".into(),
                descending,
                nulls_first: true,
            }]
        };
        let tags = |order: Vec<u32>| -> String {
            let all: Vec<&str> = batches
                .iter()
                .flat_map(|b| {
                    b.column(1)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .iter()
                        .map(Option::unwrap)
                })
                .collect();
            order.iter().map(|i| all[*i as usize]).collect()
        };
        assert_eq!(tags(sort_order(&batches, &key(false)).unwrap()), "bcdeaf");
        assert_eq!(tags(sort_order(&batches, &key(true)).unwrap()), "bafecd");
        assert!(sort_order(
            &batches,
            &[SortKey {
                column: "nope".into(),
                descending: false,
                nulls_first: true
            }]
        )
        .is_err());
        assert!(sort_order(&[], &key(false)).unwrap().is_empty());
    }

    #[test]
    fn pieces_carry_every_row_in_order_across_batch_boundaries() {
        // Batches of 3, 0 and 2 rows (an empty batch must not shift later rows).
        let batches = [
            batch(&[Some(5), None, Some(1)], &["a", "b", "c"]),
            batch(&[], &[]),
            batch(&[Some(1), Some(3)], &["d", "e"]),
        ];
        let order = sort_order(
            &batches,
            &[SortKey {
                column: "ts".into(),
                descending: false,
                nulls_first: true,
            }],
        )
        .unwrap();
        for piece_rows in [1, 2, 4, 10] {
            let got: Vec<RecordBatch> = pieces(&batches, &order, piece_rows)
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            assert_eq!(got.len(), 5usize.div_ceil(piece_rows));
            let tags: String = got
                .iter()
                .flat_map(|b| {
                    b.column(1)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .iter()
                        .map(|t| t.unwrap().to_string())
                })
                .collect();
            assert_eq!(tags, "bcdea", "pieces of {piece_rows}");
        }
    }
}
