//! The type a field the table does not have yet shows in its values, for `evolution =
//! "additive"`: a number without a fraction is a long, with one a double, a string a string, a
//! boolean a boolean, an object a struct of its fields, an array a list of its elements; all
//! of it optional. Nulls say nothing. Values of one field that disagree (a long and a double
//! agree on double) leave the field without a type, and it stays counted as unknown.

use std::collections::BTreeMap;
use std::fmt;

use calve_contract::{ColumnType, Element, StructField};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What the values of a field seen so far say about its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inferred {
    /// Only nulls (or nothing) so far.
    Unknown,
    /// Every value fits this type.
    Type(ColumnType),
    /// Values that no one type holds.
    Conflict,
}

impl Inferred {
    /// Adds what a value of `path` says to what `seen` holds of it.
    pub fn merge_into(seen: &mut BTreeMap<String, Inferred>, path: String, more: Inferred) {
        let before = seen.remove(&path).unwrap_or(Inferred::Unknown);
        seen.insert(path, before.merge(more));
    }

    /// What `self` and `other` say together.
    pub fn merge(self, other: Inferred) -> Inferred {
        match (self, other) {
            (Inferred::Conflict, _) | (_, Inferred::Conflict) => Inferred::Conflict,
            (Inferred::Unknown, x) | (x, Inferred::Unknown) => x,
            (Inferred::Type(a), Inferred::Type(b)) => merge_types(a, b).map_or(Inferred::Conflict, Inferred::Type),
        }
    }
}

fn merge_types(a: ColumnType, b: ColumnType) -> Option<ColumnType> {
    Some(match (a, b) {
        (a, b) if a == b => a,
        (ColumnType::Long, ColumnType::Double) | (ColumnType::Double, ColumnType::Long) => ColumnType::Double,
        // Avro writers of one field at int and at long (or float and double) agree on the
        // wider type, as the promotion rules say.
        (ColumnType::Int, ColumnType::Long) | (ColumnType::Long, ColumnType::Int) => ColumnType::Long,
        (ColumnType::Float, ColumnType::Double) | (ColumnType::Double, ColumnType::Float) => ColumnType::Double,
        (ColumnType::List(a), ColumnType::List(b)) => ColumnType::List(Box::new(Element {
            ty: merge_types(a.ty, b.ty)?,
            required: false,
        })),
        (ColumnType::Struct(mut a), ColumnType::Struct(b)) => {
            for f in b {
                match a.iter().position(|x| x.name == f.name) {
                    Some(i) => a[i].ty = merge_types(a[i].ty.clone(), f.ty)?,
                    None => a.push(f),
                }
            }
            ColumnType::Struct(a)
        }
        _ => return None,
    })
}

/// Infers the type of one JSON value.
pub struct InferSeed;

impl<'de> DeserializeSeed<'de> for InferSeed {
    type Value = Inferred;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Inferred, D::Error> {
        d.deserialize_any(InferVisitor)
    }
}

struct InferVisitor;

impl<'de> Visitor<'de> for InferVisitor {
    type Value = Inferred;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Inferred, E> {
        Ok(Inferred::Unknown)
    }

    fn visit_none<E>(self) -> Result<Inferred, E> {
        Ok(Inferred::Unknown)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Inferred, E> {
        Ok(Inferred::Type(ColumnType::Boolean))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Inferred, E> {
        Ok(Inferred::Type(ColumnType::Long))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Inferred, E> {
        Ok(match i64::try_from(n) {
            Ok(_) => Inferred::Type(ColumnType::Long),
            Err(_) => Inferred::Type(ColumnType::Double),
        })
    }

    fn visit_f64<E>(self, _: f64) -> Result<Inferred, E> {
        Ok(Inferred::Type(ColumnType::Double))
    }

    fn visit_str<E>(self, _: &str) -> Result<Inferred, E> {
        Ok(Inferred::Type(ColumnType::String))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inferred, A::Error> {
        let mut element = Inferred::Unknown;
        while let Some(e) = seq.next_element_seed(InferSeed)? {
            element = element.merge(e);
        }
        Ok(match element {
            Inferred::Type(ty) => Inferred::Type(ColumnType::List(Box::new(Element { ty, required: false }))),
            other => other,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Inferred, A::Error> {
        // Every entry is read even after a conflict: the parser must reach the object's end.
        let mut fields: Vec<StructField> = Vec::new();
        let mut conflict = false;
        while let Some(name) = map.next_key::<String>()? {
            match map.next_value_seed(InferSeed)? {
                Inferred::Conflict => conflict = true,
                Inferred::Unknown => {}
                Inferred::Type(ty) => match fields.iter().position(|f| f.name == name) {
                    // A repeated key must not make two fields of one name.
                    Some(_) => conflict = true,
                    None => fields.push(StructField {
                        name,
                        ty,
                        required: false,
                    }),
                },
            }
        }
        Ok(match (conflict, fields.is_empty()) {
            (true, _) => Inferred::Conflict,
            (false, true) => Inferred::Unknown,
            (false, false) => Inferred::Type(ColumnType::Struct(fields)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(json: &str) -> Inferred {
        InferSeed
            .deserialize(&mut serde_json::Deserializer::from_str(json))
            .unwrap()
    }

    fn ty(s: &str) -> Inferred {
        Inferred::Type(s.parse().unwrap())
    }

    #[test]
    fn values_show_their_types_and_merge() {
        assert_eq!(infer("5"), ty("long"));
        assert_eq!(infer("5.5"), ty("double"));
        assert_eq!(infer(r#""x""#), ty("string"));
        assert_eq!(infer("null"), Inferred::Unknown);
        assert_eq!(
            infer(r#"{"a": 1, "b": {"c": [true]}, "n": null}"#),
            ty("struct<a: long, b: struct<c: list<boolean>>>")
        );
        assert_eq!(infer("[1, 2.5, null]"), ty("list<double>"));
        assert_eq!(infer(r#"[1, "x"]"#), Inferred::Conflict);
        assert_eq!(
            infer(r#"{"tags": [1, "x"], "src": "a"}"#),
            Inferred::Conflict,
            "read to the end"
        );
        assert_eq!(infer(r#"{"a": 1, "a": 2, "b": 3}"#), Inferred::Conflict);
        assert_eq!(infer("[]"), Inferred::Unknown);
        assert_eq!(ty("long").merge(ty("double")), ty("double"));
        assert_eq!(ty("long").merge(ty("string")), Inferred::Conflict);
        assert_eq!(Inferred::Unknown.merge(ty("string")), ty("string"));
        assert_eq!(
            ty("struct<a: long>").merge(ty("struct<b: string>")),
            ty("struct<a: long, b: string>")
        );
    }
}
