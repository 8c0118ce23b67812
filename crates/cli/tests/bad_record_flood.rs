//! A stream of bad records cannot grow calve's memory without bound: dead letters count toward
//! the buffer's size trigger like rows, so a topic of nothing but garbage commits to the
//! dead-letter table every few megabytes instead of holding the flood until the band ends.
//!
//! One million malformed records (`CALVE_BAD_RECORDS`) in 16 partitions of librdkafka's mock
//! cluster (tansu answers a fetch with a whole partition whatever the consumer's fetch limits,
//! so through it librdkafka's prefetch, not calve, would decide the memory), a 10-minute band
//! (so only size can trigger a commit) and a 4 MB target file size: the buffer, as calve
//! reports it on `/metrics` while it runs, never exceeds its documented bound (eight target
//! sizes); the process's memory in the second half of the flood is no larger than in the
//! first; every record is in the dead-letter table once, read back by PyIceberg and DuckDB.
//! Maintenance is off: compacting the dead-letter table reads whole jobs into memory, which is
//! maintenance's cost, not ingestion's.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calve_testkit::calve::{kill9, wait_for, Setup};
use calve_testkit::kafka::{produce, Message};
use calve_testkit::prometheus::get;
use common::*;

const TARGET: u64 = 4 << 20;

/// The resident memory of process `pid` now, in bytes (`VmRSS`).
fn resident(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The value of the unlabelled-but-`table` gauge `name` for `table` on a `/metrics` page.
fn gauge(page: &str, name: &str, table: &str) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("table=\"{table}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_million_bad_records_stay_within_the_memory_bound_and_all_reach_the_dead_letter_table() {
    let n = calve_testkit::env_count("CALVE_BAD_RECORDS", 1_000_000);
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("orders", 16, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let contract =
        orders_contract("orders", "10m").replace("target_file_size = \"256MB\"", "target_file_size = \"4MB\"");
    assert!(contract.contains("target_file_size = \"4MB\""));
    let s = Setup::new(&bootstrap, &contract).without_maintenance();
    let (_lease, listen) = s.serving_http();

    let started = Instant::now();
    let bad: Vec<Message> = (0..n)
        .map(|i| (format!("k{i}"), Some(format!("not json {i}")), None))
        .collect();
    produce(&bootstrap, "orders", &bad);
    drop(bad);
    eprintln!("produced {n} bad records in {:?}", started.elapsed());

    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    // The largest buffer reported, and the process's resident memory at each sample.
    let seen = Arc::new(Mutex::new((0f64, Vec::new())));
    let watcher = {
        let (stop, seen, url) = (stop.clone(), seen.clone(), format!("http://{listen}/metrics"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let buffered = get(&url).and_then(|(_, page)| gauge(&page, "calve_buffered_bytes", "shop.orders"));
                let rss = resident(pid);
                let mut seen = seen.lock().unwrap();
                seen.0 = seen.0.max(buffered.unwrap_or(0.0));
                seen.1.extend(rss);
                drop(seen);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let status = wait_for(&mut child, Duration::from_secs(600));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    if status.is_none() {
        kill9(&mut child);
    }
    assert!(
        status.is_some_and(|st| st.success()),
        "calve did not catch up:\n{}",
        s.latest_log()
    );
    let (max_buffered, rss) = std::mem::take(&mut *seen.lock().unwrap());
    let commits = s.latest_log().matches("committed").count();
    let (first, second) = rss.split_at(rss.len() / 2);
    let peak = |half: &[u64]| half.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{n} bad records in {:?}: {commits} commits, buffer at most {:.1} MB (bound {} MB), \
         peak RSS {:.1} MB in the first half of the run, {:.1} MB in the second",
        started.elapsed(),
        max_buffered / 1e6,
        8 * TARGET / 1_000_000,
        peak(first) as f64 / 1e6,
        peak(second) as f64 / 1e6
    );
    assert!(max_buffered > 0.0, "the buffer gauge was never seen");
    assert!(
        max_buffered <= (8 * TARGET) as f64,
        "the buffer held {max_buffered} bytes, over its bound of {}",
        8 * TARGET
    );
    // Bounded memory does not grow with what has gone through: the second half of the flood
    // takes no more than the first (plus allocator noise). Held at once, the dead letters
    // would grow it by hundreds of megabytes.
    assert!(rss.len() >= 20, "too few memory samples: {}", rss.len());
    assert!(
        peak(second) <= peak(first) + peak(first) / 4 + (16 << 20),
        "memory grew with the flood: {} → {} bytes",
        peak(first),
        peak(second)
    );
    assert!(
        commits >= 3,
        "the flood was not committed as it came ({commits} commits)"
    );

    let dlq = read_from(&s, "shop.orders__dlq", &["partition", "offset", "error_kind"]);
    for reader in ["pyiceberg", "duckdb"] {
        let rows = dlq.rows(reader);
        assert_eq!(rows.len() as u64, n, "{reader}: dead letters");
        assert!(
            rows.iter().all(|r| r[2] == "malformed-json"),
            "{reader}: a dead letter of another kind"
        );
        let mut at: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
            .collect();
        at.sort_unstable();
        at.dedup();
        assert_eq!(at.len() as u64, n, "{reader}: a record twice");
    }
    assert!(read_orders(&s).rows("duckdb").is_empty());
}
