//! Rows decoded with a writer schema → rows of the table: columns taken by name (structs by
//! field name, maps by position: key, value), cast where the writer's type is narrower or
//! another unit ([`super::plan`] has already said the cast loses nothing), null where the
//! writer lacks a column, and rebuilt with the table's fields so the batch carries the
//! table's field ids and nullability.
//!
//! Two things a schema cannot settle ahead are checked here, on the values: a null where the
//! table requires a value (the writer's field may be optional), and a decimal with more digits
//! than its column holds (arrow-avro does not check a decimal against its stated precision,
//! and Parquet would store a wrong number). A batch that fails is conformed again row by row
//! by the caller, and the failing rows are set aside with the path.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::Decimal128Builder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int32Type};
use arrow_array::{
    new_null_array, Array, ArrayRef, ListArray, MapArray, RecordBatch, StringArray, StructArray, UInt32Array,
    UnionArray,
};
use arrow_buffer::NullBuffer;
use arrow_cast::CastOptions;
use arrow_schema::{ArrowError, DataType, Field, SchemaRef, TimeUnit};
use calve_contract::ColumnType;

use super::plan::Fit;

/// Casts fail rather than turn a value they cannot take into null.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow_cast::display::FormatOptions::new(),
};

/// Why a batch did not conform (which row is found by conforming rows one by one).
#[derive(Debug)]
pub enum ConformError {
    /// A required value is null at this column path.
    Missing(String),
    /// A decimal at this column path has more digits than the column holds.
    Digits {
        /// Column path.
        path: String,
        /// The type that would hold it.
        needs: ColumnType,
    },
    /// Arrow refused the conversion (text that is no timestamp, say).
    Arrow(ArrowError),
}

impl From<ArrowError> for ConformError {
    fn from(e: ArrowError) -> Self {
        ConformError::Arrow(e)
    }
}

/// `batch` (a writer schema's rows) as rows of `schema`, as `fit` maps them; a column the
/// writer lacks is null.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef, fit: &Fit) -> Result<RecordBatch, ConformError> {
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .zip(&fit.sources)
        .map(|(field, source)| {
            let array = match source {
                Some(i) => conform_array(batch.column(*i), field, field.name(), &fit.units, None)?,
                None => new_null_array(field.data_type(), rows),
            };
            if !field.is_nullable() && array.null_count() > 0 {
                return Err(ConformError::Missing(field.name().clone()));
            }
            Ok(array)
        })
        .collect::<Result<Vec<_>, ConformError>>()?;
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

/// `array` as values of the table's `target` field at `path`; `ancestors` is the validity of
/// the structs around it in the same row (a null struct's children are not checked).
fn conform_array(
    array: &ArrayRef,
    target: &Field,
    path: &str,
    units: &HashMap<String, TimeUnit>,
    ancestors: Option<&NullBuffer>,
) -> Result<ArrayRef, ConformError> {
    match target.data_type() {
        DataType::Struct(fields) => {
            let from_union;
            let s = match array.as_any().downcast_ref::<UnionArray>() {
                Some(u) => {
                    from_union = union_to_struct(u)?;
                    &from_union
                }
                None => array
                    .as_any()
                    .downcast_ref::<StructArray>()
                    .ok_or_else(|| unexpected(array, target))?,
            };
            // arrow-avro fills the children of a null struct with nulls, and a non-null
            // struct inside it has no nulls of its own: the struct is null where any struct
            // around it is.
            let valid = NullBuffer::union(ancestors, s.nulls());
            let children = fields
                .iter()
                .map(|f| {
                    let at = format!("{path}.{}", f.name());
                    let child = match s.column_by_name(f.name()) {
                        Some(c) => conform_array(c, f, &at, units, valid.as_ref())?,
                        None => new_null_array(f.data_type(), s.len()),
                    };
                    required_within(&child, valid.as_ref(), f, &at)?;
                    Ok(child)
                })
                .collect::<Result<Vec<_>, ConformError>>()?;
            Ok(Arc::new(StructArray::try_new(fields.clone(), children, valid)?))
        }
        DataType::List(element) => {
            let Some(l) = array.as_any().downcast_ref::<ListArray>() else {
                return Err(unexpected(array, target));
            };
            let values = conform_array(l.values(), element, &format!("{path}[]"), units, None)?;
            if !element.is_nullable() && values.null_count() > 0 {
                return Err(missing(&format!("{path}[]")));
            }
            Ok(Arc::new(ListArray::try_new(
                element.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?))
        }
        DataType::Map(entries, ordered) => {
            let (Some(m), DataType::Struct(kv)) = (array.as_any().downcast_ref::<MapArray>(), entries.data_type())
            else {
                return Err(unexpected(array, target));
            };
            let (Some(tk), Some(tv)) = (kv.first(), kv.get(1)) else {
                return Err(unexpected(array, target));
            };
            let at = format!("{path}{{}}");
            let keys = conform_array(m.keys(), tk, &at, units, None)?;
            let values = conform_array(m.values(), tv, &at, units, None)?;
            if !tv.is_nullable() && values.null_count() > 0 {
                return Err(missing(&at));
            }
            let entries_array = StructArray::try_new(kv.clone(), vec![keys, values], None)?;
            Ok(Arc::new(MapArray::try_new(
                entries.clone(),
                m.offsets().clone(),
                entries_array,
                m.nulls().cloned(),
                *ordered,
            )?))
        }
        DataType::Decimal128(precision, scale) => {
            let cast = match array.data_type() {
                DataType::Struct(_) => variable_scale(array, *precision, *scale, path)?,
                _ => arrow_cast::cast_with_options(array, target.data_type(), &STRICT)?,
            };
            within_precision(&cast, *precision, *scale, path)?;
            Ok(cast)
        }
        DataType::Utf8 if array.data_type() == &DataType::FixedSizeBinary(16) => uuid_text(array),
        t if t == array.data_type() => Ok(array.clone()),
        t => match units.get(path) {
            Some(unit) => epoch(array, *unit, t),
            None => Ok(arrow_cast::cast_with_options(array, t, &STRICT)?),
        },
    }
}

/// Fails when a decimal has more digits than `precision`, saying what precision it needs.
fn within_precision(array: &ArrayRef, precision: u8, scale: i8, path: &str) -> Result<(), ConformError> {
    let decimals = array.as_primitive::<Decimal128Type>();
    if decimals.validate_decimal_precision(precision).is_ok() {
        return Ok(());
    }
    let digits = decimals
        .iter()
        .flatten()
        .map(|v| v.unsigned_abs().checked_ilog10().map_or(1, |d| d + 1))
        .max()
        .unwrap_or(1);
    Err(ConformError::Digits {
        path: path.to_string(),
        needs: ColumnType::Decimal {
            precision: digits,
            scale: scale.max(0) as u32,
        },
    })
}

/// Debezium's `VariableScaleDecimal` (`{scale, value}`: the unscaled value's big-endian
/// two's-complement bytes) at the column's scale; a value with more fraction digits than the
/// scale fails, it is never rounded.
fn variable_scale(array: &ArrayRef, precision: u8, scale: i8, path: &str) -> Result<ArrayRef, ConformError> {
    let s = array.as_struct();
    let (Some(scales), Some(values)) = (s.column_by_name("scale"), s.column_by_name("value")) else {
        return Err(ConformError::Arrow(ArrowError::SchemaError(format!(
            "{path}: not a VariableScaleDecimal"
        ))));
    };
    let (scales, values) = (scales.as_primitive::<Int32Type>(), values.as_binary::<i32>());
    let fail = |why: String| ConformError::Arrow(ArrowError::ComputeError(format!("{path}: {why}")));
    let mut out = Decimal128Builder::with_capacity(s.len());
    for row in 0..s.len() {
        if s.is_null(row) || values.is_null(row) || scales.is_null(row) {
            out.append_null();
            continue;
        }
        let bytes = values.value(row);
        if bytes.is_empty() || bytes.len() > 16 {
            let n = bytes.len();
            return Err(fail(format!(
                "a {n}-byte unscaled value is not one calve holds (1 to 16 bytes)"
            )));
        }
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
        let mut wide = [fill; 16];
        wide[16 - bytes.len()..].copy_from_slice(bytes);
        let unscaled = i128::from_be_bytes(wide);
        // In i64: a record's scale may be anything an int holds.
        let shift = scale as i64 - scales.value(row) as i64;
        let pow = |n: i64| u32::try_from(n.unsigned_abs()).ok().and_then(|n| 10i128.checked_pow(n));
        let value = match shift {
            0.. => pow(shift).and_then(|p| unscaled.checked_mul(p)),
            _ => pow(shift).filter(|p| unscaled % p == 0).map(|p| unscaled / p),
        };
        match value {
            Some(v) => out.append_value(v),
            None => {
                return Err(fail(format!(
                    "scale {} does not fit the column's scale {scale}",
                    scales.value(row)
                )))
            }
        }
    }
    Ok(Arc::new(out.finish().with_precision_and_scale(precision, scale)?))
}

/// A union's rows as the struct of its branches (see [`super::plan::union_struct`]): each row
/// fills the field of its branch, the others are null.
fn union_to_struct(u: &UnionArray) -> Result<StructArray, ConformError> {
    let DataType::Union(branches, _) = u.data_type() else {
        return Err(ConformError::Arrow(ArrowError::SchemaError("not a union".into())));
    };
    let (mut fields, mut columns) = (Vec::new(), Vec::new());
    // A row of the union's null branch is a null struct.
    let nulls: Vec<i8> = branches
        .iter()
        .filter(|(_, f)| f.data_type() == &DataType::Null)
        .map(|(id, _)| id)
        .collect();
    let valid = NullBuffer::from_iter((0..u.len()).map(|r| !nulls.contains(&u.type_id(r))));
    for (id, f) in branches.iter().filter(|(_, f)| f.data_type() != &DataType::Null) {
        let rows: UInt32Array = (0..u.len())
            .map(|r| (u.type_id(r) == id).then(|| u.value_offset(r) as u32))
            .collect();
        let column = arrow_select::take::take(u.child(id).as_ref(), &rows, None)?;
        fields.push(Field::new(
            super::plan::branch_name(f.name()),
            column.data_type().clone(),
            true,
        ));
        columns.push(column);
    }
    Ok(StructArray::try_new(
        fields.into(),
        columns,
        Some(valid).filter(|v| v.null_count() > 0),
    )?)
}

/// Avro uuids (16 bytes as arrow-avro reads them) as dashed text.
fn uuid_text(array: &ArrayRef) -> Result<ArrayRef, ConformError> {
    let bytes = array.as_fixed_size_binary();
    let text: StringArray = bytes
        .iter()
        .map(|b| {
            b.and_then(|b| uuid::Uuid::from_slice(b).ok())
                .map(|u| u.hyphenated().to_string())
        })
        .collect();
    Ok(Arc::new(text))
}

/// Epoch numbers of `unit` as the temporal type `t`.
fn epoch(array: &ArrayRef, unit: TimeUnit, t: &DataType) -> Result<ArrayRef, ConformError> {
    let cast = |a: &ArrayRef, to: &DataType| arrow_cast::cast_with_options(a, to, &STRICT);
    let numbers = cast(array, &DataType::Int64)?;
    let as_unit = match (t, unit) {
        (DataType::Time64(_) | DataType::Time32(_), TimeUnit::Second | TimeUnit::Millisecond) => {
            cast(&cast(&numbers, &DataType::Int32)?, &DataType::Time32(unit))?
        }
        (DataType::Time64(_) | DataType::Time32(_), _) => cast(&numbers, &DataType::Time64(unit))?,
        _ => cast(&numbers, &DataType::Timestamp(unit, None))?,
    };
    Ok(cast(&as_unit, t)?)
}

/// A required struct field is null in a row whose struct is not null.
fn required_within(child: &ArrayRef, parent: Option<&NullBuffer>, f: &Field, path: &str) -> Result<(), ConformError> {
    if f.is_nullable() || child.null_count() == 0 {
        return Ok(());
    }
    let Some(child_nulls) = child.logical_nulls() else {
        return Ok(());
    };
    let violated = match parent {
        None => true,
        Some(p) => child_nulls.iter().zip(p.iter()).any(|(c, p)| p && !c),
    };
    match violated {
        true => Err(missing(path)),
        false => Ok(()),
    }
}

fn missing(path: &str) -> ConformError {
    ConformError::Missing(path.to_string())
}

fn unexpected(array: &ArrayRef, target: &Field) -> ConformError {
    ConformError::Arrow(ArrowError::SchemaError(format!(
        "cannot read {} as {}",
        array.data_type(),
        target.data_type()
    )))
}
