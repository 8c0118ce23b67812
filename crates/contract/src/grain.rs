//! Event-time partitions as instants: where the partition holding an instant begins, and the
//! name readers know it by. Completeness is declared per partition, so the watermark, the
//! late-data rules and the reopened-partition report all need the same boundaries the table's
//! partition transform draws (Iceberg's `hour`, `day` and `month`, in UTC).

use chrono::{DateTime, Datelike, NaiveDate, Timelike};

use crate::types::PartitionGrain;

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

impl PartitionGrain {
    /// The first instant (µs since the epoch, UTC) of the partition holding `us`; `us`
    /// itself for an unpartitioned table, whose only boundary is the instant.
    pub fn start_of(self, us: i64) -> i64 {
        match self {
            PartitionGrain::Hour => us.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR,
            PartitionGrain::Day => us.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY,
            PartitionGrain::Month => {
                let Some(t) = DateTime::from_timestamp_micros(us) else {
                    return us;
                };
                NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map_or(us, |d| d.and_utc().timestamp_micros())
            }
            PartitionGrain::None => us,
        }
    }

    /// The partition holding `us` as engines name it: `ts_day=2026-01-01`,
    /// `ts_hour=2026-01-01-10`, `ts_month=2026-01` (the field named as calve names partition
    /// fields, `column_transform`); `(unpartitioned)` for a table without partitions.
    pub fn label(self, column: &str, us: i64) -> String {
        let Some(t) = DateTime::from_timestamp_micros(us) else {
            return us.to_string();
        };
        match self {
            PartitionGrain::Hour => format!("{column}_hour={}-{:02}", t.format("%Y-%m-%d"), t.hour()),
            PartitionGrain::Day => format!("{column}_day={}", t.format("%Y-%m-%d")),
            PartitionGrain::Month => format!("{column}_month={}", t.format("%Y-%m")),
            PartitionGrain::None => "(unpartitioned)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
    }

    #[test]
    fn partitions_begin_where_icebergs_transforms_cut() {
        let t = at("2026-03-15T10:42:07.5Z");
        assert_eq!(PartitionGrain::Hour.start_of(t), at("2026-03-15T10:00:00Z"));
        assert_eq!(PartitionGrain::Day.start_of(t), at("2026-03-15T00:00:00Z"));
        assert_eq!(PartitionGrain::Month.start_of(t), at("2026-03-01T00:00:00Z"));
        assert_eq!(PartitionGrain::None.start_of(t), t);
        // Before 1970 the cut still rounds down, as Iceberg's transforms do.
        assert_eq!(
            PartitionGrain::Day.start_of(at("1969-12-31T23:00:00Z")),
            at("1969-12-31T00:00:00Z")
        );
    }

    #[test]
    fn labels_are_the_names_engines_show() {
        let t = at("2026-03-15T09:42:07Z");
        assert_eq!(PartitionGrain::Hour.label("ts", t), "ts_hour=2026-03-15-09");
        assert_eq!(PartitionGrain::Day.label("ts", t), "ts_day=2026-03-15");
        assert_eq!(PartitionGrain::Month.label("ts", t), "ts_month=2026-03");
    }
}
