//! The table's event-time progress, kept in the table itself so consumers can ask it without
//! calve.
//!
//! A report over yesterday must know whether yesterday is in. Every snapshot calve commits
//! carries the table's watermark (`calve.watermark`: events older than it may still arrive
//! only as late data) and, when the contract promises completeness, `calve.complete-through`
//! (every event-time partition that ends at or before it is complete). Both are UTC instants
//! in one fixed-width RFC 3339 form (`2026-01-02T00:00:00.000000Z`), so they compare as text
//! in any SQL engine, and both are carried forward by maintenance commits like the restore
//! point, so the current snapshot always has them. A commit that wrote rows into partitions an
//! earlier snapshot had declared complete names them in `calve.reopened-partitions` (that
//! snapshot only), so consumers that cached results know what to recompute.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat};
use iceberg::spec::TableMetadata;

use super::restore::restore_snapshot;

/// Summary key: the table's event-time watermark.
pub const WATERMARK_KEY: &str = "calve.watermark";
/// Summary key: every partition ending at or before this instant is complete.
pub const COMPLETE_THROUGH_KEY: &str = "calve.complete-through";
/// Summary key (only on the snapshot that did it): partitions this commit reopened, as
/// `field=value` names joined by `,`.
pub const REOPENED_KEY: &str = "calve.reopened-partitions";

/// What a commit says about event time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTimeMarks {
    /// The watermark (µs since the epoch), once the table has one.
    pub watermark_us: Option<i64>,
    /// Complete through (µs since the epoch), when the contract promises completeness.
    pub complete_through_us: Option<i64>,
    /// Partitions an earlier snapshot had declared complete that this commit writes into.
    pub reopened: Vec<String>,
}

impl EventTimeMarks {
    /// The marks as of the snapshot that holds the restore point (what a restart resumes
    /// from, and what maintenance commits carry forward). Never a reopening: that belongs to
    /// the one commit that did it.
    pub fn carried(metadata: &TableMetadata) -> Self {
        let Some(snapshot) = restore_snapshot(metadata) else {
            return Self::default();
        };
        let props = &snapshot.summary().additional_properties;
        let read = |key: &str| props.get(key).and_then(|v| parse_instant(v));
        EventTimeMarks {
            watermark_us: read(WATERMARK_KEY),
            complete_through_us: read(COMPLETE_THROUGH_KEY),
            reopened: Vec::new(),
        }
    }

    /// Writes the marks into a snapshot summary's properties.
    pub fn write_into(&self, props: &mut HashMap<String, String>) {
        if let Some(w) = self.watermark_us {
            props.insert(WATERMARK_KEY.to_string(), format_instant(w));
        }
        if let Some(c) = self.complete_through_us {
            props.insert(COMPLETE_THROUGH_KEY.to_string(), format_instant(c));
        }
        if !self.reopened.is_empty() {
            props.insert(REOPENED_KEY.to_string(), self.reopened.join(","));
        }
    }
}

/// `2026-01-02T00:00:00.000000Z`: always microseconds and `Z`, so marks compare as text.
pub fn format_instant(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_else(|| us.to_string())
}

/// Reads an instant written by [`format_instant`] (any RFC 3339 instant).
pub fn parse_instant(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_fixed_width_and_sort_as_text() {
        let a = format_instant(1_767_225_600_000_000); // 2026-01-01T00:00:00Z
        let b = format_instant(1_767_225_600_000_001);
        assert_eq!(a, "2026-01-01T00:00:00.000000Z");
        assert_eq!(b, "2026-01-01T00:00:00.000001Z");
        assert!(a < b);
        assert_eq!(parse_instant(&b), Some(1_767_225_600_000_001));
    }

    #[test]
    fn marks_are_written_only_when_known() {
        let mut props = HashMap::new();
        EventTimeMarks::default().write_into(&mut props);
        assert!(props.is_empty());
        let marks = EventTimeMarks {
            watermark_us: Some(0),
            complete_through_us: None,
            reopened: vec!["ts_day=2026-01-01".into(), "ts_day=2026-01-02".into()],
        };
        marks.write_into(&mut props);
        assert_eq!(props[WATERMARK_KEY], "1970-01-01T00:00:00.000000Z");
        assert_eq!(props[REOPENED_KEY], "ts_day=2026-01-01,ts_day=2026-01-02");
        assert!(!props.contains_key(COMPLETE_THROUGH_KEY));
    }
}
