//! calve as deployed: the warehouse in S3 (moto's S3 API server) and the catalog a REST
//! server nobody here wrote (rustberg, from crates.io), both started by the test kit. The
//! guarantees proven on the embedded default must hold here too:
//! - the seeded kill -9 chaos (`common/chaos.rs`): no loss, no duplicate, every dead letter
//!   once, the restore point at the end of every partition, with maintenance (expiry
//!   included) running between the kills;
//! - a second `calve run` takes the table over and the first is fenced, never writing again;
//! - maintenance and erasure on S3 through rustberg, the erased value proven absent from every
//!   object in the bucket.
//!
//! PyIceberg and DuckDB read every table back through rustberg and from the bucket.
//! `CALVE_FOREIGN_CHAOS_KILLS` sets the number of kills (default 8); the seed is
//! `CALVE_CHAOS_SEED`'s (default 1), as in `chaos_kill9.rs`.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{kill9, terminate, wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce};
use calve_testkit::rustberg::Rustberg;
use calve_testkit::s3::S3;
use common::chaos::{chaos_contract, kill9_rounds};
use common::*;

/// A setup whose catalog is `rustberg` and whose warehouse is `s3`'s bucket.
fn deployed(bootstrap: &str, contract: &str, s3: &S3, rustberg: &Rustberg) -> Setup {
    Setup::with_catalog(bootstrap, contract, tempfile::tempdir().unwrap(), &rustberg.uri()).on_s3(s3)
}

/// rustberg with its warehouse where `Setup::on_s3` puts calve's.
fn rustberg_on(s3: &S3) -> Rustberg {
    Rustberg::start(&s3.url("warehouse"), &s3.properties())
}

#[test]
fn kill9_on_s3_and_rustberg_loses_and_duplicates_nothing() {
    let seed = calve_testkit::seed("CALVE_CHAOS_SEED", 1);
    let kills = calve_testkit::env_count("CALVE_FOREIGN_CHAOS_KILLS", 8);
    let broker = Broker::start();
    let s3 = S3::start();
    let rustberg = rustberg_on(&s3);
    let s = deployed(&broker.bootstrap(), &chaos_contract(), &s3, &rustberg);
    kill9_rounds(&broker.bootstrap(), &s, seed, kills);
    let objects = s3.keys("warehouse/shop/orders/");
    assert!(
        objects.iter().any(|k| k.contains("/data/") && k.ends_with(".parquet"))
            && objects.iter().any(|k| k.ends_with(".metadata.json")),
        "rustberg's metadata and calve's data are objects in the bucket: {objects:?}"
    );
    assert!(!s.warehouse().exists(), "nothing was written to a local warehouse");
}

/// (customer_id, version) of every row both readers see, each reader's list sorted.
fn customers(s: &Setup) -> Vec<(u64, u64)> {
    let view = read_from(s, "crm.customers", &["customer_id", "version"]);
    let mut seen = None;
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows: Vec<(u64, u64)> = view
            .rows(reader)
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
            .collect();
        rows.sort();
        if let Some(first) = &seen {
            assert_eq!(&rows, first, "{reader} disagrees with PyIceberg");
        }
        seen = Some(rows);
    }
    seen.unwrap()
}

#[test]
fn a_second_process_fences_the_first_and_maintenance_and_erasure_run_on_s3_and_rustberg() {
    let broker = Broker::start();
    let s3 = S3::start();
    let rustberg = rustberg_on(&s3);
    create_topic(&broker.bootstrap(), "customers", 2);
    let s = deployed(
        &broker.bootstrap(),
        &CUSTOMERS.replace("freshness = \"1m\"", "freshness = \"1s\""),
        &s3,
        &rustberg,
    );
    produce(&broker.bootstrap(), "customers", &customer_versions(0..100, 1));

    // The first process commits, then a second one starts on the same table.
    let before = s.restore_point(&calve_bin());
    let mut first = s.spawn(&calve_bin(), &["run"]);
    assert!(
        s.wait_for_commit(&calve_bin(), &mut first, &before, Duration::from_secs(60)),
        "the first process did not commit:\n{}",
        s.latest_log()
    );
    let first_log = s.latest_log_path();
    let mut second = s.spawn(&calve_bin(), &["run"]);
    // It has claimed the table (a new writer epoch) once it resumes from the restore point.
    let taken_over = std::time::Instant::now();
    while !s.latest_log().contains("resuming from the table's restore point") {
        assert!(
            taken_over.elapsed() < Duration::from_secs(60),
            "the second process never opened the table:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // New versions arrive while both are alive: only the owner may commit them.
    produce(&broker.bootstrap(), "customers", &customer_versions(50..100, 2));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&first_log).unwrap().contains("fenced") {
        assert!(
            std::time::Instant::now() < deadline,
            "the first process was never fenced:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its only table taken over, the first process ends with the status that tells a
    // supervisor not to restart it (deploy/calve.service: RestartPreventExitStatus=3).
    let st = wait_for(&mut first, Duration::from_secs(30));
    if st.is_none() {
        kill9(&mut first);
    }
    assert_eq!(st.and_then(|st| st.code()), Some(3), "{}", s.logs());
    // The owner commits every new version (it may not have read them all yet).
    let want: Vec<(u64, u64)> = (0..100).map(|id| (id, if id < 50 { 1 } else { 2 })).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while customers(&s) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the owner did not commit the new versions:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        terminate(&mut second, Duration::from_secs(60)).success(),
        "{}",
        s.logs()
    );
    assert_eq!(customers(&s), want, "one row per customer, the newest version");

    // Maintenance through rustberg on the bucket keeps every row.
    run_to_end(&s, &["maintain"]);
    assert_eq!(customers(&s), want, "after maintenance");

    // Erasure: every object that held customer 99's values is rewritten or deleted.
    erase_99_from_bucket(&s, &s3);
    assert_eq!(customers(&s), want[..99].to_vec(), "every customer but 99");
    assert_eq!(
        s3.keys("warehouse/_calve/erasure-log/").len(),
        1,
        "the request is logged"
    );
}
