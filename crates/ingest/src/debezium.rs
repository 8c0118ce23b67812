//! Debezium change events (JSON converter): the envelope `{before, after, source, op, ts_ms}`,
//! with or without the `{"schema": …, "payload": …}` wrapper that `schemas.enable=true` adds.
//!
//! Creates (`c`), snapshot reads (`r`) and updates (`u`) become the `after` image as a row;
//! deletes (`d`) become the `before` image's key. A primary-key change arrives from Debezium as
//! a delete of the old key followed by a create of the new one, so it needs nothing special.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What one change event does to the table: the image it names, as the bytes of the event
/// (no copy, not parsed yet: the row decoder parses it once, into the table's columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// The row as it is now (a JSON object).
    Upsert(&'a [u8]),
    /// The row that is gone (a JSON object; its key columns say which).
    Delete(&'a [u8]),
}

/// The envelope's fields calve reads; the rest (`source`, `ts_ms`, `transaction`) is skipped
/// without being built.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    /// Whether a `schema` key is present (null or not: Connect writes `"schema": null` for
    /// schemaless payloads too), skipped unbuilt.
    #[serde(default, deserialize_with = "present")]
    schema: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// Unwraps one event, or says why it is not a change event calve can apply.
pub fn unwrap(value: &[u8]) -> Result<Change<'_>, String> {
    if value.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a Debezium change event (not a JSON object)".into());
    }
    let mut env: Envelope = serde_json::from_slice(value).map_err(|e| format!("not a Debezium change event: {e}"))?;
    if let (true, Some(payload)) = (env.schema, env.payload) {
        env = serde_json::from_str(payload.get()).map_err(|e| format!("Debezium `payload` is not an envelope: {e}"))?;
    }
    let op = env.op.as_deref().ok_or("no `op` field: not a Debezium change event")?;
    match op {
        "c" | "r" | "u" => image(env.after, "after", op).map(Change::Upsert),
        "d" => image(env.before, "before", op).map(Change::Delete),
        "t" => Err("truncate events are not applied: calve does not empty a table on a source's say-so".into()),
        other => Err(format!("unknown Debezium op `{other}`")),
    }
}

fn image<'a>(raw: Option<&'a RawValue>, field: &str, op: &str) -> Result<&'a [u8], String> {
    match raw.map(RawValue::get) {
        Some(img) if img.starts_with('{') => Ok(img.as_bytes()),
        _ if field == "before" => Err(
            "delete without a `before` image (set the source table's replica identity so deletes carry the key)".into(),
        ),
        _ => Err(format!("op `{op}` without an `{field}` object")),
    }
}

/// Every row image a value carries, whatever its `op` and even when it is no valid change
/// event: its `before` and `after` objects (JSON object bytes). Erasure looks for a person's
/// key in each, since a dead letter's value may be an envelope calve could not apply.
pub fn images(value: &[u8]) -> Vec<Vec<u8>> {
    let Ok(env) = envelope(value) else {
        return Vec::new();
    };
    ["before", "after"]
        .into_iter()
        .filter_map(|field| match env.get(field) {
            Some(img @ Value::Object(_)) => Some(img.to_string().into_bytes()),
            _ => None,
        })
        .collect()
}

/// The envelope object, unwrapped from `{"payload": …}` (with or without `schema` beside it:
/// not a valid change event without, but erasure must still find the images inside a dead
/// letter shaped so).
fn envelope(value: &[u8]) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut env) = v else {
        return Err("not a Debezium change event (not a JSON object)".into());
    };
    if env.contains_key("payload") {
        env = match env.remove("payload") {
            Some(Value::Object(p)) => p,
            _ => return Err("Debezium `payload` is not an object".into()),
        };
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_with_and_without_schema_unwrap() {
        let bare =
            br#"{"before":null,"after":{"id":1,"name":"a"},"source":{"connector":"postgresql"},"op":"c","ts_ms":1}"#;
        assert_eq!(unwrap(bare).unwrap(), Change::Upsert(br#"{"id":1,"name":"a"}"#));
        let wrapped = br#"{"schema":{"type":"struct"},"payload":{"before":{"id":1,"name":"a"},"after":null,"op":"d"}}"#;
        assert_eq!(unwrap(wrapped).unwrap(), Change::Delete(br#"{"id":1,"name":"a"}"#));
        assert!(unwrap(br#"{"op":"d","before":null}"#)
            .unwrap_err()
            .contains("replica identity"));
        assert!(unwrap(br#"{"op":"t"}"#).unwrap_err().contains("truncate"));
        assert!(unwrap(br#"{"id":1}"#).unwrap_err().contains("no `op`"));
        assert!(unwrap(b"nope").unwrap_err().contains("not a Debezium change event"));
        assert!(unwrap(br#"[null, {"id":1}, "c"]"#)
            .unwrap_err()
            .contains("not a JSON object"));
        let null_schema = br#"{"schema":null,"payload":{"after":{"id":2},"op":"c"}}"#;
        assert_eq!(unwrap(null_schema).unwrap(), Change::Upsert(br#"{"id":2}"#));
    }

    #[test]
    fn images_are_found_in_any_envelope() {
        let wrapped = br#"{"schema":{},"payload":{"before":{"id":1},"after":{"id":2},"op":"u"}}"#;
        assert_eq!(images(wrapped), vec![br#"{"id":1}"#.to_vec(), br#"{"id":2}"#.to_vec()]);
        assert_eq!(images(br#"{"after":{"id":3},"op":"t"}"#), vec![br#"{"id":3}"#.to_vec()]);
        assert!(images(br#"{"id":1}"#).is_empty());
        assert_eq!(
            images(br#"{"payload":{"after":{"id":4}}}"#),
            vec![br#"{"id":4}"#.to_vec()]
        );
        assert!(images(b"nope").is_empty());
    }
}
