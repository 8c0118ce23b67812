//! Read-only views of a table for `calve status`, the demo and tests.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use iceberg::spec::TableMetadata;
use iceberg::TableIdent;

use crate::catalog::Catalog;
use crate::commit::event_time::{EventTimeMarks, REOPENED_KEY};
use crate::commit::lost::{self, LostRange};
use crate::commit::restore::{self, Offsets};
use crate::commit::swap::RebuildMark;
use crate::error::Result;

/// A table at a glance.
#[derive(Debug, Clone)]
pub struct TableSummary {
    /// Current metadata file (what `iceberg_scan` in DuckDB takes).
    pub metadata_location: String,
    /// Table location.
    pub location: String,
    /// Snapshots retained.
    pub snapshots: usize,
    /// Size of the current metadata file, which every commit rewrites and every reader parses.
    pub metadata_bytes: u64,
    /// `total-records` of the current snapshot.
    pub records: u64,
    /// `total-data-files` of the current snapshot.
    pub data_files: u64,
    /// `total-delete-files` of the current snapshot.
    pub delete_files: u64,
    /// The restore point.
    pub restore: Option<Offsets>,
    /// Names of the current schema's top-level columns.
    pub columns: Vec<String>,
    /// The current schema's id (it changes with every schema change).
    pub schema_id: i32,
    /// When the current snapshot was committed (ms since the epoch).
    pub last_commit_ms: Option<i64>,
    /// Fields records carried that the table has no column for, by path, with how many
    /// records carried each since the table began.
    pub unknown_fields: BTreeMap<String, u64>,
    /// Records Kafka deleted before the table read them (the newest gaps).
    pub lost_records: Vec<LostRange>,
    /// The event-time watermark and complete-through the table last published, with the
    /// partitions its latest reopening commit reopened.
    pub event_time: EventTimeMarks,
    /// When that reopening commit was made (ms since the epoch).
    pub reopened_at_ms: Option<i64>,
    /// The rebuild under way, if any.
    pub rebuild: Option<RebuildMark>,
    /// The writer epoch of the table's owner (0: never claimed).
    pub writer_epoch: u64,
    /// The process that last claimed the table, as it named itself.
    pub committer: Option<String>,
}

/// A running total (`total-records`, `total-data-files` …) of the current snapshot's summary;
/// 0 for an empty table.
pub fn current_total(meta: &TableMetadata, key: &str) -> u64 {
    meta.current_snapshot()
        .and_then(|s| s.summary().additional_properties.get(key).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Summarises `ident`.
pub async fn summarize(catalog: &Catalog, ident: &TableIdent) -> Result<TableSummary> {
    let st = catalog.load(ident).await?;
    let m = st.metadata.as_ref();
    let total = |k: &str| current_total(m, k);
    let reopening = restore::ancestry(m).find_map(|s| {
        let reopened = s.summary().additional_properties.get(REOPENED_KEY)?;
        Some((s.timestamp_ms(), reopened.as_str()))
    });
    Ok(TableSummary {
        metadata_location: st.metadata_location.clone(),
        location: m.location().to_string(),
        snapshots: m.snapshots().count(),
        metadata_bytes: catalog
            .file_io()
            .new_input(&st.metadata_location)?
            .metadata()
            .await?
            .size,
        records: total("total-records"),
        data_files: total("total-data-files"),
        delete_files: total("total-delete-files"),
        restore: restore::restore_point(m)?,
        columns: m
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.name.clone())
            .collect(),
        schema_id: m.current_schema_id(),
        last_commit_ms: m.current_snapshot().map(|s| s.timestamp_ms()),
        unknown_fields: restore::unknown_fields(m)?,
        lost_records: lost::lost_records(m)?,
        event_time: EventTimeMarks {
            reopened: reopening
                .map(|(_, r)| r.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            ..EventTimeMarks::carried(m)
        },
        reopened_at_ms: reopening.map(|(at, _)| at),
        rebuild: RebuildMark::of(m)?,
        writer_epoch: restore::table_epoch(m)?,
        committer: m.properties().get(restore::COMMITTER_KEY).cloned(),
    })
}

/// Every live row of the table (for small tables: demo output and tests).
pub async fn scan_all(catalog: &Catalog, ident: &TableIdent) -> Result<Vec<RecordBatch>> {
    let table = catalog.iceberg_table(ident).await?;
    if table.metadata().current_snapshot().is_none() {
        return Ok(Vec::new());
    }
    let stream = table.scan().select_all().build()?.to_arrow().await?;
    Ok(stream.try_collect().await?)
}
