//! The contract's sections as typed values.
//!
//! Each struct is one TOML section; every field is documented because the contract is the
//! interface data teams write by hand. Unknown fields are refused so a misspelt option never
//! silently falls back to a default.

use serde::Deserialize;

use crate::units::{ByteRate, ByteSize, HumanDuration};

/// `[table]`: which topic feeds which table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSection {
    /// `namespace.table` (nested namespaces allowed: `a.b.table`).
    pub name: String,
    /// The Kafka topic the table is built from.
    pub topic: String,
    /// How record values are encoded.
    pub format: Format,
    /// What happens when the topic no longer holds records the table has not read (retention
    /// deleted them while calve was stopped or behind): `"stop"` (the default) stops the
    /// table until a person decides; `"continue"` reads on from the first record Kafka still
    /// has and records the gap in the snapshot summary (`calve.lost-records`). Either way it
    /// is logged as an error; a gap read past is counted in `calve_lost_records_total`.
    #[serde(default)]
    pub on_lost_records: OnLostRecords,
}

/// What a table does about records Kafka deleted before calve read them.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnLostRecords {
    /// Stop the table: nothing past the gap is committed until the contract says otherwise.
    #[default]
    Stop,
    /// Read on after the gap, recording it in the table.
    Continue,
}

/// Record value encodings calve decodes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One JSON object per record; fields are matched to columns by name.
    Json,
    /// Debezium change events (JSON converter, with or without the schema wrapper): `c`, `r`
    /// and `u` write the `after` image, `d` deletes the `before` image's key per
    /// `[deletes] tombstone`. Needs `[keys]`.
    DebeziumJson,
    /// Avro in the Confluent wire format (magic byte 0, schema id, body), each record read
    /// with its own writer schema from the registry in `calve.toml`'s `[registry]`.
    Avro,
    /// Debezium change events as Avro (Confluent's AvroConverter): the envelope of `json`'s
    /// Debezium, each record read with its writer schema from the registry. Needs `[keys]`.
    DebeziumAvro,
    /// JSON in the Confluent wire format (magic byte 0, schema id, JSON text) with its writer's
    /// JSON Schema in the registry: each record validated against it, its declared types
    /// (`format: date-time`, …) driving evolution.
    JsonSchema,
    /// Protobuf in the Confluent wire format (magic byte 0, schema id, message indexes, body),
    /// each record read with its writer's schema (`.proto`) from the registry.
    Protobuf,
}

impl Format {
    /// Values are Debezium change events.
    pub fn is_debezium(self) -> bool {
        matches!(self, Format::DebeziumJson | Format::DebeziumAvro)
    }

    /// Values are Avro with their writer schemas in a registry.
    pub fn is_avro(self) -> bool {
        matches!(self, Format::Avro | Format::DebeziumAvro)
    }

    /// Values carry a writer schema id, to be looked up in `[registry]`.
    pub fn uses_registry(self) -> bool {
        self.is_avro() || matches!(self, Format::JsonSchema | Format::Protobuf)
    }
}

/// `[schema]`: the columns and who may change them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaSection {
    /// The table's columns, in order.
    pub columns: Vec<Column>,
    /// Which schema changes apply without a person approving them.
    pub evolution: Evolution,
    /// Who approves breaking changes (a team or person, shown when a change is held).
    pub approver: String,
    /// What a breaking change met in the records does: a declared column's value of another
    /// type, a required column missing, and (under `evolution = "frozen"`) a field the
    /// contract does not declare.
    pub on_breaking: OnBreaking,
}

/// What happens to records that break the table's schema.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnBreaking {
    /// The table stops at the first such record (everything before it is committed, nothing
    /// after it; other tables go on) until the approver runs `calve schema approve` (apply the
    /// change calve proposes and go on) or `calve schema reject` (send the held records to the
    /// dead-letter table and go on).
    Hold,
    /// Such records go to the dead-letter table (kinds `schema-mismatch`, `missing-required`,
    /// `undeclared-field`) and the table goes on.
    DeadLetter,
}

/// One column of the table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name; also the JSON field name it is read from.
    pub name: String,
    /// Iceberg type: boolean, int, long, float, double, decimal(P,S), date, time, timestamp,
    /// timestamptz, string, uuid, binary, fixed[L], or nested: struct<name: type, …>,
    /// list<type>, map<key, value> (nested values optional unless followed by `not null`).
    #[serde(rename = "type")]
    pub ty: String,
    /// The unit of epoch numbers in a time or timestamp column, or in the time and timestamp
    /// fields nested in it: "s", "ms", "us" or "ns" (nanoseconds are truncated to Iceberg's
    /// microseconds). Without it such columns read ISO-8601 text only and a number is
    /// dead-lettered, since its unit would be a guess.
    #[serde(default)]
    pub unit: Option<String>,
    /// How decimal values in (or nested in) this column are written when they arrive as JSON
    /// strings: unset, a string must be decimal text (`"12.50"`); `"connect-bytes"`, it is Kafka
    /// Connect's / Debezium's base64 of the big-endian unscaled value, read at the column's
    /// scale (Debezium's default `decimal.handling.mode = precise`). JSON numbers are read as
    /// numbers either way.
    #[serde(default)]
    pub encoding: Option<String>,
    /// A record without this field (or with null) is a breaking record (see `on_breaking`).
    #[serde(default)]
    pub required: bool,
    /// The column's name before a rename: the table's column of that name is renamed to this
    /// one (keeping its Iceberg field id, so old files read on) once the approver approves,
    /// since readers that use the old name break. Without it, a renamed column reads as one
    /// dropped and one added.
    #[serde(default)]
    pub renamed_from: Option<String>,
    /// Free text stored as the Iceberg column doc.
    #[serde(default)]
    pub doc: Option<String>,
}

/// Which schema changes are applied automatically.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Evolution {
    /// New fields in events become optional columns and contract edits that add a column,
    /// widen a type or make a column optional apply on their own; breaking changes follow
    /// `on_breaking`.
    Additive,
    /// The table keeps the columns the contract declares and no others: fields of the events
    /// that the contract does not declare are not stored, and are counted per field in the
    /// snapshot summary and `calve status` (a table that takes a few columns of a wide event).
    /// Contract edits apply at start as under `additive`.
    DeclaredOnly,
    /// The table's columns are exactly the contract's: contract edits still apply at start,
    /// but a record carrying a field the contract does not declare is a breaking change and
    /// follows `on_breaking` (held, or dead-lettered as `undeclared-field`).
    Frozen,
}

/// `[keys]`: the business key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// Business key columns; empty means an append-only table.
    pub columns: Vec<String>,
    /// Whether the Kafka message key carries the business key: the values of `columns`, as a
    /// JSON object (`{"id": 7}`, optionally in a `{"schema", "payload"}` wrapper) or, for a
    /// single key column, the bare value (`7`, `"abc"` or raw text). Needed for a tombstone
    /// (null value) to say which row it deletes. By default the Kafka key is only a
    /// partitioning choice of the producer, so calve does not assume it.
    #[serde(default)]
    pub from_kafka_key: bool,
    /// How that Kafka key is encoded: `plain` (the default: UTF-8 text or JSON, as above) or
    /// `registry` (the Confluent framing, written by the registry serializer of the table's
    /// format — Avro for `avro`, Protobuf for `protobuf`, JSON Schema for `json-schema` — and
    /// read with its writer schema: a record or message by field name, an Avro key of a plain
    /// type as the single key column). Said, not guessed: an 8-byte number key (Kafka's
    /// `LongSerializer`) can begin like a framed one.
    #[serde(default)]
    pub kafka_key_format: KafkaKeyFormat,
}

/// How a Kafka key carrying the business key is encoded.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaKeyFormat {
    /// UTF-8 text or JSON.
    #[default]
    Plain,
    /// The Confluent framing of the table's registry format.
    Registry,
}

/// `[event_time]`: which field says when the event happened, and how the table is partitioned.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventTimeSection {
    /// A `timestamp`, `timestamptz` or `date` column.
    pub column: String,
    /// Partition transform applied to the column.
    pub partition: PartitionGrain,
}

/// Event-time partition transforms.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionGrain {
    /// `hour(column)`.
    Hour,
    /// `day(column)`.
    Day,
    /// `month(column)`.
    Month,
    /// Unpartitioned.
    None,
}

/// `[late_data]`: what happens to events older than the allowed lateness.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LateDataSection {
    /// The policy for late events.
    pub policy: LatePolicy,
    /// How far an event may be behind the table's event-time watermark (the event time all
    /// partitions read have reached) before it counts as late; also how long past a
    /// partition's end the watermark must get before the partition is declared complete.
    pub allowed_lateness: HumanDuration,
    /// Under `current-partition`: the column calve adds to the table and fills with each
    /// record's Kafka timestamp (when it reached Kafka), which the table is partitioned by
    /// (default [`DEFAULT_ARRIVAL_COLUMN`]). Not allowed under the other policies.
    #[serde(default)]
    pub arrival_column: Option<String>,
}

/// The arrival column's name when `late_data.arrival_column` does not give one.
pub const DEFAULT_ARRIVAL_COLUMN: &str = "arrived_at";

/// Late-data policies.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// Write the event into the (old) partition its event time belongs to; a partition already
    /// declared complete is reported reopened.
    Rewrite,
    /// Partition the table by arrival time (a column calve adds, `arrival_column`, holding
    /// each record's Kafka timestamp) and keep the event time as a plain column, which
    /// readers still prune on through its column statistics: every event, however late,
    /// lands in the partition of the time it arrived, and no complete partition is ever
    /// reopened.
    CurrentPartition,
    /// Send the event to the dead-letter table with error kind `late`.
    DeadLetter,
}

/// `[deletes]`: tombstones and erasure.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeletesSection {
    /// What a record with a null value means.
    pub tombstone: TombstonePolicy,
    /// How erasure requests are carried out.
    pub erasure: Erasure,
}

/// Tombstone handling.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TombstonePolicy {
    /// Delete the live row of the key (needs `[keys]`).
    DeleteRow,
    /// Skip tombstones; they are counted, not stored.
    Ignore,
    /// Send tombstones to the dead-letter table.
    DeadLetter,
}

/// Erasure modes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Erasure {
    /// Rewrite files and expire snapshots so the erased bytes are gone from storage.
    Physical,
    /// This table holds no personal data; erasure requests are refused.
    Disabled,
}

/// `[maintenance]`: what keeping the table fast may cost.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSection {
    /// Size data files are written and compacted towards.
    pub target_file_size: ByteSize,
    /// Snapshot retention.
    pub keep_snapshots: KeepSnapshots,
    /// Files not referenced by the table are deleted only when older than this.
    pub orphan_min_age: HumanDuration,
    /// Bytes maintenance may rewrite per unit of time.
    pub budget: ByteRate,
    /// Compaction jobs of this table that may run at once (default 1: maintenance shares the
    /// machine with ingestion).
    #[serde(default = "one")]
    pub max_concurrent_rewrites: u32,
    /// Columns compacted files are sorted by, so readers skip row groups and files on them
    /// (default: the event-time column; a table's own Iceberg sort order wins when it has one).
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// Share of a data file's rows that position deletes must have removed before compaction
    /// rewrites the file to apply them (default 0: any delete). Readers such as DuckDB pay
    /// several times a query's cost for every delete file, so the default keeps none; a
    /// table read by engines that merge deletes cheaply can trade them for less rewriting
    /// (e.g. 0.1). Deletes below the share are merged into one delete file per partition.
    #[serde(default)]
    pub rewrite_delete_ratio: f64,
}

fn one() -> u32 {
    1
}

/// Snapshot retention: keep at least `min`, and every snapshot younger than `max_age`, but no
/// more than `max`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepSnapshots {
    /// Snapshots always kept, however old.
    pub min: u32,
    /// Snapshots older than this (beyond `min`) are expired.
    pub max_age: HumanDuration,
    /// At most this many snapshots are kept, however young (optional): every retained
    /// snapshot is read by every reader and makes each commit dearer, so a short band with a
    /// long `max_age` needs a cap. `calve check` shows what a band and a retention imply.
    #[serde(default)]
    pub max: Option<u32>,
}

/// `[owner]`: who answers for the table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OwnerSection {
    /// Owning team.
    pub team: String,
    /// Where to reach them (channel, mail, pager).
    pub contact: String,
}

/// `[sla]`: what consumers of the table are promised.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlaSection {
    /// The freshness band: a commit happens at least this often (1s to 24h).
    pub freshness: HumanDuration,
    /// How consumers learn that an event-time partition is complete.
    pub completeness: Completeness,
}

/// Completeness signals.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Completeness {
    /// No completeness promise: readers see what has arrived.
    None,
    /// Every snapshot says `calve.complete-through`: each event-time partition ending at or
    /// before it is complete (the watermark has passed its end by the allowed lateness).
    Watermark,
}
