//! The maintenance crate's errors, each knowing whether a later cycle can succeed.

use calve_retry::{Classify, RetryClass};
use calve_table::TableError;

/// Errors from a maintenance cycle.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    /// The table layer failed (catalog, files, a commit).
    #[error(transparent)]
    Table(#[from] TableError),
    /// Rows could not be sorted or combined while compacting.
    #[error("compacting {table}: {reason}")]
    Compact {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// The status file could not be written or read.
    #[error("maintenance status {path}: {reason}")]
    Status {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Classify for MaintainError {
    fn class(&self) -> RetryClass {
        match self {
            MaintainError::Table(e) => e.class(),
            MaintainError::Compact { .. } => RetryClass::Permanent,
            MaintainError::Status { .. } => RetryClass::Temporary,
        }
    }
}

impl From<iceberg::Error> for MaintainError {
    fn from(e: iceberg::Error) -> Self {
        MaintainError::Table(TableError::Iceberg(e))
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, MaintainError>;
