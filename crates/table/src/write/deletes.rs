//! Position-delete files: "row `pos` of data file `file_path` is deleted".
//!
//! calve removes superseded rows with position deletes found through its key index, never with
//! equality deletes, which every reader would have to join against forever. A position delete
//! costs a reader one sorted merge against the one data file it names. Files are written per
//! partition (delete files are scoped to their data files' partition), sorted by
//! `(file_path, pos)` as the spec requires, with `referenced_data_file` set when a file covers
//! a single data file so readers can skip it for every other file.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, NestedField, PartitionKey, PartitionSpecRef, PrimitiveType, Schema,
    SchemaRef, Struct, TableMetadata, Type,
};
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;

use crate::error::{Result, TableError};

/// Reserved field id of `file_path` in position-delete files (Iceberg spec).
pub const FILE_PATH_FIELD_ID: i32 = 2_147_483_546;
/// Reserved field id of `pos` in position-delete files (Iceberg spec).
pub const POS_FIELD_ID: i32 = 2_147_483_545;

/// One deleted row: the data file holding it (for its path and partition) and its position.
#[derive(Debug, Clone)]
pub struct PositionDelete<'a> {
    /// The data file.
    pub data_file: &'a DataFile,
    /// 0-based row position within it.
    pub pos: i64,
}

/// Writes position-delete files for one table.
pub struct PositionDeleteWriter {
    table_schema: SchemaRef,
    delete_schema: SchemaRef,
    spec: PartitionSpecRef,
    file_io: FileIO,
    locations: DefaultLocationGenerator,
}

impl PositionDeleteWriter {
    /// A writer for the table described by `metadata`.
    pub fn new(metadata: &TableMetadata, file_io: FileIO) -> Result<Self> {
        let delete_schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(FILE_PATH_FIELD_ID, "file_path", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::required(POS_FIELD_ID, "pos", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()?;
        Ok(PositionDeleteWriter {
            table_schema: metadata.current_schema().clone(),
            delete_schema: Arc::new(delete_schema),
            spec: metadata.default_partition_spec().clone(),
            file_io,
            locations: DefaultLocationGenerator::new(metadata)?,
        })
    }

    /// Writes one delete file per partition touched by `deletes`.
    pub async fn write(&self, deletes: &[PositionDelete<'_>]) -> Result<Vec<DataFile>> {
        let mut by_partition: BTreeMap<String, (Struct, BTreeMap<&str, Vec<i64>>)> = BTreeMap::new();
        for d in deletes {
            let df = d.data_file;
            // DataFile exposes no spec id; calve tables have a single spec until spec evolution lands.
            let key = format!("{:?}", df.partition());
            let entry = by_partition
                .entry(key)
                .or_insert_with(|| (df.partition().clone(), BTreeMap::new()));
            entry.1.entry(df.file_path()).or_default().push(d.pos);
        }
        let mut out = Vec::new();
        for (partition, files) in by_partition.into_values() {
            out.push(self.write_partition(partition, files).await?);
        }
        Ok(out)
    }

    async fn write_partition(&self, partition: Struct, files: BTreeMap<&str, Vec<i64>>) -> Result<DataFile> {
        let mut paths = Vec::new();
        let mut positions = Vec::new();
        // BTreeMap iteration sorts by path; positions are sorted (and deduplicated) per path.
        for (path, mut pos) in files.iter().map(|(p, v)| (*p, v.clone())) {
            pos.sort_unstable();
            pos.dedup();
            paths.extend(std::iter::repeat_n(path, pos.len()));
            positions.extend(pos);
        }
        let arrow = Arc::new(schema_to_arrow_schema(&self.delete_schema)?);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(paths)),
            Arc::new(Int64Array::from(positions)),
        ];
        let batch = RecordBatch::try_new(arrow, columns).map_err(|e| TableError::InvalidData {
            table: String::new(),
            reason: e.to_string(),
        })?;
        let key = (!self.spec.is_unpartitioned())
            .then(|| PartitionKey::new(self.spec.as_ref().clone(), self.table_schema.clone(), partition.clone()));
        let props = super::parquet_properties();
        let names = DefaultFileNameGenerator::new(
            format!("{}-deletes", uuid::Uuid::new_v4()),
            None,
            DataFileFormat::Parquet,
        );
        let mut writer = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, self.delete_schema.clone()),
            usize::MAX,
            self.file_io.clone(),
            self.locations.clone(),
            names,
        )
        .build();
        writer.write(&key, &batch).await?;
        let mut built = writer.close().await?;
        let mut b = built
            .pop()
            .ok_or_else(|| TableError::Unsupported("delete writer produced no file".into()))?;
        b.content(DataContentType::PositionDeletes);
        b.partition_spec_id(self.spec.spec_id());
        b.partition(partition);
        if files.len() == 1 {
            b.referenced_data_file(files.keys().next().map(|p| p.to_string()));
        }
        b.build().map_err(|e| TableError::InvalidData {
            table: String::new(),
            reason: e.to_string(),
        })
    }
}
