//! The pipeline's event-time work: moving the table's watermark on as partitions are read
//! and go idle, and saying what each commit declared (see [`crate::watermark`]).

use std::collections::BTreeMap;
use std::time::Duration;

use calve_table::commit::event_time::{format_instant, EventTimeMarks};

use super::Pipeline;

/// How long a commit waits for the partition ends its watermark needs (see
/// `advance_watermark_for_commit`).
const ENDS_FOR_WATERMARK: Duration = Duration::from_secs(2);

impl Pipeline {
    /// Moves the table's watermark on: a partition read up to the end librdkafka last
    /// reported is idle.
    pub(super) fn advance_watermark(&mut self) {
        let ends = self.reported_ends();
        self.advance_watermark_to(&ends);
    }

    /// Each partition's end as librdkafka last reported it.
    fn reported_ends(&self) -> BTreeMap<i32, i64> {
        self.source
            .partition_ends()
            .into_iter()
            .map(|(p, e)| (p, e.end))
            .collect()
    }

    /// [`Pipeline::advance_watermark`] before a commit, so it publishes the watermark the table
    /// has reached: the ends librdkafka has not reported yet (its first statistics come about
    /// a second after the first fetch) are asked of the broker. A broker that cannot answer
    /// soon leaves them to the next commit.
    pub(super) async fn advance_watermark_for_commit(&mut self) {
        let mut ends = self.reported_ends();
        let unknown: Vec<i32> = self
            .partitions
            .iter()
            .copied()
            .filter(|p| !ends.contains_key(p))
            .collect();
        if !unknown.is_empty() {
            match self.source.high_watermarks(&unknown, ENDS_FOR_WATERMARK).await {
                Ok(asked) => ends.extend(asked),
                Err(e) => {
                    tracing::debug!(table = %self.contract.table.name, "partition ends unknown for the watermark: {e}")
                }
            }
        }
        self.advance_watermark_to(&ends);
    }

    /// A partition is idle when it is read up to `ends`: past its buffered records, or past
    /// what the consumer has fetched (which includes transaction markers, which are no
    /// records).
    fn advance_watermark_to(&mut self, ends: &BTreeMap<i32, i64>) {
        let (next, fetched) = (self.positions(), self.source.positions());
        let read = |p: i32| next.get(&p).copied().max(fetched.get(&p).copied()).unwrap_or(0);
        let idle = |p: i32| ends.get(&p).is_some_and(|end| *end <= read(p));
        self.watermark.advance(&self.partitions, idle);
    }

    /// A commit carrying `marks` landed: says what it declared.
    pub(super) fn published(&mut self, marks: &EventTimeMarks) {
        let table = &self.contract.table.name;
        if !marks.reopened.is_empty() {
            tracing::warn!(
                table, partitions = %marks.reopened.join(", "),
                "late events landed in partitions the table had declared complete; they are reopened \
                 (named in the snapshot summary's calve.reopened-partitions)"
            );
        }
        let before = self.watermark.published();
        if let Some(through) = marks.complete_through_us.filter(|c| before.is_none_or(|b| *c > b)) {
            tracing::info!(table, complete_through = %format_instant(through), "event time is complete through a new partition boundary");
        }
        self.stats.record_event_time(marks);
        let committed = self.positions();
        self.watermark
            .committed(marks, super::replaying(&self.dlq_covered, &committed));
    }
}
