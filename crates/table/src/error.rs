//! The table crate's errors, each knowing whether a retry can help.

use calve_retry::{Classify, RetryClass};

use crate::fault::StorageFault;

/// Errors from catalog access, writing and committing.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Another committer changed the table between our read and our pointer swap, and the
    /// attempts allowed to re-validate and retry ran out.
    #[error("commit to {table} conflicted {attempts} times; giving up for now")]
    Conflict {
        /// The table.
        table: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A rewrite's inputs changed after it was planned; it is abandoned, never committed wrong.
    #[error("rewrite of {table} abandoned: {reason}")]
    RewriteConflict {
        /// The table.
        table: String,
        /// What changed.
        reason: String,
    },
    /// Row positions a row delta deletes were looked up before another writer rewrote or
    /// deleted files; the commit is refused (reopening rebuilds the key index).
    #[error("position deletes for {table} are stale: {reason}")]
    StaleDeletes {
        /// The table.
        table: String,
        /// Which snapshot made them stale.
        reason: String,
    },
    /// The table's schema changed after this commit's files were written with new columns:
    /// their field ids may no longer be the ones the table would give them.
    #[error("{table}: the schema changed under a commit that adds columns ({reason})")]
    SchemaMoved {
        /// The table.
        table: String,
        /// What changed.
        reason: String,
    },
    /// A commit that must start where the table stands (hand-offs gathered against it) found
    /// the table elsewhere: the hand-offs are judged again on the table as it is.
    #[error("{table}: the restore point moved under a commit of hand-offs ({reason})")]
    RestoreMoved {
        /// The table.
        table: String,
        /// Where it was expected and where it is.
        reason: String,
    },
    /// A rebuild's swap found the live table past the restore point the rebuild was brought
    /// to (its owner committed meanwhile): the rebuild catches up again and retries.
    #[error("{table}: the live table moved on before the rebuild could be swapped in ({reason})")]
    RebuildOvertaken {
        /// The table.
        table: String,
        /// Where it is now.
        reason: String,
    },
    /// The table's rebuild is not in the state a rebuild command expected (another rebuild
    /// is under way, it was abandoned meanwhile, its swap has begun).
    #[error("{table}: {reason}")]
    RebuildChanged {
        /// The table.
        table: String,
        /// What it found.
        reason: String,
    },
    /// A newer owner claimed the table; this process must stop writing it.
    #[error("fenced: {table} is owned by writer epoch {current}, this process holds epoch {ours}")]
    Fenced {
        /// The table.
        table: String,
        /// Our epoch.
        ours: u64,
        /// The epoch recorded in the table.
        current: u64,
    },
    /// The key index could not spill to or read from its local disk tier.
    #[error("key index spill: {0}")]
    KeyIndexSpill(String),
    /// The catalog database could not be reached or answered with an error.
    #[error("catalog: {0}")]
    Catalog(String),
    /// Reading or writing table files or metadata failed.
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// Data did not fit the table (schema mismatch, bad partition value).
    #[error("invalid data for {table}: {reason}")]
    InvalidData {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// Table state calve wrote (summary, properties) is unreadable: a person must look.
    #[error("corrupt calve state in {table}: {reason}")]
    CorruptState {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// The catalog refused a request for a reason a retry will not change (HTTP 4xx other
    /// than a commit conflict, a malformed answer).
    #[error("catalog refused: {0}")]
    Rejected(String),
    /// The configuration is wrong (bad catalog URL, unusable warehouse).
    #[error("configuration: {0}")]
    Config(String),
    /// Configuration asks for something this build cannot do.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl TableError {
    /// The storage fault behind this error (a full disk, a refused permission), if any.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        match self {
            TableError::Iceberg(e) => StorageFault::of(e),
            TableError::KeyIndexSpill(text) => StorageFault::of_text(text),
            // A catalog's refusals ("AccessDenied" from its own store, a socket's "Permission
            // denied") are the catalog's business; only its full disk is read as storage.
            TableError::Catalog(text) => StorageFault::of_text(text).filter(|f| *f == StorageFault::Full),
            _ => None,
        }
    }
}

impl Classify for TableError {
    fn class(&self) -> RetryClass {
        match self {
            // A person frees space or fixes permissions; then the table goes on by itself.
            e if e.storage_fault().is_some() => RetryClass::Temporary,
            TableError::Conflict { .. }
            | TableError::Catalog(_)
            | TableError::StaleDeletes { .. }
            | TableError::RebuildOvertaken { .. }
            | TableError::RestoreMoved { .. }
            | TableError::SchemaMoved { .. } => RetryClass::Temporary,
            // A full or failing local disk: the pipeline reopens and rebuilds when it clears.
            TableError::KeyIndexSpill(_) => RetryClass::Temporary,
            TableError::Iceberg(e) if e.retryable() => RetryClass::Temporary,
            // Storage hiccups (a full disk, a flaky object store) surface as unexpected IO.
            TableError::Iceberg(e) if e.kind() == iceberg::ErrorKind::Unexpected => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }
}

impl From<sqlx::Error> for TableError {
    fn from(e: sqlx::Error) -> Self {
        TableError::Catalog(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = TableError> = std::result::Result<T, E>;
