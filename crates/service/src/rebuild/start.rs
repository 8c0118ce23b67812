//! Where a rebuild starts reading, and what the rebuilt table would not have: the records the
//! live table holds that the topic no longer does (retention), or that `--from` skips.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use calve_ingest::KafkaSource;
use calve_table::commit::lost::LostRange;

use crate::error::ServiceError;

const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a rebuild re-reads the topic from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The first offset each partition still holds.
    Earliest,
    /// The first record written at or after this instant (ms since the epoch).
    At(i64),
}

impl ReadFrom {
    /// Parses `earliest` or an RFC 3339 instant.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "earliest" {
            return Ok(ReadFrom::Earliest);
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| ReadFrom::At(t.timestamp_millis()))
            .map_err(|e| format!("--from takes `earliest` or an RFC 3339 instant such as 2026-12-01T00:00:00Z: {e}"))
    }
}

impl fmt::Display for ReadFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadFrom::Earliest => f.write_str("earliest"),
            ReadFrom::At(ms) => match chrono::DateTime::from_timestamp_millis(*ms) {
                Some(t) => write!(f, "{}", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                None => write!(f, "{ms}"),
            },
        }
    }
}

/// Offsets of one partition the live table holds rows of and the rebuild will not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The partition.
    pub partition: i32,
    /// First offset not read.
    pub from: i64,
    /// One past the last.
    pub to: i64,
    /// Why: gone from the topic, or before `--from`.
    pub why: &'static str,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {}: offsets {}..{} ({} records) {}",
            self.partition,
            self.from,
            self.to,
            self.to - self.from,
            self.why
        )
    }
}

/// Where each partition starts, and the losses that implies against a live table that holds
/// everything below `held` except the recorded gaps `gaps`. The table's own first offsets
/// are not recorded, so everything from offset 0 counts as held: a table created after the
/// topic's retention had dropped records is told of losses it never had (said so).
pub async fn plan(
    source: &KafkaSource,
    partitions: &[i32],
    from: ReadFrom,
    held: &BTreeMap<i32, i64>,
    gaps: &[LostRange],
) -> Result<(BTreeMap<i32, i64>, Vec<Loss>), ServiceError> {
    let ends = source.watermarks(partitions, ASK_TIMEOUT).await?;
    let at = match from {
        ReadFrom::Earliest => BTreeMap::new(),
        ReadFrom::At(ms) => source.offsets_at(partitions, ms, ASK_TIMEOUT).await?,
    };
    let mut start = BTreeMap::new();
    let mut losses = Vec::new();
    for p in partitions {
        let low = ends.get(p).map_or(0, |e| e.low);
        let first = at.get(p).copied().unwrap_or(low).max(low);
        start.insert(*p, first);
        let held_to = held.get(p).copied().unwrap_or(0);
        let (gone, skipped) = (low.min(held_to), first.min(held_to));
        for (from, to, why) in [
            (0, gone, "are no longer in the topic (retention or deletion)"),
            (gone, skipped, "are before --from"),
        ] {
            losses.extend(uncovered(*p, from, to, gaps).map(|(from, to)| Loss {
                partition: *p,
                from,
                to,
                why,
            }));
        }
    }
    Ok((start, losses))
}

/// The parts of `[from, to)` of `partition` that no recorded gap covers (the live table never
/// had those records either).
pub(super) fn uncovered(partition: i32, from: i64, to: i64, gaps: &[LostRange]) -> impl Iterator<Item = (i64, i64)> {
    let mut gaps: Vec<(i64, i64)> = gaps
        .iter()
        .filter(|g| g.partition == partition)
        .map(|g| (g.from, g.to))
        .collect();
    gaps.sort();
    let mut out = Vec::new();
    let mut at = from;
    for (gf, gt) in gaps {
        if gt <= at || gf >= to {
            continue;
        }
        if gf > at {
            out.push((at, gf));
        }
        at = at.max(gt);
    }
    if at < to {
        out.push((at, to));
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(partition: i32, from: i64, to: i64) -> LostRange {
        LostRange {
            topic: "t".into(),
            partition,
            from,
            to,
            found_ms: 0,
        }
    }

    #[test]
    fn recorded_gaps_are_not_losses() {
        let gaps = [gap(0, 10, 20), gap(1, 0, 100), gap(0, 30, 35)];
        let got: Vec<_> = uncovered(0, 0, 40, &gaps).collect();
        assert_eq!(got, vec![(0, 10), (20, 30), (35, 40)]);
        assert_eq!(uncovered(1, 0, 50, &gaps).count(), 0);
        assert_eq!(uncovered(0, 5, 5, &gaps).count(), 0);
    }

    #[test]
    fn from_parses_earliest_and_instants() {
        assert_eq!(ReadFrom::parse("earliest"), Ok(ReadFrom::Earliest));
        assert_eq!(
            ReadFrom::parse("2026-12-01T00:00:00Z"),
            Ok(ReadFrom::At(1_796_083_200_000))
        );
        assert!(ReadFrom::parse("yesterday").is_err());
        assert_eq!(ReadFrom::At(1_796_083_200_000).to_string(), "2026-12-01T00:00:00.000Z");
    }
}
