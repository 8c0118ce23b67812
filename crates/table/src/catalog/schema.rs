//! Mapping contracts to Iceberg schemas and partition specs, and the dead-letter table's shape.
//!
//! Field ids are assigned in contract column order starting at 1, so the same contract always
//! produces the same schema and a table created by an earlier run matches.

use calve_contract::{dead_letter, ColumnType, Contract, PartitionGrain, ResolvedColumn};
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
    schema_of(contract.columns(), &contract.keys.columns).map_err(|e| invalid(&contract.table.name, e))
}

/// A schema of `columns`, field ids assigned in column order from 1, with `keys` as its
/// identifier fields.
fn schema_of(columns: &[ResolvedColumn], keys: &[String]) -> iceberg::Result<Schema> {
    let fields = columns.iter().enumerate().map(|(i, c)| {
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
    let key_ids = keys
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k).map(|i| i as i32 + 1));
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(key_ids)
        .build()
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

/// The schema of every dead-letter table: [`calve_contract::dead_letter::columns`].
pub fn dead_letter_schema() -> Schema {
    schema_of(&dead_letter::columns(), &[]).expect("the dead-letter schema is valid")
}

/// Dead letters are partitioned by the day they arrived, so old ones can be expired by day.
pub fn dead_letter_partition_spec(schema: &Schema) -> Result<UnboundPartitionSpec> {
    partition_by(schema, dead_letter::RECEIVED_AT, Transform::Day, "dead-letter table")
}

fn invalid(table: &str, e: impl std::fmt::Display) -> TableError {
    TableError::InvalidData {
        table: table.to_string(),
        reason: e.to_string(),
    }
}
