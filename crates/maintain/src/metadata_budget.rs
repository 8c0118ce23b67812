//! What a contract's freshness band and snapshot retention cost in table metadata, before the
//! table exists.
//!
//! Every retained snapshot is an entry of the table's metadata.json, which every commit reads
//! and rewrites and every reader parses before its first data byte: a 1-second band kept for a
//! day is 86,400 snapshots, tens of megabytes of metadata and commits that take seconds. The
//! owner sees the price at `calve check` time, from figures measured on calve's own tables
//! (the commit benchmark), and can cap it with `keep_snapshots.max`.

use calve_contract::Contract;

/// Bytes one retained snapshot adds to metadata.json: the snapshot with calve's summary and
/// its snapshot-log entry. The commit benchmark measures about 750 (a restore point of one
/// Kafka partition: 234 KB at 300 snapshots, 453 KB at 600); the event-time marks add about
/// 110 and each further Kafka partition about 12.
pub const BYTES_PER_SNAPSHOT: u64 = 900;
/// Commit time with a handful of snapshots, and what each retained snapshot adds (the commit
/// benchmark on the 2-core machine: about 3 ms at 10 snapshots, 150-350 ms at 10,000).
const BASE_COMMIT_MS: f64 = 3.0;
const COMMIT_MS_PER_SNAPSHOT: f64 = 0.025;
/// Past this many retained snapshots `calve check` warns: commits take tens of milliseconds
/// more and readers parse a megabyte of metadata and more before reading data.
pub const WARN_SNAPSHOTS: u64 = 1_000;

/// The metadata a contract implies once its table runs steadily.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataBudget {
    /// Snapshots retained: one commit per band while data flows, for `max_age`, at least
    /// `min`, at most `max` (maintenance's rewrites add a few more).
    pub snapshots: u64,
    /// Whether `keep_snapshots.max` is what bounds them.
    pub capped: bool,
    /// metadata.json size.
    pub metadata_bytes: u64,
    /// What each commit costs at that size (ms).
    pub commit_ms: f64,
}

impl MetadataBudget {
    /// What `contract` implies.
    pub fn of(contract: &Contract) -> Self {
        let keep = &contract.maintenance.keep_snapshots;
        let band = contract.sla.freshness.0.as_secs_f64().max(1.0);
        let by_age = (keep.max_age.0.as_secs_f64() / band).ceil() as u64;
        let wanted = by_age.max(u64::from(keep.min));
        let snapshots = match keep.max {
            Some(max) => wanted.min(u64::from(max.max(keep.min))),
            None => wanted,
        };
        MetadataBudget {
            snapshots,
            capped: snapshots < wanted,
            metadata_bytes: snapshots * BYTES_PER_SNAPSHOT,
            commit_ms: BASE_COMMIT_MS + snapshots as f64 * COMMIT_MS_PER_SNAPSHOT,
        }
    }

    /// Whether the owner should be told to cap or shorten retention.
    pub fn too_big(&self) -> bool {
        self.snapshots > WARN_SNAPSHOTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(freshness: &str, keep: &str) -> Contract {
        let text = include_str!("../../../examples/contracts/orders.toml")
            .replace("freshness = \"1m\"", &format!("freshness = \"{freshness}\""))
            .replace(
                "keep_snapshots = { min = 5, max_age = \"24h\", max = 1000 }",
                &format!("keep_snapshots = {keep}"),
            );
        assert!(text.contains(keep));
        Contract::parse(&text, "orders.toml").unwrap()
    }

    #[test]
    fn a_short_band_kept_for_a_day_is_tens_of_thousands_of_snapshots() {
        let b = MetadataBudget::of(&contract("1s", "{ min = 5, max_age = \"24h\" }"));
        assert_eq!(b.snapshots, 86_400);
        assert!(b.too_big() && !b.capped);
        assert_eq!(b.metadata_bytes, 86_400 * BYTES_PER_SNAPSHOT);
        assert!(b.commit_ms > 2_000.0, "{b:?}");
    }

    #[test]
    fn a_cap_bounds_them_and_min_still_counts() {
        let capped = MetadataBudget::of(&contract("1s", "{ min = 5, max_age = \"24h\", max = 500 }"));
        assert_eq!((capped.snapshots, capped.capped, capped.too_big()), (500, true, false));
        let minute = MetadataBudget::of(&contract("1m", "{ min = 5, max_age = \"24h\" }"));
        assert_eq!((minute.snapshots, minute.too_big()), (1_440, true));
        let few = MetadataBudget::of(&contract("1h", "{ min = 50, max_age = \"24h\" }"));
        assert_eq!(few.snapshots, 50);
    }
}
