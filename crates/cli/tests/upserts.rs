//! Keyed (upsert) tables end to end on a real broker, with seeded random SIGKILLs.
//!
//! The workload: customers 0..KEYS on a 4-partition upsert topic (partition = id % 4, Kafka
//! key = the id). Each round sends a seeded mix of inserts, updates, tombstones (deletes),
//! re-sent duplicates of a key's latest value, and malformed values, while `calve run` is
//! killed at random moments (every fourth incarnation soon after its first commit) or aborted
//! at a named crash point inside a flush.
//!
//! Invariants checked at the end, with PyIceberg and DuckDB:
//! 1. The table equals the model: one row per live key, holding the key's latest version
//!    (every column), no row for a deleted key — despite restarts that rebuilt the key index.
//! 2. No equality-delete file in any retained snapshot; updates were position deletes.
//! 3. Malformed values are in the dead-letter table exactly once each.
//! 4. The restore point covers every record produced.
//! 5. All of this with background maintenance compacting the table while it is written
//!    (every 300 ms here): compaction moves rows under the key index, and the pipeline's stale
//!    commits are refused and redone, never applied to the wrong rows.
//!
//! The seed is fixed (1) unless `CALVE_UPSERT_SEED=<seed>` or `=random` says otherwise; rounds with `CALVE_UPSERT_ROUNDS` (default 12).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{kill9, wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::read_table;
use calve_testkit::workload::customer_json;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const COLUMNS: &[&str] = &["customer_id", "name", "tier", "version", "updated_at"];
const PARTITIONS: i32 = 4;
const KEYS: u64 = 300;
const PER_ROUND: usize = 250;
const CRASH_POINTS: [&str; 3] = ["after-files-written", "after-dead-letter-commit", "after-commit"];

/// The latest version per live key, as the generator decided.
#[derive(Default)]
struct Model {
    live: BTreeMap<u64, u64>,
    next_version: BTreeMap<u64, u64>,
    bad: usize,
    sent: u64,
}

impl Model {
    fn round(&mut self, rng: &mut StdRng) -> Vec<Message> {
        let mut out = Vec::with_capacity(PER_ROUND);
        for _ in 0..PER_ROUND {
            let id = rng.gen_range(0..KEYS);
            let part = Some((id % PARTITIONS as u64) as i32);
            let roll = rng.gen_range(0..100);
            let msg = if roll < 15 {
                self.live.remove(&id);
                (id.to_string(), None, part)
            } else if roll < 25 && self.live.contains_key(&id) {
                (id.to_string(), Some(customer_json(id, self.live[&id])), part)
            } else if roll < 28 {
                self.bad += 1;
                (
                    id.to_string(),
                    Some(format!("{{\"customer_id\": {id}, \"version\": ")),
                    part,
                )
            } else {
                let v = self.next_version.entry(id).or_insert(0);
                *v += 1;
                self.live.insert(id, *v);
                (id.to_string(), Some(customer_json(id, *v)), part)
            };
            out.push(msg);
        }
        self.sent += out.len() as u64;
        out
    }
}

#[test]
fn upserts_deletes_and_kills_end_in_exactly_the_model() {
    let seed = calve_testkit::seed("CALVE_UPSERT_SEED", 1);
    let rounds = calve_testkit::env_count("CALVE_UPSERT_ROUNDS", 12);
    eprintln!("upsert chaos: {rounds} rounds");
    let mut rng = StdRng::seed_from_u64(seed);
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "customers", PARTITIONS);
    let contract = CUSTOMERS.replace("freshness = \"1m\"", "freshness = \"1s\"").replace(
        "keep_snapshots = { min = 5, max_age = \"24h\", max = 1000 }",
        "keep_snapshots = { min = 1, max_age = \"1s\" }",
    );
    assert!(contract.contains("max_age = \"1s\"") && contract.contains("freshness = \"1s\""));
    let s = Setup::new(&broker.bootstrap(), &contract).maintenance_interval("300ms");
    let mut model = Model::default();

    for round in 0..rounds {
        produce(&broker.bootstrap(), "customers", &model.round(&mut rng));
        if round % 4 == 1 {
            // Killed soon after its first commit, so that kills land on work in progress
            // however slow the machine is to start.
            let after = Duration::from_millis(rng.gen_range(0..1500));
            s.kill_soon_after_first_commit(&calve_bin(), after, &format!("round {round}, seed {seed}"));
        } else if rng.gen_bool(0.35) {
            let plan = format!(
                "{}:{}",
                CRASH_POINTS[rng.gen_range(0..CRASH_POINTS.len())],
                rng.gen_range(1..=2)
            );
            let mut child = s.spawn_with_env(&calve_bin(), &["run"], &[("CALVE_CRASH_AT", &plan)]);
            if wait_for(&mut child, Duration::from_secs(4)).is_none() {
                kill9(&mut child);
            }
        } else {
            let mut child = s.spawn(&calve_bin(), &["run"]);
            if let Some(st) = wait_for(&mut child, Duration::from_millis(rng.gen_range(300..2500))) {
                panic!(
                    "calve exited on its own ({st}) in round {round}, seed {seed}\n{}",
                    s.logs()
                );
            }
            kill9(&mut child);
        }
    }
    let mut last = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut last, Duration::from_secs(180)).expect("final run did not catch up");
    assert!(st.success(), "final run failed, seed {seed}\n{}", s.logs());
    let logs = s.logs();
    assert!(
        logs.contains("key index built from the table"),
        "restarts rebuilt the index"
    );

    // 1
    let view = read_table(&s.catalog_db(), &s.warehouse(), "crm.customers", COLUMNS);
    let want: Vec<Vec<Value>> = model
        .live
        .iter()
        .map(|(id, v)| {
            let j: Value = serde_json::from_str(&customer_json(*id, *v)).unwrap();
            vec![
                j["customer_id"].clone(),
                j["name"].clone(),
                j["tier"].clone(),
                j["version"].clone(),
            ]
        })
        .collect();
    for reader in ["pyiceberg", "duckdb"] {
        let mut got: Vec<Vec<Value>> = view.rows(reader).into_iter().map(|r| r[..4].to_vec()).collect();
        got.sort_by_key(|r| r[0].as_u64());
        let ids: Vec<u64> = got.iter().map(|r| r[0].as_u64().unwrap()).collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{reader}: a key has two live rows (seed {seed})"
        );
        let missing: Vec<_> = model.live.keys().filter(|k| !unique.contains(k)).take(10).collect();
        let extra: Vec<_> = unique.iter().filter(|k| !model.live.contains_key(k)).take(10).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{reader}: missing {missing:?}, deleted but present {extra:?} (seed {seed})\n{}",
            &logs[logs.len().saturating_sub(5000)..]
        );
        assert_eq!(got, want, "{reader}: latest versions (seed {seed})");
    }
    // 2
    let eq = customers_equality_deletes(&s);
    assert_eq!(eq, 0, "equality deletes (seed {seed})");
    // (Background compaction may have applied every delete file by now: look at the commits.)
    let row_deltas = logs
        .lines()
        .filter(|l| l.contains(" committed") && l.contains("delete_files=") && !l.contains("delete_files=0"))
        .count();
    assert!(row_deltas > 0, "updates were applied as position deletes (seed {seed})");
    // 5
    let compactions = logs
        .lines()
        .filter(|l| l.contains("maintained") && l.contains("table=crm.customers ") && !l.contains(" jobs=0 "))
        .count();
    let refreshes = logs.matches("rows moved under the key index").count();
    let incremental = logs
        .lines()
        .filter(|l| l.contains("key index caught up") && l.contains("rebuilt=false"))
        .count();
    eprintln!("seed {seed}: {compactions} maintenance cycles compacted, {refreshes} stale commits caught the index up ({incremental} by reading only changed files) and committed again");
    assert!(
        compactions > 0,
        "maintenance compacted the table while it was written (seed {seed})"
    );
    // 3
    let dlq = read_table(&s.catalog_db(), &s.warehouse(), "crm.customers__dlq", DLQ_COLUMNS);
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(
            dlq.rows(reader).len(),
            model.bad,
            "{reader}: dead letters (seed {seed})"
        );
    }
    // 4
    let offsets: Value = serde_json::from_str(view.current_summary()["calve.offsets"].as_str().unwrap()).unwrap();
    let consumed: u64 = offsets["customers"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(consumed, model.sent, "restore point covers every record (seed {seed})");
}

/// Under `evolution = "additive"` a keyed table gains a column from events mid-stream, and
/// its key index keeps one live row per key across it: updates written before and after the
/// new column replace each other; compaction and erasure read the older files in the new
/// shape; both readers agree.
#[test]
fn a_keyed_table_gains_a_column_from_events_and_keeps_one_row_per_key() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "customers", 1);
    let contract = CUSTOMERS.replace("freshness = \"1m\"", "freshness = \"1s\"");
    let s = Setup::new(&broker.bootstrap(), &contract);
    let version = |id: u64, v: u64, segment: bool| -> Message {
        let mut json: Value = serde_json::from_str(&customer_json(id, v)).unwrap();
        if segment {
            json["segment"] = Value::from(format!("s{id}-{v}"));
        }
        (id.to_string(), Some(json.to_string()), None)
    };
    let run = |s: &Setup| {
        let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
        let st = calve_testkit::calve::wait_for(&mut child, Duration::from_secs(120)).expect("calve finished");
        assert!(st.success(), "{}", s.logs());
    };
    produce(
        &broker.bootstrap(),
        "customers",
        &(0..20).map(|i| version(i, 1, false)).collect::<Vec<_>>(),
    );
    run(&s);
    // Keys 0..10 and new keys 20..25 carry the new field; 10..15 are updated without it.
    let second: Vec<Message> = (0..10)
        .map(|i| version(i, 2, true))
        .chain((10..15).map(|i| version(i, 2, false)))
        .chain((20..25).map(|i| version(i, 1, true)))
        .collect();
    produce(&broker.bootstrap(), "customers", &second);
    run(&s);
    produce(
        &broker.bootstrap(),
        "customers",
        &(0..5).map(|i| version(i, 3, true)).collect::<Vec<_>>(),
    );
    run(&s);

    // Files written before and after the change are compacted together, and erasure
    // rewrites them: both read old files in the new shape.
    let (ok, out) = s.cli(&calve_bin(), &["maintain"]);
    assert!(ok, "{out}\n{}", s.logs());
    let (ok, out) = s.cli(
        &calve_bin(),
        &[
            "erase",
            "--table",
            "crm.customers",
            "--key",
            "12",
            "--requested-by",
            "test",
        ],
    );
    assert!(ok, "{out}");
    let view = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "crm.customers",
        &["customer_id", "version", "segment"],
    );
    let files = view.files().len();
    assert!(files <= 2, "compacted: {files} data files");
    let want: Vec<Vec<Value>> = (0..25u64)
        .filter(|id| *id != 12)
        .map(|id| {
            let v = match id {
                0..5 => 3,
                5..15 => 2,
                _ => 1,
            };
            let segment = match id {
                0..10 | 20..25 => Value::from(format!("s{id}-{v}")),
                _ => Value::Null,
            };
            vec![Value::from(id), Value::from(v), segment]
        })
        .collect();
    for reader in ["pyiceberg", "duckdb"] {
        let mut got = view.rows(reader);
        got.sort_by_key(|r| r[0].as_u64());
        assert_eq!(
            got, want,
            "{reader}: one live row per key, the new column where it was sent"
        );
    }
}
