//! Swapping a rebuilt table in: the one commit that makes a rebuild what readers see.
//!
//! A rebuild stages its rows in a shadow table beside the live one (see the service's
//! `rebuild`), and the live table's owner keeps committing meanwhile. The two meet through
//! table properties of the live table, so neither needs to know where the other runs:
//!
//! - [`REBUILD_KEY`] (written by the rebuild): a rebuild is under way, where its files are, and
//!   — once it has caught up — until when it asks the live owner to pause (a lease it renews,
//!   so a rebuild that dies never stalls the table for longer than the lease).
//! - [`PAUSED_KEY`] (written by the live owner): it committed what it had buffered and will
//!   commit nothing until the swap or the lease's end; its restore point is final.
//!
//! The swap itself is one snapshot ([`ReplaceTable`] under [`SwapIn`]): every file of the live
//! table out, every file of the shadow in, the shadow's schema made current, the properties
//! above removed — and it is only committed when the live table still holds the restore point
//! the shadow was brought to, so no record is doubled or lost across it.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{
    DataContentType, DataFile, ManifestContentType, NestedFieldRef, Operation, SchemaRef, TableMetadata,
    TableMetadataBuilder,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event_time::EventTimeMarks;
use super::lost::LostRange;
use super::restore::Offsets;
use super::summary::SummaryBuilder;
use super::{MetadataUpdate, Produced, SnapshotContext, SnapshotOperation};
use crate::error::{Result, TableError};
use crate::read::live::live_files;

/// Table property (JSON [`RebuildMark`]): a rebuild of this table is under way.
pub const REBUILD_KEY: &str = "calve.rebuild";
/// Table property: the id of the rebuild the live owner paused for.
pub const PAUSED_KEY: &str = "calve.rebuild.paused";
/// Summary key: the snapshot that swapped in the rebuild of this id.
pub const SWAPPED_KEY: &str = "calve.rebuild.swapped";

/// A rebuild under way, as the live table records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildMark {
    /// Unique per rebuild; names its shadow tables' location.
    pub id: String,
    /// Where it re-reads the topic from, as asked (`earliest` or an instant).
    pub from: String,
    /// When it began (ms since the epoch).
    pub started_ms: i64,
    /// Until when the live owner should stay paused (ms since the epoch): set once the
    /// rebuild has caught up, renewed while it finishes.
    #[serde(default)]
    pub pause_until_ms: Option<i64>,
    /// The swap has begun (a table of the pair may already be swapped): the owner stays
    /// paused however long it takes, until the rebuild is run again to finish it.
    #[serde(default)]
    pub swapping: bool,
}

impl RebuildMark {
    /// The mark `meta` carries, if a rebuild is under way.
    pub fn of(meta: &TableMetadata) -> Result<Option<Self>> {
        let Some(raw) = meta.properties().get(REBUILD_KEY) else {
            return Ok(None);
        };
        serde_json::from_str(raw)
            .map(Some)
            .map_err(|e| TableError::CorruptState {
                table: meta.location().to_string(),
                reason: format!("unreadable {REBUILD_KEY}: {e}"),
            })
    }

    /// Whether the live owner should be paused at `now_ms`.
    pub fn asks_pause(&self, now_ms: i64) -> bool {
        self.swapping || self.pause_until_ms.is_some_and(|t| t > now_ms)
    }

    /// Where the shadow of the table at `table_location` keeps its files: under the live
    /// table's `data/`, so that the files the swap brings in are the live table's own, and
    /// those of an abandoned rebuild are its orphans (cleanup leaves them alone while the
    /// rebuild is under way).
    pub fn location(&self, table_location: &str) -> String {
        format!("{}/data/rebuild-{}", table_location.trim_end_matches('/'), self.id)
    }
}

/// The rebuild the live owner paused for, if it did.
pub fn paused_for(meta: &TableMetadata) -> Option<&str> {
    meta.properties().get(PAUSED_KEY).map(String::as_str)
}

/// Which rebuild mark a [`SetRebuildMark`] requires the table to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// None: a new rebuild begins.
    Nothing,
    /// This rebuild's.
    Rebuild(String),
    /// Whatever there is (a dead-letter table's mark mirrors its target table's).
    Any,
}

/// Sets the table's rebuild mark (`mark`), or with `None` removes it together with the
/// owner's pause. Checked against the table on every attempt: the mark there must be the one
/// `expect` names, and a mark whose swap has begun is never removed — so an abandon and a
/// swap cannot both happen.
#[derive(Debug, Clone)]
pub struct SetRebuildMark {
    /// The mark the table must carry.
    pub expect: Expect,
    /// The new mark.
    pub mark: Option<RebuildMark>,
}

impl MetadataUpdate for SetRebuildMark {
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        let now = RebuildMark::of(base)?;
        let changed = |reason: String| TableError::RebuildChanged {
            table: base.location().to_string(),
            reason,
        };
        let found = now.as_ref().map(|m| &m.id);
        let fits = match &self.expect {
            Expect::Nothing => found.is_none(),
            Expect::Rebuild(id) => found == Some(id),
            Expect::Any => true,
        };
        if !fits {
            return Err(changed(match (&now, &self.expect) {
                (Some(m), _) => format!("rebuild {} (from {}) is under way", m.id, m.from),
                (None, Expect::Rebuild(id)) => format!("rebuild {id} was abandoned or finished meanwhile"),
                (None, _) => "no rebuild is under way".into(),
            }));
        }
        match &self.mark {
            Some(mark) => {
                let raw = serde_json::to_string(mark).map_err(|e| TableError::Unsupported(e.to_string()))?;
                Ok(builder.set_properties(HashMap::from([(REBUILD_KEY.to_string(), raw)]))?)
            }
            None if now.as_ref().is_some_and(|m| m.swapping) => {
                Err(changed("its swap has begun; run the rebuild again to finish it".into()))
            }
            None => Ok(builder.remove_properties(&rebuild_keys(base))?),
        }
    }
}

/// The live owner's answer to rebuild `id`: it is paused, and commits nothing until the mark
/// stops asking. Refused unless the mark, as the table holds it now, asks for the pause.
#[derive(Debug, Clone)]
pub struct SetPaused {
    /// The rebuild answered.
    pub id: String,
    /// The time the lease is judged at (ms since the epoch).
    pub now_ms: i64,
}

impl MetadataUpdate for SetPaused {
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        let asks = RebuildMark::of(base)?.is_some_and(|m| m.id == self.id && m.asks_pause(self.now_ms));
        if !asks {
            return Err(TableError::RebuildChanged {
                table: base.location().to_string(),
                reason: format!("rebuild {} no longer asks the table to pause", self.id),
            });
        }
        Ok(builder.set_properties(HashMap::from([(PAUSED_KEY.to_string(), self.id.clone())]))?)
    }
}

/// The live owner withdraws its answer before it resumes — refused (it stays paused) when
/// the mark, as the table holds it now, still asks it to pause. So an answer in the table
/// always means an owner that is paused.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The time the lease is judged at (ms since the epoch).
    pub now_ms: i64,
}

impl MetadataUpdate for Resume {
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        if let Some(m) = RebuildMark::of(base)?.filter(|m| m.asks_pause(self.now_ms)) {
            return Err(TableError::RebuildChanged {
                table: base.location().to_string(),
                reason: format!("rebuild {} still asks the table to pause", m.id),
            });
        }
        match base.properties().contains_key(PAUSED_KEY) {
            true => Ok(builder.remove_properties(&[PAUSED_KEY.to_string()])?),
            false => Ok(builder),
        }
    }
}

fn rebuild_keys(base: &TableMetadata) -> Vec<String> {
    [REBUILD_KEY, PAUSED_KEY]
        .into_iter()
        .filter(|k| base.properties().contains_key(*k))
        .map(str::to_string)
        .collect()
}

/// Every content file of the table out, the shadow's in (operation `overwrite`). The new
/// files get the swap's sequence number, so the shadow's position deletes keep applying to
/// its data files and every later delete applies to all of them.
#[derive(Debug, Clone)]
pub struct ReplaceTable {
    /// The shadow's live data files and position-delete files.
    pub files: Vec<DataFile>,
}

impl SnapshotOperation for ReplaceTable {
    async fn produce(&self, ctx: &mut SnapshotContext<'_>, extra: &HashMap<String, String>) -> Result<Produced> {
        let meta = ctx.metadata();
        let old = live_files(ctx.catalog.file_io(), meta).await?;
        let mut summary = SummaryBuilder::for_table(meta);
        for f in old
            .data
            .iter()
            .chain(&old.position_deletes)
            .chain(&old.equality_deletes)
        {
            summary.removed(&f.file);
        }
        self.files.iter().for_each(|f| summary.added(f));
        let mut manifests = Vec::new();
        for content in [ManifestContentType::Data, ManifestContentType::Deletes] {
            let files: Vec<&DataFile> = self
                .files
                .iter()
                .filter(|f| (f.content_type() == DataContentType::Data) == (content == ManifestContentType::Data))
                .collect();
            manifests.extend(ctx.added_manifest(content, files).await?);
        }
        Ok(Produced {
            operation: Operation::Overwrite,
            manifests,
            summary: summary.build(extra),
        })
    }
}

/// What the swap commit carries besides files: the restore point it requires and keeps, and
/// the shadow's schema and committed state (unknown fields, lost records, event-time marks),
/// which replace the live table's because they describe the rows swapped in.
#[derive(Debug, Clone)]
pub struct SwapIn {
    /// The rebuild's id (the commit id is made from it, so a retry finds a swap that landed).
    pub id: String,
    /// Whether this swap ends the rebuild (the target table's: it removes the mark and the
    /// owner's answer). A dead-letter table keeps its mark until then, so orphan cleanup keeps
    /// away from its shadow's files while the target table's swap is still to come.
    pub ends_rebuild: bool,
    /// The restore point the live table must hold (re-checked on every attempt).
    pub expect: Offsets,
    /// The restore point it holds after the swap: the one the shadow was brought to (for a
    /// target table, `expect` itself).
    pub to: Offsets,
    /// The shadow's current schema.
    pub schema: SchemaRef,
    /// The shadow's unknown-field counts.
    pub unknown_fields: BTreeMap<String, u64>,
    /// The shadow's recorded gaps.
    pub lost_records: Vec<LostRange>,
    /// The shadow's event-time marks.
    pub event_time: EventTimeMarks,
}

impl SwapIn {
    /// The commit id of this swap.
    pub fn commit_id(&self) -> String {
        swap_commit_id(&self.id, &self.to)
    }
}

/// The commit id of the swap of rebuild `id` at restore point `to`: a dead-letter table
/// swapped at an earlier restore point than its target table's is swapped again.
pub fn swap_commit_id(id: &str, to: &Offsets) -> String {
    let digest = Sha256::digest(super::restore::format_offsets(to).as_bytes());
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("rebuild-{id}-{short}")
}

/// Whether the rebuild `id` was swapped into the table whose metadata is `meta` (at any
/// restore point).
pub fn swapped_in(meta: &TableMetadata, id: &str) -> bool {
    super::restore::ancestry(meta)
        .any(|s| s.summary().additional_properties.get(SWAPPED_KEY).map(String::as_str) == Some(id))
}

impl MetadataUpdate for SwapIn {
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        let builder = match base.current_schema().as_struct() == self.schema.as_struct() {
            true => builder,
            false => builder.add_current_schema(self.schema.as_ref().clone())?,
        };
        match self.ends_rebuild {
            true => Ok(builder.remove_properties(&rebuild_keys(base))?),
            false => Ok(builder),
        }
    }
}

/// Why the shadow `shadow` cannot replace `live`, if it cannot: a column of the live table
/// that the shadow lacks or knows by another field id (the live table changed its schema
/// during the rebuild), or another partitioning.
pub fn incompatibility(live: &TableMetadata, shadow: &TableMetadata) -> Option<String> {
    let theirs = shadow.current_schema();
    for field in live.current_schema().as_struct().fields() {
        if let Some(why) = field_mismatch(field, theirs.field_by_id(field.id)) {
            return Some(why);
        }
    }
    let shape = |m: &TableMetadata| -> Vec<(i32, String, String)> {
        m.default_partition_spec()
            .fields()
            .iter()
            .map(|f| (f.source_id, f.transform.to_string(), f.name.clone()))
            .collect()
    };
    (shape(live) != shape(shadow)).then(|| {
        "the live table is partitioned otherwise than the rebuilt one (its partitioning changed during the rebuild)"
            .to_string()
    })
}

fn field_mismatch(ours: &NestedFieldRef, theirs: Option<&NestedFieldRef>) -> Option<String> {
    match theirs {
        None => Some(format!(
            "the live table's column {} (field id {}) is not in the rebuilt table: the live table's schema changed during \
             the rebuild",
            ours.name, ours.id
        )),
        Some(t) if t.name != ours.name => Some(format!(
            "field id {} is {} in the live table and {} in the rebuilt one: the live table's schema changed during the \
             rebuild",
            ours.id, ours.name, t.name
        )),
        Some(_) => None,
    }
}
