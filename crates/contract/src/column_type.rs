//! Column types as written in contracts, independent of any Iceberg crate: every Iceberg v2
//! type, nested to any depth.
//!
//! The written form follows Iceberg's and Spark's: `long`, `decimal(10,2)`, `fixed[16]`,
//! `list<string>`, `map<string, long>`, `struct<id: long not null, tags: list<string>>`.
//! Nested fields, list elements and map values are optional unless followed by `not null`
//! (map keys are always required, as Iceberg says). Names in a struct may be written in
//! backquotes when they are not plain identifiers.

use std::fmt;
use std::str::FromStr;

/// An Iceberg type a contract column may have.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `boolean`
    Boolean,
    /// `int` (32-bit)
    Int,
    /// `long` (64-bit)
    Long,
    /// `float` (32-bit IEEE)
    Float,
    /// `double` (64-bit IEEE)
    Double,
    /// `decimal(P,S)`
    Decimal {
        /// Total digits, 1..=38.
        precision: u32,
        /// Digits after the point, 0..=precision.
        scale: u32,
    },
    /// `date`
    Date,
    /// `time` (microseconds)
    Time,
    /// `timestamp` without zone (microseconds)
    Timestamp,
    /// `timestamptz` (microseconds, UTC)
    Timestamptz,
    /// `string`
    String,
    /// `uuid`
    Uuid,
    /// `binary`
    Binary,
    /// `fixed[L]`: exactly L bytes.
    Fixed(u32),
    /// `struct<name: type, …>`
    Struct(Vec<StructField>),
    /// `list<type>`
    List(Box<Element>),
    /// `map<key, value>`
    Map {
        /// Key type (keys are never null).
        key: Box<ColumnType>,
        /// Value type and whether values may be null.
        value: Box<Element>,
    },
}

/// A field of a struct type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StructField {
    /// Field name (also the JSON field it is read from).
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether a value must be present and non-null.
    pub required: bool,
}

/// A list element or map value: a type and whether it may be null.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    /// Its type.
    pub ty: ColumnType,
    /// Whether it must be non-null.
    pub required: bool,
}

impl ColumnType {
    /// Whether the column can carry an event time.
    pub fn is_temporal(&self) -> bool {
        matches!(self, ColumnType::Date | ColumnType::Timestamp | ColumnType::Timestamptz)
    }

    /// Whether this type or a type nested in it reads epoch numbers (time, timestamp,
    /// timestamptz), so a declared time unit means something for it.
    pub fn has_epoch_numbers(&self) -> bool {
        match self {
            ColumnType::Time | ColumnType::Timestamp | ColumnType::Timestamptz => true,
            ColumnType::Struct(fields) => fields.iter().any(|f| f.ty.has_epoch_numbers()),
            ColumnType::List(e) => e.ty.has_epoch_numbers(),
            ColumnType::Map { key, value } => key.has_epoch_numbers() || value.ty.has_epoch_numbers(),
            _ => false,
        }
    }

    /// Whether this type or a type nested in it is a decimal.
    pub fn has_decimals(&self) -> bool {
        match self {
            ColumnType::Decimal { .. } => true,
            ColumnType::Struct(fields) => fields.iter().any(|f| f.ty.has_decimals()),
            ColumnType::List(e) => e.ty.has_decimals(),
            ColumnType::Map { key, value } => key.has_decimals() || value.ty.has_decimals(),
            _ => false,
        }
    }

    /// Whether this is a struct, list or map.
    pub fn is_nested(&self) -> bool {
        matches!(
            self,
            ColumnType::Struct(_) | ColumnType::List(_) | ColumnType::Map { .. }
        )
    }
}

/// The unit of epoch numbers in a time or timestamp column (`unit = "ms"` in a contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    /// Seconds.
    Seconds,
    /// Milliseconds (Java, JavaScript, Kafka, Debezium's `io.debezium.time.Timestamp`).
    Millis,
    /// Microseconds (Iceberg's own unit, Debezium's `MicroTimestamp`).
    Micros,
    /// Nanoseconds (truncated to microseconds: Iceberg v2 has no finer unit).
    Nanos,
}

impl TimeUnit {
    /// Microseconds of `n` units, or `None` on overflow. Nanoseconds round toward the past, so
    /// an instant never moves later than it was.
    pub fn to_micros(self, n: i64) -> Option<i64> {
        match self {
            TimeUnit::Seconds => n.checked_mul(1_000_000),
            TimeUnit::Millis => n.checked_mul(1_000),
            TimeUnit::Micros => Some(n),
            TimeUnit::Nanos => Some(n.div_euclid(1_000)),
        }
    }
}

impl FromStr for TimeUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "s" => Ok(TimeUnit::Seconds),
            "ms" => Ok(TimeUnit::Millis),
            "us" => Ok(TimeUnit::Micros),
            "ns" => Ok(TimeUnit::Nanos),
            other => Err(format!("unknown time unit `{other}`; expected s, ms, us or ns")),
        }
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeUnit::Seconds => "s",
            TimeUnit::Millis => "ms",
            TimeUnit::Micros => "us",
            TimeUnit::Nanos => "ns",
        })
    }
}

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut p = Parser { s, pos: 0 };
        let ty = p.ty()?;
        p.skip_ws();
        if p.pos != s.len() {
            return Err(p.error("unexpected text after the type"));
        }
        Ok(ty)
    }
}

const PRIMITIVES: &str = "boolean, int, long, float, double, decimal(P,S), date, time, timestamp, timestamptz, \
                          string, uuid, binary, fixed[L], struct<…>, list<…>, map<…, …>";

/// The longest `fixed[L]`: a fixed value is stored, and allocated, in full for every row.
const MAX_FIXED: u32 = 1 << 16;

/// A recursive-descent parser of the written form (see the module docs).
struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at position {} of `{}`", self.pos + 1, self.s)
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.eat(c) {
            true => Ok(()),
            false => Err(self.error(&format!("expected `{c}`"))),
        }
    }

    /// A plain word: letters, digits and `_`.
    fn word(&mut self) -> String {
        self.skip_ws();
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        let w = self.rest()[..len].to_string();
        self.pos += len;
        w
    }

    fn number(&mut self) -> Result<u32, String> {
        let w = self.word();
        w.parse()
            .map_err(|_| self.error(&format!("expected a number, found `{w}`")))
    }

    fn ty(&mut self) -> Result<ColumnType, String> {
        let start = self.pos;
        let word = self.word().to_ascii_lowercase();
        Ok(match word.as_str() {
            "boolean" => ColumnType::Boolean,
            "int" => ColumnType::Int,
            "long" => ColumnType::Long,
            "float" => ColumnType::Float,
            "double" => ColumnType::Double,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time,
            "timestamp" => ColumnType::Timestamp,
            "timestamptz" => ColumnType::Timestamptz,
            "string" => ColumnType::String,
            "uuid" => ColumnType::Uuid,
            "binary" => ColumnType::Binary,
            "decimal" => self.decimal()?,
            "fixed" => self.fixed()?,
            "struct" => self.r#struct()?,
            "list" => {
                self.expect('<')?;
                let element = self.element()?;
                self.expect('>')?;
                ColumnType::List(Box::new(element))
            }
            "map" => {
                self.expect('<')?;
                let key = self.ty()?;
                self.expect(',')?;
                let value = self.element()?;
                self.expect('>')?;
                ColumnType::Map {
                    key: Box::new(key),
                    value: Box::new(value),
                }
            }
            _ => {
                self.pos = start;
                self.skip_ws();
                return Err(format!("unknown type `{}`; expected one of {PRIMITIVES}", self.rest()));
            }
        })
    }

    fn decimal(&mut self) -> Result<ColumnType, String> {
        self.expect('(')?;
        let precision = self.number()?;
        self.expect(',')?;
        let scale = self.number()?;
        self.expect(')')?;
        if !(1..=38).contains(&precision) || scale > precision {
            return Err(format!(
                "decimal({precision},{scale}) is out of range: precision 1..=38, scale 0..=precision"
            ));
        }
        Ok(ColumnType::Decimal { precision, scale })
    }

    fn fixed(&mut self) -> Result<ColumnType, String> {
        let close = match (self.eat('['), self.eat('(')) {
            (true, _) => ']',
            (false, true) => ')',
            _ => return Err(self.error("expected `fixed[L]`")),
        };
        let len = self.number()?;
        self.expect(close)?;
        if len == 0 || len > MAX_FIXED {
            return Err(format!(
                "fixed[{len}] is out of range: 1..={MAX_FIXED} bytes (use binary for more)"
            ));
        }
        Ok(ColumnType::Fixed(len))
    }

    fn r#struct(&mut self) -> Result<ColumnType, String> {
        self.expect('<')?;
        let mut fields: Vec<StructField> = Vec::new();
        loop {
            let name = self.name()?;
            if fields.iter().any(|f| f.name.eq_ignore_ascii_case(&name)) {
                return Err(self.error(&format!("field `{name}` is declared twice")));
            }
            self.expect(':')?;
            let Element { ty, required } = self.element()?;
            fields.push(StructField { name, ty, required });
            if !self.eat(',') {
                break;
            }
        }
        self.expect('>')?;
        Ok(ColumnType::Struct(fields))
    }

    /// A field name: an identifier, or any text in backquotes.
    fn name(&mut self) -> Result<String, String> {
        if self.eat('`') {
            let end = self.rest().find('`').ok_or_else(|| self.error("unclosed `"))?;
            let name = self.rest()[..end].to_string();
            self.pos += end + 1;
            return match name.is_empty() {
                true => Err(self.error("empty field name")),
                false => Ok(name),
            };
        }
        let name = self.word();
        match name.chars().next() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => Ok(name),
            _ => Err(self.error("expected a field name")),
        }
    }

    /// A type optionally followed by `not null`.
    fn element(&mut self) -> Result<Element, String> {
        let ty = self.ty()?;
        self.skip_ws();
        let rest = self.rest().to_ascii_lowercase();
        let required = rest.starts_with("not ") && rest[4..].trim_start().starts_with("null");
        if required {
            self.word();
            self.word();
        }
        Ok(Element { ty, required })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Int => f.write_str("int"),
            ColumnType::Long => f.write_str("long"),
            ColumnType::Float => f.write_str("float"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Time => f.write_str("time"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Timestamptz => f.write_str("timestamptz"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Uuid => f.write_str("uuid"),
            ColumnType::Binary => f.write_str("binary"),
            ColumnType::Fixed(len) => write!(f, "fixed[{len}]"),
            ColumnType::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    let plain = field.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !field.name.starts_with(|c: char| c.is_ascii_digit());
                    match plain {
                        true => write!(f, "{}: {}", field.name, field.ty)?,
                        false => write!(f, "`{}`: {}", field.name, field.ty)?,
                    }
                    if field.required {
                        f.write_str(" not null")?;
                    }
                }
                f.write_str(">")
            }
            ColumnType::List(e) => write!(f, "list<{e}>"),
            ColumnType::Map { key, value } => write!(f, "map<{key}, {value}>"),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ty)?;
        if self.required {
            f.write_str(" not null")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        for s in [
            "boolean",
            "int",
            "long",
            "float",
            "double",
            "decimal(10,2)",
            "date",
            "time",
            "timestamp",
            "timestamptz",
            "string",
            "uuid",
            "binary",
            "fixed[16]",
            "list<string>",
            "list<long not null>",
            "map<string, double>",
            "map<int, list<string> not null>",
            "struct<id: long not null, tags: list<string>, `odd name`: map<string, struct<a: int>>>",
        ] {
            let t: ColumnType = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn reads_nested_types_with_their_nullability() {
        let t: ColumnType = " STRUCT< a : int NOT NULL , b : list< date > > ".parse().unwrap();
        let ColumnType::Struct(fields) = t else {
            panic!("not a struct")
        };
        assert_eq!(fields[0].name, "a");
        assert!(fields[0].required);
        assert_eq!(
            fields[1].ty,
            ColumnType::List(Box::new(Element {
                ty: ColumnType::Date,
                required: false
            }))
        );
        assert!(!fields[1].required);
        assert!("fixed(4)".parse::<ColumnType>().is_ok());
    }

    #[test]
    fn refuses_bad_types_with_a_position() {
        assert!("decimal(39,2)"
            .parse::<ColumnType>()
            .unwrap_err()
            .contains("out of range"));
        assert!("decimal(5,6)".parse::<ColumnType>().is_err());
        assert!("varchar".parse::<ColumnType>().unwrap_err().contains("unknown type"));
        assert!("list<string"
            .parse::<ColumnType>()
            .unwrap_err()
            .contains("expected `>`"));
        assert!("struct<a: int, a: long>"
            .parse::<ColumnType>()
            .unwrap_err()
            .contains("twice"));
        assert!("struct<1a: int>"
            .parse::<ColumnType>()
            .unwrap_err()
            .contains("field name"));
        assert!("fixed[0]".parse::<ColumnType>().is_err());
        assert!("long long"
            .parse::<ColumnType>()
            .unwrap_err()
            .contains("after the type"));
    }

    #[test]
    fn units_convert_to_micros() {
        assert_eq!(
            TimeUnit::Millis.to_micros(1_700_000_000_000),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(TimeUnit::Nanos.to_micros(-1), Some(-1));
        assert_eq!(TimeUnit::Seconds.to_micros(i64::MAX), None);
        assert_eq!("ms".parse::<TimeUnit>(), Ok(TimeUnit::Millis));
    }
}
