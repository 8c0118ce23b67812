//! Deterministic order events (the shape of `examples/contracts/orders.toml`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One good order event's JSON, fully determined by `id`.
pub fn order_json(id: u64) -> String {
    let statuses = ["placed", "paid", "shipped", "delivered"];
    // Three days of event time, so day partitions are exercised.
    let ts = 1_763_942_400 + (id as i64 * 7_919) % (3 * 86_400);
    let ts = rfc3339(ts);
    format!(
        r#"{{"order_id":{id},"customer":"customer-{c}","amount":{a}.5,"status":"{s}","ts":"{ts}"}}"#,
        c = id % 97,
        a = id % 1000,
        s = statuses[(id % 4) as usize]
    )
}

/// The day partition (days since epoch) an order's event time falls in.
pub fn order_day(id: u64) -> i64 {
    (1_763_942_400 + (id as i64 * 7_919) % (3 * 86_400)).div_euclid(86_400)
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("in range")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A customer's state at `version` (the shape of `examples/contracts/customers.toml`): every
/// column is a function of `(id, version)`, so a reader's row says which version it holds.
/// Versions spread over three months of `updated_at`, so updates move rows across partitions.
pub fn customer_json(id: u64, version: u64) -> String {
    let tiers = ["free", "pro", "enterprise"];
    let ts = 1_756_684_800 + ((id * 31 + version * 86_413) % (90 * 86_400)) as i64;
    format!(
        r#"{{"customer_id":{id},"name":"customer {id} v{version}","tier":"{t}","version":{version},"updated_at":"{ts}"}}"#,
        t = tiers[((id + version) % 3) as usize],
        ts = rfc3339(ts),
    )
}

/// A Debezium change event (PostgreSQL connector, JSON converter) for the customers table:
/// `before`/`after` are `(id, version)` images shaped like [`customer_json`]. With `wrapped`,
/// the `{"schema", "payload"}` form that `value.converter.schemas.enable=true` produces.
pub fn debezium_event(
    op: &str,
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    lsn: u64,
    wrapped: bool,
) -> String {
    let img = |i: Option<(u64, u64)>| i.map_or("null".to_string(), |(id, v)| customer_json(id, v));
    let snapshot = if op == "r" { "true" } else { "false" };
    let payload = format!(
        r#"{{"before":{b},"after":{a},"source":{{"version":"2.7.3.Final","connector":"postgresql","name":"crm","ts_ms":1763942400000,"snapshot":"{snapshot}","db":"crm","sequence":"[null,\"{lsn}\"]","schema":"public","table":"customers","txId":{tx},"lsn":{lsn},"xmin":null}},"op":"{op}","ts_ms":1763942400123,"transaction":null}}"#,
        b = img(before),
        a = img(after),
        tx = 500 + lsn / 8,
    );
    if !wrapped {
        return payload;
    }
    let image_schema = |field: &str| {
        format!(
            r#"{{"type":"struct","fields":[{{"type":"int64","optional":false,"field":"customer_id"}},{{"type":"string","optional":true,"field":"name"}},{{"type":"string","optional":true,"field":"tier"}},{{"type":"int64","optional":true,"field":"version"}},{{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"updated_at"}}],"optional":true,"name":"crm.public.customers.Value","field":"{field}"}}"#
        )
    };
    format!(
        r#"{{"schema":{{"type":"struct","fields":[{},{},{{"type":"struct","fields":[],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"}},{{"type":"string","optional":false,"field":"op"}},{{"type":"int64","optional":true,"field":"ts_ms"}}],"optional":false,"name":"crm.public.customers.Envelope","version":2}},"payload":{payload}}}"#,
        image_schema("before"),
        image_schema("after"),
    )
}

/// A Debezium record key (`{"customer_id": id}`, optionally schema-wrapped).
pub fn debezium_key(id: u64, wrapped: bool) -> String {
    match wrapped {
        false => format!(r#"{{"customer_id":{id}}}"#),
        true => format!(
            r#"{{"schema":{{"type":"struct","fields":[{{"type":"int64","optional":false,"field":"customer_id"}}],"optional":false,"name":"crm.public.customers.Key"}},"payload":{{"customer_id":{id}}}}}"#
        ),
    }
}

/// A corpus of values that must be dead-lettered, with the error kind calve should record.
pub fn bad_values() -> Vec<(Option<String>, &'static str)> {
    vec![
        (Some(r#"{"order_id": 1, "amount": "#.into()), "malformed-json"),
        (Some("[1,2,3]".into()), "malformed-json"),
        (Some("not json at all".into()), "malformed-json"),
        (Some(String::new()), "malformed-json"),
        (Some(r#"{"order_id":1}{"order_id":2}"#.into()), "malformed-json"),
        (
            Some(r#"{"customer":"x","ts":"2025-11-24T00:00:00Z"}"#.into()),
            "missing-required",
        ),
        (
            Some(r#"{"order_id":null,"ts":"2025-11-24T00:00:00Z"}"#.into()),
            "missing-required",
        ),
        (
            Some(r#"{"order_id":"seven","ts":"2025-11-24T00:00:00Z"}"#.into()),
            "schema-mismatch",
        ),
        (
            Some(r#"{"order_id":7,"amount":"lots","ts":"2025-11-24T00:00:00Z"}"#.into()),
            "schema-mismatch",
        ),
        (Some(r#"{"order_id":8,"ts":"the day after"}"#.into()), "schema-mismatch"),
        (
            Some(r#"{"order_id":1.5,"ts":"2025-11-24T00:00:00Z"}"#.into()),
            "schema-mismatch",
        ),
        (None, "tombstone"),
    ]
}

/// A seeded shuffle of good ids and bad-value indices: `Ok(id)` or `Err(index into bad_values)`.
pub fn mixed(n_good: u64, bad_repeats: usize, seed: u64) -> Vec<Result<u64, usize>> {
    let mut v: Vec<Result<u64, usize>> = (0..n_good).map(Ok).collect();
    let nbad = bad_values().len();
    v.extend((0..bad_repeats * nbad).map(|i| Err(i % nbad)));
    let mut rng = StdRng::seed_from_u64(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, rng.gen_range(0..=i));
    }
    v
}

#[cfg(test)]
mod debezium_tests {
    use super::*;

    #[test]
    fn events_are_valid_json_of_the_documented_shape() {
        for wrapped in [false, true] {
            let e: serde_json::Value =
                serde_json::from_str(&debezium_event("u", Some((1, 1)), Some((1, 2)), 42, wrapped)).unwrap();
            let p = if wrapped { &e["payload"] } else { &e };
            assert_eq!(p["op"], "u");
            assert_eq!(p["after"]["version"], 2);
            assert_eq!(p["source"]["lsn"], 42);
            let k: serde_json::Value = serde_json::from_str(&debezium_key(9, wrapped)).unwrap();
            assert!(k.to_string().contains("9"));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_763_942_400), "2025-11-24T00:00:00Z");
    }
}
