//! One Iceberg table a pipeline commits to (the target table or its dead-letter table): its
//! committer, writer and the restore point it holds.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use calve_table::commit::{Append, CommitOutcome, Committer, ExpirePolicy, ExpireReport, RestoreUpdate, claim_epoch};
use calve_table::restore::{self, Offsets};
use calve_table::writer::{DataWriter, arrow_schema};
use calve_table::{Catalog, TableDefinition, TableError};
use iceberg::spec::DataFile;

use crate::error::ServiceError;

/// A table this process owns for the pipeline's lifetime.
pub struct Sink {
    committer: Committer,
    writer: DataWriter,
    schema: SchemaRef,
    /// The restore point the table holds now.
    pub offsets: Offsets,
}

impl Sink {
    /// Creates the table if needed, claims it (fencing older owners) and reads its restore point.
    pub async fn open(catalog: &Catalog, def: &TableDefinition, target_file_size: u64) -> Result<Self, ServiceError> {
        let state = catalog.ensure_table(def).await?;
        check_schema(def, &state.metadata)?;
        let epoch = claim_epoch(catalog, &def.ident).await?;
        let state = catalog.load(&def.ident).await?;
        let offsets = restore::restore_point(&state.metadata)?.unwrap_or_default();
        Ok(Sink {
            committer: Committer::new(catalog.clone(), def.ident.clone(), epoch),
            writer: DataWriter::new(&state.metadata, catalog.file_io().clone(), target_file_size)?,
            schema: arrow_schema(&state.metadata)?,
            offsets,
        })
    }

    /// The Arrow schema rows must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Writes `batches` as data files (not yet part of the table).
    pub async fn write(&self, batches: &[RecordBatch]) -> Result<Vec<DataFile>, ServiceError> {
        Ok(self.writer.write(batches).await?)
    }

    /// Commits `files` with the restore point `to`.
    pub async fn commit(&mut self, files: Vec<DataFile>, to: &Offsets) -> Result<CommitReport, ServiceError> {
        let report = CommitReport {
            files: files.len(),
            rows: files.iter().map(|f| f.record_count()).sum(),
            bytes: files.iter().map(|f| f.file_size_in_bytes()).sum(),
        };
        let restore = RestoreUpdate { from: self.offsets.clone(), to: to.clone() };
        let outcome = self.committer.commit(&Append::new(files), &restore).await?;
        if outcome == CommitOutcome::AlreadyCommitted {
            tracing::info!(table = %self.committer.ident(), "commit had already landed");
        }
        self.offsets = to.clone();
        Ok(report)
    }

    /// Applies snapshot retention, deleting what only expired snapshots needed.
    pub async fn expire(&self, policy: ExpirePolicy) -> Result<ExpireReport, ServiceError> {
        Ok(self.committer.expire_snapshots(policy, chrono::Utc::now().timestamp_millis()).await?)
    }
}

/// What a commit wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitReport {
    /// Data files.
    pub files: usize,
    /// Rows.
    pub rows: u64,
    /// Bytes of Parquet.
    pub bytes: u64,
}

/// Until schema evolution lands, a table whose schema differs from its contract is refused
/// rather than written with columns silently missing.
fn check_schema(def: &TableDefinition, meta: &iceberg::spec::TableMetadata) -> Result<(), ServiceError> {
    let shape = |s: &iceberg::spec::Schema| -> HashMap<String, (String, bool)> {
        s.as_struct()
            .fields()
            .iter()
            .map(|f| (f.name.clone(), (f.field_type.to_string(), f.required)))
            .collect()
    };
    if shape(&def.schema) != shape(meta.current_schema()) {
        return Err(ServiceError::Table(TableError::InvalidData {
            table: def.ident.to_string(),
            reason: "the table's schema differs from its contract; schema evolution is not in this build yet".into(),
        }));
    }
    Ok(())
}
