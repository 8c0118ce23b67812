//! Scale-out (#16): several `calve run` processes with one `[group]` share the tables' commit
//! duty through a Kafka consumer group, on the real broker. Two tables (orders: append, 8
//! partitions, with bad records; customers: keyed upserts and deletes, 4 partitions), named by
//! a glob, go to three processes; then seeded rounds SIGKILL one and start another, add a
//! fourth and take one away with SIGTERM, while both topics keep growing. At the end:
//!
//! 1. Both tables equal their models in PyIceberg and DuckDB: every order once, every
//!    customer's latest version, deleted customers absent, no equality delete anywhere.
//! 2. The dead-letter table holds every bad order exactly once.
//! 3. One committer at a time: along each table's snapshots the writer epoch never goes back,
//!    and every commit that moved the restore point under one epoch was made by one process
//!    (the one that claimed it). Processes started after the first three (replacements, the
//!    joiner) made some of them, so the duty did move, and no handover was ever taken for a
//!    dispute between processes.
//! 4. The duty is shared: with several processes up, the two tables come to have different
//!    committers (`calve status`).
//!
//! Membership changes wait for the rebalance they cause: tansu 0.6 never drops a member that
//! dies during a rebalance (its tables would wait for good), so kills are not made to land in
//! one (see docs/scale-out.md).
//!
//! Seed: `CALVE_SCALE_SEED` (default 5, or `random`); rounds: `CALVE_SCALE_ROUNDS` (default 8).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

use calve_testkit::broker::Broker;
use calve_testkit::calve::{kill9, terminate, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::workload::{bad_values, customer_json};
use common::chaos::{assert_dead_letters_once, orders_round};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const ORDER_PARTITIONS: i32 = 8;
const CUSTOMER_PARTITIONS: i32 = 4;
const ORDERS_PER_ROUND: u64 = 300;
const CUSTOMERS_PER_ROUND: usize = 150;
const KEYS: u64 = 120;
/// The group's session timeout (`[group] session_timeout`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const CUSTOMER_COLUMNS: &[&str] = &["customer_id", "name", "tier", "version", "updated_at"];

/// The processes of the group now running.
struct Group<'a> {
    s: &'a Setup,
    members: Vec<Child>,
    /// The pid of every process started, in order.
    started: Vec<u32>,
}

impl Group<'_> {
    /// Starts a member and waits until the group has dealt it its share: the rebalance its
    /// joining caused is over.
    fn join(&mut self) {
        let child = self.s.spawn(&calve_bin(), &["run"]);
        let log = self.s.latest_log_path();
        self.started.push(child.id());
        self.members.push(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("commit duty assigned")
        {
            assert!(
                Instant::now() < deadline,
                "a member got no share in 60 s\n{}",
                duty_log(self.s)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs a member, then waits out its session timeout and the rebalance that follows.
    /// (tansu 0.6 never drops a member that dies during a rebalance, so kills are not made
    /// to land in one; Kafka drops it after the rebalance timeout, see docs/scale-out.md.)
    fn kill_one(&mut self, rng: &mut StdRng) {
        let mut m = self.members.remove(rng.gen_range(0..self.members.len()));
        kill9(&mut m);
        std::thread::sleep(SESSION_TIMEOUT + Duration::from_secs(4));
    }

    fn leave_one(&mut self, rng: &mut StdRng) {
        let mut m = self.members.remove(rng.gen_range(0..self.members.len()));
        let st = terminate(&mut m, Duration::from_secs(60));
        assert!(st.success(), "a member left with {st}\n{}", self.s.logs());
        // The rebalance its leaving caused (a few seconds on tansu).
        std::thread::sleep(Duration::from_secs(4));
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        for m in &mut self.members {
            kill9(m);
        }
    }
}

/// Customers: the latest version of each live key.
#[derive(Default)]
struct Customers {
    live: BTreeMap<u64, u64>,
    version: u64,
    sent: u64,
}

impl Customers {
    fn round(&mut self, rng: &mut StdRng) -> Vec<Message> {
        (0..CUSTOMERS_PER_ROUND)
            .map(|_| {
                let id = rng.gen_range(0..KEYS);
                let part = Some((id % CUSTOMER_PARTITIONS as u64) as i32);
                self.sent += 1;
                self.version += 1;
                if rng.gen_range(0..10) == 0 {
                    self.live.remove(&id);
                    (id.to_string(), None, part)
                } else {
                    self.live.insert(id, self.version);
                    (id.to_string(), Some(customer_json(id, self.version)), part)
                }
            })
            .collect()
    }
}

#[test]
fn processes_of_a_group_share_the_tables_through_kills_joins_and_leaves() {
    let seed = calve_testkit::seed("CALVE_SCALE_SEED", 5);
    let rounds = calve_testkit::env_count("CALVE_SCALE_ROUNDS", 8);
    let mut rng = StdRng::seed_from_u64(seed);
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let s = Setup::new(&bootstrap, &orders_contract("orders", "1s"));
    group_config(&s);
    create_topic(&bootstrap, "orders", ORDER_PARTITIONS);
    create_topic(&bootstrap, "customers", CUSTOMER_PARTITIONS);

    let mut group = Group {
        s: &s,
        members: Vec::new(),
        started: Vec::new(),
    };
    for _ in 0..3 {
        group.join();
    }
    let bad = bad_values();
    let (mut bad_sent, mut customers) = (0u64, Customers::default());
    for round in 0..rounds {
        let (orders, bad_in_round) = orders_round(round, ORDERS_PER_ROUND, seed, &bad);
        bad_sent += bad_in_round as u64;
        produce(&bootstrap, "orders", &orders);
        produce(&bootstrap, "customers", &customers.round(&mut rng));
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..3000)));
        let action = match round {
            2 => "join",
            4 => "leave",
            _ => "kill and restart",
        };
        eprintln!("round {round}: {action} ({} members)", group.members.len());
        match action {
            "join" => group.join(),
            "leave" => group.leave_one(&mut rng),
            _ => {
                group.kill_one(&mut rng);
                group.join();
            }
        }
    }

    let orders_in = rounds * ORDERS_PER_ROUND + bad_sent;
    // 4 (a rebalance may hand one process every table for a moment, until the others rejoin)
    wait_until_shared(&s, &[("shop.orders", orders_in), ("crm.customers", customers.sent)]);
    while !group.members.is_empty() {
        group.leave_one(&mut rng);
    }

    // 1, 2
    let logs = s.logs();
    assert_orders_exactly(
        &read_orders(&s),
        &(0..rounds * ORDERS_PER_ROUND).collect::<Vec<_>>(),
        &format!("seed {seed}\n{logs}"),
    );
    assert_customers(&s, &customers, seed);
    assert_dead_letters_once(&read_dlq(&s), bad_sent, seed);
    // 3
    let mut committed_by = BTreeSet::new();
    for view in [read_orders(&s), read_from(&s, "crm.customers", CUSTOMER_COLUMNS)] {
        committed_by.extend(one_committer_at_a_time(&view.snapshots(), seed));
    }
    eprintln!("{} processes committed data over the run", committed_by.len());
    // Those started after the first three (replacements of killed ones, the joiner) took
    // tables over.
    let newcomers: Vec<String> = group.started[3..].iter().map(|pid| format!(" pid {pid}")).collect();
    assert!(
        committed_by
            .iter()
            .any(|who| newcomers.iter().any(|n| who.ends_with(n.as_str()))),
        "no process started later committed (seed {seed}): {committed_by:?}"
    );
    // Every fence was a handover the group had announced, never a dispute.
    let log = duty_log(&s);
    assert!(
        !log.contains("another process claimed the table"),
        "a handover was taken for a dispute (seed {seed}):\n{log}"
    );
}

/// What the members' logs say of the duty: assignments, claims, handovers.
fn duty_log(s: &Setup) -> String {
    let mut out = String::new();
    for (n, path) in s.log_files().iter().enumerate() {
        for l in std::fs::read_to_string(path).unwrap_or_default().lines().filter(|l| {
            [
                "commit duty",
                "claimed table",
                "handing it over",
                "handed the table",
                "another process",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            out.push_str(&format!("[{n}] {l}\n"));
        }
    }
    out
}

/// Puts the two contracts in `contracts/`, named by a glob, and shares them with a group.
fn group_config(s: &Setup) {
    let dir = s.dir.path().join("contracts");
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(s.dir.path().join("contract.toml"), dir.join("orders.toml")).unwrap();
    std::fs::write(
        dir.join("customers.toml"),
        CUSTOMERS.replace("freshness = \"1m\"", "freshness = \"1s\""),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let cfg = cfg.replace("contracts = [\"contract.toml\"]", "contracts = [\"contracts/*.toml\"]");
    assert!(cfg.contains("contracts/*.toml"));
    std::fs::write(&s.config, format!("{cfg}\n[group]\nsession_timeout = \"6s\"\n")).unwrap();
}

/// Waits (at most 3 min) until each table's restore point covers its topic's `records` and the
/// tables have different committers (`calve status --json`).
fn wait_until_shared(s: &Setup, tables: &[(&str, u64)]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pages = status_pages(s);
        let covered = |name: &str| consumed(&pages, name);
        let committers: BTreeSet<&str> = pages.iter().filter_map(|p| p["facts"]["committer"].as_str()).collect();
        let caught_up = tables.iter().all(|(t, n)| covered(t) == *n);
        if caught_up && committers.len() == tables.len() {
            eprintln!("caught up, committers {committers:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up and shared in 3 min: {:?}, committers {committers:?}\n{}",
            tables.iter().map(|(t, n)| (t, covered(t), n)).collect::<Vec<_>>(),
            duty_log(s)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Asserts (3) on one table's snapshots; returns the processes that made data commits (those
/// that moved the restore point).
fn one_committer_at_a_time(snapshots: &[Value], seed: u64) -> BTreeSet<String> {
    // Metadata lists snapshots in no particular order; commits are ordered by sequence number.
    let mut snapshots = snapshots.to_vec();
    snapshots.sort_by_key(|s| s["sequence_number"].as_i64().expect("a sequence number"));
    let (mut epoch, mut offsets, mut last) = (0u64, None::<String>, &Value::Null);
    let mut by_epoch: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for snap in &snapshots {
        let summary = &snap["summary"];
        let Some(e) = summary["calve.writer-epoch"].as_str() else {
            continue;
        };
        let e: u64 = e.parse().unwrap();
        assert!(
            e >= epoch,
            "epoch {e} committed after {epoch} (seed {seed}): {summary} after {last}"
        );
        (epoch, last) = (e, summary);
        let now = summary["calve.offsets"].as_str().map(str::to_string);
        if now != offsets {
            let who = summary["calve.committer"]
                .as_str()
                .expect("a data commit names its committer");
            by_epoch.entry(e).or_default().insert(who.to_string());
            offsets = now;
        }
    }
    for (e, who) in &by_epoch {
        assert_eq!(who.len(), 1, "epoch {e} has data commits by {who:?} (seed {seed})");
    }
    by_epoch.into_values().flatten().collect()
}

fn assert_customers(s: &Setup, model: &Customers, seed: u64) {
    let view = read_from(s, "crm.customers", CUSTOMER_COLUMNS);
    for reader in ["pyiceberg", "duckdb"] {
        let mut got: Vec<(u64, String, u64)> = view
            .rows(reader)
            .iter()
            .map(|r| {
                (
                    r[0].as_u64().unwrap(),
                    r[1].as_str().unwrap().to_string(),
                    r[3].as_u64().unwrap(),
                )
            })
            .collect();
        got.sort();
        let want: Vec<(u64, String, u64)> = model
            .live
            .iter()
            .map(|(id, v)| (*id, format!("customer {id} v{v}"), *v))
            .collect();
        assert_eq!(got, want, "{reader}: customers (seed {seed})");
    }
    let eq = customers_equality_deletes(s);
    assert_eq!(eq, 0, "equality deletes (seed {seed})");
}
