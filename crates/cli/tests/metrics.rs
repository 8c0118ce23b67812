//! Operability end to end: a real Prometheus server (Debian's) scrapes `calve run`'s
//! `/metrics` while it ingests from a real broker, and `/readyz` follows a table through a
//! failure and its recovery.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{terminate, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::prometheus::{get, promtool_check, Prometheus};
use calve_testkit::workload::{bad_values, mixed, order_json};
use common::*;

const TABLE: &str = "shop.orders";

/// Polls `/readyz` every 20 ms until `stop`, keeping each change of status.
fn watch_readiness(url: String, stop: Arc<AtomicBool>) -> (Arc<Mutex<Vec<u16>>>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let status = get(&url).map_or(0, |(s, _)| s);
            let mut seen = out.lock().unwrap();
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            drop(seen);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (seen, handle)
}

/// Good and bad orders land; Prometheus sees the committed rows equal the table's row count,
/// dead letters by kind, lag that rises and falls back to zero, and the one failure; `/readyz`
/// turns unready while the table fails and ready again when it recovers.
#[test]
fn prometheus_scrapes_rows_lag_dead_letters_and_readiness_follows_a_failure() {
    let seed = calve_testkit::seed("CALVE_METRICS_SEED", 15);
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 2);
    // A 3 s band keeps consumed records uncommitted (lag > 0) for several scrapes.
    let s = Setup::new(&broker.bootstrap(), &orders_contract("orders", "3s"));
    let (_lease, listen) = s.serving_http();
    let prom = Prometheus::start(&listen);

    // The first commit panics after its files are written (a bug, as the supervisor sees it):
    // the table fails once, reopens from its restore point and commits everything.
    let mut child = s.spawn_with_env(&calve_bin(), &["run"], &[("CALVE_PANIC_AT", "after-files-written:1")]);
    let base = format!("http://{listen}");
    let ready = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        get(&format!("{base}/readyz")).is_some_and(|(st, _)| st == 200)
    });
    assert!(ready, "calve never became ready\n{}", s.logs());
    assert_eq!(get(&format!("{base}/healthz")).map(|r| r.0), Some(200));
    let stop = Arc::new(AtomicBool::new(false));
    let (readiness, watcher) = watch_readiness(format!("{base}/readyz"), stop.clone());

    let n = 2000u64;
    let bad = bad_values();
    let chunk = mixed(n, 1, seed);
    let msgs: Vec<Message> = chunk
        .iter()
        .map(|r| match r {
            Ok(i) => (format!("k{i}"), Some(order_json(*i)), None),
            Err(b) => (format!("bad{b}"), bad[*b].0.clone(), None),
        })
        .collect();
    produce(&broker.bootstrap(), "orders", &msgs);
    let mut dead_by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, kind) in &bad {
        *dead_by_kind.entry(kind).or_default() += 1;
    }

    let rows = format!("calve_rows_committed_total{{table=\"{TABLE}\"}}");
    let committed = prom.wait_for(&rows, Duration::from_secs(90), |v| v >= n as f64);
    assert_eq!(
        committed,
        Ok(n as f64),
        "committed rows in Prometheus\n{}\n{}",
        s.logs(),
        prom.log()
    );
    let lag = format!("sum(calve_consumer_lag_records{{table=\"{TABLE}\"}})");
    assert_eq!(
        prom.wait_for(&lag, Duration::from_secs(30), |v| v == 0.0),
        Ok(0.0),
        "lag falls to zero once everything is committed\n{}",
        s.logs()
    );
    let peak = prom.value(&format!("max_over_time({lag}[5m:250ms])"));
    assert!(
        peak.is_some_and(|p| p > 0.0),
        "lag was seen above zero while records waited: {peak:?}"
    );
    for (kind, count) in &dead_by_kind {
        let expr = format!("calve_dead_letters_total{{table=\"{TABLE}\",kind=\"{kind}\"}}");
        assert_eq!(
            prom.wait_for(&expr, Duration::from_secs(10), |v| v == *count as f64),
            Ok(*count as f64),
            "{expr}"
        );
    }
    let failures = format!("calve_pipeline_failures_total{{table=\"{TABLE}\"}}");
    assert_eq!(prom.value(&failures), Some(1.0), "the one planned panic");
    assert!(prom.scraping(), "every scrape of calve succeeded");
    let running = format!("calve_table_state{{table=\"{TABLE}\",state=\"running\"}}");
    assert_eq!(
        prom.wait_for(&running, Duration::from_secs(10), |v| v == 1.0),
        Ok(1.0),
        "{running}"
    );

    // The table itself agrees with the metrics, read by a foreign reader.
    let view = read_orders(&s);
    assert_orders_exactly(&view, &(0..n).collect::<Vec<_>>(), &s.logs());
    assert_eq!(
        read_dlq(&s).rows("pyiceberg").len() as u64,
        dead_by_kind.values().sum::<u64>()
    );

    // /readyz went unready during the failure and ready again after it.
    let wait_ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        readiness.lock().unwrap().last() == Some(&200)
    });
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let seen = readiness.lock().unwrap().clone();
    assert!(wait_ready, "readiness did not come back: {seen:?}");
    let dropped = seen.iter().position(|s| *s == 503);
    assert!(
        seen.first() == Some(&200) && dropped.is_some_and(|i| seen[i..].contains(&200)),
        "/readyz statuses in order: {seen:?}"
    );

    // The page itself: valid for promtool, with the series an operator dashboards.
    let (status, page) = get(&format!("{base}/metrics")).expect("/metrics answers");
    assert_eq!(status, 200);
    if let Err(findings) = promtool_check(&page) {
        panic!("promtool check metrics:\n{findings}\n--- page ---\n{page}");
    }
    for series in [
        format!("calve_schema_held{{table=\"{TABLE}\"}} 0"),
        format!("calve_commit_duration_seconds_bucket{{table=\"{TABLE}\",le=\"+Inf\"}}"),
        format!("calve_freshness_seconds{{table=\"{TABLE}\"}}"),
        format!("calve_buffered_records{{table=\"{TABLE}\"}} 0"),
        format!("calve_records_consumed_total{{table=\"{TABLE}\"}}"),
    ] {
        assert!(page.contains(&series), "/metrics lacks `{series}`:\n{page}");
    }
    let (ready_status, body) = get(&format!("{base}/readyz")).unwrap();
    assert_eq!(ready_status, 200, "{body}");
    assert!(body.contains(&format!("{TABLE}: ready: running")), "{body}");
    assert!(terminate(&mut child, Duration::from_secs(30)).success(), "{}", s.logs());
}

/// A stream of bad records is committed to the dead-letter table as it reaches the target
/// file size, like rows are, instead of waiting in memory for the (here 10-minute) band.
#[test]
fn dead_letters_count_toward_the_flush_trigger() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 2);
    let contract =
        orders_contract("orders", "10m").replace("target_file_size = \"256MB\"", "target_file_size = \"1MiB\"");
    assert!(contract.contains("target_file_size = \"1MiB\""));
    let s = Setup::new(&broker.bootstrap(), &contract);
    let n = 30_000u64;
    // ~150 bytes each, with the reason and the record's metadata about 4x that in memory:
    // over ten times the 1 MiB target in all.
    let pad = "x".repeat(100);
    let msgs: Vec<Message> = (0..n)
        .map(|i| {
            let v = format!(r#"{{"order_id":"not a number {i}","note":"{pad}","ts":"2025-11-24T00:00:00Z"}}"#);
            (format!("bad{i}"), Some(v), None)
        })
        .collect();
    produce(&broker.bootstrap(), "orders", &msgs);
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = calve_testkit::calve::wait_for(&mut child, Duration::from_secs(180)).expect("calve caught up");
    assert!(st.success(), "{}", s.logs());
    let dlq = read_dlq(&s);
    assert_eq!(
        dlq.rows("pyiceberg").len() as u64,
        n,
        "every bad record is a dead letter"
    );
    let commits = dlq.snapshots().len();
    assert!(
        commits >= 3,
        "dead letters were committed by size as they came ({commits} dead-letter commits)\n{}",
        s.logs()
    );
}
