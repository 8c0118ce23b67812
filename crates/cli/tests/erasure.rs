//! `calve erase` end to end: every version of a customer is removed from storage — the raw
//! bytes of every file under the warehouse (the table and its dead-letter table) no longer
//! contain its values — while the other rows, other customers' dead letters, the restore
//! point and the pipeline carry on.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::read_table;
use calve_testkit::workload::customer_json;
use common::*;
use serde_json::Value;

/// Customer 99's name is the largest, so it is in Parquet footers and manifest bounds as
/// plain text: a grep finds it before erasure, which is what makes the check after meaningful.
const ERASED: &[u8] = b"customer 99 v";

fn run(s: &Setup) {
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, std::time::Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "calve failed\n{}", s.logs());
}

fn versions(id_range: std::ops::Range<u64>, v: u64) -> Vec<Message> {
    id_range
        .map(|id| (id.to_string(), Some(customer_json(id, v)), Some((id % 2) as i32)))
        .collect()
}

/// Files under `dir` whose raw bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if std::fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle) {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// Bad records: three of customer 99 (found by the Kafka key, by the value, by a Debezium
/// `after` image under another Kafka key) and one of customer 98.
fn dead_letters() -> Vec<Message> {
    let bad_version = |id: u64| customer_json(id, 7).replace("\"version\":7", "\"version\":\"seven\"");
    let envelope = format!(r#"{{"before":null,"after":{},"op":"c"}}"#, customer_json(99, 8));
    vec![
        ("99".to_string(), Some("customer 99 v9 <not json>".to_string()), Some(1)),
        ("x99".to_string(), Some(bad_version(99)), Some(1)),
        ("5".to_string(), Some(envelope), Some(1)),
        ("98".to_string(), Some(bad_version(98)), Some(0)),
    ]
}

/// The Kafka keys of the dead letters, as text (both readers agree).
fn dead_letter_keys(s: &Setup) -> Vec<String> {
    let view = read_table(&s.catalog_db(), &s.warehouse(), "crm.customers__dlq", &["key"]);
    let keys = |reader| {
        // Binary columns come back hex-encoded.
        let mut k: Vec<String> = view
            .rows(reader)
            .iter()
            .map(|r| String::from_utf8(hex::decode(r[0].as_str().unwrap()).unwrap()).unwrap())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys("duckdb"), keys("pyiceberg"), "readers agree");
    keys("duckdb")
}

fn latest_per_customer(s: &Setup) -> Vec<(u64, u64)> {
    let view = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "crm.customers",
        &["customer_id", "version"],
    );
    let mut duck: Vec<(u64, u64)> = view
        .rows("duckdb")
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect();
    let mut py: Vec<(u64, u64)> = view
        .rows("pyiceberg")
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect();
    duck.sort();
    py.sort();
    assert_eq!(duck, py, "readers agree");
    duck
}

/// A broker and a customers table (one-second band) holding version 1 of customers 0..100.
fn customers_at_version_1() -> (Broker, Setup) {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "customers", 2);
    let s = Setup::new(
        &broker.bootstrap(),
        &CUSTOMERS.replace("freshness = \"1m\"", "freshness = \"1s\""),
    );
    produce(&broker.bootstrap(), "customers", &versions(0..100, 1));
    run(&s);
    (broker, s)
}

#[test]
fn erase_removes_every_version_from_storage() {
    let (broker, s) = customers_at_version_1();
    let mut changes = versions(50..100, 2);
    changes.extend(dead_letters());
    produce(&broker.bootstrap(), "customers", &changes);
    run(&s);
    let table_dir = s.warehouse().join("crm/customers");
    assert!(
        !files_containing(&table_dir, ERASED).is_empty(),
        "the value is visible in raw bytes before erasure"
    );
    assert!(
        !files_containing(&s.warehouse().join("crm/customers__dlq"), ERASED).is_empty(),
        "and in the dead letters"
    );
    assert_eq!(dead_letter_keys(&s).len(), 4, "every bad record is a dead letter");

    let (verified, stdout) = erase_99(&s, "dpo@example.com");
    assert!(verified, "erase failed: {stdout}");
    assert!(stdout.contains("verified: the keys are gone"), "{stdout}");
    assert!(
        stdout.contains("rows removed (every version): 2"),
        "v1 (superseded) and v2: {stdout}"
    );

    assert!(stdout.contains("dead letters of the keys removed: 3"), "{stdout}");
    let left = files_containing(&s.warehouse(), ERASED);
    assert!(left.is_empty(), "files still holding the erased value: {left:?}");
    assert_eq!(
        dead_letter_keys(&s),
        vec!["98".to_string()],
        "another customer's dead letter stays"
    );
    let mut want: Vec<(u64, u64)> = (0..50).map(|i| (i, 1)).chain((50..99).map(|i| (i, 2))).collect();
    assert_eq!(latest_per_customer(&s), want, "only customer 99 is gone");
    let view = read_table(&s.catalog_db(), &s.warehouse(), "crm.customers", &["customer_id"]);
    assert_eq!(view.snapshots().len(), 1, "no snapshot to time-travel to");
    assert!(
        view.current_summary()["calve.offsets"].is_string(),
        "the restore point survived"
    );

    let entries: Vec<_> = std::fs::read_dir(s.warehouse().join("_calve/erasure-log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "one record for the one request: {entries:?}");
    let log = std::fs::read_to_string(&entries[0]).unwrap();
    let entry: Value = serde_json::from_str(&log).unwrap();
    assert_eq!(entry["requested_by"], "dpo@example.com");
    // No [erasure] hmac_key in calve.toml: the warehouse's own key, created with the log.
    let key_file = s.warehouse().join("_calve/erasure-log.key");
    let hmac_key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(hmac_key.len(), 64, "32 random bytes, hex");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(entry["hmac_key"], "warehouse");
    assert_eq!(
        entry["key_hmac_sha256"][0],
        calve_service::key_hmac(hmac_key.as_bytes(), "99")
    );
    assert!(!log.contains("\"99\""), "the log holds the key's HMAC, not the key");
    assert!(
        !log.contains("8c1f1046219ddd216a023f792356ddf127fce372a72ec9b4cdac989ee5b0b455"),
        "nor its plain SHA-256, which a dictionary over customer ids reverses"
    );
    assert_eq!(entry["dead_letters_removed"], 3);

    // The pipeline carries on from the restore point: customer 99 is not re-read from Kafka,
    // and new changes land (its key index is rebuilt from the rewritten table).
    produce(&broker.bootstrap(), "customers", &versions(5..6, 3));
    run(&s);
    want[5] = (5, 3);
    assert_eq!(latest_per_customer(&s), want);
}

/// Runs `calve erase` of customer 99 as requested `by`: whether it verified, and what it
/// printed (and, when it failed, what it logged).
fn erase_99(s: &Setup, by: &str) -> (bool, String) {
    let out = Command::new(calve_bin())
        .args([
            "erase",
            "--table",
            "crm.customers",
            "--key",
            "99",
            "--requested-by",
            by,
            "--config",
        ])
        .arg(&s.config)
        .output()
        .unwrap();
    let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), printed)
}

/// A writer that crashed between writing its files and committing them left files no
/// snapshot references, holding customer 99's newest version. While they are younger than
/// the contract's orphan safety age (they may be a running writer's next commit) the erasure
/// names them and is not verified; once older, it deletes them and is.
#[test]
fn erasure_reaches_files_a_crashed_writer_left() {
    let (broker, s) = customers_at_version_1();
    produce(&broker.bootstrap(), "customers", &versions(50..100, 2));
    let mut crashing = s.spawn_with_env(&calve_bin(), &["run"], &[("CALVE_CRASH_AT", "after-files-written")]);
    let st = wait_for(&mut crashing, std::time::Duration::from_secs(60)).expect("the crash point is reached");
    assert!(!st.success(), "{}", s.latest_log());
    let data_dir = s.warehouse().join("crm/customers/data");
    let left_by_crash = files_containing(&data_dir, b"customer 99 v2");
    assert!(!left_by_crash.is_empty(), "the crashed writer's files hold version 2");

    let (verified, out) = erase_99(&s, "dpo");
    assert!(!verified, "{out}");
    assert!(
        out.contains("NOT VERIFIED") && out.contains("MAY HOLD THE KEYS"),
        "{out}"
    );
    for f in &left_by_crash {
        assert!(out.contains(f.as_str()), "{f} is named:\n{out}");
        assert!(Path::new(f).exists(), "a young unreferenced file is left alone");
    }

    // Two days later (the contract's orphan_min_age is one day).
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    for f in &left_by_crash {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    let (verified, out) = erase_99(&s, "dpo");
    assert!(verified, "{out}");
    assert!(
        out.contains(&format!("{} past the orphan safety age deleted", left_by_crash.len())),
        "{out}"
    );
    let left = files_containing(&s.warehouse(), ERASED);
    assert!(left.is_empty(), "files still holding the erased value: {left:?}");
    let want: Vec<(u64, u64)> = (0..99).map(|i| (i, 1)).collect();
    assert_eq!(
        latest_per_customer(&s),
        want,
        "the crashed writer's versions never landed"
    );
}
