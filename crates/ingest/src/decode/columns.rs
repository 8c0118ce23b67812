//! Column buffers the JSON decoder appends to, one per table column and one per nested
//! field, element, key and value.
//!
//! Arrow's builders cannot take a row back, so these are plain vectors that can: every
//! buffer can be cut back to a row count ([`Column::truncate`]), which is how a record that
//! fails halfway (its third field does not fit) leaves no trace and the next record goes on
//! in the same buffers. A whole poll is decoded once into one set of buffers, and
//! [`Column::finish`] turns them into Arrow arrays of exactly the table's Arrow types (field
//! ids and nullability included).

use std::sync::Arc;

use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeBinaryArray, LargeBinaryArray, ListArray, MapArray, PrimitiveArray, StringArray,
    StructArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields};
use calve_contract::{ColumnType, TimeUnit};

/// How values of one column are read and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    /// `bytes`: strings are Kafka Connect's base64 bytes, not decimal text.
    Decimal {
        precision: u8,
        scale: i8,
        bytes: bool,
    },
    Date,
    Time {
        unit: Option<TimeUnit>,
    },
    Timestamp {
        unit: Option<TimeUnit>,
        utc: bool,
    },
    String,
    Uuid,
    Binary,
    Fixed(i32),
    Struct,
    List,
    Map,
}

/// What the contract says about reading a column beyond its type: the unit of its epoch
/// numbers and how its decimal strings are encoded (both reach into nested fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hints {
    pub unit: Option<TimeUnit>,
    pub decimal_bytes: bool,
    /// The contract requires the (top-level) column although the table lets it be null
    /// (Iceberg cannot make a column with rows required): enforced on new records.
    pub required: bool,
}

/// Values of one column (or nested field), with their validity.
#[derive(Debug)]
pub struct Column {
    /// Dotted path from the row (`address.zip`, `tags[]`, `attrs{}`), for error messages.
    pub path: String,
    pub kind: Kind,
    /// Whether a null is refused.
    pub required: bool,
    /// The Arrow field the finished array must match.
    pub field: FieldRef,
    pub valid: Vec<bool>,
    pub data: Data,
}

/// The storage of a column.
#[derive(Debug)]
pub enum Data {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I128(Vec<i128>),
    /// Variable-length bytes: offsets (one more than rows) into `bytes`.
    Bytes {
        offsets: Vec<i64>,
        bytes: Vec<u8>,
    },
    /// Fixed-length bytes, `width` per row.
    FixedBytes {
        width: usize,
        bytes: Vec<u8>,
    },
    /// A struct's fields, one row each per struct row.
    Struct(Vec<Column>),
    /// A list's elements: offsets into `child`.
    List {
        offsets: Vec<i32>,
        child: Box<Column>,
    },
    /// A map's entries: offsets into `keys` and `values`.
    Map {
        offsets: Vec<i32>,
        keys: Box<Column>,
        values: Box<Column>,
    },
}

impl Column {
    /// Buffers for a column of contract type `ty` stored as Arrow field `field`, or why the two
    /// do not agree.
    pub fn new(path: String, ty: &ColumnType, hints: Hints, field: &FieldRef) -> Result<Self, ArrowError> {
        let unit = hints.unit;
        let mismatch = || {
            ArrowError::SchemaError(format!(
                "column {path}: contract type {ty} does not match the table's Arrow type {}",
                field.data_type()
            ))
        };
        let (kind, data) = match (ty, field.data_type()) {
            (ColumnType::Boolean, DataType::Boolean) => (Kind::Boolean, Data::Bool(Vec::new())),
            (ColumnType::Int, DataType::Int32) => (Kind::Int, Data::I32(Vec::new())),
            (ColumnType::Long, DataType::Int64) => (Kind::Long, Data::I64(Vec::new())),
            (ColumnType::Float, DataType::Float32) => (Kind::Float, Data::F32(Vec::new())),
            (ColumnType::Double, DataType::Float64) => (Kind::Double, Data::F64(Vec::new())),
            (ColumnType::Decimal { .. }, DataType::Decimal128(p, s)) => (
                Kind::Decimal {
                    precision: *p,
                    scale: *s,
                    bytes: hints.decimal_bytes,
                },
                Data::I128(Vec::new()),
            ),
            (ColumnType::Date, DataType::Date32) => (Kind::Date, Data::I32(Vec::new())),
            (ColumnType::Time, DataType::Time64(arrow_schema::TimeUnit::Microsecond)) => {
                (Kind::Time { unit }, Data::I64(Vec::new()))
            }
            (
                ColumnType::Timestamp | ColumnType::Timestamptz,
                DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, tz),
            ) => (
                Kind::Timestamp {
                    unit,
                    utc: tz.is_some(),
                },
                Data::I64(Vec::new()),
            ),
            (ColumnType::String, DataType::Utf8) => (Kind::String, bytes()),
            (ColumnType::Binary, DataType::LargeBinary) => (Kind::Binary, bytes()),
            (ColumnType::Uuid, DataType::FixedSizeBinary(16)) => (Kind::Uuid, fixed(16)),
            (ColumnType::Fixed(n), DataType::FixedSizeBinary(w)) if *n as i32 == *w => {
                (Kind::Fixed(*w), fixed(*w as usize))
            }
            // Children in the table's (Arrow) field order: `finish` pairs them with its fields.
            (ColumnType::Struct(fields), DataType::Struct(arrow_fields)) => {
                let children = arrow_fields
                    .iter()
                    .map(|af| {
                        let f = fields.iter().find(|f| &f.name == af.name()).ok_or_else(mismatch)?;
                        Column::new(format!("{path}.{}", f.name), &f.ty, hints, af)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if children.len() != fields.len() {
                    return Err(mismatch());
                }
                (Kind::Struct, Data::Struct(children))
            }
            (ColumnType::List(element), DataType::List(af)) => {
                let child = Column::new(format!("{path}[]"), &element.ty, hints, af)?;
                (
                    Kind::List,
                    Data::List {
                        offsets: vec![0],
                        child: Box::new(child),
                    },
                )
            }
            (ColumnType::Map { key, value }, DataType::Map(entries, _)) => {
                let DataType::Struct(kv) = entries.data_type() else {
                    return Err(mismatch());
                };
                let [kf, vf] = kv.iter().collect::<Vec<_>>()[..] else {
                    return Err(mismatch());
                };
                let keys = Column::new(format!("{path}{{key}}"), key, hints, kf)?;
                let values = Column::new(format!("{path}{{}}"), &value.ty, hints, vf)?;
                (
                    Kind::Map,
                    Data::Map {
                        offsets: vec![0],
                        keys: Box::new(keys),
                        values: Box::new(values),
                    },
                )
            }
            _ => return Err(mismatch()),
        };
        Ok(Column {
            path,
            kind,
            required: !field.is_nullable(),
            field: field.clone(),
            valid: Vec::new(),
            data,
        })
    }

    /// The row of a table: a required struct of its columns.
    pub fn row(columns: Vec<Column>, fields: &Fields) -> Column {
        Column {
            path: String::new(),
            kind: Kind::Struct,
            required: true,
            field: Arc::new(Field::new("", DataType::Struct(fields.clone()), false)),
            valid: Vec::new(),
            data: Data::Struct(columns),
        }
    }

    /// Whether the last value equals one of those from index `first` on (map keys: a key must
    /// not repeat within one map).
    pub fn repeats_last(&self, first: usize) -> bool {
        let n = self.len();
        if n == 0 || first + 1 >= n {
            return false;
        }
        let last = n - 1;
        match &self.data {
            Data::Bool(v) => v[first..last].contains(&v[last]),
            Data::I32(v) => v[first..last].contains(&v[last]),
            Data::I64(v) => v[first..last].contains(&v[last]),
            Data::I128(v) => v[first..last].contains(&v[last]),
            Data::F32(v) => v[first..last].iter().any(|x| x.to_bits() == v[last].to_bits()),
            Data::F64(v) => v[first..last].iter().any(|x| x.to_bits() == v[last].to_bits()),
            Data::Bytes { offsets, bytes } => {
                let at = |i: usize| &bytes[offsets[i] as usize..offsets[i + 1] as usize];
                (first..last).any(|i| at(i) == at(last))
            }
            Data::FixedBytes { width, bytes } => {
                let at = |i: usize| &bytes[i * width..(i + 1) * width];
                (first..last).any(|i| at(i) == at(last))
            }
            // Keys are primitive: an Iceberg map key of a nested type is not compared.
            Data::Struct(_) | Data::List { .. } | Data::Map { .. } => false,
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.valid.len()
    }

    /// Appends a null: the row's slot in this column and, for a struct, in every field.
    pub fn push_null(&mut self) {
        self.valid.push(false);
        match &mut self.data {
            Data::Bool(v) => v.push(false),
            Data::I32(v) => v.push(0),
            Data::I64(v) => v.push(0),
            Data::F32(v) => v.push(0.0),
            Data::F64(v) => v.push(0.0),
            Data::I128(v) => v.push(0),
            Data::Bytes { offsets, bytes } => offsets.push(bytes.len() as i64),
            Data::FixedBytes { width, bytes } => bytes.resize(bytes.len() + *width, 0),
            Data::Struct(children) => children.iter_mut().for_each(Column::push_null),
            Data::List { offsets, .. } | Data::Map { offsets, .. } => offsets.push(*offsets.last().unwrap_or(&0)),
        }
    }

    /// Cuts the column back to `rows` rows (and its children to what those rows hold).
    pub fn truncate(&mut self, rows: usize) {
        self.valid.truncate(rows);
        match &mut self.data {
            Data::Bool(v) => v.truncate(rows),
            Data::I32(v) => v.truncate(rows),
            Data::I64(v) => v.truncate(rows),
            Data::F32(v) => v.truncate(rows),
            Data::F64(v) => v.truncate(rows),
            Data::I128(v) => v.truncate(rows),
            Data::Bytes { offsets, bytes } => {
                offsets.truncate(rows + 1);
                bytes.truncate(offsets.last().copied().unwrap_or(0) as usize);
            }
            Data::FixedBytes { width, bytes } => bytes.truncate(rows * *width),
            Data::Struct(children) => children.iter_mut().for_each(|c| c.truncate(rows)),
            Data::List { offsets, child } => {
                offsets.truncate(rows + 1);
                child.truncate(offsets.last().copied().unwrap_or(0) as usize);
            }
            Data::Map { offsets, keys, values } => {
                offsets.truncate(rows + 1);
                let n = offsets.last().copied().unwrap_or(0) as usize;
                keys.truncate(n);
                values.truncate(n);
            }
        }
    }

    /// The Arrow array of everything held; the buffers are left empty.
    pub fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let valid = std::mem::take(&mut self.valid);
        let rows = valid.len();
        let nulls = match valid.iter().all(|v| *v) {
            true => None,
            false => Some(NullBuffer::new(BooleanBuffer::from(valid))),
        };
        let dt = self.field.data_type().clone();
        Ok(match &mut self.data {
            Data::Bool(v) => Arc::new(BooleanArray::new(BooleanBuffer::from(std::mem::take(v)), nulls)),
            Data::I32(v) => match self.kind {
                Kind::Date => primitive::<Date32Type>(v, nulls, dt)?,
                _ => primitive::<Int32Type>(v, nulls, dt)?,
            },
            Data::I64(v) => match self.kind {
                Kind::Time { .. } => primitive::<Time64MicrosecondType>(v, nulls, dt)?,
                Kind::Timestamp { .. } => primitive::<TimestampMicrosecondType>(v, nulls, dt)?,
                _ => primitive::<Int64Type>(v, nulls, dt)?,
            },
            Data::F32(v) => primitive::<Float32Type>(v, nulls, dt)?,
            Data::F64(v) => primitive::<Float64Type>(v, nulls, dt)?,
            Data::I128(v) => primitive::<Decimal128Type>(v, nulls, dt)?,
            Data::Bytes { offsets, bytes } => {
                let offs = std::mem::replace(offsets, vec![0]);
                let data = Buffer::from_vec(std::mem::take(bytes));
                match self.kind {
                    Kind::String => {
                        let offs = offs
                            .into_iter()
                            .map(i32::try_from)
                            .collect::<Result<Vec<i32>, _>>()
                            .map_err(|_| {
                                ArrowError::ComputeError(format!(
                                    "column {}: over 2 GiB of text in one poll",
                                    self.path
                                ))
                            })?;
                        Arc::new(StringArray::try_new(OffsetBuffer::new(offs.into()), data, nulls)?) as ArrayRef
                    }
                    _ => Arc::new(LargeBinaryArray::try_new(OffsetBuffer::new(offs.into()), data, nulls)?),
                }
            }
            Data::FixedBytes { width, bytes } => Arc::new(FixedSizeBinaryArray::try_new(
                *width as i32,
                Buffer::from_vec(std::mem::take(bytes)),
                nulls,
            )?),
            Data::Struct(children) => {
                let DataType::Struct(fields) = dt else {
                    return Err(shape(&self.path));
                };
                let arrays = children.iter_mut().map(Column::finish).collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new(fields, arrays, nulls)?)
            }
            Data::List { offsets, child } => {
                let DataType::List(field) = dt else {
                    return Err(shape(&self.path));
                };
                let offs = std::mem::replace(offsets, vec![0]);
                let values = child.finish()?;
                Arc::new(ListArray::try_new(
                    field,
                    OffsetBuffer::new(offs.into()),
                    values,
                    nulls,
                )?)
            }
            Data::Map { offsets, keys, values } => {
                let DataType::Map(entries, sorted) = dt else {
                    return Err(shape(&self.path));
                };
                let DataType::Struct(kv) = entries.data_type() else {
                    return Err(shape(&self.path));
                };
                let offs = std::mem::replace(offsets, vec![0]);
                let kv_arrays = vec![keys.finish()?, values.finish()?];
                let entries_array = StructArray::try_new(kv.clone(), kv_arrays, None)?;
                Arc::new(MapArray::try_new(
                    entries.clone(),
                    OffsetBuffer::new(offs.into()),
                    entries_array,
                    nulls,
                    sorted,
                )?)
            }
        })
        .and_then(|a: ArrayRef| match a.len() == rows {
            true => Ok(a),
            false => Err(shape(&self.path)),
        })
    }
}

fn bytes() -> Data {
    Data::Bytes {
        offsets: vec![0],
        bytes: Vec::new(),
    }
}

fn fixed(width: usize) -> Data {
    Data::FixedBytes {
        width,
        bytes: Vec::new(),
    }
}

fn primitive<T: arrow_array::ArrowPrimitiveType>(
    v: &mut Vec<T::Native>,
    nulls: Option<NullBuffer>,
    dt: DataType,
) -> Result<ArrayRef, ArrowError> {
    let values = ScalarBuffer::from(std::mem::take(v));
    Ok(Arc::new(
        PrimitiveArray::<T>::try_new(values, nulls)?.with_data_type(dt),
    ))
}

fn shape(path: &str) -> ArrowError {
    ArrowError::ComputeError(format!("column {path}: decoded buffers lost their shape"))
}

/// The row-level columns of a table schema, in the table's column order.
pub fn row_columns(columns: &[(String, ColumnType, Hints)], fields: &Fields) -> Result<Vec<Column>, ArrowError> {
    fields
        .iter()
        .map(|f| {
            let (name, ty, hints) = columns
                .iter()
                .find(|c| &c.0 == f.name())
                .ok_or_else(|| ArrowError::SchemaError(format!("table column {} has no contract type", f.name())))?;
            let mut column = Column::new(name.clone(), ty, *hints, f)?;
            column.required |= hints.required;
            Ok(column)
        })
        .collect()
}
