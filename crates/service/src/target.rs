//! A pipeline's target table in the one mode its contract gives it, decided once when the
//! pipeline opens: an append table takes rows as they come; a keyed table resolves each
//! change against its key index, so a commit replaces every changed key's live row by a
//! position delete (never an equality delete). The rows waiting for a commit live here too,
//! in the shape the mode needs.

use std::time::Instant;

use arrow_array::RecordBatch;
use calve_contract::{ColumnType, Contract};
use calve_ingest::Routed;
use calve_table::commit::CommitOutcome;
use calve_table::keyed::{Changes, Prepared, Upserter};
use calve_table::write::conform::conform;
use calve_table::TableDefinition;
use iceberg::spec::DataFile;

use crate::error::ServiceError;
use crate::sink::{CommitReport, Progress, Sink};
use crate::supervisor::Services;

/// The target table and its uncommitted rows.
pub enum Target {
    /// Rows are appended.
    Append {
        /// The table.
        sink: Sink,
        /// Rows since the last commit.
        rows: Vec<RecordBatch>,
    },
    /// Rows replace the live row of their key.
    Keyed {
        /// The table.
        sink: Sink,
        /// The key index and the writers of its row deltas (boxed: it is most of the enum's
        /// size, and there is one per pipeline).
        upserter: Box<Upserter>,
        /// Changes since the last commit; kept until committed, since a commit refused as
        /// stale writes them again.
        changes: Changes,
    },
}

/// Files written for a commit that has not happened yet.
pub enum Written {
    /// Data files to append.
    Append(Vec<DataFile>),
    /// A keyed change: new rows and position deletes.
    Changes(Prepared),
}

impl Target {
    /// Opens (creating if needed) and claims `contract`'s table; a keyed table also builds its
    /// key index from the claimed table.
    pub async fn open(contract: &Contract, def: &TableDefinition, services: &Services) -> Result<Self, ServiceError> {
        let target_size = contract.maintenance.target_file_size.0;
        let sink = Sink::open(&services.catalog, def, Some(contract), target_size).await?;
        if !contract.is_keyed() {
            return Ok(Target::Append { sink, rows: Vec::new() });
        }
        // The index is built from the table as the sink claimed and loaded it.
        let started = Instant::now();
        let upserter = Upserter::open(
            services.catalog.file_io(),
            sink.metadata(),
            &contract.keys.columns,
            target_size,
            &services.key_index,
        )
        .await?;
        let index = upserter.index();
        tracing::info!(
            table = %def.ident, keys = index.len(), memory_mb = index.approx_bytes() >> 20,
            spilled_mb = index.disk_bytes() >> 20, took_ms = started.elapsed().as_millis() as u64,
            "key index built from the table"
        );
        Ok(Target::Keyed {
            sink,
            upserter: Box::new(upserter),
            changes: Changes::default(),
        })
    }

    /// The table.
    pub fn sink(&self) -> &Sink {
        match self {
            Target::Append { sink, .. } | Target::Keyed { sink, .. } => sink,
        }
    }

    /// Takes the rows (append) or changes (keyed) of one poll of `records` records.
    pub fn push(&mut self, records: usize, routed: &mut Routed) {
        match self {
            Target::Append { rows, .. } => rows.extend(routed.rows.take()),
            Target::Keyed { changes, .. } => {
                let rows = routed.rows.take().map(|b| (b, std::mem::take(&mut routed.row_origin)));
                let deletes = routed
                    .deletes
                    .take()
                    .map(|b| (b, std::mem::take(&mut routed.delete_origin)));
                changes.push(records, rows, deletes);
            }
        }
    }

    /// New optional columns (or nested fields) for the next commit: rows waiting so far get
    /// nulls in them. Returns the paths planned (see [`Sink::add_columns`]).
    pub fn add_columns(&mut self, columns: &[(String, ColumnType)]) -> Result<Vec<String>, ServiceError> {
        let names = self.sink_mut().add_columns(columns)?;
        self.conform_to_plan()?;
        Ok(names)
    }

    /// Widenings for the next commit: rows waiting so far are cast to the wider types.
    /// Returns the names planned (see [`Sink::widen_columns`]).
    pub fn widen_columns(&mut self, columns: &[(String, ColumnType)]) -> Result<Vec<String>, ServiceError> {
        let names = self.sink_mut().widen_columns(columns)?;
        self.conform_to_plan()?;
        Ok(names)
    }

    fn sink_mut(&mut self) -> &mut Sink {
        match self {
            Target::Append { sink, .. } | Target::Keyed { sink, .. } => sink,
        }
    }

    /// Brings waiting rows, and a keyed table's writer, to the schema the next commit makes.
    fn conform_to_plan(&mut self) -> Result<(), ServiceError> {
        match self {
            Target::Append { sink, rows } => {
                let schema = sink.schema().clone();
                for batch in rows.iter_mut() {
                    *batch = conform(batch, &schema)?;
                }
            }
            Target::Keyed {
                sink,
                upserter,
                changes,
            } => {
                upserter.write_as(sink.planned(), sink.catalog().file_io())?;
                let schema = sink.schema().clone();
                changes.conform_upserts(|b| conform(b, &schema))?;
            }
        }
        Ok(())
    }

    /// Arrow bytes waiting for a commit.
    pub fn bytes(&self) -> usize {
        match self {
            Target::Append { rows, .. } => rows.iter().map(RecordBatch::get_array_memory_size).sum(),
            Target::Keyed { changes, .. } => changes.bytes(),
        }
    }

    /// A keyed table's index size: keys, bytes of memory, bytes spilled to disk.
    pub fn key_index_size(&self) -> Option<(usize, usize, u64)> {
        match self {
            Target::Append { .. } => None,
            Target::Keyed { upserter, .. } => {
                let i = upserter.index();
                Some((i.len(), i.approx_bytes(), i.disk_bytes()))
            }
        }
    }

    /// Writes what waits as files of the table (not yet committed).
    pub async fn write(&mut self) -> Result<Written, ServiceError> {
        match self {
            Target::Append { sink, rows } => Ok(Written::Append(sink.write(&std::mem::take(rows)).await?)),
            Target::Keyed { upserter, changes, .. } => Ok(Written::Changes(upserter.write(changes).await?)),
        }
    }

    /// Commits `written` with what `progress` says.
    pub async fn commit(&mut self, written: Written, progress: &Progress<'_>) -> Result<CommitReport, ServiceError> {
        match (self, written) {
            (Target::Append { sink, .. }, Written::Append(files)) => sink.commit(files, progress).await,
            (
                Target::Keyed {
                    sink,
                    upserter,
                    changes,
                },
                Written::Changes(prepared),
            ) => {
                tracing::debug!(table = %sink.ident(), stats = ?prepared.stats(), "resolved changes against the key index");
                let restore = sink.restore_update(progress);
                let committed = upserter
                    .commit(sink.catalog(), sink.committer(), prepared, changes, &restore)
                    .await?;
                if matches!(committed.outcome, CommitOutcome::AlreadyCommitted { .. }) {
                    tracing::info!(table = %sink.ident(), "commit had already landed");
                }
                sink.offsets = progress.to.clone();
                sink.committed().await?;
                *changes = Changes::default();
                Ok(CommitReport::of(&committed.data_files, &committed.delete_files))
            }
            _ => unreachable!("files are written by the target that commits them"),
        }
    }
}
