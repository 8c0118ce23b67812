//! Where a table's maintenance state is published: one small JSON file per table under
//! `<warehouse>/_calve/maintenance/`, rewritten after every cycle, read by `calve status`.
//!
//! A file (not a table property) because it changes every cycle and must not cost a commit,
//! and under the warehouse (not the table location) so orphan cleanup never sees it.

use bytes::Bytes;
use iceberg::io::FileIO;
use serde::{Deserialize, Serialize};

use crate::backlog::Backlog;
use crate::error::{MaintainError, Result};
use crate::signal::Behind;

/// The last cycle's view of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableStatus {
    /// Table identifier.
    pub table: String,
    /// When the cycle ended (RFC 3339).
    pub at: String,
    /// The backlog after the cycle.
    pub backlog: Backlog,
    /// The budget, as written in the contract.
    pub budget: String,
    /// Bytes the cycle rewrote.
    pub rewritten_bytes: u64,
    /// Jobs that waited for budget.
    pub deferred_jobs: usize,
    /// Set while the table falls behind.
    pub behind: Option<Behind>,
}

/// The status file of `table` under `warehouse`.
pub fn path(warehouse: &str, table: &str) -> String {
    format!("{}/_calve/maintenance/{table}.json", warehouse.trim_end_matches('/'))
}

/// Writes `status` for its table.
pub async fn write(io: &FileIO, warehouse: &str, status: &TableStatus) -> Result<()> {
    let p = path(warehouse, &status.table);
    let fail = |reason: String| MaintainError::Status {
        path: p.clone(),
        reason,
    };
    let json = serde_json::to_vec_pretty(status).map_err(|e| fail(e.to_string()))?;
    if let Some(dir) = std::path::Path::new(&p).parent().filter(|_| !p.contains("://")) {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    io.new_output(&p)
        .map_err(|e| fail(e.to_string()))?
        .write(Bytes::from(json))
        .await
        .map_err(|e| fail(e.to_string()))
}

/// Reads the status of `table`, if a cycle ever wrote one.
pub async fn read(io: &FileIO, warehouse: &str, table: &str) -> Result<Option<TableStatus>> {
    let p = path(warehouse, table);
    let fail = |reason: String| MaintainError::Status {
        path: p.clone(),
        reason,
    };
    if !io.exists(&p).await.map_err(|e| fail(e.to_string()))? {
        return Ok(None);
    }
    let bytes = io
        .new_input(&p)
        .map_err(|e| fail(e.to_string()))?
        .read()
        .await
        .map_err(|e| fail(e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| fail(e.to_string()))
}
