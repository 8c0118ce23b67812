//! Mapping contracts to Iceberg schemas and partition specs, and the dead-letter table's shape.
//!
//! Field ids are assigned in contract column order starting at 1, so the same contract always
//! produces the same schema and a table created by an earlier run matches.

use calve_contract::{ColumnType, Contract, PartitionGrain};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};

use crate::error::{Result, TableError};

/// The Iceberg type of a contract column type.
pub fn iceberg_type(ty: ColumnType) -> PrimitiveType {
    match ty {
        ColumnType::Boolean => PrimitiveType::Boolean,
        ColumnType::Int => PrimitiveType::Int,
        ColumnType::Long => PrimitiveType::Long,
        ColumnType::Float => PrimitiveType::Float,
        ColumnType::Double => PrimitiveType::Double,
        ColumnType::Decimal { precision, scale } => PrimitiveType::Decimal { precision, scale },
        ColumnType::Date => PrimitiveType::Date,
        ColumnType::Time => PrimitiveType::Time,
        ColumnType::Timestamp => PrimitiveType::Timestamp,
        ColumnType::Timestamptz => PrimitiveType::Timestamptz,
        ColumnType::String => PrimitiveType::String,
        ColumnType::Uuid => PrimitiveType::Uuid,
        ColumnType::Binary => PrimitiveType::Binary,
    }
}

/// The table schema a contract declares.
pub fn table_schema(contract: &Contract) -> Result<Schema> {
    let fields = contract.columns().iter().enumerate().map(|(i, c)| {
        let id = i as i32 + 1;
        let ty = Type::Primitive(iceberg_type(c.ty));
        let f = if c.required {
            NestedField::required(id, &c.name, ty)
        } else {
            NestedField::optional(id, &c.name, ty)
        };
        match &c.doc {
            Some(doc) => f.with_doc(doc.clone()).into(),
            None => f.into(),
        }
    });
    let key_ids = contract.keys.columns.iter().filter_map(|k| {
        contract
            .columns()
            .iter()
            .position(|c| &c.name == k)
            .map(|i| i as i32 + 1)
    });
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(key_ids)
        .build()
        .map_err(|e| invalid(&contract.table.name, e))
}

/// The partition spec for the contract's event-time column and grain.
pub fn partition_spec(contract: &Contract, schema: &Schema) -> Result<UnboundPartitionSpec> {
    let et = &contract.event_time;
    let transform = match et.partition {
        PartitionGrain::Hour => Transform::Hour,
        PartitionGrain::Day => Transform::Day,
        PartitionGrain::Month => Transform::Month,
        PartitionGrain::None => return Ok(UnboundPartitionSpec::builder().build()),
    };
    partition_by(schema, &et.column, transform, &contract.table.name)
}

fn partition_by(schema: &Schema, column: &str, transform: Transform, table: &str) -> Result<UnboundPartitionSpec> {
    let field = schema
        .field_by_name(column)
        .ok_or_else(|| invalid(table, format!("partition column {column} not in schema")))?;
    // Java's naming convention (`ts_day`), so specs look familiar in every engine.
    let name = format!("{column}_{}", format!("{transform}").to_ascii_lowercase());
    UnboundPartitionSpec::builder()
        .add_partition_field(field.id, name, transform)
        .map(|b| b.build())
        .map_err(|e| invalid(table, e))
}

/// Columns of every dead-letter table, in order. The raw key and value are kept as bytes so a
/// record can be replayed exactly as it arrived once the reason is fixed.
pub fn dead_letter_schema() -> Schema {
    let fields = [
        NestedField::required(1, "topic", Type::Primitive(PrimitiveType::String)),
        NestedField::required(2, "partition", Type::Primitive(PrimitiveType::Int)),
        NestedField::required(3, "offset", Type::Primitive(PrimitiveType::Long)),
        NestedField::optional(4, "key", Type::Primitive(PrimitiveType::Binary)),
        NestedField::optional(5, "value", Type::Primitive(PrimitiveType::Binary)),
        NestedField::optional(6, "headers", Type::Primitive(PrimitiveType::String))
            .with_doc("Kafka headers as a JSON object: UTF-8 values as strings, others as byte arrays"),
        NestedField::required(7, "error_kind", Type::Primitive(PrimitiveType::String)),
        NestedField::required(8, "error", Type::Primitive(PrimitiveType::String)),
        NestedField::optional(9, "kafka_timestamp", Type::Primitive(PrimitiveType::Timestamptz)),
        NestedField::required(10, "received_at", Type::Primitive(PrimitiveType::Timestamptz)),
    ];
    Schema::builder()
        .with_fields(fields.into_iter().map(Into::into))
        .build()
        .expect("the dead-letter schema is valid")
}

/// Dead letters are partitioned by the day they arrived, so old ones can be expired by day.
pub fn dead_letter_partition_spec(schema: &Schema) -> Result<UnboundPartitionSpec> {
    partition_by(schema, "received_at", Transform::Day, "dead-letter table")
}

fn invalid(table: &str, e: impl std::fmt::Display) -> TableError {
    TableError::InvalidData {
        table: table.to_string(),
        reason: e.to_string(),
    }
}
