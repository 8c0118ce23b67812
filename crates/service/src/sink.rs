//! One Iceberg table a pipeline commits to (the target table or its dead-letter table): its
//! committer, writers, the restore point it holds and, for a keyed table, its key index.
//!
//! A keyed table's commit is a row delta: the winning change per key is written as new rows,
//! and the live row each changed key had is removed by a position delete found in the key
//! index — never by an equality delete.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use std::time::Instant;

use calve_table::commit::{claim_epoch, Append, CommitOutcome, Committer, RestoreUpdate};
use calve_table::key_index::{IndexSettings, SeqBatch};
use calve_table::restore::{self, Offsets};
use calve_table::upsert::{Prepared, Upserter};
use calve_table::writer::{arrow_schema, DataWriter};
use calve_table::{Catalog, TableDefinition, TableError};
use iceberg::spec::DataFile;

use crate::error::ServiceError;

/// A keyed table's key columns and the limits of its index.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// Business key columns.
    pub columns: &'a [String],
    /// Memory and spill space of the index.
    pub index: &'a IndexSettings,
}

/// A table this process owns for the pipeline's lifetime.
pub struct Sink {
    catalog: Catalog,
    committer: Committer,
    writer: DataWriter,
    schema: SchemaRef,
    /// Keyed tables: the key index and the writers of its row deltas.
    keyed: Option<Upserter>,
    /// The restore point the table holds now.
    pub offsets: Offsets,
}

impl Sink {
    /// Creates the table if needed, claims it (fencing older owners) and reads its restore
    /// point. With `keys`, also builds the key index from the claimed table.
    pub async fn open(
        catalog: &Catalog,
        def: &TableDefinition,
        target_file_size: u64,
        keys: Option<Keys<'_>>,
    ) -> Result<Self, ServiceError> {
        let state = catalog.ensure_table(def).await?;
        check_schema(def, &state.metadata)?;
        let epoch = claim_epoch(catalog, &def.ident).await?;
        let state = catalog.load(&def.ident).await?;
        let offsets = restore::restore_point(&state.metadata)?.unwrap_or_default();
        let keyed = match keys {
            None => None,
            Some(k) => {
                let started = Instant::now();
                let upserter =
                    Upserter::open(catalog.file_io(), &state.metadata, k.columns, target_file_size, k.index).await?;
                let index = upserter.index();
                tracing::info!(
                    table = %def.ident, keys = index.len(), memory_mb = index.approx_bytes() >> 20, spilled_mb = index.disk_bytes() >> 20,
                    took_ms = started.elapsed().as_millis() as u64, "key index built from the table"
                );
                Some(upserter)
            }
        };
        Ok(Sink {
            catalog: catalog.clone(),
            committer: Committer::new(catalog.clone(), def.ident.clone(), epoch),
            writer: DataWriter::new(&state.metadata, catalog.file_io().clone(), target_file_size)?,
            schema: arrow_schema(&state.metadata)?,
            keyed,
            offsets,
        })
    }

    /// Keyed tables: resolves `upserts` and `deletes` against the key index and writes the
    /// new rows and the position deletes for the rows they supersede.
    pub async fn write_changes(&self, upserts: &[SeqBatch], deletes: &[SeqBatch]) -> Result<Prepared, ServiceError> {
        let upserter = self.keyed.as_ref().expect("write_changes on a keyed table");
        Ok(upserter.write(upserts, deletes).await?)
    }

    /// Commits a prepared keyed change as a row delta with the restore point `to`, then
    /// teaches the key index where the new rows are.
    pub async fn commit_changes(&mut self, prepared: Prepared, to: &Offsets) -> Result<CommitReport, ServiceError> {
        let report = CommitReport::of(&prepared.data_files, &prepared.delete_files);
        let upserter = self.keyed.as_mut().expect("commit_changes on a keyed table");
        let restore = RestoreUpdate {
            from: self.offsets.clone(),
            to: to.clone(),
        };
        if matches!(
            upserter
                .commit(&self.catalog, &self.committer, prepared, &restore)
                .await?,
            CommitOutcome::AlreadyCommitted { .. }
        ) {
            tracing::info!(table = %self.committer.ident(), "commit had already landed");
        }
        self.offsets = to.clone();
        Ok(report)
    }

    /// Keyed tables: catches the key index up with the table as it is now (after maintenance
    /// or erasure moved rows under it), reading only the files that changed.
    pub async fn refresh_index(&mut self) -> Result<(), ServiceError> {
        let upserter = self.keyed.as_mut().expect("refresh_index on a keyed table");
        let started = Instant::now();
        let state = self.catalog.load(self.committer.ident()).await?;
        let r = upserter.refresh(self.catalog.file_io(), &state.metadata).await?;
        tracing::info!(
            table = %self.committer.ident(), rebuilt = r.rebuilt, files_dropped = r.files_dropped, files_read = r.files_read,
            delete_files_applied = r.deletes_applied, took_ms = started.elapsed().as_millis() as u64,
            "key index caught up: rows moved under it"
        );
        Ok(())
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
        let report = CommitReport::of(&files, &[]);
        let restore = RestoreUpdate {
            from: self.offsets.clone(),
            to: to.clone(),
        };
        let outcome = self.committer.commit(&Append::new(files), &restore).await?;
        if matches!(outcome, CommitOutcome::AlreadyCommitted { .. }) {
            tracing::info!(table = %self.committer.ident(), "commit had already landed");
        }
        self.offsets = to.clone();
        Ok(report)
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
    /// Position-delete files.
    pub delete_files: usize,
}

impl CommitReport {
    fn of(data: &[DataFile], deletes: &[DataFile]) -> Self {
        CommitReport {
            files: data.len(),
            rows: data.iter().map(|f| f.record_count()).sum(),
            bytes: data.iter().chain(deletes).map(|f| f.file_size_in_bytes()).sum(),
            delete_files: deletes.len(),
        }
    }
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
