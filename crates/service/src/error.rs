//! Service errors, classified so the supervisor knows whether to restart a table's pipeline.

use calve_contract::ContractError;
use calve_ingest::registry::RegistryError;
use calve_ingest::IngestError;
use calve_retry::{Classify, RetryClass};
use calve_table::{StorageFault, TableError};

/// Why a table's pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `calve.toml` is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// One or more contracts are invalid.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Contracts(Vec<ContractError>),
    /// A local file calve keeps beside the tables (the erasure log) could not be written.
    #[error("io: {0}")]
    Io(String),
    /// The pipeline panicked (a bug); the table reopens from its restore point.
    #[error("the pipeline panicked: {0}")]
    Panicked(String),
    /// Iceberg side.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Kafka / decode side.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The schema registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The table is held for its approver (`on_breaking = "hold"`) and the run was asked to
    /// end rather than wait (`--until-caught-up`).
    #[error("{table}: held at {hold}, waiting for `calve schema approve|reject`")]
    Held {
        /// Table name.
        table: String,
        /// Where (`topic/partition@offset`).
        hold: String,
    },
    /// Kafka deleted records the table had not read, and the contract says to stop.
    #[error(
        "{table}: Kafka deleted records the table had not read ({gaps}); the contract says on_lost_records = \"stop\". \
         Set it to \"continue\" to read on from the first record Kafka holds (the gap is recorded in the table)"
    )]
    LostRecords {
        /// Table name.
        table: String,
        /// The gaps.
        gaps: String,
    },
    /// The table's restore point is past the end of a partition: the topic was recreated or
    /// truncated, and only a person can say which.
    #[error(
        "{table}: the table has read past the end of the topic ({what}); the topic was recreated or truncated \
         (an unclean leader election), and calve cannot tell which: start a new table, or move its restore point by hand"
    )]
    PastEnd {
        /// Table name.
        table: String,
        /// The partitions, with where the table reads next and where the broker ends.
        what: String,
    },
    /// The contract asks for behaviour this build does not have yet.
    #[error("{table}: {what} is not supported by this build yet")]
    Unsupported {
        /// Table name.
        table: String,
        /// What.
        what: String,
    },
}

impl ServiceError {
    /// Whether a newer process took the table over (its writer epoch fenced this one out).
    pub fn is_fenced(&self) -> bool {
        matches!(self, ServiceError::Table(TableError::Fenced { .. }))
    }

    /// The storage fault behind this error (a full disk, a refused permission), if any.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        match self {
            ServiceError::Table(e) => e.storage_fault(),
            ServiceError::Io(text) => StorageFault::of_text(text),
            _ => None,
        }
    }
}

impl Classify for ServiceError {
    fn class(&self) -> RetryClass {
        match self {
            ServiceError::Table(e) => e.class(),
            ServiceError::Ingest(e) => e.class(),
            ServiceError::Registry(e) => e.class(),
            ServiceError::Io(_) | ServiceError::Panicked(_) | ServiceError::PastEnd { .. } => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }
}

impl From<arrow_schema::ArrowError> for ServiceError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        ServiceError::Ingest(IngestError::Arrow(e))
    }
}
