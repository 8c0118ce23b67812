//! The backlog of one table: what maintenance owes it, measured from the table itself.
//!
//! Every number is something a reader pays for: files opened per query, deletes merged,
//! manifests read, the size of the metadata file every engine parses first.

use calve_table::commit::ExpirePolicy;
use calve_table::read::live::{live_files, LiveFiles};
use calve_table::read::manifests::manifest_list;
use calve_table::read::{read_deletes, DeleteMap};
use calve_table::{Catalog, TableState};
use iceberg::spec::{ManifestContentType, TableMetadata};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::plan::{plan, Plan, PlanSettings};

/// What maintenance owes a table at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    /// Live data files.
    pub data_files: usize,
    /// Live data files under 3/4 of the target size.
    pub small_files: usize,
    /// Partitions holding data.
    pub partitions: usize,
    /// Live position-delete files.
    pub delete_files: usize,
    /// Rows those files delete.
    pub deleted_rows: u64,
    /// Partitions with delete files to merge.
    #[serde(default)]
    pub delete_merges: usize,
    /// Compaction jobs the planner would run with an unlimited budget.
    pub compaction_jobs: usize,
    /// Bytes those jobs would rewrite: the compaction debt.
    pub compaction_bytes: u64,
    /// Snapshots in the metadata.
    pub snapshots: usize,
    /// Of those, past the retention policy.
    pub expirable_snapshots: usize,
    /// Data manifests of the current snapshot.
    pub data_manifests: usize,
    /// Delete manifests of the current snapshot.
    pub delete_manifests: usize,
    /// Of those manifests, the ones still listing files a rewrite removed (DELETED entries,
    /// which every reader parses and skips until a later snapshot drops them).
    #[serde(default)]
    pub tombstoned_manifests: usize,
    /// Size of the current metadata.json.
    pub metadata_json_bytes: u64,
}

/// A table's files as maintenance sees them: the inputs of both the plan and the backlog.
pub struct Snapshot {
    /// The table state read.
    pub state: TableState,
    /// Its live files.
    pub live: LiveFiles,
    /// What its delete files delete.
    pub deletes: DeleteMap,
    /// The compaction plan over them.
    pub plan: Plan,
    /// The backlog.
    pub backlog: Backlog,
}

/// Reads the table and measures its backlog.
pub async fn measure(
    catalog: &Catalog,
    state: TableState,
    settings: &PlanSettings,
    keep: ExpirePolicy,
    now_ms: i64,
) -> Result<Snapshot> {
    let io = catalog.file_io();
    let meta = state.metadata.as_ref();
    let live = live_files(io, meta).await?;
    let deletes = read_deletes(io, &live).await?;
    let plan = plan(meta, &live, &deletes, settings);
    let manifests = count_manifests(catalog, meta).await?;
    let metadata_json_bytes = io.new_input(&state.metadata_location)?.metadata().await?.size;
    let backlog = Backlog {
        data_files: plan.data_files,
        small_files: plan.small_files,
        partitions: plan.partitions,
        delete_files: live.position_deletes.len(),
        deleted_rows: deletes.positions.values().map(|v| v.len() as u64).sum(),
        delete_merges: plan.delete_merges.len(),
        compaction_jobs: plan.jobs.len(),
        compaction_bytes: plan.debt_bytes(),
        snapshots: meta.snapshots().count(),
        expirable_snapshots: keep.expirable(meta, now_ms).len(),
        data_manifests: manifests.data,
        delete_manifests: manifests.deletes,
        tombstoned_manifests: manifests.tombstoned,
        metadata_json_bytes,
    };
    Ok(Snapshot {
        state,
        live,
        deletes,
        plan,
        backlog,
    })
}

/// The manifests the current snapshot lists, by kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManifestCounts {
    /// Data manifests.
    pub data: usize,
    /// Delete manifests.
    pub deletes: usize,
    /// Of both, the ones still listing files a rewrite removed.
    pub tombstoned: usize,
}

/// Counts the manifests of `meta`'s current snapshot from its manifest list alone (no
/// manifest is opened).
pub async fn count_manifests(catalog: &Catalog, meta: &TableMetadata) -> Result<ManifestCounts> {
    let mut n = ManifestCounts::default();
    if let Some(s) = meta.current_snapshot() {
        for m in manifest_list(catalog.file_io(), meta, s).await? {
            match m.content {
                ManifestContentType::Data => n.data += 1,
                ManifestContentType::Deletes => n.deletes += 1,
            }
            n.tombstoned += m.deleted_files_count.is_some_and(|c| c > 0) as usize;
        }
    }
    Ok(n)
}
