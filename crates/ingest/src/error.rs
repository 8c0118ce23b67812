//! Ingest errors. Problems with a single record are not errors: they become dead letters.

use calve_retry::{Classify, RetryClass};

/// Errors that stop ingest for a table (never caused by one bad record).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A request failed and the client had said why: the broker refused calve
    /// (authentication, TLS) or cannot be reached.
    #[error("kafka: {request}; the client's last error: {client}")]
    Unreachable {
        /// The request's own error (often only "timed out").
        request: rdkafka::error::KafkaError,
        /// librdkafka's last error callback.
        client: String,
    },
    /// The topic does not exist (yet).
    #[error("topic {0} not found")]
    TopicMissing(String),
    /// Kafka configuration was refused.
    #[error("kafka configuration: {0}")]
    Config(String),
    /// A record of the topic reached the consumer's shared queue instead of its table's
    /// partition queue: the table reopens from its restore point and reads it again.
    #[error("a record of topic {0} was delivered outside its partition's queue; reading again from the table's restore point")]
    Strayed(String),
    /// Building Arrow data failed in a way no single record explains.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl Classify for IngestError {
    fn class(&self) -> RetryClass {
        match self {
            IngestError::Kafka(_)
            | IngestError::Unreachable { .. }
            | IngestError::TopicMissing(_)
            | IngestError::Strayed(_) => RetryClass::Temporary,
            IngestError::Config(_) | IngestError::Arrow(_) => RetryClass::Permanent,
        }
    }
}
