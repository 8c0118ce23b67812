//! What one writer schema means for the table, worked out once per schema id rather than
//! once per record: which table column each writer field fills, the writer fields the table
//! has no column for (and the Iceberg type each would be), and whether the schema breaks the
//! table — a declared column of a type no lossless conversion reaches, a required column the
//! writer does not have. Every record of a schema breaks the table the same way, so the
//! answer is the schema's.
//!
//! Types are compared as arrow-avro decodes the writer schema (its Arrow types) against the
//! table's contract types. What Avro's resolution rules accept is accepted: its promotions
//! (int → long, float → double, and int/long → float/double, which Avro allows although a
//! long beyond 2^53 loses digits), a decimal into a column of more integer digits (values
//! beyond the writer's stated precision fail their row, see [`super::conform`]), any
//! timestamp unit into microseconds (nanoseconds are cut to microseconds:
//! Iceberg v2 has no finer unit), `time-millis` into `time`, enums as strings, `fixed` into
//! `binary`. Epoch numbers (a plain `long`) read into a time or timestamp column when their
//! unit is known: from Debezium's `connect.name` (`io.debezium.time.Timestamp` is millis,
//! `MicroTimestamp` micros, …) or from the column's `unit` in the contract. ISO text reads
//! into a timestamp or date column, a value that does not parse failing its row alone.
//!
//! A table column is filled by the writer field of its name, else by one of its former names
//! (the contract's `renamed_from`, so records of a writer from before an approved rename keep
//! their values), else by a writer field that lists it among its Avro `aliases`.

use std::collections::HashMap;

use arrow_schema::{DataType, Field, Fields, TimeUnit};
use calve_contract::{ColumnType, Element, StructField, TimeUnit as Unit};

use crate::dead_letter::DeadLetterKind;

/// The extension name arrow-avro gives Avro's uuid logical type.
pub const UUID: &str = "arrow.uuid";

/// Why every record of a writer schema breaks the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// Dead-letter kind.
    pub kind: DeadLetterKind,
    /// Column path.
    pub path: String,
    /// Why, in words (starting with the path).
    pub reason: String,
    /// The type the writer's field has, as an Iceberg type, when one holds it.
    pub shows: Option<ColumnType>,
}

/// A table column as the decoder needs it.
#[derive(Debug, Clone)]
pub struct TableColumn {
    /// Name.
    pub name: String,
    /// Contract type.
    pub ty: ColumnType,
    /// The table's Arrow field (field ids, nullability).
    pub field: Field,
    /// Unit of epoch numbers in (or nested in) it, from the contract.
    pub unit: Option<Unit>,
    /// Its former names (the contract's `renamed_from`).
    pub former: Vec<String>,
}

/// What a writer schema's rows mean for the table.
#[derive(Debug, Clone, Default)]
pub struct Fit {
    /// For each table column, the index of the writer's top-level field that fills it
    /// (`None`: the writer lacks it, the column is null).
    pub sources: Vec<Option<usize>>,
    /// Writer fields the table lacks, by path (`discount`, `addr.floor`: fields of the row and
    /// of structs nested in structs), with the Iceberg type each maps to (`None`: none does,
    /// e.g. a union of several types).
    pub unknown: Vec<(String, Option<ColumnType>)>,
    /// The first way the schema breaks the table, if it does.
    pub breach: Option<Breach>,
    /// Unit of the epoch numbers at each path (`ts`, `addr.since`) that holds them.
    pub units: HashMap<String, TimeUnit>,
}

/// The Avro aliases of each top-level field of a writer schema's text, by field name.
pub fn aliases(schema_text: &str) -> HashMap<String, Vec<String>> {
    let Ok(serde_json::Value::Object(record)) = serde_json::from_str::<serde_json::Value>(schema_text) else {
        return HashMap::new();
    };
    let Some(serde_json::Value::Array(fields)) = record.get("fields") else {
        return HashMap::new();
    };
    fields
        .iter()
        .filter_map(|f| {
            let name = f.get("name")?.as_str()?.to_string();
            let aliases = f
                .get("aliases")
                .and_then(|a| a.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            Some((name, aliases))
        })
        .collect()
}

/// Fits the writer's top-level `fields` to the table's `columns`; `aliases` are the Avro
/// aliases of the writer's top-level fields, by field name.
pub fn fit(writer: &Fields, aliases: &HashMap<String, Vec<String>>, columns: &[TableColumn]) -> Fit {
    let mut out = Fit::default();
    for c in columns {
        let named = |n: &String| writer.iter().position(|f| f.name() == n);
        let source = named(&c.name).or_else(|| c.former.iter().find_map(named)).or_else(|| {
            let listed = |f: &&std::sync::Arc<Field>| aliases.get(f.name()).is_some_and(|a| a.contains(&c.name));
            writer.iter().position(|f| listed(&f))
        });
        out.sources.push(source);
        if out.breach.is_some() {
            continue;
        }
        let mut at = Check {
            unknown: &mut out.unknown,
            units: &mut out.units,
            unit: c.unit,
        };
        out.breach = match source {
            None if !c.field.is_nullable() => Some(missing(&c.name)),
            None => None,
            Some(i) => at.check(&writer[i], &c.ty, &c.field, &c.name).err(),
        };
    }
    let taken: Vec<usize> = out.sources.iter().flatten().copied().collect();
    for (i, f) in writer.iter().enumerate() {
        if !taken.contains(&i) {
            out.unknown.push((f.name().clone(), column_type(f)));
        }
    }
    out
}

fn missing(path: &str) -> Breach {
    Breach {
        kind: DeadLetterKind::MissingRequired,
        path: path.to_string(),
        reason: format!("{path}: required, and the writer schema has no such field "),
        shows: None,
    }
}

/// Where checking one column records what it finds.
struct Check<'a> {
    unknown: &'a mut Vec<(String, Option<ColumnType>)>,
    units: &'a mut HashMap<String, TimeUnit>,
    /// The column's epoch unit (the contract's).
    unit: Option<Unit>,
}

impl Check<'_> {
    /// Whether values of the `writer` field read into a column of `ty` (Arrow field `table`)
    /// without loss; nested writer fields the table lacks are added to `unknown` (inside
    /// structs only).
    fn check(&mut self, writer: &Field, ty: &ColumnType, table: &Field, path: &str) -> Result<(), Breach> {
        use ColumnType as C;
        use DataType as D;
        let w = writer.data_type();
        let ok = match (w, ty) {
            (D::Boolean, C::Boolean) | (D::Int32, C::Int) | (D::Date32, C::Date) => true,
            (D::Int32 | D::Int64, C::Long) => true,
            (D::Float32, C::Float) | (D::Float32 | D::Float64 | D::Int32 | D::Int64, C::Double) => true,
            (D::Int32 | D::Int64, C::Float) => true,
            (D::Decimal128(p, s), C::Decimal { precision, scale }) => {
                *s >= 0 && *s as u32 == *scale && *p as u32 <= *precision
            }
            (D::Time32(TimeUnit::Millisecond) | D::Time64(TimeUnit::Microsecond), C::Time) => true,
            (D::Timestamp(_, _), C::Timestamp | C::Timestamptz) => true,
            (D::Int32 | D::Int64, C::Time | C::Timestamp | C::Timestamptz) => match self.epoch_unit(writer) {
                Some(unit) => {
                    self.units.insert(path.to_string(), unit);
                    true
                }
                None => false,
            },
            // Epoch days (Debezium's `io.debezium.time.Date` is a plain int).
            (D::Int32, C::Date) => true,
            (D::Utf8, C::Timestamp | C::Timestamptz | C::Date) => true,
            (D::Utf8, C::String) => true,
            // An Avro `string` of logical type uuid into a string column, as dashed text.
            (D::FixedSizeBinary(16), C::String) => writer.extension_type_name() == Some(UUID),
            (D::Dictionary(_, v), C::String) => matches!(**v, D::Utf8),
            (D::FixedSizeBinary(16), C::Uuid) => true,
            (D::FixedSizeBinary(n), C::Fixed(l)) => *n as u32 == *l,
            (D::Binary | D::FixedSizeBinary(_), C::Binary) => true,
            (D::Struct(w), C::Struct(fields)) => return self.check_struct(w, fields, table, path),
            (D::Union(..), C::Struct(fields)) => {
                let Some(D::Struct(w)) = union_struct(w) else {
                    return Err(mismatch(path, writer, ty));
                };
                return self.check_struct(&w, fields, table, path);
            }
            // Debezium's decimal of any scale: `{scale: int, value: bytes}`, rescaled per value.
            // (Known by its shape: a union around it may not pass its `connect.name` on.)
            (D::Struct(w), C::Decimal { .. }) => {
                w.len() == 2
                    && w.find("scale").is_some_and(|(_, f)| f.data_type() == &D::Int32)
                    && w.find("value").is_some_and(|(_, f)| f.data_type() == &D::Binary)
            }
            (D::List(w), C::List(e)) => {
                let D::List(t) = table.data_type() else {
                    return Err(mismatch(path, writer, ty));
                };
                return self.check_element(w, e, t, &format!("{path}[]"));
            }
            (D::Map(entries, _), C::Map { key, value }) => {
                let (D::Map(t, _), D::Struct(w)) = (table.data_type(), entries.data_type()) else {
                    return Err(mismatch(path, writer, ty));
                };
                let D::Struct(t) = t.data_type() else {
                    return Err(mismatch(path, writer, ty));
                };
                let (Some(wk), Some(wv), Some(tk), Some(tv)) = (w.first(), w.get(1), t.first(), t.get(1)) else {
                    return Err(mismatch(path, writer, ty));
                };
                let key_element = Element {
                    ty: (**key).clone(),
                    required: true,
                };
                self.check_element(wk, &key_element, tk, &format!("{path}{{}}"))?;
                return self.check_element(wv, value, tv, &format!("{path}{{}}"));
            }
            _ => false,
        };
        ok.then_some(()).ok_or_else(|| mismatch(path, writer, ty))
    }

    /// The unit of a writer's epoch numbers: Debezium's type name says it, else the contract.
    fn epoch_unit(&self, writer: &Field) -> Option<TimeUnit> {
        match connect_name(writer) {
            Some("io.debezium.time.Timestamp" | "io.debezium.time.Time") => Some(TimeUnit::Millisecond),
            Some("io.debezium.time.MicroTimestamp" | "io.debezium.time.MicroTime") => Some(TimeUnit::Microsecond),
            Some("io.debezium.time.NanoTimestamp" | "io.debezium.time.NanoTime") => Some(TimeUnit::Nanosecond),
            _ => self.unit.map(|u| match u {
                Unit::Seconds => TimeUnit::Second,
                Unit::Millis => TimeUnit::Millisecond,
                Unit::Micros => TimeUnit::Microsecond,
                Unit::Nanos => TimeUnit::Nanosecond,
            }),
        }
    }

    fn check_struct(
        &mut self,
        writer: &Fields,
        fields: &[StructField],
        table: &Field,
        path: &str,
    ) -> Result<(), Breach> {
        let DataType::Struct(t) = table.data_type() else {
            let w = Field::new(path, DataType::Struct(writer.clone()), true);
            return Err(mismatch(path, &w, &ColumnType::Struct(fields.to_vec())));
        };
        for tf in t {
            let at = format!("{path}.{}", tf.name());
            // A nested field calve added from events is in the table, not in the contract.
            let ty = match fields.iter().find(|f| &f.name == tf.name()) {
                Some(f) => f.ty.clone(),
                None => column_type(tf).ok_or_else(|| mismatch(&at, tf, &ColumnType::String))?,
            };
            match writer.iter().find(|w| w.name() == tf.name()) {
                None if !tf.is_nullable() => return Err(missing(&at)),
                None => {}
                Some(w) => self.check(w, &ty, tf, &at)?,
            }
        }
        for w in writer {
            if !t.iter().any(|f| f.name() == w.name()) {
                self.unknown.push((format!("{path}.{}", w.name()), column_type(w)));
            }
        }
        Ok(())
    }

    /// A list element, map key or map value: fields inside it the table lacks are not tracked
    /// (as with JSON), so they are dropped.
    fn check_element(&mut self, writer: &Field, element: &Element, table: &Field, path: &str) -> Result<(), Breach> {
        let mut ignored = Vec::new();
        let mut inner = Check {
            unknown: &mut ignored,
            units: &mut *self.units,
            unit: self.unit,
        };
        inner.check(writer, &element.ty, table, path)
    }
}

/// A union of several non-null types as the struct calve stores it: one optional field per
/// branch, named by the branch's type (`int`, `string`, a record's name without namespace);
/// a row fills the field of its branch. `None` for a union whose branches share a name.
pub fn union_struct(t: &DataType) -> Option<DataType> {
    let DataType::Union(branches, _) = t else { return None };
    let fields: Vec<Field> = branches
        .iter()
        .filter(|(_, f)| f.data_type() != &DataType::Null)
        .map(|(_, f)| Field::new(branch_name(f.name()), f.data_type().clone(), true))
        .collect();
    let mut names: Vec<&String> = fields.iter().map(|f| f.name()).collect();
    names.sort();
    names.dedup();
    (names.len() == fields.len()).then(|| DataType::Struct(fields.into()))
}

/// A union branch's name without its namespace.
pub fn branch_name(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The Kafka Connect type name a writer field carries (`io.debezium.time.Timestamp`, …).
fn connect_name(writer: &Field) -> Option<&str> {
    writer.metadata().get("connect.name").map(|n| n.trim_matches('"'))
}

fn mismatch(path: &str, writer: &Field, ty: &ColumnType) -> Breach {
    let shows = column_type(writer);
    let what = shows
        .as_ref()
        .map_or_else(|| format!("{}", writer.data_type()), ToString::to_string);
    Breach {
        kind: DeadLetterKind::SchemaMismatch,
        path: path.to_string(),
        reason: format!("{path}: the writer schema has {what}, which does not read as {ty} without loss"),
        shows,
    }
}

/// The Iceberg type of a writer field, when one holds it.
pub fn column_type(f: &Field) -> Option<ColumnType> {
    if f.extension_type_name() == Some(UUID) {
        return Some(ColumnType::Uuid);
    }
    arrow_column_type(f.data_type())
}

fn arrow_column_type(t: &DataType) -> Option<ColumnType> {
    use ColumnType as C;
    use DataType as D;
    Some(match t {
        D::Boolean => C::Boolean,
        D::Int32 => C::Int,
        D::Int64 => C::Long,
        D::Float32 => C::Float,
        D::Float64 => C::Double,
        D::Decimal128(p, s) if *s >= 0 && *p <= 38 => C::Decimal {
            precision: *p as u32,
            scale: *s as u32,
        },
        D::Date32 => C::Date,
        D::Time32(TimeUnit::Millisecond) | D::Time64(TimeUnit::Microsecond) => C::Time,
        D::Timestamp(_, Some(_)) => C::Timestamptz,
        D::Timestamp(_, None) => C::Timestamp,
        D::Utf8 => C::String,
        D::Dictionary(_, v) if **v == D::Utf8 => C::String,
        D::Binary => C::Binary,
        D::FixedSizeBinary(n) => C::Fixed(*n as u32),
        D::Union(..) => return column_type(&Field::new("union", union_struct(t)?, true)),
        D::Struct(fields) => C::Struct(
            fields
                .iter()
                .map(|f| {
                    Some(StructField {
                        name: f.name().clone(),
                        ty: column_type(f)?,
                        required: false,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        ),
        D::List(e) => C::List(Box::new(Element {
            ty: column_type(e)?,
            required: false,
        })),
        D::Map(entries, _) => {
            let D::Struct(kv) = entries.data_type() else {
                return None;
            };
            let key = column_type(kv.first()?)?;
            if key != C::String {
                return None;
            }
            C::Map {
                key: Box::new(key),
                value: Box::new(Element {
                    ty: column_type(kv.get(1)?)?,
                    required: false,
                }),
            }
        }
        _ => return None,
    })
}
