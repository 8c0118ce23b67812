//! Parsing a contract file into a validated [`Contract`].

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::types::*;
use crate::{ColumnType, TimeUnit};

/// The sections every contract must have. `table` says what the contract is about; the other
/// eight are the questions a team must answer before its topic becomes a table.
pub const SECTIONS: [&str; 9] = [
    "table",
    "schema",
    "keys",
    "event_time",
    "late_data",
    "deletes",
    "maintenance",
    "owner",
    "sla",
];

/// One thing wrong with a contract: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field (`event_time.column`), or the section name.
    pub path: String,
    /// What is wrong, in words a contract author can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A contract that could not be accepted, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("contract {source_name} is invalid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ContractError {
    /// The file (or label) the contract came from.
    pub source_name: String,
    /// Everything wrong with it.
    pub problems: Vec<Problem>,
}

/// A resolved column: the contract's column with its type parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedColumn {
    /// Column (and JSON field) name.
    pub name: String,
    /// Parsed type.
    pub ty: ColumnType,
    /// Whether the value must be present and non-null.
    pub required: bool,
    /// Column doc.
    pub doc: Option<String>,
    /// Unit of epoch numbers in (or nested in) a time or timestamp column.
    pub unit: Option<TimeUnit>,
    /// Decimal strings in (or nested in) this column are Kafka Connect's base64 bytes.
    pub decimal_bytes: bool,
}

/// A validated table contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    /// `[table]`
    pub table: TableSection,
    /// `[schema]`
    pub schema: SchemaSection,
    /// `[keys]`
    pub keys: KeysSection,
    /// `[event_time]`
    pub event_time: EventTimeSection,
    /// `[late_data]`
    pub late_data: LateDataSection,
    /// `[deletes]`
    pub deletes: DeletesSection,
    /// `[maintenance]`
    pub maintenance: MaintenanceSection,
    /// `[owner]`
    pub owner: OwnerSection,
    /// `[sla]`
    pub sla: SlaSection,
    columns: Vec<ResolvedColumn>,
}

/// Collects problems while sections are read, so one pass reports them all.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn section<T: DeserializeOwned>(&mut self, doc: &toml::Table, name: &str) -> Option<T> {
        let Some(value) = doc.get(name) else {
            self.push(
                name,
                format!("section [{name}] is missing; every contract must answer it"),
            );
            return None;
        };
        match value.clone().try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(name, e.message().trim().to_string());
                None
            }
        }
    }
}

impl Contract {
    /// Parses and validates contract text. `source_name` labels errors (usually the file path).
    pub fn parse(text: &str, source_name: &str) -> Result<Contract, ContractError> {
        let fail = |problems| ContractError {
            source_name: source_name.to_string(),
            problems,
        };
        let doc: toml::Table = toml::from_str(text).map_err(|e| {
            fail(vec![Problem {
                path: "(file)".into(),
                message: e.to_string().trim().into(),
            }])
        })?;
        let mut p = Problems::default();
        for key in doc.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
            p.push(
                key.as_str(),
                format!("unknown section; expected {}", SECTIONS.join(", ")),
            );
        }
        let table = p.section::<TableSection>(&doc, "table");
        let schema = p.section::<SchemaSection>(&doc, "schema");
        let keys = p.section::<KeysSection>(&doc, "keys");
        let event_time = p.section::<EventTimeSection>(&doc, "event_time");
        let late_data = p.section::<LateDataSection>(&doc, "late_data");
        let deletes = p.section::<DeletesSection>(&doc, "deletes");
        let maintenance = p.section::<MaintenanceSection>(&doc, "maintenance");
        let owner = p.section::<OwnerSection>(&doc, "owner");
        let sla = p.section::<SlaSection>(&doc, "sla");
        let (
            Some(table),
            Some(schema),
            Some(keys),
            Some(event_time),
            Some(late_data),
            Some(deletes),
            Some(maintenance),
            Some(owner),
            Some(sla),
        ) = (
            table,
            schema,
            keys,
            event_time,
            late_data,
            deletes,
            maintenance,
            owner,
            sla,
        )
        else {
            return Err(fail(p.0));
        };
        let columns = resolve_columns(&schema, &mut p);
        let contract = Contract {
            table,
            schema,
            keys,
            event_time,
            late_data,
            deletes,
            maintenance,
            owner,
            sla,
            columns,
        };
        contract.check_rules(&mut p);
        if p.0.is_empty() {
            Ok(contract.with_arrival_column())
        } else {
            Err(fail(p.0))
        }
    }

    /// Reads and validates a contract file.
    pub fn from_file(path: &std::path::Path) -> Result<Contract, ContractError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ContractError {
            source_name: name.clone(),
            problems: vec![Problem {
                path: "(file)".into(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Contract::parse(&text, &name)
    }

    /// The resolved columns, in contract order (under `late_data.policy =
    /// "current-partition"`, the arrival column calve adds comes last).
    pub fn columns(&self) -> &[ResolvedColumn] {
        &self.columns
    }

    /// Under `late_data.policy = "current-partition"`, the arrival column's name.
    pub fn arrival_column(&self) -> Option<&str> {
        (self.late_data.policy == LatePolicy::CurrentPartition).then(|| {
            self.late_data
                .arrival_column
                .as_deref()
                .unwrap_or(DEFAULT_ARRIVAL_COLUMN)
        })
    }

    /// The column the table is partitioned by (with `event_time.partition`): the arrival
    /// column under `current-partition`, else the event-time column.
    pub fn partition_column(&self) -> &str {
        self.arrival_column().unwrap_or(&self.event_time.column)
    }

    /// Adds the arrival column `current-partition` needs: optional, so that no decoder asks
    /// records for it; calve fills every row's from its Kafka record.
    fn with_arrival_column(mut self) -> Self {
        if let Some(name) = self.arrival_column().map(str::to_string) {
            self.columns.push(ResolvedColumn {
                name,
                ty: ColumnType::Timestamptz,
                required: false,
                doc: Some(
                    "when the record reached Kafka (its Kafka timestamp), filled by calve; the table is \
                     partitioned by it (late_data.policy = current-partition)"
                        .into(),
                ),
                unit: None,
                decimal_bytes: false,
            });
        }
        self
    }

    /// Declared renames, as (old name, new name).
    pub fn renames(&self) -> Vec<(String, String)> {
        self.schema
            .columns
            .iter()
            .filter_map(|c| Some((c.renamed_from.clone()?, c.name.clone())))
            .collect()
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ResolvedColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Namespace parts of the table name (`shop` for `shop.orders`).
    pub fn namespace(&self) -> Vec<String> {
        let parts: Vec<&str> = self.table.name.split('.').collect();
        parts[..parts.len() - 1].iter().map(|s| s.to_string()).collect()
    }

    /// The table's own name without namespace.
    pub fn table_name(&self) -> &str {
        self.table.name.rsplit('.').next().unwrap_or(&self.table.name)
    }

    /// Name of the dead-letter table beside this one (same namespace).
    pub fn dead_letter_table_name(&self) -> String {
        format!("{}__dlq", self.table_name())
    }

    /// Whether the table holds one live row per key (upserts) rather than appending.
    pub fn is_keyed(&self) -> bool {
        !self.keys.columns.is_empty()
    }

    /// Columns compacted files are sorted by: `maintenance.sort_by`, else the event-time column.
    pub fn sort_columns(&self) -> Vec<String> {
        match self.maintenance.sort_by.is_empty() {
            true => vec![self.event_time.column.clone()],
            false => self.maintenance.sort_by.clone(),
        }
    }

    fn check_rules(&self, p: &mut Problems) {
        check_table(&self.table, p);
        check_keys(self, p);
        check_event_time(self, p);
        check_policies(self, p);
        check_maintenance(&self.maintenance, p);
        check_sort_by(self, p);
        check_people(self, p);
        check_sla(&self.sla, p);
    }
}

fn resolve_columns(schema: &SchemaSection, p: &mut Problems) -> Vec<ResolvedColumn> {
    if schema.columns.is_empty() {
        p.push("schema.columns", "a table needs at least one column");
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, c) in schema.columns.iter().enumerate() {
        let path = format!("schema.columns[{i}]");
        if !is_identifier(&c.name) {
            p.push(
                format!("{path}.name"),
                format!(
                    "`{}` is not a column name (letters, digits, _; not starting with a digit)",
                    c.name
                ),
            );
        }
        if !seen.insert(c.name.to_ascii_lowercase()) {
            p.push(format!("{path}.name"), format!("column `{}` is declared twice", c.name));
        }
        if let Some(from) = &c.renamed_from {
            let clash = schema.columns.iter().any(|o| &o.name == from)
                || schema.columns[..i]
                    .iter()
                    .any(|o| o.renamed_from.as_ref() == Some(from));
            if !is_identifier(from) || from == &c.name || clash {
                p.push(
                    format!("{path}.renamed_from"),
                    format!(
                        "`{from}` must be a column name other than this column's and every other declared column's"
                    ),
                );
            }
        }
        let unit = match c.unit.as_deref().map(str::parse::<TimeUnit>) {
            None => None,
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                p.push(format!("{path}.unit"), e);
                None
            }
        };
        let decimal_bytes = match c.encoding.as_deref() {
            None => false,
            Some("connect-bytes") => true,
            Some(other) => {
                p.push(
                    format!("{path}.encoding"),
                    format!("unknown encoding `{other}`; the one there is: connect-bytes"),
                );
                false
            }
        };
        match c.ty.parse::<ColumnType>() {
            Ok(ty) if decimal_bytes && !ty.has_decimals() => p.push(
                format!("{path}.encoding"),
                format!(
                    "`{}` has type {ty}, which holds no decimal `connect-bytes` could apply to",
                    c.name
                ),
            ),
            Ok(ty) if unit.is_some() && !ty.has_epoch_numbers() => p.push(
                format!("{path}.unit"),
                format!(
                    "`{}` has type {ty}, which holds no time or timestamp a unit could apply to",
                    c.name
                ),
            ),
            Ok(ty) => out.push(ResolvedColumn {
                name: c.name.clone(),
                ty,
                required: c.required,
                doc: c.doc.clone(),
                unit,
                decimal_bytes,
            }),
            Err(e) => p.push(format!("{path}.type"), e),
        }
    }
    out
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_table(t: &TableSection, p: &mut Problems) {
    let parts: Vec<&str> = t.name.split('.').collect();
    if parts.len() < 2 || !parts.iter().all(|s| is_identifier(s)) {
        p.push(
            "table.name",
            format!("`{}` must be `namespace.table` of identifiers", t.name),
        );
    }
    if t.name.ends_with("__dlq") {
        p.push(
            "table.name",
            "names ending in `__dlq` are reserved for dead-letter tables",
        );
    }
    if t.topic.trim().is_empty() {
        p.push("table.topic", "the topic must not be empty");
    }
}

fn check_keys(c: &Contract, p: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, k) in c.keys.columns.iter().enumerate() {
        let path = format!("keys.columns[{i}]");
        if !seen.insert(k) {
            p.push(&path, format!("key column `{k}` is listed twice"));
        }
        match c.column(k) {
            None => p.push(&path, format!("`{k}` is not a column of [schema]")),
            Some(col) if !col.required => p.push(
                &path,
                format!(
                    "key column `{k}` must be `required = true`: a row without its key cannot be updated or deleted"
                ),
            ),
            Some(col) if col.ty.is_nested() => p.push(
                &path,
                format!("key column `{k}` is a {}; a key is made of primitive columns", col.ty),
            ),
            Some(_) => {}
        }
    }
    if c.table.format.is_debezium() && c.keys.columns.is_empty() {
        p.push(
            "keys.columns",
            "formats `debezium-json` and `debezium-avro` need the table's key columns: change events update and delete rows by key",
        );
    }
    if c.keys.from_kafka_key && c.keys.columns.is_empty() {
        p.push(
            "keys.from_kafka_key",
            "name the key columns the Kafka key carries in keys.columns",
        );
    }
    if c.keys.kafka_key_format == KafkaKeyFormat::Registry {
        if !c.keys.from_kafka_key {
            p.push(
                "keys.kafka_key_format",
                "`registry` says how the Kafka key carries the business key: set keys.from_kafka_key = true",
            );
        }
        if !c.table.format.uses_registry() || c.table.format.is_debezium() {
            p.push(
                "keys.kafka_key_format",
                "`registry` keys need a registry format whose tombstones delete by Kafka key: `avro`, `protobuf` or `json-schema`",
            );
        }
    }
}

fn check_event_time(c: &Contract, p: &mut Problems) {
    let et = &c.event_time;
    match c.column(&et.column) {
        None => p.push(
            "event_time.column",
            format!("`{}` is not a column of [schema]", et.column),
        ),
        Some(col) if !col.ty.is_temporal() => p.push(
            "event_time.column",
            format!(
                "`{}` has type {}; event time needs date, timestamp or timestamptz",
                col.name, col.ty
            ),
        ),
        // Under `current-partition` the grain applies to the (timestamptz) arrival column.
        Some(col)
            if col.ty == ColumnType::Date
                && et.partition == PartitionGrain::Hour
                && c.late_data.policy != LatePolicy::CurrentPartition =>
        {
            p.push(
                "event_time.partition",
                format!("`{}` is a date, it cannot be partitioned by hour", col.name),
            )
        }
        Some(_) => {}
    }
}

fn check_policies(c: &Contract, p: &mut Problems) {
    match (c.late_data.policy, &c.late_data.arrival_column) {
        (LatePolicy::CurrentPartition, _) => {
            let arrival = c.arrival_column().unwrap_or(DEFAULT_ARRIVAL_COLUMN);
            // Column names are compared as readers compare them: without case.
            let clash = c.schema.columns.iter().find(|col| {
                col.name.eq_ignore_ascii_case(arrival)
                    || col
                        .renamed_from
                        .as_deref()
                        .is_some_and(|old| old.eq_ignore_ascii_case(arrival))
            });
            if !is_identifier(arrival) {
                p.push(
                    "late_data.arrival_column",
                    format!("`{arrival}` is not a column name (letters, digits and _, not starting with a digit)"),
                );
            } else if let Some(col) = clash {
                p.push(
                    "late_data.arrival_column",
                    format!(
                        "`{}` is (or was) a column of [schema]; calve adds the arrival column itself, \
                         so name it something else (late_data.arrival_column)",
                        col.name
                    ),
                );
            }
        }
        (_, Some(_)) => p.push(
            "late_data.arrival_column",
            "only `policy = \"current-partition\"` partitions by arrival time; remove it",
        ),
        (_, None) => {}
    }
    if c.deletes.tombstone == TombstonePolicy::DeleteRow && !c.is_keyed() {
        p.push(
            "deletes.tombstone",
            "`delete-row` needs a business key in [keys]; an append-only table has no row to delete",
        );
    } else if c.deletes.tombstone == TombstonePolicy::DeleteRow
        && !c.keys.from_kafka_key
        && !c.table.format.is_debezium()
    {
        p.push(
            "deletes.tombstone",
            "`delete-row` needs keys.from_kafka_key = true: a tombstone has no value, only its Kafka key says which row it deletes",
        );
    }
}

fn check_maintenance(m: &MaintenanceSection, p: &mut Problems) {
    if m.target_file_size.0 < 1 << 20 {
        p.push(
            "maintenance.target_file_size",
            format!("{} is below the 1 MiB minimum", m.target_file_size),
        );
    }
    if m.keep_snapshots.min < 1 {
        p.push(
            "maintenance.keep_snapshots.min",
            "at least one snapshot must be kept (it carries the restore point)",
        );
    }
    if let Some(max) = m.keep_snapshots.max.filter(|max| *max < m.keep_snapshots.min) {
        p.push(
            "maintenance.keep_snapshots.max",
            format!("{max} is below min = {}", m.keep_snapshots.min),
        );
    }
    if m.orphan_min_age.0 < Duration::from_secs(3600) {
        p.push(
            "maintenance.orphan_min_age",
            format!(
                "{} is too short: a file being written by an uncommitted writer could be deleted; use at least 1h",
                m.orphan_min_age
            ),
        );
    }
    if m.budget.bytes == 0 {
        p.push(
            "maintenance.budget",
            "a zero budget means the table is never maintained",
        );
    }
    if m.max_concurrent_rewrites == 0 {
        p.push(
            "maintenance.max_concurrent_rewrites",
            "at least one rewrite must be allowed",
        );
    }
    if !(0.0..=1.0).contains(&m.rewrite_delete_ratio) {
        p.push(
            "maintenance.rewrite_delete_ratio",
            format!("{} is not a share between 0 and 1", m.rewrite_delete_ratio),
        );
    }
}

fn check_sort_by(c: &Contract, p: &mut Problems) {
    for (i, col) in c.maintenance.sort_by.iter().enumerate() {
        let arrival = c.arrival_column() == Some(col.as_str());
        if !arrival && !c.schema.columns.iter().any(|s| &s.name == col) {
            p.push(
                format!("maintenance.sort_by[{i}]"),
                format!("`{col}` is not a column of [schema]"),
            );
        }
    }
}

fn check_people(c: &Contract, p: &mut Problems) {
    for (path, v) in [
        ("owner.team", &c.owner.team),
        ("owner.contact", &c.owner.contact),
        ("schema.approver", &c.schema.approver),
    ] {
        if v.trim().is_empty() {
            p.push(path, "must name someone");
        }
    }
}

fn check_sla(s: &SlaSection, p: &mut Problems) {
    let f = s.freshness.0;
    if f < Duration::from_secs(1) || f > Duration::from_secs(86_400) {
        p.push(
            "sla.freshness",
            format!("{} is outside the band calve offers (1s to 24h)", s.freshness),
        );
    }
}
