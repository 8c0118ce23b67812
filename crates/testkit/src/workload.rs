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
    chrono::DateTime::from_timestamp(secs, 0).expect("in range").format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A corpus of values that must be dead-lettered, with the error kind calve should record.
pub fn bad_values() -> Vec<(Option<String>, &'static str)> {
    vec![
        (Some(r#"{"order_id": 1, "amount": "#.into()), "malformed-json"),
        (Some("[1,2,3]".into()), "malformed-json"),
        (Some("not json at all".into()), "malformed-json"),
        (Some(String::new()), "malformed-json"),
        (Some(r#"{"order_id":1}{"order_id":2}"#.into()), "malformed-json"),
        (Some(r#"{"customer":"x","ts":"2025-11-24T00:00:00Z"}"#.into()), "missing-required"),
        (Some(r#"{"order_id":null,"ts":"2025-11-24T00:00:00Z"}"#.into()), "missing-required"),
        (Some(r#"{"order_id":"seven","ts":"2025-11-24T00:00:00Z"}"#.into()), "schema-mismatch"),
        (Some(r#"{"order_id":7,"amount":"lots","ts":"2025-11-24T00:00:00Z"}"#.into()), "schema-mismatch"),
        (Some(r#"{"order_id":8,"ts":"the day after"}"#.into()), "schema-mismatch"),
        (Some(r#"{"order_id":1.5,"ts":"2025-11-24T00:00:00Z"}"#.into()), "schema-mismatch"),
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
mod tests {
    #[test]
    fn dates_are_civil() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_763_942_400), "2025-11-24T00:00:00Z");
    }
}
