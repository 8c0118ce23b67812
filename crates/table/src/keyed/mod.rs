//! Upsert commits of a keyed table: the winning change per key written as new rows, and the
//! live row each changed key had removed by a position delete found in the key index — one
//! row delta per commit, never an equality delete.
//!
//! Split in two steps, [`Upserter::write`] then [`Upserter::commit`], so a caller can commit
//! other tables in between (the pipeline commits dead letters first). When maintenance or
//! erasure moved rows after the index last looked, the row delta is refused as stale; the
//! commit then removes the files it wrote, catches the index up (reading only the files that
//! changed), writes the same [`Changes`] again and retries, so callers never see a stale
//! position.

pub mod index;

use arrow_array::RecordBatch;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, TableMetadata};

use crate::commit::{CommitOutcome, Committer, ComputedAt, RestoreUpdate, RowDelta};
use crate::error::{Result, TableError};
use crate::keyed::index::{IndexSettings, KeyIndex, Plan, PlanStats, Refreshed, SeqBatch};
use crate::write::data::{DataWriter, Written};
use crate::write::deletes::PositionDeleteWriter;
use crate::Catalog;

/// How often one commit re-resolves its changes after rows moved under the index before it
/// gives up (and the caller reopens the table): each retry already reads the newest table, so
/// only maintenance committing again within that window makes another one necessary.
const STALE_RETRIES: usize = 3;

/// A keyed table's changes since its last commit, in consumption order (the later change of a
/// key wins).
#[derive(Default)]
pub struct Changes {
    upserts: Vec<SeqBatch>,
    deletes: Vec<SeqBatch>,
    /// Records consumed so far: the place in consumption order of the next one.
    consumed: u64,
}

impl Changes {
    /// Changes given with their sequence numbers (tests, benchmarks).
    pub fn new(upserts: Vec<SeqBatch>, deletes: Vec<SeqBatch>) -> Self {
        Changes {
            upserts,
            deletes,
            consumed: 0,
        }
    }

    /// Adds the changes of `records` consumed records: full rows to upsert and key rows to
    /// delete, each row with the index of its record among those `records`.
    pub fn push(
        &mut self,
        records: usize,
        rows: Option<(RecordBatch, Vec<usize>)>,
        deletes: Option<(RecordBatch, Vec<usize>)>,
    ) {
        let base = self.consumed;
        let seq = |origin: Vec<usize>| origin.into_iter().map(|o| base + o as u64).collect();
        if let Some((batch, origin)) = rows {
            self.upserts.push(SeqBatch {
                batch,
                seq: seq(origin),
            });
        }
        if let Some((batch, origin)) = deletes {
            self.deletes.push(SeqBatch {
                batch,
                seq: seq(origin),
            });
        }
        self.consumed += records as u64;
    }

    /// Brings the rows to upsert to a new shape of the table (after a schema change planned
    /// for the next commit); `conform` maps one batch. Deletes hold key columns only, which a
    /// schema change never touches.
    pub fn conform_upserts<E>(
        &mut self,
        conform: impl Fn(&RecordBatch) -> std::result::Result<RecordBatch, E>,
    ) -> std::result::Result<(), E> {
        for b in self.upserts.iter_mut() {
            b.batch = conform(&b.batch)?;
        }
        Ok(())
    }

    /// Arrow bytes held.
    pub fn bytes(&self) -> usize {
        self.upserts
            .iter()
            .chain(&self.deletes)
            .map(|b| b.batch.get_array_memory_size())
            .sum()
    }
}

/// A committed keyed change.
#[derive(Debug)]
pub struct Committed {
    /// How the commit ended.
    pub outcome: CommitOutcome,
    /// The index catch-ups it took because rows had moved under the index (usually none).
    pub refreshes: Vec<Refreshed>,
    /// The data files the committed row delta added (those of the last write).
    pub data_files: Vec<DataFile>,
    /// The position-delete files it added.
    pub delete_files: Vec<DataFile>,
}

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

    /// Writes rows of `meta`'s current schema from now on (a schema change planned for the
    /// next commit: new columns, widened non-key columns). The index is untouched: key
    /// columns never change under it.
    pub fn write_as(&mut self, meta: &TableMetadata, io: &FileIO) -> Result<()> {
        self.writer = DataWriter::new(meta, io.clone(), self.writer.target_file_size())?;
        Ok(())
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
    pub async fn write(&self, changes: &Changes) -> Result<Prepared> {
        let plan = self.index.plan(&changes.upserts, &changes.deletes)?;
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

    /// Commits `prepared` (written from `changes`) as a row delta, then teaches the index where
    /// the new rows are. When rows moved under the index meanwhile, catches it up and commits
    /// `changes` again (see the module docs); fails with `StaleDeletes` only after
    /// [`STALE_RETRIES`] such rounds.
    pub async fn commit(
        &mut self,
        catalog: &Catalog,
        committer: &Committer,
        mut prepared: Prepared,
        changes: &Changes,
        restore: &RestoreUpdate,
    ) -> Result<Committed> {
        let mut refreshes = Vec::new();
        loop {
            match self.commit_once(catalog, committer, prepared, restore).await {
                Err(TableError::StaleDeletes { reason, .. }) if refreshes.len() < STALE_RETRIES => {
                    tracing::info!(table = %committer.ident(), %reason, "rows moved under the key index; catching it up and writing the changes again");
                    let state = catalog.load(committer.ident()).await?;
                    let r = self.refresh(catalog.file_io(), &state.metadata).await?;
                    tracing::info!(
                        table = %committer.ident(),
                        rebuilt = r.rebuilt,
                        files_dropped = r.files_dropped,
                        files_read = r.files_read,
                        delete_files_applied = r.deletes_applied,
                        took_ms = r.took.as_millis() as u64,
                        "key index caught up: rows moved under it"
                    );
                    refreshes.push(r);
                    prepared = self.write(changes).await?;
                }
                Err(e) => return Err(e),
                Ok((outcome, op)) => {
                    return Ok(Committed {
                        outcome,
                        refreshes,
                        data_files: op.data_files,
                        delete_files: op.delete_files,
                    })
                }
            }
        }
    }

    /// One attempt of [`Upserter::commit`]: the row delta validated against the index's head.
    async fn commit_once(
        &mut self,
        catalog: &Catalog,
        committer: &Committer,
        prepared: Prepared,
        restore: &RestoreUpdate,
    ) -> Result<(CommitOutcome, RowDelta)> {
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
        Ok((outcome, op))
    }
}
