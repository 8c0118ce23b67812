//! The floor under calve's per-record costs: reading the benchmark's topic with calve's own
//! Kafka source (librdkafka, one owned record per message) and nothing else: no decoding, no
//! Parquet, no commit. Printed beside calve's figure, it tells how much of calve's CPU per
//! record the consumer alone takes, which no change to decoding or writing can win back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use calve_ingest::{KafkaConfig, KafkaSource, PartitionEnds};

use crate::cpu_seconds;

/// Longest a read of the topic may take (the broker answers in seconds).
const PATIENCE: Duration = Duration::from_secs(300);

/// CPU-seconds this process took to read every record of `topic` from the beginning, and how
/// many records that was.
pub fn read_alone(bootstrap: &str, topic: &str) -> anyhow::Result<(f64, u64)> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let cfg = KafkaConfig {
            brokers: bootstrap.to_string(),
            group_id: "calve-bench-floor".into(),
            properties: BTreeMap::new(),
            tables_per_consumer: 1,
        };
        let cpu0 = cpu_seconds();
        let mut source = KafkaSource::new(&cfg, topic).await?;
        let partitions = source.first_partitions(Duration::from_secs(10)).await?;
        let ends = source.watermarks(&partitions, Duration::from_secs(10)).await?;
        source.assign(&partitions, &BTreeMap::new())?;
        let deadline = Instant::now() + PATIENCE;
        let mut read = 0u64;
        // Done when every partition's position reaches its end: a count of offsets would wait
        // forever for transaction markers, which are never handed out as records.
        while !reached(&source.positions(), &ends) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "reading {topic} alone took over {PATIENCE:?}"
            );
            let records = source.poll(10_000, Duration::from_millis(500)).await?;
            read += records.len() as u64;
            // Dropped here, as calve drops a poll's records once they are routed.
            drop(records);
        }
        drop(source);
        anyhow::Ok((cpu_seconds() - cpu0, read))
    })
}

/// Whether every partition's next offset is at or past its end (an empty partition has no
/// position to compare).
fn reached(positions: &BTreeMap<i32, i64>, ends: &BTreeMap<i32, PartitionEnds>) -> bool {
    ends.iter()
        .all(|(p, e)| e.end <= e.low || positions.get(p).is_some_and(|at| *at >= e.end))
}

/// Prints the floor beside calve's figure for `mb` megabytes in `cpu` CPU-seconds.
pub fn print(mb: f64, cpu: f64, (floor_cpu, records): (f64, u64)) {
    println!(
        "kafka   : {:.1} MB per CPU-second, {:.0} records per CPU-second reading the topic alone (calve's consumer, \
         nothing decoded or written): {:.0}% of calve's CPU",
        mb / floor_cpu,
        records as f64 / floor_cpu,
        100.0 * floor_cpu / cpu
    );
}
