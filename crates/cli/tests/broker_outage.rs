//! A broker that stops answering is ridden out: librdkafka reconnects by itself, so the table's
//! pipeline keeps its claim (no new writer epoch, hence no key-index rebuild on a keyed table)
//! and carries on once the broker is back, exactly once. The outage is tansu frozen with
//! SIGSTOP for `CALVE_OUTAGE_SECS` (default 45 s): long enough that a partition refresh (every
//! 30 s) is sent into it and times out (10 s) before the broker is back, which tore the
//! pipeline down before the refresh learnt to ride it out. The outage shows on `/metrics`:
//! the table's freshness (age of the newest committed record) grows through it and falls
//! back once the table catches up.

mod common;

use std::time::{Duration, Instant};

use calve_testkit::broker::Broker;
use calve_testkit::calve::{terminate, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::prometheus::get;
use calve_testkit::workload::order_json;
use common::*;

fn orders(ids: std::ops::Range<u64>) -> Vec<Message> {
    ids.map(|i| (format!("k{i}"), Some(order_json(i)), None)).collect()
}

#[test]
fn a_frozen_broker_is_ridden_out_without_a_new_epoch() {
    let outage = Duration::from_secs(calve_testkit::env_count("CALVE_OUTAGE_SECS", 45));
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 2);
    let s = Setup::new(&broker.bootstrap(), &orders_contract("orders", "1s"));
    let (_lease, listen) = s.serving_http();
    let metrics = format!("http://{listen}/metrics");
    let freshness = || {
        let (_, page) = get(&metrics).expect("/metrics answers");
        page.lines()
            .find_map(|l| l.strip_prefix("calve_freshness_seconds{table=\"shop.orders\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no freshness on the page:\n{page}"))
    };
    produce(&broker.bootstrap(), "orders", &orders(0..500));
    let before = s.restore_point(&calve_bin());
    let mut child = s.spawn(&calve_bin(), &["run"]);
    assert!(
        s.wait_for_commit(&calve_bin(), &mut child, &before, Duration::from_secs(60)),
        "no first commit:\n{}",
        s.latest_log()
    );

    broker.pause();
    std::thread::sleep(outage);
    let during = freshness();
    broker.resume();
    produce(&broker.bootstrap(), "orders", &orders(500..1000));
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_orders(&s).rows("pyiceberg").len() < 1000 {
        assert!(
            Instant::now() < deadline,
            "the table did not catch up after the outage:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let after = freshness();
    assert!(
        during >= outage.as_secs_f64() && after < outage.as_secs_f64() / 2.0,
        "the outage does not show in calve_freshness_seconds: {during} s at its end, {after} s after catching up"
    );
    assert!(terminate(&mut child, Duration::from_secs(60)).success(), "{}", s.logs());

    let logs = s.logs();
    assert!(
        !logs.contains("reopening from the table") && !logs.contains("table stopped"),
        "the pipeline was torn down by the outage:\n{logs}"
    );
    let view = read_orders(&s);
    assert_eq!(
        view.json["pyiceberg"]["properties"]["calve.writer-epoch"], "1",
        "the table was never claimed again"
    );
    assert_orders_exactly(&view, &(0..1000).collect::<Vec<_>>(), &logs);
}
