//! Guards integer columns against fractional JSON numbers.
//!
//! arrow-json parses a number that does not fit an integer column as f64 and casts it, so
//! `1.5` silently becomes `1`. A value changed in transit is worse than one refused, so this
//! pass looks at the integer fields only (everything else is skipped without being built) and
//! reports a fractional number for the dead-letter table. Integral values written as floats
//! (`3.0`) lose nothing and pass.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use arrow_schema::{DataType, Schema};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The top-level integer columns of a schema.
#[derive(Debug, Clone, Default)]
pub struct IntGuard {
    ints: HashSet<String>,
}

impl IntGuard {
    /// A guard for `schema`'s integer columns.
    pub fn new(schema: &Schema) -> Self {
        let ints = schema
            .fields()
            .iter()
            .filter(|f| {
                matches!(
                    f.data_type(),
                    DataType::Int8
                        | DataType::Int16
                        | DataType::Int32
                        | DataType::Int64
                        | DataType::UInt8
                        | DataType::UInt16
                        | DataType::UInt32
                        | DataType::UInt64
                )
            })
            .map(|f| f.name().clone())
            .collect();
        IntGuard { ints }
    }

    /// `Some(reason)` when an integer field holds a fractional number. Values that are not a
    /// JSON object are left to the decoder, which classifies them.
    pub fn check(&self, value: &[u8]) -> Option<String> {
        if self.ints.is_empty() {
            return None;
        }
        let mut de = serde_json::Deserializer::from_slice(value);
        Check(&self.ints).deserialize(&mut de).ok().flatten()
    }
}

struct Check<'a>(&'a HashSet<String>);

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut bad = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if !self.0.contains(key.as_ref()) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if let serde_json::Value::Number(n) = map.next_value::<serde_json::Value>()? {
                let integral = n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0);
                if !integral && bad.is_none() {
                    bad = Some(format!("field '{key}': {n} is not an integer"));
                }
            }
        }
        Ok(bad)
    }
}

#[cfg(test)]
mod tests {
    use arrow_schema::Field;

    use super::*;

    #[test]
    fn flags_fractional_numbers_in_integer_fields_only() {
        let g = IntGuard::new(&Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
        ]));
        assert!(g
            .check(br#"{"id":1.5,"x":2.5}"#)
            .unwrap()
            .contains("1.5 is not an integer"));
        assert_eq!(g.check(br#"{"id":3.0,"x":2.5}"#), None, "integral floats lose nothing");
        assert_eq!(g.check(br#"{"id":7,"x":0.1,"nested":{"id":1.5}}"#), None);
        assert_eq!(
            g.check(br#"{"id":"seven"}"#),
            None,
            "type errors are the decoder's to report"
        );
        assert_eq!(g.check(b"not json"), None);
    }
}
