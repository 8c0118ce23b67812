//! Records Kafka deleted before calve read them, kept in the table itself.
//!
//! When a contract says `on_lost_records = "continue"`, the table reads on past records that
//! the topic's retention removed; the gap is data the table will never have, so it belongs
//! with the table, not only in a log that rotates away. Every snapshot carries the table's
//! most recent gaps in its summary (carried forward like the restore point, so expiry never
//! loses them), where `calve status`, a person and any engine can find them.

use iceberg::spec::TableMetadata;
use serde::{Deserialize, Serialize};

use super::restore::carried;
use crate::error::Result;

/// Summary key: a JSON array of [`LostRange`]s, oldest first.
pub const LOST_RECORDS_KEY: &str = "calve.lost-records";

/// How many gaps the summary keeps (the newest): a topic that keeps outrunning calve must not
/// grow every snapshot's summary without bound. The count in the metrics has them all.
pub const LOST_RANGES_CAP: usize = 100;

/// Offsets `from..to` (end exclusive) of a partition, which the table will never hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset the table did not read.
    pub from: i64,
    /// The first offset Kafka still held: reading went on from here.
    pub to: i64,
    /// When calve found the gap (ms since the epoch).
    pub found_ms: i64,
}

impl LostRange {
    /// How many offsets the gap spans (an upper bound on records: transaction markers and
    /// compacted-away offsets have offsets too).
    pub fn len(&self) -> u64 {
        (self.to - self.from).max(0) as u64
    }

    /// Whether the gap spans no offset.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for LostRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} offsets {}..{} ({} records)",
            self.topic,
            self.partition,
            self.from,
            self.to,
            self.len()
        )
    }
}

/// The table's recorded gaps, from the snapshot that holds the restore point.
pub fn lost_records(metadata: &TableMetadata) -> Result<Vec<LostRange>> {
    carried(metadata, LOST_RECORDS_KEY)
}

/// Appends `new` to `into`, keeping the newest [`LOST_RANGES_CAP`].
pub fn add_lost_records(into: &mut Vec<LostRange>, new: &[LostRange]) {
    into.extend(new.iter().cloned());
    let over = into.len().saturating_sub(LOST_RANGES_CAP);
    into.drain(..over);
}

/// The summary form.
pub fn format_lost_records(ranges: &[LostRange]) -> String {
    serde_json::to_string(ranges).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(from: i64) -> LostRange {
        LostRange {
            topic: "t".into(),
            partition: 0,
            from,
            to: from + 10,
            found_ms: 0,
        }
    }

    #[test]
    fn the_newest_gaps_are_kept() {
        let mut all = Vec::new();
        for i in 0..(LOST_RANGES_CAP as i64 + 5) {
            add_lost_records(&mut all, &[range(i * 100)]);
        }
        assert_eq!(all.len(), LOST_RANGES_CAP);
        assert_eq!(all[0].from, 500, "the five oldest went");
        assert_eq!(all.last().unwrap().from, (LOST_RANGES_CAP as i64 + 4) * 100);
        let text = format_lost_records(&all[..1]);
        assert_eq!(
            text,
            r#"[{"topic":"t","partition":0,"from":500,"to":510,"found_ms":0}]"#
        );
        assert_eq!(all[0].to_string(), "t/0 offsets 500..510 (10 records)");
    }
}
