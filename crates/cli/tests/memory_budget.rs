//! `[memory]` (#16): many tables in one process share one memory budget. Four tables with a
//! 10-minute band read 40,000 orders each under a budget whose buffer part holds less than
//! their records together: the band never ends in this test, and `target_file_size` is far
//! off, so only the budget can make them commit. Every table must commit before the test stops
//! the process (the biggest holders commit early, the others pause meanwhile), the log must
//! say the budget made those commits, and the buffers' peak must stay near their part. Then a
//! `calve run --until-caught-up` under the same budget reads the rest, and PyIceberg and
//! DuckDB must read every order once in each table. The process's peak RSS is printed beside
//! the budget.

mod common;

use std::time::{Duration, Instant};

use calve_testkit::broker::Broker;
use calve_testkit::calve::{terminate, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::workload::order_json;
use common::*;

const TABLES: u64 = 4;
const ORDERS: u64 = 60_000;
const BUDGET: &str = "8MiB";

#[test]
fn tables_commit_early_and_rest_to_stay_within_the_budget() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let s = Setup::new(&bootstrap, &orders_contract("orders0", "10m"));
    let dir = s.dir.path().join("contracts");
    std::fs::create_dir(&dir).unwrap();
    for t in 0..TABLES {
        let contract = orders_contract(&format!("orders{t}"), "10m")
            .replace("name = \"shop.orders\"", &format!("name = \"shop.orders{t}\""));
        std::fs::write(dir.join(format!("orders{t}.toml")), contract).unwrap();
        create_topic(&bootstrap, &format!("orders{t}"), 2);
        let msgs: Vec<Message> = (0..ORDERS)
            .map(|id| (format!("k{id}"), Some(order_json(id)), None))
            .collect();
        produce(&bootstrap, &format!("orders{t}"), &msgs);
    }
    let cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("contracts = [\"contract.toml\"]", "contracts = [\"contracts\"]");
    std::fs::write(&s.config, format!("{cfg}\n[memory]\nbudget = \"{BUDGET}\"\n")).unwrap();

    let started = Instant::now();
    let mut calve = s.spawn(&calve_bin(), &["run"]);
    let pid = calve.id();
    let mut peak_kb = 0u64;
    let deadline = started + Duration::from_secs(120);
    loop {
        peak_kb = peak_kb.max(vm_hwm_kb(pid));
        let pages = status_pages(&s);
        let committed: Vec<u64> = (0..TABLES)
            .map(|t| consumed(&pages, &format!("shop.orders{t}")))
            .collect();
        if committed.iter().all(|n| *n > 0) {
            eprintln!("committed before the band ended: {committed:?} of {ORDERS} each");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a table never committed in 2 min with a 10-minute band: {committed:?}\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "{TABLES} tables x {ORDERS} orders: every table committed within {:.1}s under a {BUDGET} budget; peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak_kb / 1024
    );
    let st = terminate(&mut calve, Duration::from_secs(60));
    assert!(st.success(), "calve run: {st}");
    let logs = s.logs();
    assert!(logs.contains("tables share one memory budget"), "{logs}");
    for t in 0..TABLES {
        let table = format!("table=shop.orders{t} ");
        let early = logs
            .lines()
            .filter(|l| l.contains("committing before the band ends") && l.contains(&table))
            .count();
        assert!(early > 0, "shop.orders{t} never committed for the budget\n{logs}");
    }
    // The buffers stayed near their part (4 tables' orders together are several times it):
    // each table's poll may overshoot by its share of the room left, never by a whole poll.
    let (peak, part) = logs
        .lines()
        .find(|l| l.contains("memory budget: the tables' buffers held at most"))
        .and_then(|l| Some((field(l, "peak=")?, field(l, "part=")?)))
        .unwrap_or_else(|| panic!("no peak reported\n{logs}"));
    eprintln!("buffers peaked at {peak} bytes together; their part is {part}");
    assert!(peak <= part * 3 / 2, "buffers held {peak} bytes, their part is {part}");
    run_to_end(&s, &["run", "--until-caught-up"]);
    for t in 0..TABLES {
        let view = read_from(&s, &format!("shop.orders{t}"), ORDER_COLUMNS);
        assert_orders_exactly(&view, &(0..ORDERS).collect::<Vec<_>>(), "");
    }
}

/// The number after `key` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split(key)
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The process's peak resident memory (kB), from /proc (0 once it is gone).
fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
