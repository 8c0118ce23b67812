//! The dead-letter table's columns: defined once here and used by name on both sides, by the
//! decoder that fills them (`calve-ingest`) and by the catalog that creates the table
//! (`calve-table`). A dead-letter table is part of every contract's answer to "where do failed
//! records go", so its shape belongs with the contract, not with either side.
//!
//! The raw key and value are kept as bytes so a record can be replayed exactly as it arrived
//! once the reason is fixed.

use crate::{ColumnType, ResolvedColumn};

/// Kafka topic the record came from.
pub const TOPIC: &str = "topic";
/// Kafka partition.
pub const PARTITION: &str = "partition";
/// Kafka offset.
pub const OFFSET: &str = "offset";
/// The Kafka key, as it arrived.
pub const KEY: &str = "key";
/// The Kafka value, as it arrived.
pub const VALUE: &str = "value";
/// Kafka headers as a JSON object.
pub const HEADERS: &str = "headers";
/// Classification of the failure (`malformed-json`, `schema-mismatch`, …).
pub const ERROR_KIND: &str = "error_kind";
/// Human-readable reason.
pub const ERROR: &str = "error";
/// The record's Kafka timestamp.
pub const KAFKA_TIMESTAMP: &str = "kafka_timestamp";
/// When calve received the record; dead-letter tables are partitioned by its day.
pub const RECEIVED_AT: &str = "received_at";

/// The columns of every dead-letter table, in table order (field ids follow this order).
pub fn columns() -> Vec<ResolvedColumn> {
    let col = |name: &str, ty: ColumnType, required: bool, doc: Option<&str>| ResolvedColumn {
        name: name.to_string(),
        ty,
        required,
        doc: doc.map(String::from),
        unit: None,
        decimal_bytes: false,
    };
    vec![
        col(TOPIC, ColumnType::String, true, None),
        col(PARTITION, ColumnType::Int, true, None),
        col(OFFSET, ColumnType::Long, true, None),
        col(KEY, ColumnType::Binary, false, None),
        col(VALUE, ColumnType::Binary, false, None),
        col(
            HEADERS,
            ColumnType::String,
            false,
            Some("Kafka headers as a JSON object: UTF-8 values as strings, others as byte arrays"),
        ),
        col(ERROR_KIND, ColumnType::String, true, None),
        col(ERROR, ColumnType::String, true, None),
        col(KAFKA_TIMESTAMP, ColumnType::Timestamptz, false, None),
        col(RECEIVED_AT, ColumnType::Timestamptz, true, None),
    ]
}
