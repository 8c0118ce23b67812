//! The commit layer: every snapshot calve writes goes through [`Committer`].
//!
//! `iceberg` 0.10 ships only fast-append and keeps its transaction actions private, so calve
//! produces snapshots itself from the crate's public manifest, manifest-list and metadata
//! builders, then swaps the catalog pointer with a compare-and-swap. Each operation lives in a
//! file of its own behind [`SnapshotOperation`], so an upstream action can replace one later.
//!
//! Every attempt: reload the table, check the writer epoch (fencing), check whether this commit
//! already landed (commit id), let the operation build manifests against that base, write the
//! manifest list and metadata, swap. A lost swap deletes what the attempt wrote and retries.

mod append;
mod delete_files;
mod epoch;
pub mod event_time;
mod expire;
pub mod handoff;
pub mod hold;
pub mod lost;
pub mod restore;
mod rewrite;
mod rewrite_manifests;
mod row_delta;
pub mod summary;
pub mod swap;
mod update_schema;
mod update_sort_order;
mod update_spec;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iceberg::spec::{
    DataFile, DataFileFormat, FormatVersion, ManifestContentType, ManifestFile, ManifestListWriter, ManifestWriter,
    ManifestWriterBuilder, Operation, SchemaRef, Snapshot, SnapshotReference, SnapshotRetention, Summary,
    TableMetadata, TableMetadataBuildResult, TableMetadataBuilder, MAIN_BRANCH,
};
use iceberg::TableIdent;
use uuid::Uuid;

pub use append::{Append, MergePolicy};
pub use delete_files::DeleteFiles;
pub use epoch::claim_epoch;
pub use expire::{ExpirePolicy, ExpireReport};
pub use rewrite::{ForgettingRewrite, Rewrite};
pub use rewrite_manifests::RewriteManifests;
pub use row_delta::{ComputedAt, RowDelta};
pub use update_schema::{
    diff_with_contract, is_looser, is_widening, table_is_looser, ContractDiff, SchemaChange, UpdateSchema,
    ADDED_FROM_EVENTS,
};
pub use update_sort_order::UpdateSortOrder;
pub use update_spec::UpdatePartitionSpec;

use crate::catalog::{Catalog, TableState};
use crate::error::{Result, TableError};
use crate::read::manifests::manifest_list;
use calve_retry::Classify;
use restore::{Offsets, COMMITTER_KEY, COMMIT_ID_KEY, OFFSETS_KEY, UNKNOWN_FIELDS_KEY, WRITER_EPOCH_KEY};

/// `ManifestWriter::add_file` treats a negative sequence number as "inherit from the manifest
/// list entry", which is what new entries want: the number is only known at commit time.
const INHERIT_SEQUENCE_NUMBER: i64 = -1;

/// What an operation hands back: the manifests of the new snapshot and its summary.
pub struct Produced {
    /// The operation recorded in the summary.
    pub operation: Operation,
    /// Every manifest the new snapshot lists.
    pub manifests: Vec<ManifestFile>,
    /// Summary properties (changes and totals).
    pub summary: HashMap<String, String>,
}

/// One kind of snapshot (append, row delta, rewrite …): builds the new snapshot's manifests
/// against the base it is given. Called again on every retry, with a fresh base.
pub trait SnapshotOperation: Send + Sync {
    /// Produce manifests for a snapshot on top of `ctx.base`.
    fn produce(
        &self,
        ctx: &mut SnapshotContext<'_>,
        extra_summary: &HashMap<String, String>,
    ) -> impl std::future::Future<Output = Result<Produced>> + Send;

    /// The content files this operation adds, written for it alone (referenced by no snapshot
    /// until it commits). When the writer is fenced nothing will ever commit them, so they are
    /// removed rather than left to orphan cleanup: they may hold rows an erasure must not find
    /// in storage. Default: none.
    fn added_files(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// A change to table metadata that adds no snapshot (schema, partition spec, sort order).
/// Applied to the fresh base on every attempt, like a snapshot operation.
pub trait MetadataUpdate: Send + Sync {
    /// Adds the change to `builder`, which starts from `base`.
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder>;
}

/// Two metadata changes made in one update: either both land or neither does.
impl<A: MetadataUpdate, B: MetadataUpdate> MetadataUpdate for (A, B) {
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        self.1.apply(base, self.0.apply(base, builder)?)
    }
}

/// What an operation may use while producing a snapshot.
pub struct SnapshotContext<'a> {
    /// The table state this attempt builds on.
    pub base: &'a TableState,
    /// File access.
    pub catalog: &'a Catalog,
    /// The id the new snapshot will have.
    pub snapshot_id: i64,
    attempt_id: Uuid,
    manifest_counter: u32,
    written: Vec<String>,
    /// The schema manifests are written with when the snapshot installs a new one.
    schema: Option<SchemaRef>,
}

impl<'a> SnapshotContext<'a> {
    fn new(base: &'a TableState, catalog: &'a Catalog) -> Self {
        SnapshotContext {
            base,
            catalog,
            snapshot_id: new_snapshot_id(base.metadata.as_ref()),
            attempt_id: Uuid::new_v4(),
            manifest_counter: 0,
            written: Vec::new(),
            schema: None,
        }
    }

    /// The base table metadata.
    pub fn metadata(&self) -> &'a TableMetadata {
        let base: &'a TableState = self.base;
        base.metadata.as_ref()
    }

    /// Manifests listed by the base's current snapshot (empty for a new table).
    pub async fn current_manifests(&self) -> Result<Vec<ManifestFile>> {
        let m = self.metadata();
        let Some(s) = m.current_snapshot() else {
            return Ok(Vec::new());
        };
        manifest_list(self.catalog.file_io(), m, s).await
    }

    /// A writer for a new manifest of the default spec. The file is removed if the attempt fails.
    pub fn new_manifest_writer(&mut self, content: ManifestContentType) -> Result<ManifestWriter> {
        let m = self.metadata();
        let path = format!(
            "{}/metadata/{}-m{}.{}",
            m.location(),
            self.attempt_id,
            self.manifest_counter,
            DataFileFormat::Avro
        );
        self.manifest_counter += 1;
        self.written.push(path.clone());
        let out = self.catalog.file_io().new_output(&path)?;
        let b = ManifestWriterBuilder::new(
            out,
            Some(self.snapshot_id),
            self.schema.clone().unwrap_or_else(|| m.current_schema().clone()),
            m.default_partition_spec().as_ref().clone(),
        );
        Ok(match (m.format_version(), content) {
            (FormatVersion::V1, _) => b.build_v1(),
            (FormatVersion::V2, ManifestContentType::Data) => b.build_v2_data(),
            (FormatVersion::V2, ManifestContentType::Deletes) => b.build_v2_deletes(),
            (FormatVersion::V3, ManifestContentType::Data) => b.build_v3_data(),
            (FormatVersion::V3, ManifestContentType::Deletes) => b.build_v3_deletes(),
        })
    }

    /// A manifest of `files` (all of `content`), each added with the new snapshot's sequence
    /// number; `None` when there are none.
    pub async fn added_manifest<'f, I>(
        &mut self,
        content: ManifestContentType,
        files: I,
    ) -> Result<Option<ManifestFile>>
    where
        I: IntoIterator<Item = &'f DataFile>,
        I::IntoIter: Send,
    {
        let mut files = files.into_iter().peekable();
        if files.peek().is_none() {
            return Ok(None);
        }
        let mut w = self.new_manifest_writer(content)?;
        for f in files {
            w.add_file(f.clone(), INHERIT_SEQUENCE_NUMBER)?;
        }
        Ok(Some(w.write_manifest_file().await?))
    }

    async fn cleanup(&self) {
        for path in &self.written {
            if let Err(e) = self.catalog.file_io().delete(path).await {
                tracing::warn!(%path, "could not remove file of abandoned commit attempt: {e}");
            }
        }
    }
}

fn new_snapshot_id(m: &TableMetadata) -> i64 {
    loop {
        let (a, b) = Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if id != 0 && m.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// The Kafka position a commit brings the table to.
#[derive(Debug, Clone, Default)]
pub struct RestoreUpdate {
    /// Offsets the table held before (the range start, for the commit id).
    pub from: Offsets,
    /// Next offsets to read after this commit.
    pub to: Offsets,
    /// Fields the committed records carried that the table has no column for, by path, with
    /// how many records carried each: added to the table's running count in the summary.
    pub unknown_fields: BTreeMap<String, u64>,
    /// Gaps the commit skips: records Kafka deleted before they were read (added to the
    /// table's recorded gaps in the summary).
    pub lost_records: Vec<lost::LostRange>,
    /// Columns the committed rows need that the table does not have yet: added in the same
    /// metadata update as the snapshot, so no reader and no restart ever sees one without
    /// the other.
    pub evolve: Option<Evolve>,
    /// The table's event-time progress as of this commit; `None` carries the last one
    /// forward (see [`event_time`]).
    pub event_time: Option<event_time::EventTimeMarks>,
    /// The commit goes in only onto a table that holds `from`: its files were judged against
    /// that restore point ([`handoff::gather`]), and onto any other they could repeat or skip
    /// a range.
    pub exact: bool,
}

/// A schema change made together with the rows that need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evolve {
    /// The additive changes.
    pub changes: Vec<SchemaChange>,
    /// The schema id the rows' files were planned against: the new columns' field ids are
    /// the ones this schema leads to, so a commit on any other schema is refused.
    pub on_schema_id: i32,
    /// The table's last assigned field id then (a column added and dropped again leaves the
    /// schema id as it was but not this, and new ids start from it).
    pub on_last_column_id: i32,
}

impl Evolve {
    /// `changes` planned against `base` as it is now.
    pub fn on(base: &TableMetadata, changes: Vec<SchemaChange>) -> Self {
        Evolve {
            changes,
            on_schema_id: base.current_schema_id(),
            on_last_column_id: base.last_column_id(),
        }
    }

    /// The metadata `base` becomes with the changes applied (to plan the files against).
    pub fn apply_to(&self, base: &TableMetadata) -> Result<TableMetadata> {
        let update = UpdateSchema {
            changes: self.changes.clone(),
        };
        applied(base, &update)
    }
}

/// The metadata `base` becomes with `update` applied.
fn applied(base: &TableMetadata, update: &dyn MetadataUpdate) -> Result<TableMetadata> {
    let builder = update.apply(base, TableMetadataBuilder::new_from_metadata(base.clone(), None))?;
    Ok(builder.build()?.metadata)
}

impl RestoreUpdate {
    /// A commit that consumed Kafka from `from` up to `to`, meeting no unknown field.
    pub fn new(from: Offsets, to: Offsets) -> Self {
        RestoreUpdate {
            from,
            to,
            unknown_fields: BTreeMap::new(),
            lost_records: Vec::new(),
            evolve: None,
            event_time: None,
            exact: false,
        }
    }
}

/// Where a commit's restore point comes from.
#[derive(Clone, Copy)]
enum Restore<'a> {
    /// Ingest: the commit consumed Kafka up to `to`.
    Advance(&'a RestoreUpdate),
    /// Maintenance: copy the base's restore point. The commit id is made once per commit,
    /// not per attempt, so an attempt that landed unseen is found by the next one.
    CarryForward(&'a str),
    /// A rebuild swapped in: the base must hold the restore point the rebuild reached, which
    /// the table keeps; the rest of the committed state is the rebuilt table's.
    Swap(&'a swap::SwapIn),
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// A new snapshot is the table's head.
    Committed {
        /// Its id.
        snapshot_id: i64,
    },
    /// An earlier attempt whose outcome was unknown had landed already.
    AlreadyCommitted {
        /// The snapshot it landed as (others may have committed after it).
        snapshot_id: i64,
    },
}

/// Retry settings for conflicts and unknown outcomes.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts before giving up with [`TableError::Conflict`].
    pub attempts: u32,
    /// First backoff; doubles each attempt.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            backoff: Duration::from_millis(50),
        }
    }
}

/// The single committer of one table: holds the table's identity and this process's epoch.
#[derive(Debug, Clone)]
pub struct Committer {
    catalog: Catalog,
    ident: TableIdent,
    epoch: u64,
    retry: RetryPolicy,
    /// The state this committer last made current: reused while the catalog still points at it.
    last: Arc<Mutex<Option<TableState>>>,
    /// This committer's snapshot also claims the table for `epoch` (see [`claim_epoch`]).
    claim: bool,
}

impl Committer {
    /// A committer that writes as writer `epoch` (see [`claim_epoch`]).
    pub fn new(catalog: Catalog, ident: TableIdent, epoch: u64) -> Self {
        Committer {
            catalog,
            ident,
            epoch,
            retry: RetryPolicy::default(),
            last: Arc::default(),
            claim: false,
        }
    }

    /// A committer whose one attempt also records `epoch` as the table's writer epoch, and that
    /// refuses a base whose epoch is not older than `epoch` (another claim got there first).
    pub(crate) fn claiming(catalog: Catalog, ident: TableIdent, epoch: u64) -> Self {
        let retry = RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        };
        Committer {
            claim: true,
            ..Committer::new(catalog, ident, epoch).with_retry(retry)
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// This committer's writer epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The table this committer writes.
    pub fn ident(&self) -> &TableIdent {
        &self.ident
    }

    /// Commits `op` as a new snapshot carrying the restore point `restore`.
    pub async fn commit<O: SnapshotOperation>(&self, op: &O, restore: &RestoreUpdate) -> Result<CommitOutcome> {
        self.commit_with(op, Restore::Advance(restore)).await
    }

    /// Commits a rebuild's swap (see [`swap`]): `op` replaces every file; refused with
    /// [`TableError::RebuildOvertaken`] when the table no longer holds `swap.expect`.
    pub async fn swap_in(&self, op: &swap::ReplaceTable, swap: &swap::SwapIn) -> Result<CommitOutcome> {
        self.commit_with(op, Restore::Swap(swap)).await
    }

    /// The table as it is now (read cheaply when this committer made the current version).
    pub async fn current(&self) -> Result<TableState> {
        self.load_base().await
    }

    /// Commits `op`, a snapshot that consumed nothing from Kafka (maintenance, erasure): the
    /// base's restore point is copied forward on every attempt, so the newest snapshot always
    /// holds it, whatever ingest committed meanwhile.
    pub async fn commit_maintenance<O: SnapshotOperation>(&self, op: &O) -> Result<CommitOutcome> {
        let id = Uuid::new_v4().simple().to_string();
        self.commit_with(op, Restore::CarryForward(&id)).await
    }

    async fn commit_with<O: SnapshotOperation>(&self, op: &O, restore: Restore<'_>) -> Result<CommitOutcome> {
        let mut backoff = self.retry.backoff;
        // Whether an attempt may have landed without our knowing (the catalog did not answer):
        // then the operation's files may be in the table, and are never removed here.
        let mut maybe_landed = false;
        // The last failure that was not a lost race: when no attempt conflicted, it is what
        // the caller must hear (a full disk reported as a "conflict" would hide it).
        let mut last_failure = None;
        for attempt in 1..=self.retry.attempts {
            match self.attempt(op, restore).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {
                    last_failure = None;
                    metrics::counter!("calve_commit_conflicts_total", "table" => self.ident.to_string()).increment(1);
                    tracing::debug!(table = %self.ident, attempt, "commit conflicted; retrying")
                }
                // Re-running the operation cannot help: its inputs, not the attempt, are stale.
                Err(
                    e @ (TableError::StaleDeletes { .. }
                    | TableError::RebuildOvertaken { .. }
                    | TableError::RestoreMoved { .. }),
                ) => return Err(e),
                Err(e @ TableError::Fenced { .. }) => {
                    if !maybe_landed {
                        self.abandon(op).await;
                    }
                    return Err(e);
                }
                // A full disk or a refused permission needs a person, not eight quick retries;
                // nothing landed (the catalog was not reached), so the caller may clean up.
                Err(e) if !maybe_landed && e.storage_fault().is_some() && !matches!(e, TableError::Catalog(_)) => {
                    return Err(e)
                }
                Err(e) if e.is_temporary() => {
                    maybe_landed |= matches!(e, TableError::Catalog(_));
                    tracing::warn!(table = %self.ident, attempt, "commit attempt failed: {e}; retrying");
                    last_failure = Some(e);
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if maybe_landed {
            // Not a conflict: a caller that took it for one would remove files a landed
            // snapshot references. Unknown outcomes are resolved by reloading the table.
            return Err(TableError::Catalog(format!(
                "{}: the outcome of the commit is unknown after {} attempts (the catalog did not answer)",
                self.ident, self.retry.attempts
            )));
        }
        match last_failure {
            Some(e) => Err(e),
            None => Err(TableError::Conflict {
                table: self.ident.to_string(),
                attempts: self.retry.attempts,
            }),
        }
    }

    /// One attempt; `Ok(None)` means another writer swapped first.
    async fn attempt<O: SnapshotOperation>(&self, op: &O, restore: Restore<'_>) -> Result<Option<CommitOutcome>> {
        let base = self.load_base().await?;
        let meta = base.metadata.as_ref();
        let commit_id = match restore {
            Restore::Advance(r) => restore::commit_id(&meta.uuid().to_string(), self.epoch, &r.from, &r.to),
            Restore::CarryForward(id) => id.to_string(),
            Restore::Swap(s) => s.commit_id(),
        };
        // Before the epoch check: a commit that landed before a newer owner claimed the table
        // did land, and its files must not be taken for a fenced writer's.
        if let Some(snapshot_id) = restore::find_commit(meta, &commit_id) {
            return Ok(Some(CommitOutcome::AlreadyCommitted { snapshot_id }));
        }
        self.check_epoch(meta)?;
        let (mut unknown, mut lost_records) = match restore {
            Restore::Swap(s) => (s.unknown_fields.clone(), s.lost_records.clone()),
            _ => (restore::unknown_fields(meta)?, lost::lost_records(meta)?),
        };
        let offsets = match restore {
            Restore::Advance(r) => {
                if r.exact {
                    let now = restore::restore_point(meta)?.unwrap_or_default();
                    if now != r.from {
                        return Err(TableError::RestoreMoved {
                            table: self.ident.to_string(),
                            reason: format!(
                                "gathered at {}, the table holds {}",
                                restore::format_offsets(&r.from),
                                restore::format_offsets(&now)
                            ),
                        });
                    }
                }
                restore::add_unknown_fields(&mut unknown, &r.unknown_fields);
                lost::add_lost_records(&mut lost_records, &r.lost_records);
                let moved = |e: &&Evolve| {
                    e.on_schema_id != meta.current_schema_id() || e.on_last_column_id != meta.last_column_id()
                };
                if let Some(e) = r.evolve.as_ref().filter(moved) {
                    return Err(TableError::SchemaMoved {
                        table: self.ident.to_string(),
                        reason: format!(
                            "planned on schema {} (last field id {}), the table is at schema {} (last field id {})",
                            e.on_schema_id,
                            e.on_last_column_id,
                            meta.current_schema_id(),
                            meta.last_column_id()
                        ),
                    });
                }
                Some(r.to.clone())
            }
            Restore::CarryForward(_) => restore::restore_point(meta)?,
            Restore::Swap(s) => {
                let now = restore::restore_point(meta)?.unwrap_or_default();
                if now != s.expect {
                    return Err(TableError::RebuildOvertaken {
                        table: self.ident.to_string(),
                        reason: format!(
                            "it holds {}, the rebuild reached {}",
                            restore::format_offsets(&now),
                            restore::format_offsets(&s.expect)
                        ),
                    });
                }
                Some(s.to.clone())
            }
        };
        let mut extra = HashMap::from([
            (COMMIT_ID_KEY.to_string(), commit_id),
            (WRITER_EPOCH_KEY.to_string(), self.epoch.to_string()),
            (COMMITTER_KEY.to_string(), restore::committer_name().to_string()),
        ]);
        if let Some(o) = offsets {
            extra.insert(OFFSETS_KEY.to_string(), restore::format_offsets(&o));
        }
        if !unknown.is_empty() {
            extra.insert(UNKNOWN_FIELDS_KEY.to_string(), restore::format_unknown_fields(&unknown));
        }
        if !lost_records.is_empty() {
            extra.insert(
                lost::LOST_RECORDS_KEY.to_string(),
                lost::format_lost_records(&lost_records),
            );
        }
        let marks = match restore {
            Restore::Advance(RestoreUpdate {
                event_time: Some(marks),
                ..
            }) => marks.clone(),
            Restore::Swap(s) => s.event_time.clone(),
            _ => event_time::EventTimeMarks::carried(meta),
        };
        marks.write_into(&mut extra);
        let evolve = match restore {
            Restore::Advance(r) => r.evolve.as_ref().map(|e| UpdateSchema {
                changes: e.changes.clone(),
            }),
            _ => None,
        };
        let update: Option<&dyn MetadataUpdate> = match restore {
            Restore::Swap(s) => {
                extra.insert(swap::SWAPPED_KEY.to_string(), s.id.clone());
                Some(s)
            }
            _ => evolve.as_ref().map(|u| u as &dyn MetadataUpdate),
        };
        let mut ctx = SnapshotContext::new(&base, &self.catalog);
        // Manifests describe their files with the schema the snapshot installs, so the new
        // columns' bounds are kept by every reader (they are dropped for unknown field ids).
        if let Some(u) = update {
            ctx.schema = Some(applied(meta, u)?.current_schema().clone());
        }
        let result = self.publish(op, &mut ctx, &extra, update).await;
        match result {
            Ok(true) => Ok(Some(CommitOutcome::Committed {
                snapshot_id: ctx.snapshot_id,
            })),
            Ok(false) => {
                ctx.cleanup().await;
                Ok(None)
            }
            Err(e) => {
                // A catalog error leaves the outcome unknown: keep the files, the next attempt
                // finds the commit id if the swap landed; orphan cleanup takes them otherwise.
                if !matches!(e, TableError::Catalog(_)) {
                    ctx.cleanup().await;
                }
                Err(e)
            }
        }
    }

    async fn publish<O: SnapshotOperation>(
        &self,
        op: &O,
        ctx: &mut SnapshotContext<'_>,
        extra: &HashMap<String, String>,
        update: Option<&dyn MetadataUpdate>,
    ) -> Result<bool> {
        let produced = op.produce(ctx, extra).await?;
        let meta = ctx.metadata();
        let schema_id = match update {
            Some(u) => applied(meta, u)?.current_schema_id(),
            None => meta.current_schema_id(),
        };
        let seq = meta.next_sequence_number();
        let list_path = format!(
            "{}/metadata/snap-{}-1-{}.{}",
            meta.location(),
            ctx.snapshot_id,
            ctx.attempt_id,
            DataFileFormat::Avro
        );
        ctx.written.push(list_path.clone());
        let out = self.catalog.file_io().new_output(&list_path)?.writer().await?;
        let parent = meta.current_snapshot_id();
        let mut writer = match meta.format_version() {
            FormatVersion::V1 => ManifestListWriter::v1(out, ctx.snapshot_id, parent),
            FormatVersion::V2 => ManifestListWriter::v2(out, ctx.snapshot_id, parent, seq),
            FormatVersion::V3 => return Err(TableError::Unsupported("format v3 tables (row lineage)".into())),
        };
        writer.add_manifests(produced.manifests.into_iter())?;
        writer.close().await?;
        let snapshot = Snapshot::builder()
            .with_manifest_list(list_path)
            .with_snapshot_id(ctx.snapshot_id)
            .with_parent_snapshot_id(parent)
            .with_sequence_number(seq)
            .with_summary(Summary {
                operation: produced.operation,
                additional_properties: produced.summary,
            })
            .with_schema_id(schema_id)
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .build();
        let mut builder =
            TableMetadataBuilder::new_from_metadata(meta.clone(), Some(ctx.base.metadata_location.clone()));
        if let Some(u) = update {
            builder = u.apply(meta, builder)?;
        }
        let mut builder = builder.add_snapshot(snapshot)?.set_ref(
            MAIN_BRANCH,
            SnapshotReference::new(ctx.snapshot_id, SnapshotRetention::branch(None, None, None)),
        )?;
        if self.claim {
            builder = builder.set_properties(epoch::claim_properties(self.epoch))?;
        }
        let built = builder.build()?;
        Ok(self
            .remember(swap_and_clean(&self.catalog, ctx.base, built).await?)
            .is_some())
    }

    /// The table as it is now, without re-reading metadata this committer wrote itself.
    async fn load_base(&self) -> Result<TableState> {
        let cached = self.last.lock().expect("cache lock").clone();
        self.catalog.load_cached(&self.ident, cached).await
    }

    /// Keeps the state a successful swap made current (see `load_base`) and hands it back.
    fn remember(&self, state: Option<TableState>) -> Option<TableState> {
        if let Some(s) = &state {
            *self.last.lock().expect("cache lock") = Some(s.clone());
        }
        state
    }

    /// Commits a metadata-only change, with the same fencing and retries as a snapshot.
    pub async fn update_metadata<U: MetadataUpdate>(&self, update: &U) -> Result<()> {
        self.swap_metadata(|base, builder| Ok(Some((update.apply(base, builder)?, ()))))
            .await?;
        Ok(())
    }

    /// The retry loop of every metadata-only change: on a fresh (fenced-checked) base, `change`
    /// extends a builder (or returns `None`: nothing to do); the result is swapped in. Returns
    /// the base the change applied to, the state it made current, and `change`'s own output.
    pub(crate) async fn swap_metadata<T>(
        &self,
        change: impl Fn(&TableMetadata, TableMetadataBuilder) -> Result<Option<(TableMetadataBuilder, T)>>,
    ) -> Result<Option<(TableState, TableState, T)>> {
        for _ in 0..self.retry.attempts {
            let base = self.load_base().await?;
            let meta = base.metadata.as_ref();
            self.check_epoch(meta)?;
            let builder = TableMetadataBuilder::new_from_metadata(meta.clone(), Some(base.metadata_location.clone()));
            let Some((builder, out)) = change(meta, builder)? else {
                return Ok(None);
            };
            if let Some(after) = self.remember(swap_and_clean(&self.catalog, &base, builder.build()?).await?) {
                return Ok(Some((base, after, out)));
            }
            tokio::time::sleep(self.retry.backoff).await;
        }
        Err(TableError::Conflict {
            table: self.ident.to_string(),
            attempts: self.retry.attempts,
        })
    }

    /// Removes the files of an operation a fenced writer can never commit.
    async fn abandon<O: SnapshotOperation>(&self, op: &O) {
        let files = op.added_files();
        for path in &files {
            if let Err(e) = self.catalog.file_io().delete(path).await {
                tracing::warn!(table = %self.ident, %path, "could not remove a file of a fenced commit: {e}");
            }
        }
        if !files.is_empty() {
            tracing::info!(table = %self.ident, files = files.len(), "fenced: removed the files of the commit it can no longer make");
        }
    }

    fn check_epoch(&self, meta: &TableMetadata) -> Result<()> {
        let current = restore::table_epoch(meta)?;
        if current > self.epoch || (self.claim && current >= self.epoch) {
            return Err(TableError::Fenced {
                table: self.ident.to_string(),
                ours: self.epoch,
                current,
            });
        }
        Ok(())
    }
}

/// Swaps the catalog pointer to `built` and, once that landed, deletes the metadata files that
/// fell out of the metadata log, when the table asks for it (Java's
/// `write.metadata.delete-after-commit.enabled`). Without this a one-second freshness band
/// leaves 86,400 metadata files a day behind.
pub(crate) async fn swap_and_clean(
    catalog: &Catalog,
    base: &TableState,
    built: TableMetadataBuildResult,
) -> Result<Option<TableState>> {
    let Some(after) = catalog.commit(base, &built).await? else {
        return Ok(None);
    };
    let enabled = built
        .metadata
        .properties()
        .get(DELETE_AFTER_COMMIT)
        .is_some_and(|v| v == "true");
    if enabled && !catalog.server_writes_metadata() {
        for old in &built.expired_metadata_logs {
            if let Err(e) = catalog.file_io().delete(&old.metadata_file).await {
                tracing::warn!(file = %old.metadata_file, "could not delete old metadata file: {e}");
            }
        }
    }
    Ok(Some(after))
}

/// Table property: delete metadata files that fall out of the metadata log.
pub const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";
