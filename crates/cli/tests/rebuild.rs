//! `calve rebuild` end to end on the real broker, under load, with kill -9.
//!
//! The table first ingests under a contract that does not store the events' `note`; the
//! contract then declares it and `calve run` restarts with it (new rows get their note, old
//! rows keep null). `calve rebuild` re-reads the topic into a shadow table while the live
//! table keeps committing under a steady producer, is killed -9 at seeded random moments and
//! resumed, and swaps in. A PyIceberg reader polls the table throughout: every snapshot it saw
//! must hold exactly the good records below that snapshot's restore point, once each, and
//! either every old row as it was or every old row rebuilt — never a mix. At the end the table
//! (PyIceberg and DuckDB) and its dead-letter table equal the model, and no shadow is left.
//!
//! A second test: the refusal that says what a rebuild from a later instant would lose, and an
//! abandoned rebuild, whose files orphan cleanup removes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calve_testkit::broker::Broker;
use calve_testkit::calve::{kill9, terminate, wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::watch_table;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 4;
/// Records before the contract declares `note`.
const FIRST: u64 = 12_000;

/// What was produced: per partition, by offset, the good record's id or `None` (a bad one).
#[derive(Default)]
struct Model {
    partitions: BTreeMap<i32, Vec<Option<u64>>>,
}

impl Model {
    fn good_below(&self, next: &BTreeMap<i32, i64>) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .partitions
            .iter()
            .flat_map(|(p, offsets)| {
                let n = next.get(p).copied().unwrap_or(0).max(0) as usize;
                offsets.iter().take(n).flatten().copied()
            })
            .collect();
        ids.sort();
        ids
    }

    fn bad(&self) -> BTreeSet<(i64, i64)> {
        self.partitions
            .iter()
            .flat_map(|(p, offsets)| {
                offsets
                    .iter()
                    .enumerate()
                    .filter(|(_, id)| id.is_none())
                    .map(move |(o, _)| (i64::from(*p), o as i64))
            })
            .collect()
    }

    fn all_good(&self) -> Vec<u64> {
        self.good_below(&self.partitions.keys().map(|p| (*p, i64::MAX)).collect())
    }
}

fn is_bad(id: u64) -> bool {
    id % 37 == 5
}

/// Produces records `ids` (partition `id % 4`), recording their offsets in `model`.
fn send(bootstrap: &str, model: &Mutex<Model>, ids: std::ops::Range<u64>) {
    let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let messages: Vec<Message> = ids
        .clone()
        .map(|id| {
            let value = match is_bad(id) {
                true => format!("{{not json {id}"),
                false => format!(
                    r#"{{"order_id":{id},"customer":"c{id}","amount":1.5,"status":"new","ts":"{ts}","note":"n{id}"}}"#
                ),
            };
            (format!("k{id}"), Some(value), Some((id % PARTITIONS as u64) as i32))
        })
        .collect();
    produce(bootstrap, TOPIC, &messages);
    let mut m = model.lock().unwrap();
    for id in ids {
        let p = (id % PARTITIONS as u64) as i32;
        m.partitions.entry(p).or_default().push((!is_bad(id)).then_some(id));
    }
}

fn contract(with_note: bool) -> String {
    let text = orders_contract(TOPIC, "1s").replace("evolution = \"additive\"", "evolution = \"declared-only\"");
    match with_note {
        false => text,
        true => text.replace(
            "  { name = \"ts\",",
            "  { name = \"note\",     type = \"string\" },\n  { name = \"ts\",",
        ),
    }
}

fn offsets_of(summary: &Value) -> BTreeMap<i32, i64> {
    let raw = summary["calve.offsets"].as_str().unwrap_or("{}");
    let all: BTreeMap<String, BTreeMap<String, i64>> = serde_json::from_str(raw).unwrap();
    all.get(TOPIC)
        .map(|m| m.iter().map(|(p, o)| (p.parse().unwrap(), *o)).collect())
        .unwrap_or_default()
}

#[test]
fn a_rebuild_swaps_in_under_load_and_kill9_without_readers_seeing_a_partial_table() {
    let seed = calve_testkit::seed("CALVE_REBUILD_SEED", 7);
    let mut rng = StdRng::seed_from_u64(seed);
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS);
    let s = Setup::new(&bootstrap, &contract(false));
    let bin = calve_bin();
    let model = Arc::new(Mutex::new(Model::default()));

    // The past, decoded without the note.
    send(&bootstrap, &model, 0..FIRST);
    run_to_end(&s, &["run", "--until-caught-up"]);

    // The contract declares the note; the live table goes on with it under a steady producer.
    std::fs::write(s.dir.path().join("contract.toml"), contract(true)).unwrap();
    let mut live = s.spawn(&bin, &["run"]);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (bootstrap, model, stop) = (bootstrap.clone(), model.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = FIRST;
            while !stop.load(Ordering::Relaxed) {
                send(&bootstrap, &model, next..next + 40);
                next += 40;
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let watch = watch_table(
        &s.catalog_db(),
        &s.warehouse(),
        "shop.orders",
        &["order_id", "note"],
        s.dir.path(),
    );
    std::thread::sleep(Duration::from_secs(3));

    // Rebuilds killed at random moments, each resumed by the next.
    let kills = calve_testkit::env_count("CALVE_REBUILD_KILLS", 3);
    for round in 0..kills {
        let mut rebuild = s.spawn(&bin, &["rebuild", "--table", "shop.orders"]);
        let after = Duration::from_millis(rng.gen_range(200..2500));
        std::thread::sleep(after);
        let finished = rebuild.try_wait().unwrap().is_some();
        kill9(&mut rebuild);
        eprintln!("round {round}: rebuild killed -9 after {after:?} (finished before: {finished})");
    }
    // And once between the two swaps (the dead-letter table swapped, the target table not):
    // the live owner stays paused until the next rebuild finishes the swap.
    let mut rebuild = s.spawn_with_env(
        &bin,
        &["rebuild", "--table", "shop.orders"],
        &[("CALVE_CRASH_AT", "between-swaps")],
    );
    let st = wait_for(&mut rebuild, Duration::from_secs(120)).expect("the rebuild reaches its swap");
    assert!(!st.success(), "the crash point was reached:\n{}", s.latest_log());
    assert!(
        s.latest_log().contains("aborting at between-swaps"),
        "{}",
        s.latest_log()
    );
    // The live process dies too; the one that replaces it must not open the half-swapped
    // table before the rebuild finishes it.
    kill9(&mut live);
    let mut live = s.spawn(&bin, &["run"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !s.latest_log().contains("resuming from the table's restore point"),
        "a calve run started during a swap opened the table:\n{}",
        s.latest_log()
    );
    let started = Instant::now();
    let mut rebuild = s.spawn(&bin, &["rebuild", "--table", "shop.orders"]);
    let st = wait_for(&mut rebuild, Duration::from_secs(180));
    if st.is_none() {
        kill9(&mut rebuild);
    }
    let log = s.latest_log();
    assert!(st.is_some_and(|st| st.success()), "the last rebuild failed:\n{log}");
    assert!(log.contains("swapped the rebuilt table in table=shop.orders "), "{log}");
    eprintln!("the last rebuild took {:?}", started.elapsed());

    // Live ingestion goes on from the swapped-in table.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    assert!(terminate(&mut live, Duration::from_secs(60)).success(), "{}", s.logs());
    run_to_end(&s, &["run", "--until-caught-up"]);
    let watched = watch.finish();

    let logs = s.logs();
    assert!(
        logs.contains("asks the table to pause"),
        "the live owner never paused:\n{logs}"
    );
    let model = model.lock().unwrap();
    let (mut old, mut rebuilt) = (0, 0);
    for snap in &watched.snapshots {
        let id = &snap["snapshot_id"];
        let next = offsets_of(&snap["summary"]);
        let rows: Vec<Vec<Value>> = serde_json::from_value(snap["rows"].clone()).unwrap();
        let mut got: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
        got.sort();
        let want = model.good_below(&next);
        assert_eq!(
            got.len(),
            want.len(),
            "snapshot {id} at {next:?}: rows vs records below its restore point"
        );
        assert_eq!(
            got, want,
            "snapshot {id} at {next:?}: not the records below its restore point"
        );
        let notes = |past: bool| {
            rows.iter()
                .filter(|r| (r[0].as_u64().unwrap() < FIRST) == past)
                .map(|r| (r[0].as_u64().unwrap(), r[1].clone()))
                .collect::<Vec<_>>()
        };
        for (id, note) in notes(false) {
            assert_eq!(
                note,
                Value::from(format!("n{id}")),
                "snapshot {id}: a row read under the new contract"
            );
        }
        let past = notes(true);
        let filled = past.iter().filter(|(_, n)| !n.is_null()).count();
        assert!(
            filled == 0 || filled == past.len(),
            "snapshot {id}: {filled} of {} old rows rebuilt: a partial table",
            past.len()
        );
        for (i, n) in past.iter().filter(|(_, n)| !n.is_null()) {
            assert_eq!(*n, Value::from(format!("n{i}")));
        }
        match filled {
            0 => {
                assert_eq!(rebuilt, 0, "snapshot {id}: the old table again after the swap");
                old += 1
            }
            _ => rebuilt += 1,
        }
    }
    eprintln!(
        "the reader saw {} snapshots: {old} of the old table, {rebuilt} rebuilt",
        watched.snapshots.len()
    );
    assert!(
        old > 0 && rebuilt > 0,
        "the reader must have seen both sides of the swap"
    );
    assert_eq!(
        watched.tables,
        vec!["shop.orders".to_string(), "shop.orders__dlq".to_string()],
        "no shadow table is left"
    );

    let all = model.all_good();
    let view = read_from(&s, "shop.orders", &["order_id", "note"]);
    for reader in ["pyiceberg", "duckdb"] {
        let rows = view.rows(reader);
        assert_eq!(ids(&rows), all, "{reader}: every good record once");
        for r in &rows {
            assert_eq!(
                r[1],
                Value::from(format!("n{}", r[0])),
                "{reader}: the note of {}",
                r[0]
            );
        }
    }
    let dlq = read_from(&s, "shop.orders__dlq", &["partition", "offset"]);
    for reader in ["pyiceberg", "duckdb"] {
        let mut got: Vec<(i64, i64)> = dlq
            .rows(reader)
            .iter()
            .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
            .collect();
        got.sort();
        let want: Vec<(i64, i64)> = model.bad().into_iter().collect();
        assert_eq!(got, want, "{reader}: every bad record in the dead-letter table once");
    }
}

#[test]
fn a_rebuild_says_what_it_would_lose_and_an_abandoned_one_leaves_only_orphans() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS);
    let s = Setup::new(&bootstrap, &contract(false)).without_maintenance();
    let bin = calve_bin();
    let model = Mutex::new(Model::default());
    send(&bootstrap, &model, 0..200);
    std::thread::sleep(Duration::from_millis(1500));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(500));
    send(&bootstrap, &model, 200..400);
    run_to_end(&s, &["run", "--until-caught-up"]);
    let before = read_from(&s, "shop.orders", &["order_id"]);

    // From an instant between the two batches: the first batch would be lost, and is named.
    let (ok, out) = s.cli(&bin, &["rebuild", "--table", "shop.orders", "--from", &between]);
    assert!(!ok, "{out}");
    assert!(out.contains("REFUSED") && out.contains("up to 200 records"), "{out}");
    for p in 0..PARTITIONS {
        let line = format!("partition {p}: offsets 0..50 (50 records) are before --from");
        assert!(out.contains(&line), "missing `{line}` in:\n{out}");
    }
    // After every record: the whole table.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (ok, out) = s.cli(&bin, &["rebuild", "--table", "shop.orders", "--from", &later]);
    assert!(!ok && out.contains("up to 400 records"), "{out}");
    let (ok, out) = s.cli(&bin, &["rebuild", "--table", "shop.orders", "--abandon"]);
    assert!(
        ok && out.contains("no rebuild is under way"),
        "a refused rebuild starts nothing: {out}"
    );

    // Keys erased from the table would come back from Kafka: refused while the log names any.
    let log_dir = s.warehouse().join("_calve/erasure-log");
    std::fs::create_dir_all(&log_dir).unwrap();
    let entry = log_dir.join("20261204T000000.000000Z-shop.orders-0000abcd.json");
    std::fs::write(&entry, "{}").unwrap();
    let (ok, out) = s.cli(&bin, &["rebuild", "--table", "shop.orders"]);
    assert!(
        !ok && out.contains("keys were erased") && out.contains("0000abcd"),
        "{out}"
    );
    std::fs::remove_file(&entry).unwrap();

    // A rebuild with no live owner to pause waits for one; abandoned meanwhile, it stops.
    let mut rebuild = s.spawn(&bin, &["rebuild", "--table", "shop.orders"]);
    let staged = s.warehouse().join("shop/orders/data");
    let deadline = Instant::now() + Duration::from_secs(60);
    let shadow_files = || -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&staged) else {
            return out;
        };
        for d in dirs
            .flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with("rebuild-"))
        {
            for f in walk(&d.path()) {
                out.push(f);
            }
        }
        out
    };
    while !s.latest_log().contains("asking its owner to pause") {
        assert!(
            Instant::now() < deadline,
            "the rebuild never caught up:\n{}",
            s.latest_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let staged_files = shadow_files();
    assert!(
        staged_files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parquet")),
        "the shadow's rows are staged under the live table's data/: {staged_files:?}"
    );
    let (_, status) = s.cli(&bin, &["status"]);
    assert!(
        status.contains("rebuild: ") && status.contains("from earliest") && status.contains("paused for the swap"),
        "calve status shows the rebuild under way:\n{status}"
    );
    let (ok, out) = s.cli(&bin, &["rebuild", "--table", "shop.orders", "--abandon"]);
    assert!(ok && out.contains("abandoned"), "{out}");
    let (_, status) = s.cli(&bin, &["status"]);
    assert!(!status.contains("rebuild: "), "{status}");
    let st = wait_for(&mut rebuild, Duration::from_secs(30));
    if st.is_none() {
        kill9(&mut rebuild);
    }
    assert!(
        st.is_some_and(|st| !st.success()),
        "the abandoned rebuild stops with an error"
    );
    assert!(s.logs().contains("was abandoned meanwhile"), "{}", s.logs());
    let after = read_from(&s, "shop.orders", &["order_id"]);
    assert_eq!(
        after.rows("pyiceberg"),
        before.rows("pyiceberg"),
        "the live table is untouched"
    );
    assert_eq!(
        after.snapshots().len(),
        before.snapshots().len(),
        "no snapshot was added"
    );

    // Its files are orphans now: cleanup removes them once they are older than the contract's
    // orphan_min_age (1d), which the test makes them.
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    for f in &staged_files {
        let file = std::fs::File::options().write(true).open(f).unwrap();
        file.set_modified(two_days_ago).unwrap();
    }
    let (ok, out) = s.cli(&bin, &["maintain", "--table", "shop.orders"]);
    assert!(ok, "{out}");
    let left: Vec<_> = staged_files.iter().filter(|f| f.exists()).collect();
    assert!(
        left.is_empty(),
        "orphan cleanup left the abandoned rebuild's files: {left:?}\n{out}"
    );
    let after = read_from(&s, "shop.orders", &["order_id"]);
    assert_eq!(after.rows("duckdb"), before.rows("duckdb"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
