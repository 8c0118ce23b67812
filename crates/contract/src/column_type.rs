//! Column types as written in contracts, independent of any Iceberg crate.

use std::fmt;
use std::str::FromStr;

/// The Iceberg primitive types a contract column may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl ColumnType {
    /// Whether the column can carry an event time.
    pub fn is_temporal(&self) -> bool {
        matches!(self, ColumnType::Date | ColumnType::Timestamp | ColumnType::Timestamptz)
    }
}

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
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
            _ => {
                return parse_decimal(&t).ok_or_else(|| {
                    format!(
                        "unknown type `{s}`; expected one of boolean, int, long, float, double, \
                     decimal(P,S), date, time, timestamp, timestamptz, string, uuid, binary"
                    )
                })?
            }
        })
    }
}

fn parse_decimal(t: &str) -> Option<Result<ColumnType, String>> {
    let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    let (precision, scale) = (p.trim().parse::<u32>().ok()?, s.trim().parse::<u32>().ok()?);
    if !(1..=38).contains(&precision) || scale > precision {
        return Some(Err(format!(
            "decimal({precision},{scale}) is out of range: precision 1..=38, scale 0..=precision"
        )));
    }
    Some(Ok(ColumnType::Decimal { precision, scale }))
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            other => write!(f, "{}", format!("{other:?}").to_ascii_lowercase()),
        }
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
        ] {
            let t: ColumnType = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_decimals_and_unknown_types() {
        assert!("decimal(39,2)"
            .parse::<ColumnType>()
            .unwrap_err()
            .contains("out of range"));
        assert!("decimal(5,6)".parse::<ColumnType>().is_err());
        assert!("varchar".parse::<ColumnType>().unwrap_err().contains("unknown type"));
    }
}
