//! Mapping contracts to Iceberg schemas and partition specs, and the dead-letter table's shape.
//!
//! Field ids are assigned in contract column order starting at 1, so the same contract always
//! produces the same schema and a table created by an earlier run matches.

use calve_contract::{dead_letter, ColumnType, Contract, Element, PartitionGrain, ResolvedColumn, StructField};
use std::sync::Arc;

use iceberg::spec::{
    ListType, MapType, NestedField, PrimitiveType, Schema, StructType, Transform, Type, UnboundPartitionSpec,
};

use crate::commit::table_is_looser;
use crate::error::{Result, TableError};

/// The Iceberg type of a contract column type; nested fields, elements, keys and values take
/// ids from `next_id` in depth-first order.
pub fn iceberg_type(ty: &ColumnType, next_id: &mut i32) -> Type {
    let mut id = || {
        *next_id += 1;
        *next_id
    };
    Type::Primitive(match ty {
        ColumnType::Boolean => PrimitiveType::Boolean,
        ColumnType::Int => PrimitiveType::Int,
        ColumnType::Long => PrimitiveType::Long,
        ColumnType::Float => PrimitiveType::Float,
        ColumnType::Double => PrimitiveType::Double,
        ColumnType::Decimal { precision, scale } => PrimitiveType::Decimal {
            precision: *precision,
            scale: *scale,
        },
        ColumnType::Date => PrimitiveType::Date,
        ColumnType::Time => PrimitiveType::Time,
        ColumnType::Timestamp => PrimitiveType::Timestamp,
        ColumnType::Timestamptz => PrimitiveType::Timestamptz,
        ColumnType::String => PrimitiveType::String,
        ColumnType::Uuid => PrimitiveType::Uuid,
        ColumnType::Binary => PrimitiveType::Binary,
        ColumnType::Fixed(len) => PrimitiveType::Fixed(*len as u64),
        ColumnType::Struct(fields) => {
            // Ids of a struct's own fields first, then what nests in them, as Iceberg assigns.
            let ids: Vec<i32> = fields.iter().map(|_| id()).collect();
            let nested = fields
                .iter()
                .zip(ids)
                .map(|(f, fid)| Arc::new(NestedField::new(fid, &f.name, iceberg_type(&f.ty, next_id), f.required)))
                .collect();
            return Type::Struct(StructType::new(nested));
        }
        ColumnType::List(e) => {
            let eid = id();
            let element = NestedField::list_element(eid, iceberg_type(&e.ty, next_id), e.required);
            return Type::List(ListType::new(Arc::new(element)));
        }
        ColumnType::Map { key, value } => {
            let (kid, vid) = (id(), id());
            let key = NestedField::map_key_element(kid, iceberg_type(key, next_id));
            let value = NestedField::map_value_element(vid, iceberg_type(&value.ty, next_id), value.required);
            return Type::Map(MapType::new(Arc::new(key), Arc::new(value)));
        }
    })
}

/// The contract type of an Iceberg type (what `calve check` and schema comparisons speak);
/// `None` for types a contract cannot declare (nanosecond timestamps, unknown future types).
pub fn column_type_of(ty: &Type) -> Option<ColumnType> {
    Some(match ty {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => ColumnType::Boolean,
            PrimitiveType::Int => ColumnType::Int,
            PrimitiveType::Long => ColumnType::Long,
            PrimitiveType::Float => ColumnType::Float,
            PrimitiveType::Double => ColumnType::Double,
            PrimitiveType::Decimal { precision, scale } => ColumnType::Decimal {
                precision: *precision,
                scale: *scale,
            },
            PrimitiveType::Date => ColumnType::Date,
            PrimitiveType::Time => ColumnType::Time,
            PrimitiveType::Timestamp => ColumnType::Timestamp,
            PrimitiveType::Timestamptz => ColumnType::Timestamptz,
            PrimitiveType::String => ColumnType::String,
            PrimitiveType::Uuid => ColumnType::Uuid,
            PrimitiveType::Binary => ColumnType::Binary,
            PrimitiveType::Fixed(len) => ColumnType::Fixed(u32::try_from(*len).ok()?),
            PrimitiveType::TimestampNs | PrimitiveType::TimestamptzNs => return None,
        },
        Type::Struct(s) => ColumnType::Struct(
            s.fields()
                .iter()
                .map(|f| {
                    Some(StructField {
                        name: f.name.clone(),
                        ty: column_type_of(&f.field_type)?,
                        required: f.required,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        ),
        Type::List(l) => ColumnType::List(Box::new(Element {
            ty: column_type_of(&l.element_field.field_type)?,
            required: l.element_field.required,
        })),
        Type::Map(m) => ColumnType::Map {
            key: Box::new(column_type_of(&m.key_field.field_type)?),
            value: Box::new(Element {
                ty: column_type_of(&m.value_field.field_type)?,
                required: m.value_field.required,
            }),
        },
    })
}

/// The contract's columns as rows of `table` are decoded with: the table's type where the
/// table's is looser (a widening, nested fields added from events or by an approval), not
/// required where `optional` (an approved change) names them. The table's columns the
/// contract does not list are [`columns_not_in`].
pub fn effective_columns(table: &Schema, contract: &[ResolvedColumn], optional: &[String]) -> Vec<ResolvedColumn> {
    contract
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(f) = table.as_struct().fields().iter().find(|f| f.name == c.name) {
                if let Some(t) = column_type_of(&f.field_type).filter(|_| table_is_looser(&c.ty, &f.field_type)) {
                    c.ty = t;
                }
            }
            c.required &= !optional.contains(&c.name);
            c
        })
        .collect()
}

/// How many fields calve added from events inside the table's struct columns (counted
/// against the cap of what it adds on its own, across restarts).
pub fn nested_fields_added(table: &Schema) -> usize {
    fn count(ty: &Type) -> usize {
        match ty {
            Type::Struct(st) => st
                .fields()
                .iter()
                .map(|f| usize::from(f.doc.as_deref() == Some(crate::commit::ADDED_FROM_EVENTS)) + count(&f.field_type))
                .sum(),
            Type::List(l) => count(&l.element_field.field_type),
            Type::Map(m) => count(&m.value_field.field_type),
            Type::Primitive(_) => 0,
        }
    }
    table.as_struct().fields().iter().map(|f| count(&f.field_type)).sum()
}

/// The table's columns the contract does not list (columns calve added from events under
/// `evolution = "additive"`; others are refused at start), typed from the table; none without
/// a type a contract can declare.
pub fn columns_not_in(table: &Schema, contract: &[ResolvedColumn]) -> Vec<ResolvedColumn> {
    table
        .as_struct()
        .fields()
        .iter()
        .filter(|f| !contract.iter().any(|c| c.name == f.name))
        .filter_map(|f| {
            Some(ResolvedColumn {
                name: f.name.clone(),
                ty: column_type_of(&f.field_type)?,
                required: f.required,
                doc: f.doc.clone(),
                unit: None,
                decimal_bytes: false,
            })
        })
        .collect()
}

/// The table schema a contract declares.
pub fn table_schema(contract: &Contract) -> Result<Schema> {
    schema_of(contract.columns(), &contract.keys.columns).map_err(|e| invalid(&contract.table.name, e))
}

/// A schema of `columns`, field ids assigned in column order from 1, with `keys` as its
/// identifier fields.
fn schema_of(columns: &[ResolvedColumn], keys: &[String]) -> iceberg::Result<Schema> {
    // Top-level columns keep ids 1..=n in contract order (tables created before nested types
    // existed match); nested ids follow.
    let mut next_id = columns.len() as i32;
    let fields: Vec<_> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = i as i32 + 1;
            let ty = iceberg_type(&c.ty, &mut next_id);
            let f = if c.required {
                NestedField::required(id, &c.name, ty)
            } else {
                NestedField::optional(id, &c.name, ty)
            };
            match &c.doc {
                Some(doc) => f.with_doc(doc.clone()).into(),
                None => f.into(),
            }
        })
        .collect();
    let key_ids = keys
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k).map(|i| i as i32 + 1));
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(key_ids)
        .build()
}

/// The partition spec for the contract's grain on its partition column: the event-time
/// column, or the arrival column under `late_data.policy = "current-partition"`.
pub fn partition_spec(contract: &Contract, schema: &Schema) -> Result<UnboundPartitionSpec> {
    let et = &contract.event_time;
    let transform = match et.partition {
        PartitionGrain::Hour => Transform::Hour,
        PartitionGrain::Day => Transform::Day,
        PartitionGrain::Month => Transform::Month,
        PartitionGrain::None => return Ok(UnboundPartitionSpec::builder().build()),
    };
    partition_by(schema, contract.partition_column(), transform, &contract.table.name)
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
