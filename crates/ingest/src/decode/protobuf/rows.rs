//! Decoded Protobuf messages → an Arrow batch of their writer's schema, column by column,
//! each column walking its field through all the messages at once (nested messages, lists
//! and maps recursively).
//!
//! A value that has no Arrow value of its column's type (a `uint64` beyond a long, a
//! Timestamp beyond 64-bit microseconds, a `google.type.Date` that is no whole date — a year,
//! month or day of 0 —, a `TimeOfDay` of 24:00 or a leap second) fails the batch with its
//! column path; the caller then builds the messages one by one, so only the record that
//! holds it is set aside.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array, Int64Array, ListArray, MapArray,
    RecordBatch, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, SchemaRef};
use prost_reflect::{DynamicMessage, Value};

use super::schema::{Member, Shape};

/// Why a message has no row: the column path and the reason.
pub type RowError = (String, String);

type Values<'a> = Vec<Option<Cow<'a, Value>>>;

/// The rows of `messages` (all of the message whose members are `members`) in `schema`.
pub fn batch(messages: &[&DynamicMessage], members: &[Member], schema: &SchemaRef) -> Result<RecordBatch, RowError> {
    let columns = members
        .iter()
        .zip(schema.fields())
        .map(|(m, f)| {
            let values: Values<'_> = messages.iter().map(|msg| member(msg, m)).collect();
            array(&m.shape, f, &values, m.field.name())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(messages.len()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(|e| (String::new(), e.to_string()))
}

/// A member's value in `msg`: `None` when it tracks presence and is unset.
fn member<'a>(msg: &'a DynamicMessage, m: &Member) -> Option<Cow<'a, Value>> {
    if m.presence && !msg.has_field(&m.field) {
        return None;
    }
    Some(msg.get_field(&m.field))
}

fn array(shape: &Shape, field: &Field, values: &Values<'_>, path: &str) -> Result<ArrayRef, RowError> {
    let each = |f: fn(&Value) -> Option<i64>| -> Vec<Option<i64>> {
        values.iter().map(|v| v.as_deref().and_then(f)).collect()
    };
    Ok(match shape {
        Shape::Bool => Arc::new(
            values
                .iter()
                .map(|v| v.as_deref().and_then(Value::as_bool))
                .collect::<BooleanArray>(),
        ),
        Shape::I32 => Arc::new(
            values
                .iter()
                .map(|v| v.as_deref().and_then(Value::as_i32))
                .collect::<Int32Array>(),
        ),
        Shape::I64 => Arc::new(Int64Array::from(each(Value::as_i64))),
        Shape::U32 => Arc::new(Int64Array::from(each(|v| v.as_u32().map(i64::from)))),
        Shape::U64 => {
            let longs = values
                .iter()
                .map(|v| match v.as_deref().and_then(Value::as_u64) {
                    None => Ok(None),
                    Some(n) => i64::try_from(n)
                        .map(Some)
                        .map_err(|_| (path.to_string(), format!("{path}: {n} is beyond a long"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(Int64Array::from(longs))
        }
        Shape::F32 => Arc::new(
            values
                .iter()
                .map(|v| v.as_deref().and_then(Value::as_f32))
                .collect::<Float32Array>(),
        ),
        Shape::F64 => Arc::new(
            values
                .iter()
                .map(|v| v.as_deref().and_then(Value::as_f64))
                .collect::<Float64Array>(),
        ),
        Shape::Str => Arc::new(
            values
                .iter()
                .map(|v| v.as_deref().and_then(Value::as_str))
                .collect::<arrow_array::StringArray>(),
        ),
        Shape::Bytes => {
            let mut b = BinaryBuilder::new();
            for v in values {
                b.append_option(v.as_deref().and_then(Value::as_bytes));
            }
            Arc::new(b.finish())
        }
        Shape::Enum(e) => {
            let mut b = StringBuilder::new();
            for v in values {
                match v.as_deref().and_then(Value::as_enum_number) {
                    None => b.append_null(),
                    Some(n) => match e.get_value(n) {
                        Some(known) => b.append_value(known.name()),
                        None => b.append_value(n.to_string()),
                    },
                }
            }
            Arc::new(b.finish())
        }
        Shape::Timestamp => {
            Arc::new(TimestampMicrosecondArray::from(each_message(values, path, timestamp)?).with_timezone("+00:00"))
        }
        Shape::Date => Arc::new(Date32Array::from(each_message(values, path, date)?)),
        Shape::TimeOfDay => Arc::new(Time64MicrosecondArray::from(each_message(values, path, time_of_day)?)),
        Shape::Wrapper(inner) => {
            let unwrapped: Values<'_> = values
                .iter()
                .map(|v| {
                    v.as_deref()
                        .and_then(Value::as_message)
                        .and_then(|m| m.get_field_by_number(1))
                })
                .collect();
            array(inner, field, &unwrapped, path)?
        }
        Shape::Json => {
            let mut b = StringBuilder::new();
            for v in values {
                match v.as_deref().and_then(Value::as_message) {
                    None => b.append_null(),
                    Some(m) => b.append_value(
                        serde_json::to_string(m).map_err(|e| (path.to_string(), format!("{path}: {e}")))?,
                    ),
                }
            }
            Arc::new(b.finish())
        }
        Shape::Message(members) => {
            let DataType::Struct(fields) = field.data_type() else {
                return Err(unexpected(path, field));
            };
            let messages: Vec<Option<&DynamicMessage>> = values
                .iter()
                .map(|v| v.as_deref().and_then(Value::as_message))
                .collect();
            let children = members
                .iter()
                .zip(fields)
                .map(|(m, f)| {
                    let kids: Values<'_> = messages.iter().map(|msg| msg.and_then(|msg| member(msg, m))).collect();
                    array(&m.shape, f, &kids, &format!("{path}.{}", m.field.name()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let nulls = NullBuffer::from_iter(messages.iter().map(Option::is_some));
            let built = StructArray::try_new(fields.clone(), children, Some(nulls));
            Arc::new(built.map_err(|e| (path.to_string(), e.to_string()))?)
        }
        Shape::List(inner) => {
            let DataType::List(element) = field.data_type() else {
                return Err(unexpected(path, field));
            };
            let lists: Vec<Option<&[Value]>> = values.iter().map(|v| v.as_deref().and_then(Value::as_list)).collect();
            let items: Values<'_> = lists
                .iter()
                .flatten()
                .flat_map(|l| l.iter().map(|x| Some(Cow::Borrowed(x))))
                .collect();
            let offsets = OffsetBuffer::from_lengths(lists.iter().map(|l| l.map_or(0, <[Value]>::len)));
            let items = array(inner, element, &items, &format!("{path}[]"))?;
            let nulls = NullBuffer::from_iter(lists.iter().map(Option::is_some));
            let built = ListArray::try_new(element.clone(), offsets, items, Some(nulls));
            Arc::new(built.map_err(|e| (path.to_string(), e.to_string()))?)
        }
        Shape::Map(key, value) => {
            let DataType::Map(entries, _) = field.data_type() else {
                return Err(unexpected(path, field));
            };
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unexpected(path, field));
            };
            let maps: Vec<Option<Vec<(Value, &Value)>>> = values
                .iter()
                .map(|v| {
                    v.as_deref().and_then(Value::as_map).map(|m| {
                        // A map's order on the wire means nothing; sorted, the rows are stable.
                        let mut pairs: Vec<(Value, &Value)> =
                            m.iter().map(|(k, v)| (Value::from(k.clone()), v)).collect();
                        pairs.sort_by(|a, b| map_key_order(&a.0, &b.0));
                        pairs
                    })
                })
                .collect();
            let keys: Values<'_> = maps
                .iter()
                .flatten()
                .flatten()
                .map(|(k, _)| Some(Cow::Owned(k.clone())))
                .collect();
            let vals: Values<'_> = maps
                .iter()
                .flatten()
                .flatten()
                .map(|(_, v)| Some(Cow::Borrowed(*v)))
                .collect();
            let at = format!("{path}{{}}");
            let keys = array(key, &kv[0], &keys, &at)?;
            let vals = array(value, &kv[1], &vals, &at)?;
            let entries_array = StructArray::try_new(kv.clone(), vec![keys, vals], None)
                .map_err(|e| (path.to_string(), e.to_string()))?;
            let offsets = OffsetBuffer::from_lengths(maps.iter().map(|m| m.as_ref().map_or(0, Vec::len)));
            let nulls = NullBuffer::from_iter(maps.iter().map(Option::is_some));
            let built = MapArray::try_new(entries.clone(), offsets, entries_array, Some(nulls), false);
            Arc::new(built.map_err(|e| (path.to_string(), e.to_string()))?)
        }
    })
}

/// `read` of each message value (a well-known message such as a Timestamp), null where none.
fn each_message<T>(
    values: &Values<'_>,
    path: &str,
    read: fn(&DynamicMessage, &str) -> Result<T, RowError>,
) -> Result<Vec<Option<T>>, RowError> {
    values
        .iter()
        .map(|v| {
            v.as_deref()
                .and_then(Value::as_message)
                .map(|m| read(m, path))
                .transpose()
        })
        .collect()
}

fn map_key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::I32(a), Value::I32(b)) => a.cmp(b),
        (Value::I64(a), Value::I64(b)) => a.cmp(b),
        (Value::U32(a), Value::U32(b)) => a.cmp(b),
        (Value::U64(a), Value::U64(b)) => a.cmp(b),
        _ => std::cmp::Ordering::Equal,
    }
}

fn unexpected(path: &str, field: &Field) -> RowError {
    (
        path.to_string(),
        format!("{path}: unexpected Arrow type {}", field.data_type()),
    )
}

fn int_field(m: &DynamicMessage, number: u32) -> i64 {
    m.get_field_by_number(number)
        .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
        .unwrap_or(0)
}

/// Microseconds since the epoch of a `google.protobuf.Timestamp` (nanoseconds beyond the
/// microsecond are cut: Iceberg v2 keeps microseconds).
fn timestamp(m: &DynamicMessage, path: &str) -> Result<i64, RowError> {
    let (seconds, nanos) = (int_field(m, 1), int_field(m, 2));
    if !(0..1_000_000_000).contains(&nanos) {
        return Err((
            path.to_string(),
            format!("{path}: a Timestamp's nanos must be 0..1e9, not {nanos}"),
        ));
    }
    seconds
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(nanos / 1000))
        .ok_or_else(|| {
            (
                path.to_string(),
                format!("{path}: a Timestamp of {seconds} s is beyond microseconds"),
            )
        })
}

/// Days since the epoch of a `google.type.Date` (which must be a whole date).
fn date(m: &DynamicMessage, path: &str) -> Result<i32, RowError> {
    let (y, mo, d) = (int_field(m, 1), int_field(m, 2), int_field(m, 3));
    let day = i32::try_from(y)
        .ok()
        .zip(u32::try_from(mo).ok().zip(u32::try_from(d).ok()))
        .and_then(|(y, (mo, d))| chrono::NaiveDate::from_ymd_opt(y, mo, d))
        .filter(|_| y != 0)
        .ok_or_else(|| {
            (
                path.to_string(),
                format!("{path}: {y:04}-{mo:02}-{d:02} is not a whole date"),
            )
        })?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch");
    Ok((day - epoch).num_days() as i32)
}

/// Microseconds since midnight of a `google.type.TimeOfDay`.
fn time_of_day(m: &DynamicMessage, path: &str) -> Result<i64, RowError> {
    let (h, mi, s, n) = (int_field(m, 1), int_field(m, 2), int_field(m, 3), int_field(m, 4));
    if !((0..24).contains(&h) && (0..60).contains(&mi) && (0..60).contains(&s) && (0..1_000_000_000).contains(&n)) {
        return Err((
            path.to_string(),
            format!("{path}: {h}:{mi}:{s}.{n} is not a time of day"),
        ));
    }
    Ok(((h * 60 + mi) * 60 + s) * 1_000_000 + n / 1000)
}
