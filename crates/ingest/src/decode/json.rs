//! One JSON value → one row appended to the column buffers, parsed once by serde_json and
//! written straight into the buffers of the columns it names.
//!
//! Every value goes through a visitor that knows its column's type, so a value that does not
//! fit is refused with the column's path and the reason, never cast, truncated or guessed
//! (`1.5` in an int column, a number in a string column, 3 decimals in `decimal(10,2)`).
//! Fields the table does not have are skipped and reported by path. A duplicate field in one
//! object is refused rather than resolved by position. Nothing here indexes without a check
//! or unwraps: whatever the bytes, the result is a row or a reason.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::columns::{Column, Data, Kind};
use super::infer::{InferSeed, Inferred};
use super::scalars;
use crate::dead_letter::DeadLetterKind;

/// The largest magnitude at which every integer has an exact double (2^53).
const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// Microseconds in a day: a time of day lies in 0..this.
const DAY_US: i64 = 86_400_000_000;

/// Why the current record cannot become a row (set before the visitor returns an error, so
/// the error serde reports is known to be the record's fault, not the JSON's syntax).
pub type Fault = (DeadLetterKind, String, String);

/// What one record's decoding shares across its nested values.
#[derive(Default)]
pub struct Ctx {
    /// The first reason the record was refused.
    pub fault: Option<Fault>,
    /// Paths of fields the table has no column for.
    pub unknown: Vec<String>,
    /// Whether to infer the types of unknown fields of the row and of structs nested in it
    /// (`evolution = "additive"`).
    pub infer: bool,
    /// The types the record's unknown fields show, by path (`discount`, `addr.floor`).
    pub inferred: Vec<(String, Inferred)>,
}

impl Ctx {
    /// Refuses the record for `reason` (which starts with the path), found at the column
    /// `path` (`""` for the value itself).
    fn refuse<E: serde::de::Error>(&mut self, kind: DeadLetterKind, path: &str, reason: String) -> E {
        if self.fault.is_none() {
            self.fault = Some((kind, path.to_string(), reason));
        }
        E::custom("refused")
    }

    /// Refuses a value of the column at `path` that does not fit, for `reason`.
    fn misfit<E: serde::de::Error>(&mut self, path: &str, reason: impl std::fmt::Display) -> E {
        self.refuse(DeadLetterKind::SchemaMismatch, path, format!("{path}: {reason}"))
    }

    fn mismatch<E: serde::de::Error>(&mut self, col: &Column, found: &str) -> E {
        let what = describe(col.kind);
        self.refuse(
            DeadLetterKind::SchemaMismatch,
            &col.path,
            format!("{}: expected {what}, found {found}", col.path),
        )
    }
}

/// Decodes one value of `col` (a row when `col` is the row struct).
pub struct ValueSeed<'c> {
    pub col: &'c mut Column,
    pub ctx: &'c mut Ctx,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.col.kind {
            // Exact decimals need the number's text, which a visitor of f64 has lost.
            Kind::Decimal {
                precision,
                scale,
                bytes,
            } => {
                let raw = <&RawValue>::deserialize(d)?;
                decimal(self.col, self.ctx, raw.get(), (precision, scale, bytes))
            }
            _ => d.deserialize_any(ValueVisitor(self.col, self.ctx)),
        }
    }
}

struct ValueVisitor<'c>(&'c mut Column, &'c mut Ctx);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", describe(self.0.kind))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        let ValueVisitor(col, ctx) = self;
        if col.required {
            let what = if col.path.is_empty() {
                "the value".to_string()
            } else {
                col.path.clone()
            };
            return Err(ctx.refuse(
                DeadLetterKind::MissingRequired,
                &col.path,
                format!("{what}: null in a required field"),
            ));
        }
        col.push_null();
        Ok(())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        let ValueVisitor(col, ctx) = self;
        match &mut col.data {
            Data::Bool(v) if col.kind == Kind::Boolean => {
                v.push(b);
                col.valid.push(true);
                Ok(())
            }
            _ => Err(ctx.mismatch(col, &format!("boolean {b}"))),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        let ValueVisitor(col, ctx) = self;
        let ok = match (col.kind, &mut col.data) {
            (Kind::Int, Data::I32(v)) => i32::try_from(n).map(|n| v.push(n)).is_ok(),
            (Kind::Long, Data::I64(v)) => {
                v.push(n);
                true
            }
            (Kind::Date, Data::I32(v)) => i32::try_from(n).map(|n| v.push(n)).is_ok(),
            (Kind::Float, Data::F32(v)) => {
                v.push(n as f32);
                true
            }
            (Kind::Double, Data::F64(v)) => {
                v.push(n as f64);
                true
            }
            (Kind::Time { unit } | Kind::Timestamp { unit, .. }, Data::I64(v)) => {
                match scalars::micros_from_int(n, unit).and_then(|us| time_of_day(col.kind, us)) {
                    Ok(us) => v.push(us),
                    Err(reason) => return Err(ctx.misfit(&col.path, reason)),
                }
                true
            }
            _ => return Err(ctx.mismatch(col, &format!("number {n}"))),
        };
        match ok {
            true => {
                col.valid.push(true);
                Ok(())
            }
            false => Err(ctx.refuse(
                DeadLetterKind::SchemaMismatch,
                &col.path,
                format!("{}: {n} is out of range for {}", col.path, describe(col.kind)),
            )),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        match i64::try_from(n) {
            Ok(n) => self.visit_i64(n),
            Err(_) => {
                let ValueVisitor(col, ctx) = self;
                match (col.kind, &mut col.data) {
                    (Kind::Float, Data::F32(v)) => v.push(n as f32),
                    (Kind::Double, Data::F64(v)) => v.push(n as f64),
                    _ => {
                        return Err(ctx.refuse(
                            DeadLetterKind::SchemaMismatch,
                            &col.path,
                            format!("{}: {n} is out of range for {}", col.path, describe(col.kind)),
                        ))
                    }
                }
                col.valid.push(true);
                Ok(())
            }
        }
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<(), E> {
        let ValueVisitor(col, ctx) = self;
        let whole = x.fract() == 0.0 && x.is_finite();
        match (col.kind, &mut col.data) {
            (Kind::Float, Data::F32(v)) if x.abs() <= f32::MAX as f64 => v.push(x as f32),
            (Kind::Double, Data::F64(v)) => v.push(x),
            // `3.0` loses nothing in an integer column; `3.5` would, so it is refused.
            (Kind::Int | Kind::Date, Data::I32(v)) if whole && (i32::MIN as f64..=i32::MAX as f64).contains(&x) => {
                v.push(x as i32)
            }
            // Beyond 2^53 a double no longer says which integer was meant.
            (Kind::Long, Data::I64(v)) if whole && x.abs() < MAX_EXACT_DOUBLE => v.push(x as i64),
            (Kind::Time { unit } | Kind::Timestamp { unit, .. }, Data::I64(v)) => {
                match scalars::micros_from_number(x, unit).and_then(|us| time_of_day(col.kind, us)) {
                    Ok(us) => v.push(us),
                    Err(reason) => return Err(ctx.misfit(&col.path, reason)),
                }
            }
            (Kind::Int | Kind::Long | Kind::Date, _) if !whole => {
                return Err(ctx.refuse(
                    DeadLetterKind::SchemaMismatch,
                    &col.path,
                    format!(
                        "{}: {x} has a fraction; {} holds whole numbers",
                        col.path,
                        describe(col.kind)
                    ),
                ))
            }
            (Kind::Long, _) => {
                return Err(ctx.refuse(
                    DeadLetterKind::SchemaMismatch,
                    &col.path,
                    format!(
                        "{}: {x} is beyond 2^53 written as a float, so not exact; write it as an integer",
                        col.path
                    ),
                ))
            }
            (Kind::Int | Kind::Date | Kind::Float, _) => {
                return Err(ctx.refuse(
                    DeadLetterKind::SchemaMismatch,
                    &col.path,
                    format!("{}: {x} is out of range for {}", col.path, describe(col.kind)),
                ))
            }
            _ => return Err(ctx.mismatch(col, &format!("number {x}"))),
        }
        col.valid.push(true);
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        let ValueVisitor(col, ctx) = self;
        match push_str(col, s) {
            Ok(()) => {
                col.valid.push(true);
                Ok(())
            }
            Err(None) => Err(ctx.mismatch(col, &format!("string \"{}\"", scalars::abbreviate(s)))),
            Err(Some(reason)) => Err(ctx.misfit(&col.path, reason)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ValueVisitor(col, ctx) = self;
        match &mut col.data {
            Data::List { offsets, child } => {
                while seq
                    .next_element_seed(ValueSeed {
                        col: child,
                        ctx: &mut *ctx,
                    })?
                    .is_some()
                {}
                offsets.push(child.len() as i32);
            }
            // Maps written as `[{"key": …, "value": …}, …]` (Kafka Connect, Avro JSON).
            Data::Map { offsets, keys, values } => {
                let first = keys.len();
                while seq
                    .next_element_seed(EntrySeed {
                        keys,
                        values,
                        ctx: &mut *ctx,
                    })?
                    .is_some()
                {
                    if keys.repeats_last(first) {
                        let reason = format!("{}: a key appears twice", keys.path);
                        return Err(ctx.refuse(DeadLetterKind::SchemaMismatch, &keys.path, reason));
                    }
                }
                offsets.push(keys.len() as i32);
            }
            _ => return Err(ctx.mismatch(col, "an array")),
        }
        col.valid.push(true);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ValueVisitor(col, ctx) = self;
        let row = col.len();
        match &mut col.data {
            Data::Struct(children) => {
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let key = key.as_str();
                    match children.iter_mut().find(|c| c.field.name() == key) {
                        Some(child) if child.len() > row => {
                            let path = child.path.clone();
                            return Err(ctx.refuse(
                                DeadLetterKind::MalformedJson,
                                &path,
                                format!("{path}: the field appears twice"),
                            ));
                        }
                        Some(child) => map.next_value_seed(ValueSeed {
                            col: child,
                            ctx: &mut *ctx,
                        })?,
                        None => {
                            let path = match col.path.is_empty() {
                                true => scalars::abbreviate(key),
                                false => format!("{}.{}", col.path, scalars::abbreviate(key)),
                            };
                            // Counted once per record, however often a list repeats it.
                            if !ctx.unknown.contains(&path) {
                                ctx.unknown.push(path.clone());
                            }
                            // New fields of the row and of structs nested in structs (not in
                            // lists or maps: those would change every element's type).
                            let plain = |p: &str| !p.contains(['.', '[', '{']);
                            let inferable = ctx.infer && plain(key) && !col.path.contains(['[', '{']);
                            match inferable {
                                true => {
                                    let ty = map.next_value_seed(InferSeed)?;
                                    let at = match col.path.is_empty() {
                                        true => key.to_string(),
                                        false => format!("{}.{key}", col.path),
                                    };
                                    ctx.inferred.push((at, ty));
                                }
                                false => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                    }
                }
                for child in children.iter_mut().filter(|c| c.len() == row) {
                    if child.required {
                        let path = child.path.clone();
                        return Err(ctx.refuse(
                            DeadLetterKind::MissingRequired,
                            &path,
                            format!("{path}: missing (required)"),
                        ));
                    }
                    child.push_null();
                }
            }
            Data::Map { offsets, keys, values } => {
                let first = keys.len();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let key = key.as_str();
                    if let Err(reason) = push_str(keys, key) {
                        let reason = reason.unwrap_or_else(|| format!("\"{}\" is not a {}", key, describe(keys.kind)));
                        return Err(ctx.misfit(&keys.path, reason));
                    }
                    keys.valid.push(true);
                    if keys.repeats_last(first) {
                        let reason = format!("{}: key \"{}\" appears twice", keys.path, scalars::abbreviate(key));
                        return Err(ctx.refuse(DeadLetterKind::SchemaMismatch, &keys.path, reason));
                    }
                    map.next_value_seed(ValueSeed {
                        col: values,
                        ctx: &mut *ctx,
                    })?;
                }
                offsets.push(keys.len() as i32);
            }
            _ => return Err(ctx.mismatch(col, "an object")),
        }
        col.valid.push(true);
        Ok(())
    }
}

/// One `{"key": …, "value": …}` entry of a map written as an array.
struct EntrySeed<'c> {
    keys: &'c mut Column,
    values: &'c mut Column,
    ctx: &'c mut Ctx,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map entry {\"key\": …, \"value\": …}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let EntrySeed { keys, values, ctx } = self;
        let row = keys.len();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            let target = match k.as_str() {
                "key" if keys.len() == row => &mut *keys,
                "value" if values.len() == row => &mut *values,
                other => {
                    let reason = format!(
                        "{}: a map entry holds `key` and `value` once each, not `{other}`",
                        keys.path
                    );
                    return Err(ctx.refuse(DeadLetterKind::SchemaMismatch, &keys.path, reason));
                }
            };
            map.next_value_seed(ValueSeed {
                col: target,
                ctx: &mut *ctx,
            })?;
        }
        if keys.len() == row || keys.valid.last() == Some(&false) {
            return Err(ctx.refuse(
                DeadLetterKind::MissingRequired,
                &keys.path,
                format!("{}: a map entry without a key", keys.path),
            ));
        }
        if values.len() == row {
            if values.required {
                let reason = format!("{}: a map entry without a value", values.path);
                return Err(ctx.refuse(DeadLetterKind::MissingRequired, &values.path, reason));
            }
            values.push_null();
        }
        Ok(())
    }
}

/// A field name, borrowed from the input unless it had escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// Stores text in a column of any scalar type: `Err(None)` when the type takes no text at
/// all, `Err(Some(reason))` when this text does not fit. Leaves validity to the caller.
fn push_str(col: &mut Column, s: &str) -> Result<(), Option<String>> {
    match (col.kind, &mut col.data) {
        (Kind::String, Data::Bytes { offsets, bytes }) => {
            bytes.extend_from_slice(s.as_bytes());
            offsets.push(bytes.len() as i64);
        }
        (Kind::Binary, Data::Bytes { offsets, bytes }) => {
            bytes.extend(scalars::base64_bytes(s).map_err(Some)?);
            offsets.push(bytes.len() as i64);
        }
        (Kind::Uuid, Data::FixedBytes { bytes, .. }) => bytes.extend(scalars::uuid_bytes(s).map_err(Some)?),
        (Kind::Fixed(width), Data::FixedBytes { bytes, .. }) => {
            let b = scalars::base64_bytes(s).map_err(Some)?;
            if b.len() != width as usize {
                return Err(Some(format!(
                    "{} bytes where fixed[{width}] holds exactly {width}",
                    b.len()
                )));
            }
            bytes.extend(b);
        }
        (Kind::Boolean, Data::Bool(v)) => match s {
            "true" => v.push(true),
            "false" => v.push(false),
            _ => return Err(None),
        },
        // Numbers as strings: protobuf's JSON mapping writes 64-bit integers so.
        (Kind::Int, Data::I32(v)) => v.push(s.trim().parse().map_err(|_| None)?),
        (Kind::Long, Data::I64(v)) => v.push(s.trim().parse().map_err(|_| None)?),
        (Kind::Float, Data::F32(v)) => match float(s).ok_or(None)? {
            x if x.is_finite() && x.abs() > f32::MAX as f64 => {
                return Err(Some(format!("{x} is out of range for float")))
            }
            x => v.push(x as f32),
        },
        (Kind::Double, Data::F64(v)) => v.push(float(s).ok_or(None)?),
        (
            Kind::Decimal {
                precision,
                scale,
                bytes,
            },
            Data::I128(v),
        ) => v.push(decimal_text(s, (precision, scale, bytes)).map_err(Some)?),
        (Kind::Date, Data::I32(v)) => v.push(scalars::date_from_str(s).map_err(Some)?),
        (Kind::Time { .. }, Data::I64(v)) => v.push(scalars::time_from_str(s).map_err(Some)?),
        (Kind::Timestamp { .. }, Data::I64(v)) => v.push(scalars::timestamp_from_str(s).map_err(Some)?),
        _ => return Err(None),
    }
    Ok(())
}

/// `us` when it can be a value of `kind`: a time of day lies within one day.
fn time_of_day(kind: Kind, us: i64) -> Result<i64, String> {
    match kind {
        Kind::Time { .. } if !(0..DAY_US).contains(&us) => Err(format!("{us} µs is not a time of day (0 to 24 hours)")),
        _ => Ok(us),
    }
}

/// A float written as text, including protobuf's `NaN`, `Infinity` and `-Infinity`.
fn float(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// A decimal column's precision, scale, and whether its strings are Connect bytes.
type DecimalSpec = (u8, i8, bool);

/// A decimal from a JSON string: decimal text (`"12.50"`), or, where the contract says the
/// column's strings are `connect-bytes`, Kafka Connect's base64 bytes. Never a guess between
/// the two: `"null"` and `"1234"` are valid base64 too.
fn decimal_text(s: &str, (precision, scale, bytes): DecimalSpec) -> Result<i128, String> {
    match bytes {
        false => scalars::decimal_from_text(s, precision, scale),
        true => scalars::decimal_from_bytes(&scalars::base64_bytes(s)?, precision, scale, s),
    }
}

/// A decimal value from its raw JSON text.
fn decimal<E: serde::de::Error>(col: &mut Column, ctx: &mut Ctx, raw: &str, spec: DecimalSpec) -> Result<(), E> {
    let (precision, scale, _) = spec;
    let parsed = match raw.as_bytes().first() {
        Some(b'n') if raw == "null" => return ValueVisitor(col, ctx).visit_unit(),
        Some(b'"') => match serde_json::from_str::<String>(raw) {
            Ok(s) => decimal_text(&s, spec),
            Err(e) => Err(e.to_string()),
        },
        Some(b'-' | b'0'..=b'9') => scalars::decimal_from_text(raw, precision, scale),
        _ => return Err(ctx.mismatch(col, &format!("`{}`", scalars::abbreviate(raw)))),
    };
    match (parsed, &mut col.data) {
        (Ok(v), Data::I128(values)) => {
            values.push(v);
            col.valid.push(true);
            Ok(())
        }
        (Err(reason), _) => Err(ctx.misfit(&col.path, reason)),
        (Ok(_), _) => Err(ctx.mismatch(col, "a decimal")),
    }
}

/// A column type in words, for messages.
fn describe(kind: Kind) -> String {
    match kind {
        Kind::Boolean => "boolean".into(),
        Kind::Int => "int".into(),
        Kind::Long => "long".into(),
        Kind::Float => "float".into(),
        Kind::Double => "double".into(),
        Kind::Decimal { precision, scale, .. } => format!("decimal({precision},{scale})"),
        Kind::Date => "date (YYYY-MM-DD or epoch days)".into(),
        Kind::Time { .. } => "time (HH:MM:SS or an epoch number in the declared unit)".into(),
        Kind::Timestamp { .. } => "timestamp (ISO-8601 or an epoch number in the declared unit)".into(),
        Kind::String => "string".into(),
        Kind::Uuid => "uuid (text)".into(),
        Kind::Binary => "binary (base64)".into(),
        Kind::Fixed(w) => format!("fixed[{w}] (base64)"),
        Kind::Struct => "an object".into(),
        Kind::List => "an array".into(),
        Kind::Map => "an object (map)".into(),
    }
}
