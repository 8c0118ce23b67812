//! The seeded kill -9 chaos shared by `chaos_kill9.rs` (embedded default) and
//! `foreign_catalog.rs` (S3 + a REST catalog nobody here wrote): SIGKILL the `calve` process at
//! random moments while records keep arriving (every fourth incarnation soon after its first
//! commit, so that kills land on work in progress however fast or slow the machine is), and,
//! in a seeded share of the rounds, abort it at a named crash point inside a flush (after files
//! are written; after the dead-letter commit but before the table's; after both commits), the
//! windows a random kill rarely hits.
//!
//! Invariants checked at the end, with PyIceberg and DuckDB:
//! 1. No duplicate: every good record is in the table at most once.
//! 2. No loss: every good record produced is in the table.
//! 3. Dead letters complete: every bad record is in the dead-letter table exactly once
//!    (unique by partition and offset), so records in = table rows + dead letters.
//! 4. Restore point present: the newest snapshot of both tables carries `calve.offsets`, and
//!    the target table's equals the end of every partition — although retention here keeps
//!    only the newest snapshot older than a second, so expiry runs between kills too.

use std::collections::BTreeSet;
use std::time::Duration;

use calve_testkit::calve::{kill9, wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::workload::{bad_values, mixed, order_json};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const PARTITIONS: i32 = 4;
const CHUNK_GOOD: u64 = 400;
const CRASH_POINTS: [&str; 3] = ["after-files-written", "after-dead-letter-commit", "after-commit"];

/// The orders contract the chaos runs: a 1 s band, and retention that keeps only the newest
/// snapshot older than a second.
pub fn chaos_contract() -> String {
    let contract = orders_contract("orders", "1s").replace(
        "keep_snapshots = { min = 5, max_age = \"24h\", max = 1000 }",
        "keep_snapshots = { min = 1, max_age = \"1s\" }",
    );
    assert!(contract.contains("max_age = \"1s\""));
    contract
}

/// Asserts both readers see `expected` dead letters in `dlq`, none twice (by partition and
/// offset).
pub fn assert_dead_letters_once(dlq: &calve_testkit::python::ForeignView, expected: u64, seed: u64) {
    for reader in ["pyiceberg", "duckdb"] {
        let rows = dlq.rows(reader);
        let unique: BTreeSet<(i64, i64)> = rows
            .iter()
            .map(|r| (r[1].as_i64().unwrap(), r[2].as_i64().unwrap()))
            .collect();
        assert_eq!(
            unique.len(),
            rows.len(),
            "{reader}: duplicate dead letters, seed {seed}"
        );
        assert_eq!(rows.len() as u64, expected, "{reader}: dead letters, seed {seed}");
    }
}

/// Round `round`'s orders: `good` of them (ids `round * good ..`), seeded bad records among
/// them; returns the messages and how many are bad.
pub fn orders_round(round: u64, good: u64, seed: u64, bad: &[(Option<String>, &str)]) -> (Vec<Message>, usize) {
    let chunk = mixed(good, 1, seed ^ round);
    let msgs = chunk
        .iter()
        .map(|r| match r {
            Ok(i) => {
                let id = round * good + i;
                (format!("k{id}"), Some(order_json(id)), None)
            }
            Err(b) => (format!("bad{round}-{b}"), bad[*b].0.clone(), None),
        })
        .collect();
    (msgs, chunk.iter().filter(|r| r.is_err()).count())
}

/// Runs `kills` seeded rounds on `s` (made with [`chaos_contract`]) against the broker at
/// `bootstrap`, then the final catch-up, and asserts the four invariants.
pub fn kill9_rounds(bootstrap: &str, s: &Setup, seed: u64, kills: u64) {
    eprintln!("chaos: {kills} kills");
    let mut rng = StdRng::seed_from_u64(seed);
    create_topic(bootstrap, "orders", PARTITIONS);
    let bad = bad_values();
    let mut bad_sent = 0usize;
    let mut aborted = 0;

    for round in 0..kills {
        // More records arrive before (and so while) this incarnation runs.
        let (msgs, bad_in_round) = orders_round(round, CHUNK_GOOD, seed, &bad);
        bad_sent += bad_in_round;
        produce(bootstrap, "orders", &msgs);
        if round % 4 == 1 {
            // Killed mid-work, whatever this machine's speed: once it has committed, soon after.
            let after = Duration::from_millis(rng.gen_range(0..1500));
            let took = s.kill_soon_after_first_commit(&calve_bin(), after, &format!("round {round}, seed {seed}"));
            eprintln!("round {round}: first commit {} ms after start", took.as_millis());
        } else if rng.gen_bool(0.35) {
            let point = CRASH_POINTS[rng.gen_range(0..CRASH_POINTS.len())];
            let plan = format!("{point}:{}", rng.gen_range(1..=2));
            let mut child = s.spawn_with_env(&calve_bin(), &["run"], &[("CALVE_CRASH_AT", &plan)]);
            // The crash point may not be reached (no dead letters in a flush, say): kill then.
            if wait_for(&mut child, Duration::from_secs(4)).is_none() {
                kill9(&mut child);
            } else {
                aborted += 1;
            }
        } else {
            // Killed at a random moment, possibly before it has caught up or even started.
            let mut child = s.spawn(&calve_bin(), &["run"]);
            let alive = Duration::from_millis(rng.gen_range(200..2500));
            if let Some(st) = wait_for(&mut child, alive) {
                panic!(
                    "calve exited on its own ({st}) in round {round}, seed {seed}\n{}",
                    s.logs()
                );
            }
            kill9(&mut child);
        }
    }

    eprintln!(
        "{aborted} rounds ended at a crash point, {} killed soon after committing",
        (kills + 2) / 4
    );
    let mut last = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut last, Duration::from_secs(180)).expect("final run did not catch up");
    assert!(st.success(), "final run failed, seed {seed}\n{}", s.logs());

    // 1 + 2
    let total = kills * CHUNK_GOOD;
    assert_orders_exactly(
        &read_orders(s),
        &(0..total).collect::<Vec<_>>(),
        &format!("seed {seed}\n{}", s.logs()),
    );
    // 3
    let dlq = read_dlq(s);
    assert_dead_letters_once(&dlq, bad_sent as u64, seed);
    // 4
    let newest = |v: &calve_testkit::python::ForeignView| {
        let summary = v.current_summary();
        serde_json::from_str::<serde_json::Value>(summary["calve.offsets"].as_str().expect("restore point")).unwrap()
    };
    let offsets = newest(&read_orders(s));
    let consumed: u64 = offsets["orders"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        consumed,
        total + bad_sent as u64,
        "restore point covers every record, seed {seed}"
    );
    newest(&dlq);
    // Retention ran: the table's first snapshots are gone, so some snapshot's parent is no
    // longer in the table. (Counting snapshots against commits would not do: on a REST
    // catalog every process start adds a claim snapshot of its own.)
    let snapshots = read_orders(s).snapshots();
    let ids: BTreeSet<i64> = snapshots.iter().map(|s| s["snapshot_id"].as_i64().unwrap()).collect();
    assert!(
        snapshots
            .iter()
            .any(|s| s["parent"].as_i64().is_some_and(|p| !ids.contains(&p))),
        "every snapshot ever made is still there ({}): expiry never ran (seed {seed})",
        snapshots.len()
    );
}
