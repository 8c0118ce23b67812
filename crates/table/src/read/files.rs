//! Reading table files back: data files (compaction, erasure) and position-delete files (key
//! index rebuild, compaction, erasure). One place maps Parquet errors to table errors, so every
//! reader of the table's own files reports a broken file the same way.

use std::collections::{HashMap, HashSet};

use arrow_array::{Int64Array, RecordBatch, StringArray};
use iceberg::arrow::ArrowFileReader;
use iceberg::io::{FileIO, FileMetadata};
use iceberg::spec::TableMetadata;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ParquetRecordBatchStreamBuilder;

use crate::error::{Result, TableError};
use crate::read::live::LiveFiles;
use crate::write::conform::conform;
use crate::write::data::arrow_schema;

/// A Parquet reader of `file` that fetches only the byte ranges it decodes: the footer, then
/// the column chunks of the projection it is given. Reading the key columns of a wide file
/// (the key index) costs those columns, not the whole file, which is what
/// matters once the file is on object storage.
pub async fn ranged_parquet(
    io: &FileIO,
    meta: &TableMetadata,
    file: &iceberg::spec::DataFile,
) -> Result<ParquetRecordBatchStreamBuilder<ArrowFileReader>> {
    let input = io.new_input(file.file_path())?;
    let reader = ArrowFileReader::new(
        FileMetadata {
            size: file.file_size_in_bytes(),
        },
        input.reader().await?,
    );
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| TableError::InvalidData {
            table: meta.location().to_string(),
            reason: format!("{}: {e}", file.file_path()),
        })
}

/// Every row of a data file, with the table's current Arrow schema (field ids included) so
/// the rows can be written again, whatever schema the file was written with.
pub async fn read_data_file(io: &FileIO, meta: &TableMetadata, path: &str) -> Result<Vec<RecordBatch>> {
    let schema = arrow_schema(meta)?;
    let bad = |e: String| TableError::InvalidData {
        table: meta.location().to_string(),
        reason: format!("{path}: {e}"),
    };
    let bytes = io.new_input(path)?.read().await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| bad(e.to_string()))?
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| bad(e.to_string()))?;
        // A file written before a schema change has that schema's columns.
        out.push(conform(&b, &schema).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// What the live position-delete files of a snapshot say.
#[derive(Debug, Default, Clone)]
pub struct DeleteMap {
    /// Deleted row positions per data file path, sorted.
    pub positions: HashMap<String, Vec<i64>>,
    /// The data files each delete file names (to know when a delete file no longer applies).
    pub targets: HashMap<String, HashSet<String>>,
}

impl DeleteMap {
    /// Sorted deleted positions of `path` (empty when none).
    pub fn of(&self, path: &str) -> &[i64] {
        self.positions.get(path).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Reads every live position-delete file of `live`.
pub async fn read_deletes(io: &FileIO, live: &LiveFiles) -> Result<DeleteMap> {
    let mut map = DeleteMap::default();
    for d in &live.position_deletes {
        let path = d.file.file_path();
        let targets = read_position_deletes(io, path, &mut map.positions).await?;
        map.targets.insert(path.to_string(), targets);
    }
    map.positions.values_mut().for_each(|v| {
        v.sort_unstable();
        v.dedup();
    });
    Ok(map)
}

async fn read_position_deletes(
    io: &FileIO,
    path: &str,
    into: &mut HashMap<String, Vec<i64>>,
) -> Result<HashSet<String>> {
    let bytes = io.new_input(path)?.read().await?;
    let bad = |e: String| TableError::CorruptState {
        table: path.to_string(),
        reason: e,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| bad(e.to_string()))?
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut targets = HashSet::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let paths = batch
            .column_by_name("file_path")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
        let pos = batch
            .column_by_name("pos")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
        let (Some(paths), Some(pos)) = (paths, pos) else {
            return Err(bad("not a position-delete file".into()));
        };
        for i in 0..batch.num_rows() {
            let p = paths.value(i);
            if !targets.contains(p) {
                targets.insert(p.to_string());
            }
            into.entry(p.to_string()).or_default().push(pos.value(i));
        }
    }
    Ok(targets)
}
