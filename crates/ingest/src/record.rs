//! A Kafka record as calve keeps it between the source and the table.

use std::sync::Arc;

/// One consumed record, owned so it can outlive the consumer's buffers until commit.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaRecord {
    /// Topic (shared by every record of a source: one allocation per source, not per record).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in order (a header may lack a value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Kafka timestamp in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}
