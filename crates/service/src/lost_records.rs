//! What a table does when Kafka no longer holds the records it was going to read.
//!
//! A topic's retention deletes records whether or not calve has read them; a table that was
//! stopped (or too slow) for longer than the retention finds its restore point below the
//! first offset the broker still holds. librdkafka would silently jump to the earliest
//! offset; calve has it report the gap instead (`auto.offset.reset = error`) and follows the
//! contract's `on_lost_records`: stop the table, or read on and record the gap in the table.
//! Under "continue" the gap is logged as an error and counted once committed; under "stop"
//! the stop names it. A restore point *past* the end of a partition means the topic was
//! recreated or truncated; calve cannot tell which (one means re-reading from the start, the
//! other skipping to the end), so it never reads on: the table fails loudly and is opened
//! again with backoff (a broker that misreported its end for a moment does not stop a table
//! for good), until a person decides.

use std::collections::BTreeMap;

use calve_contract::{Contract, OnLostRecords};
use calve_ingest::PartitionEnds;
use calve_table::commit::lost::LostRange;

use crate::error::ServiceError;

/// Partitions whose next offset is outside what the broker holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OutOfRange {
    /// Below the first offset the broker holds: records lost to retention.
    pub gaps: Vec<LostRange>,
    /// Past the end: `(partition, next offset, the broker's end)`.
    pub past_end: Vec<(i32, i64, i64)>,
}

/// Compares where the table reads next (`next`; partitions it holds nothing of start at the
/// beginning and cannot be out of range) with what the broker holds (`held`).
pub(crate) fn compare(
    topic: &str,
    next: &BTreeMap<i32, i64>,
    held: &BTreeMap<i32, PartitionEnds>,
    now_ms: i64,
) -> OutOfRange {
    let mut found = OutOfRange::default();
    for (p, ends) in held {
        let Some(&at) = next.get(p) else { continue };
        if at < ends.low {
            found.gaps.push(LostRange {
                topic: topic.to_string(),
                partition: *p,
                from: at,
                to: ends.low,
                found_ms: now_ms,
            });
        } else if at > ends.end {
            found.past_end.push((*p, at, ends.end));
        }
    }
    found
}

/// Logs what was found as an error and decides under the contract: `Ok` with the gaps to read
/// past, or the error that stops the table.
pub(crate) fn judge(contract: &Contract, found: OutOfRange) -> Result<Vec<LostRange>, ServiceError> {
    let table = &contract.table.name;
    // librdkafka reports a reset for more than a gap (a failed offset lookup, a truncated
    // prefetch); with every position in range there is nothing to decide.
    if found == OutOfRange::default() {
        return Ok(Vec::new());
    }
    if !found.past_end.is_empty() {
        let what: Vec<String> = found
            .past_end
            .iter()
            .map(|(p, at, end)| format!("partition {p}: the table reads next at {at}, the broker ends at {end}"))
            .collect();
        return Err(ServiceError::PastEnd {
            table: table.clone(),
            what: what.join("; "),
        });
    }
    let gaps: Vec<String> = found.gaps.iter().map(ToString::to_string).collect();
    let gaps_text = gaps.join(", ");
    match contract.table.on_lost_records {
        OnLostRecords::Stop => Err(ServiceError::LostRecords {
            table: table.clone(),
            gaps: gaps_text,
        }),
        OnLostRecords::Continue => {
            for gap in &found.gaps {
                tracing::error!(
                    table, topic = %gap.topic, partition = gap.partition, from = gap.from, to = gap.to,
                    records = gap.len(),
                    "RECORDS LOST: Kafka deleted records before calve read them (retention); reading on after the gap \
                     (on_lost_records = \"continue\"), recorded in the table's calve.lost-records"
                );
            }
            Ok(found.gaps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(low: i64, end: i64) -> PartitionEnds {
        PartitionEnds {
            low,
            end,
            heard_ms: None,
        }
    }

    fn contract(policy: &str) -> Contract {
        let text = include_str!("../../../examples/contracts/orders.toml").replacen(
            "format = \"json\"\n",
            &format!("format = \"json\"\non_lost_records = \"{policy}\"\n"),
            1,
        );
        Contract::parse(&text, "orders.toml").unwrap()
    }

    #[test]
    fn nothing_out_of_range_is_nothing_to_decide_and_past_the_end_never_reads_on() {
        for policy in ["stop", "continue"] {
            assert_eq!(judge(&contract(policy), OutOfRange::default()).unwrap(), vec![]);
            let past = OutOfRange {
                gaps: Vec::new(),
                past_end: vec![(1, 90, 80)],
            };
            assert!(matches!(
                judge(&contract(policy), past),
                Err(ServiceError::PastEnd { .. })
            ));
        }
        let gap = compare(
            "orders",
            &BTreeMap::from([(0, 5)]),
            &BTreeMap::from([(0, ends(9, 20))]),
            0,
        );
        assert!(matches!(
            judge(&contract("stop"), gap.clone()),
            Err(ServiceError::LostRecords { .. })
        ));
        assert_eq!(judge(&contract("continue"), gap).unwrap().len(), 1);
    }

    #[test]
    fn gaps_are_below_the_first_offset_held_and_new_partitions_have_none() {
        let next = BTreeMap::from([(0, 100), (1, 50), (2, 900)]);
        let held = BTreeMap::from([
            (0, ends(250, 1000)),
            (1, ends(10, 60)),
            (2, ends(0, 800)),
            (3, ends(40, 90)),
        ]);
        let found = compare("t", &next, &held, 7);
        assert_eq!(
            found.gaps,
            vec![LostRange {
                topic: "t".into(),
                partition: 0,
                from: 100,
                to: 250,
                found_ms: 7
            }]
        );
        assert_eq!(found.past_end, vec![(2, 900, 800)]);
    }
}
