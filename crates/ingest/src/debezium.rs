//! Debezium change events (JSON converter): the envelope `{before, after, source, op, ts_ms}`,
//! with or without the `{"schema": …, "payload": …}` wrapper that `schemas.enable=true` adds.
//!
//! Creates (`c`), snapshot reads (`r`) and updates (`u`) become the `after` image as a row;
//! deletes (`d`) become the `before` image's key. A primary-key change arrives from Debezium as
//! a delete of the old key followed by a create of the new one, so it needs nothing special.

use serde_json::{Map, Value};

/// What one change event does to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The row as it is now (JSON object bytes).
    Upsert(Vec<u8>),
    /// The row that is gone (JSON object bytes; its key columns say which).
    Delete(Vec<u8>),
}

/// Unwraps one event, or says why it is not a change event calve can apply.
pub fn unwrap(value: &[u8]) -> Result<Change, String> {
    let mut env = envelope(value, false)?;
    let op = env
        .get("op")
        .and_then(Value::as_str)
        .ok_or("no `op` field: not a Debezium change event")?
        .to_string();
    match op.as_str() {
        "c" | "r" | "u" => image(&mut env, "after", &op).map(Change::Upsert),
        "d" => image(&mut env, "before", &op).map(Change::Delete),
        "t" => Err("truncate events are not applied: calve does not empty a table on a source's say-so".into()),
        other => Err(format!("unknown Debezium op `{other}`")),
    }
}

/// Every row image a value carries, whatever its `op` and even when it is no valid change
/// event: its `before` and `after` objects (JSON object bytes). Erasure looks for a person's
/// key in each, since a dead letter's value may be an envelope calve could not apply.
pub fn images(value: &[u8]) -> Vec<Vec<u8>> {
    let Ok(env) = envelope(value, true) else {
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

/// The envelope object, unwrapped from `{"schema": …, "payload": …}` when wrapped. `lenient`
/// also unwraps a `payload` object without a `schema` beside it: not a valid change event,
/// but erasure must still find the images inside a dead letter shaped so.
fn envelope(value: &[u8], lenient: bool) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut env) = v else {
        return Err("not a Debezium change event (not a JSON object)".into());
    };
    if (lenient || env.contains_key("schema")) && env.contains_key("payload") {
        env = match env.remove("payload") {
            Some(Value::Object(p)) => p,
            _ => return Err("Debezium `payload` is not an object".into()),
        };
    }
    Ok(env)
}

fn image(env: &mut Map<String, Value>, field: &str, op: &str) -> Result<Vec<u8>, String> {
    match env.remove(field) {
        Some(img @ Value::Object(_)) => Ok(img.to_string().into_bytes()),
        _ if field == "before" => Err(
            "delete without a `before` image (set the source table's replica identity so deletes carry the key)".into(),
        ),
        _ => Err(format!("op `{op}` without an `{field}` object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_with_and_without_schema_unwrap() {
        let bare =
            br#"{"before":null,"after":{"id":1,"name":"a"},"source":{"connector":"postgresql"},"op":"c","ts_ms":1}"#;
        assert_eq!(
            unwrap(bare).unwrap(),
            Change::Upsert(br#"{"id":1,"name":"a"}"#.to_vec())
        );
        let wrapped = br#"{"schema":{"type":"struct"},"payload":{"before":{"id":1,"name":"a"},"after":null,"op":"d"}}"#;
        assert_eq!(
            unwrap(wrapped).unwrap(),
            Change::Delete(br#"{"id":1,"name":"a"}"#.to_vec())
        );
        assert!(unwrap(br#"{"op":"d","before":null}"#)
            .unwrap_err()
            .contains("replica identity"));
        assert!(unwrap(br#"{"op":"t"}"#).unwrap_err().contains("truncate"));
        assert!(unwrap(br#"{"id":1}"#).unwrap_err().contains("no `op`"));
        assert!(unwrap(b"nope").unwrap_err().contains("not JSON"));
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
