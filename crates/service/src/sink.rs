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

use calve_table::commit::{
    Append, CommitOutcome, Committer, ComputedAt, ExpirePolicy, ExpireReport, RestoreUpdate, RowDelta, claim_epoch,
};
use calve_table::deletes::PositionDeleteWriter;
use calve_table::key_index::{KeyIndex, Plan, PlanStats, SeqBatch};
use calve_table::restore::{self, Offsets};
use calve_table::writer::{DataWriter, Written, arrow_schema};
use calve_table::{Catalog, TableDefinition, TableError};
use iceberg::spec::DataFile;

use crate::error::ServiceError;

/// A table this process owns for the pipeline's lifetime.
pub struct Sink {
    catalog: Catalog,
    committer: Committer,
    writer: DataWriter,
    schema: SchemaRef,
    /// Keyed tables: where each key's live row is, and the writer for position deletes.
    keyed: Option<(KeyIndex, PositionDeleteWriter)>,
    /// The restore point the table holds now.
    pub offsets: Offsets,
}

/// A keyed commit whose files are written but not yet committed.
pub struct Prepared {
    plan: Plan,
    written: Vec<Written>,
    data_files: Vec<DataFile>,
    delete_files: Vec<DataFile>,
}

impl Prepared {
    /// What the commit will do.
    pub fn stats(&self) -> PlanStats {
        self.plan.stats
    }
}

impl Sink {
    /// Creates the table if needed, claims it (fencing older owners) and reads its restore
    /// point. With `keys`, also builds the key index from the claimed table.
    pub async fn open(catalog: &Catalog, def: &TableDefinition, target_file_size: u64, keys: &[String]) -> Result<Self, ServiceError> {
        let state = catalog.ensure_table(def).await?;
        check_schema(def, &state.metadata)?;
        let epoch = claim_epoch(catalog, &def.ident).await?;
        let state = catalog.load(&def.ident).await?;
        let offsets = restore::restore_point(&state.metadata)?.unwrap_or_default();
        let keyed = match keys.is_empty() {
            true => None,
            false => {
                let started = Instant::now();
                let index = KeyIndex::build(catalog.file_io(), &state.metadata, keys).await?;
                tracing::info!(
                    table = %def.ident, keys = index.len(), approx_mb = index.approx_bytes() >> 20,
                    took_ms = started.elapsed().as_millis() as u64, "key index rebuilt from the table"
                );
                Some((index, PositionDeleteWriter::new(&state.metadata, catalog.file_io().clone())?))
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
        let (index, delete_writer) = self.keyed.as_ref().expect("write_changes on a keyed table");
        let plan = index.plan(upserts, deletes)?;
        let written = self.writer.write_tracked(&plan.rows).await?;
        let data_files = written.iter().flat_map(|w| w.files.iter().cloned()).collect();
        let positions = index.deletes_for(&plan);
        let delete_files = match positions.is_empty() {
            true => Vec::new(),
            false => delete_writer.write(&positions).await?,
        };
        Ok(Prepared { plan, written, data_files, delete_files })
    }

    /// Commits a prepared keyed change as a row delta with the restore point `to`, then
    /// teaches the key index where the new rows are.
    pub async fn commit_changes(&mut self, prepared: Prepared, to: &Offsets) -> Result<CommitReport, ServiceError> {
        let Prepared { plan, written, data_files, delete_files } = prepared;
        let report = CommitReport::of(&data_files, &delete_files);
        let (index, _) = self.keyed.as_mut().expect("commit_changes on a keyed table");
        let at = ComputedAt { snapshot_id: index.head(), epoch: self.committer.epoch() };
        let op = RowDelta::new(data_files, delete_files).computed_at(at);
        let restore = RestoreUpdate { from: self.offsets.clone(), to: to.clone() };
        let head = match self.committer.commit(&op, &restore).await? {
            CommitOutcome::Committed { snapshot_id } => Some(snapshot_id),
            CommitOutcome::AlreadyCommitted => {
                tracing::info!(table = %self.committer.ident(), "commit had already landed");
                self.catalog.load(self.committer.ident()).await?.metadata.current_snapshot_id()
            }
        };
        index.apply(plan, &written, head)?;
        self.offsets = to.clone();
        Ok(report)
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
