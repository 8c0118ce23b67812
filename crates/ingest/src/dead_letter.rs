//! Dead letters: records that could not become rows, with the reason, bound for the
//! `<table>__dlq` Iceberg table. Keeping the raw key and value lets a fixed record be replayed.

use std::collections::HashMap;
use std::sync::Arc;

use calve_contract::dead_letter as col;

use arrow_array::builder::{
    Int32Builder, Int64Builder, LargeBinaryBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, SchemaRef};

use crate::record::KafkaRecord;

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// The value is not one JSON object.
    MalformedJson,
    /// A required field is missing or null.
    MissingRequired,
    /// A field's value does not fit its column type.
    SchemaMismatch,
    /// A null value, where the contract sends tombstones to the dead-letter table.
    Tombstone,
    /// Event time older than the contract's allowed lateness.
    Late,
    /// A tombstone whose Kafka key does not give the business key.
    BadKey,
    /// A field the contract does not declare, in a table whose evolution is `frozen`.
    UndeclaredField,
    /// The value is not Avro in the Confluent wire format, or its body does not decode with
    /// its writer schema.
    MalformedAvro,
    /// The value is not Protobuf in the Confluent wire format (magic byte, schema id, message
    /// indexes), or its body does not decode as its writer's message.
    MalformedProtobuf,
    /// The value's schema id is not in the registry, or names a schema calve cannot read.
    UnknownSchema,
    /// Routing this record panicked (a bug calve isolates: the record is set aside so the
    /// table goes on, and the message says what panicked).
    Panicked,
}

impl DeadLetterKind {
    /// Whether the record breaks the table's schema (rather than being malformed, late or a
    /// tombstone): what the contract's `on_breaking` decides about.
    pub fn is_breaking(&self) -> bool {
        matches!(
            self,
            DeadLetterKind::SchemaMismatch | DeadLetterKind::MissingRequired | DeadLetterKind::UndeclaredField
        )
    }

    /// The `error_kind` column value.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterKind::MalformedJson => "malformed-json",
            DeadLetterKind::MissingRequired => "missing-required",
            DeadLetterKind::SchemaMismatch => "schema-mismatch",
            DeadLetterKind::Tombstone => "tombstone",
            DeadLetterKind::Late => "late",
            DeadLetterKind::BadKey => "bad-key",
            DeadLetterKind::UndeclaredField => "undeclared-field",
            DeadLetterKind::Panicked => "panic",
            DeadLetterKind::MalformedAvro => "malformed-avro",
            DeadLetterKind::MalformedProtobuf => "malformed-protobuf",
            DeadLetterKind::UnknownSchema => "unknown-schema",
        }
    }
}

/// A record that goes to the dead-letter table.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The record as it arrived.
    pub record: KafkaRecord,
    /// Classification.
    pub kind: DeadLetterKind,
    /// Human-readable reason.
    pub error: String,
    /// The column path the record failed at (`""` when the failure is not one column's).
    pub path: String,
    /// When calve received it, microseconds since the epoch.
    pub received_at_us: i64,
    /// The Iceberg type of the record's value at `path`, when the decoder knows it without
    /// reading the value again (Avro: the writer schema's type): what a widening would need.
    pub shows: Option<calve_contract::ColumnType>,
}

/// Builds a batch of the dead-letter table's `schema`, filling each of
/// [`calve_contract::dead_letter`]'s columns by name, in whatever order the table has them.
pub fn dead_letters_to_batch(letters: &[DeadLetter], schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
    let n = letters.len();
    let mut topic = StringBuilder::with_capacity(n, n * 16);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut key = LargeBinaryBuilder::new();
    let mut value = LargeBinaryBuilder::new();
    let mut headers = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut kafka_ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("+00:00");
    let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("+00:00");
    for d in letters {
        let r = &d.record;
        topic.append_value(&r.topic);
        partition.append_value(r.partition);
        offset.append_value(r.offset);
        key.append_option(r.key.as_deref());
        value.append_option(r.value.as_deref());
        headers.append_option(headers_json(&r.headers));
        kind.append_value(d.kind.as_str());
        error.append_value(&d.error);
        kafka_ts.append_option(r.timestamp_ms.map(|ms| ms * 1000));
        received.append_value(d.received_at_us);
    }
    let mut by_name: HashMap<&str, ArrayRef> = HashMap::from([
        (col::TOPIC, Arc::new(topic.finish()) as ArrayRef),
        (col::PARTITION, Arc::new(partition.finish())),
        (col::OFFSET, Arc::new(offset.finish())),
        (col::KEY, Arc::new(key.finish())),
        (col::VALUE, Arc::new(value.finish())),
        (col::HEADERS, Arc::new(headers.finish())),
        (col::ERROR_KIND, Arc::new(kind.finish())),
        (col::ERROR, Arc::new(error.finish())),
        (col::KAFKA_TIMESTAMP, Arc::new(kafka_ts.finish())),
        (col::RECEIVED_AT, Arc::new(received.finish())),
    ]);
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            by_name
                .remove(f.name().as_str())
                .ok_or_else(|| ArrowError::SchemaError(format!("`{}` is not a dead-letter column", f.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

/// Headers as a JSON object; values are kept as UTF-8 when they are, else as a byte array.
fn headers_json(headers: &[(String, Option<Vec<u8>>)]) -> Option<String> {
    if headers.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| {
            let v = match v {
                None => serde_json::Value::Null,
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => serde_json::Value::String(s.to_string()),
                    Err(_) => serde_json::Value::from(b.clone()),
                },
            };
            (k.clone(), v)
        })
        .collect();
    Some(serde_json::Value::Object(map).to_string())
}
