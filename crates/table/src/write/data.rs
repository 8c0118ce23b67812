//! Writing buffered rows as Parquet data files: one file per table partition per commit,
//! rolled only when a partition alone exceeds the target file size.
//!
//! File names start with a fresh uuid per write, so a retried or restarted writer never
//! overwrites a file an earlier attempt wrote (and possibly committed).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, PartitionKey, PartitionSpecRef, SchemaRef, TableMetadata,
};
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::{RollingFileWriter, RollingFileWriterBuilder};
use iceberg::writer::file_writer::ParquetWriterBuilder;

use super::split::PartitionSplitter;
use crate::error::{Result, TableError};

/// The Arrow schema (with Iceberg field ids) that batches handed to [`DataWriter`] must have.
pub fn arrow_schema(metadata: &TableMetadata) -> Result<ArrowSchemaRef> {
    Ok(Arc::new(schema_to_arrow_schema(metadata.current_schema())?))
}

/// The files one partition's rows were written to, and those rows in file order.
#[derive(Debug, Clone)]
pub struct Written {
    /// Files in write order.
    pub files: Vec<DataFile>,
    /// Rows in the order they were written.
    pub rows: Vec<RecordBatch>,
}

/// Writes data files for one table's current schema and partition spec.
pub struct DataWriter {
    schema: SchemaRef,
    spec: PartitionSpecRef,
    splitter: Option<PartitionSplitter>,
    file_io: FileIO,
    locations: DefaultLocationGenerator,
    target_file_size: usize,
    table: String,
}

impl DataWriter {
    /// The size a partition's file rolls at.
    pub fn target_file_size(&self) -> u64 {
        self.target_file_size as u64
    }

    /// A writer for the table described by `metadata`.
    pub fn new(metadata: &TableMetadata, file_io: FileIO, target_file_size: u64) -> Result<Self> {
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().clone();
        let splitter = if spec.is_unpartitioned() {
            None
        } else {
            Some(PartitionSplitter::new(schema.clone(), spec.clone())?)
        };
        Ok(DataWriter {
            schema,
            spec,
            splitter,
            file_io,
            locations: DefaultLocationGenerator::new(metadata)?,
            target_file_size: target_file_size as usize,
            table: metadata.location().to_string(),
        })
    }

    /// Writes `batches` and returns the data files, at most one per partition unless a
    /// partition's rows exceed the target file size.
    pub async fn write(&self, batches: &[RecordBatch]) -> Result<Vec<DataFile>> {
        let mut files = Vec::new();
        for (key, parts) in self.group(batches)? {
            files.extend(self.write_partition(key, &parts).await?);
        }
        Ok(files)
    }

    /// Like [`DataWriter::write`], and says where each row went: per partition, the files in
    /// write order and the rows in file order (file 1 holds the first `record_count` rows, …).
    /// The key index learns row positions from this.
    pub async fn write_tracked(&self, batches: &[RecordBatch]) -> Result<Vec<Written>> {
        let mut out = Vec::new();
        for (key, parts) in self.group(batches)? {
            let files = self.write_partition(key, &parts).await?;
            out.push(Written { files, rows: parts });
        }
        Ok(out)
    }

    fn group(&self, batches: &[RecordBatch]) -> Result<Vec<(Option<PartitionKey>, Vec<RecordBatch>)>> {
        let mut groups: BTreeMap<String, (Option<PartitionKey>, Vec<RecordBatch>)> = BTreeMap::new();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            match &self.splitter {
                None => groups
                    .entry(String::new())
                    .or_insert((None, Vec::new()))
                    .1
                    .push(batch.clone()),
                Some(s) => {
                    for (key, part) in s.split(batch).map_err(|e| self.invalid(e))? {
                        let entry = groups.entry(key.to_path()).or_insert((Some(key), Vec::new()));
                        entry.1.push(part);
                    }
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    async fn write_partition(&self, key: Option<PartitionKey>, batches: &[RecordBatch]) -> Result<Vec<DataFile>> {
        let mut files = self.partition_files(key);
        for b in batches {
            files.write(b).await?;
        }
        files.close().await
    }

    /// A writer of one partition's files fed piece by piece, for callers that produce a
    /// partition's rows in order and must not hold them all (compaction's sorted output).
    /// `partition` is the partition's value under the table's default spec (`None` when
    /// the table is unpartitioned).
    pub fn partition_writer(&self, partition: Option<iceberg::spec::Struct>) -> PartitionFiles<'_> {
        let key = match (partition, self.spec.is_unpartitioned()) {
            (Some(data), false) => Some(PartitionKey::new(self.spec.as_ref().clone(), self.schema.clone(), data)),
            _ => None,
        };
        self.partition_files(key)
    }

    fn partition_files(&self, key: Option<PartitionKey>) -> PartitionFiles<'_> {
        let props = super::parquet_properties();
        let names = DefaultFileNameGenerator::new(format!("{}", uuid::Uuid::new_v4()), None, DataFileFormat::Parquet);
        let inner = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, self.schema.clone()),
            self.target_file_size,
            self.file_io.clone(),
            self.locations.clone(),
            names,
        )
        .build();
        PartitionFiles {
            owner: self,
            key,
            inner,
        }
    }

    fn invalid(&self, e: impl std::fmt::Display) -> TableError {
        TableError::InvalidData {
            table: self.table.clone(),
            reason: e.to_string(),
        }
    }
}

type Rolling = RollingFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// The files of one partition being written (see [`DataWriter::partition_writer`]): rolled
/// at the target file size, finished by [`PartitionFiles::close`].
pub struct PartitionFiles<'a> {
    owner: &'a DataWriter,
    key: Option<PartitionKey>,
    inner: Rolling,
}

impl PartitionFiles<'_> {
    /// Appends `batch` (rows of this partition only).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.inner
            .write(&self.key, batch)
            .await
            .map_err(|e| self.owner.invalid(e))
    }

    /// Finishes the last file; returns every file written, with partition and spec set.
    pub async fn close(self) -> Result<Vec<DataFile>> {
        let owner = self.owner;
        self.inner
            .close()
            .await?
            .into_iter()
            .map(|mut b| {
                b.content(DataContentType::Data);
                b.partition_spec_id(owner.spec.spec_id());
                if let Some(k) = &self.key {
                    b.partition(k.data().clone());
                }
                b.build().map_err(|e| owner.invalid(e))
            })
            .collect()
    }
}
