//! Upsert commits of a keyed table: the winning change per key written as new rows, and the
//! live row each changed key had removed by a position delete found in the key index — one
//! row delta per commit, never an equality delete.
//!
//! Split in two steps, [`Upserter::write`] then [`Upserter::commit`], so a caller can commit
//! other tables in between (the pipeline commits dead letters first) and throw the written
//! files away if the positions turn out stale.

use iceberg::io::FileIO;
use iceberg::spec::{DataFile, TableMetadata};

use crate::commit::{CommitOutcome, Committer, ComputedAt, RestoreUpdate, RowDelta};
use crate::deletes::PositionDeleteWriter;
use crate::error::{Result, TableError};
use crate::key_index::{IndexSettings, KeyIndex, Plan, PlanStats, Refreshed, SeqBatch};
use crate::writer::{DataWriter, Written};
use crate::Catalog;

/// A keyed change whose files are written but not committed.
pub struct Prepared {
    plan: Plan,
    written: Vec<Written>,
    /// New data files.
    pub data_files: Vec<DataFile>,
    /// New position-delete files.
    pub delete_files: Vec<DataFile>,
}

impl Prepared {
    /// What the commit will do.
    pub fn stats(&self) -> PlanStats {
        self.plan.stats
    }

    /// Every file written for this change (to delete it when the change is abandoned).
    pub fn files(&self) -> impl Iterator<Item = &DataFile> {
        self.data_files.iter().chain(&self.delete_files)
    }
}

/// The key index of one table with the writers its commits need.
pub struct Upserter {
    index: KeyIndex,
    writer: DataWriter,
    deletes: PositionDeleteWriter,
}

impl Upserter {
    /// Builds the key index of `meta`'s current snapshot within `settings`.
    pub async fn open(
        io: &FileIO,
        meta: &TableMetadata,
        key_columns: &[String],
        target_file_size: u64,
        settings: &IndexSettings,
    ) -> Result<Self> {
        Ok(Upserter {
            index: KeyIndex::build(io, meta, key_columns, settings).await?,
            writer: DataWriter::new(meta, io.clone(), target_file_size)?,
            deletes: PositionDeleteWriter::new(meta, io.clone())?,
        })
    }

    /// The key index.
    pub fn index(&self) -> &KeyIndex {
        &self.index
    }

    /// Catches the index up with `meta` after another writer moved rows (compaction,
    /// erasure): reads only the files that changed.
    pub async fn refresh(&mut self, io: &FileIO, meta: &TableMetadata) -> Result<Refreshed> {
        self.index.refresh(io, meta).await
    }

    /// Resolves the changes against the index and writes new rows and position deletes.
    pub async fn write(&self, upserts: &[SeqBatch], deletes: &[SeqBatch]) -> Result<Prepared> {
        let plan = self.index.plan(upserts, deletes)?;
        let written = self.writer.write_tracked(&plan.rows).await?;
        let data_files = written.iter().flat_map(|w| w.files.iter().cloned()).collect();
        let positions = self.index.deletes_for(&plan);
        let delete_files = match positions.is_empty() {
            true => Vec::new(),
            false => self.deletes.write(&positions).await?,
        };
        Ok(Prepared {
            plan,
            written,
            data_files,
            delete_files,
        })
    }

    /// Commits `prepared` as a row delta validated against the index's head, then teaches the
    /// index where the new rows are. Fails with `StaleDeletes` when rows moved meanwhile.
    pub async fn commit(
        &mut self,
        catalog: &Catalog,
        committer: &Committer,
        prepared: Prepared,
        restore: &RestoreUpdate,
    ) -> Result<CommitOutcome> {
        let Prepared {
            plan,
            written,
            data_files,
            delete_files,
        } = prepared;
        let at = ComputedAt {
            snapshot_id: self.index.head(),
            epoch: committer.epoch(),
        };
        let op = RowDelta::new(data_files, delete_files).computed_at(at);
        let outcome = match committer.commit(&op, restore).await {
            Err(e @ TableError::StaleDeletes { .. }) => {
                // Never committed, never will be: the files are ours to remove.
                for f in op.data_files.iter().chain(&op.delete_files) {
                    if let Err(err) = catalog.file_io().delete(f.file_path()).await {
                        tracing::warn!(file = f.file_path(), "could not remove a file of a stale change: {err}");
                    }
                }
                return Err(e);
            }
            r => r?,
        };
        // The index describes the table as of our own snapshot, not the current head: a
        // compaction committed after it is caught by the next row delta's validation.
        let head = match &outcome {
            CommitOutcome::Committed { snapshot_id } | CommitOutcome::AlreadyCommitted { snapshot_id } => {
                Some(*snapshot_id)
            }
        };
        self.index.apply(plan, &written, &op.delete_files, head)?;
        Ok(outcome)
    }
}
