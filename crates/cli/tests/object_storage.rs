//! A warehouse in S3 (moto's S3 API server): ingest, restart, maintenance and orphan cleanup
//! all go through the object store, nothing touches the local disk, and PyIceberg and DuckDB
//! read the table from the bucket.

mod common;

use calve_testkit::broker::Broker;
use calve_testkit::calve::Setup;
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::s3::S3;
use calve_testkit::workload::order_json;
use common::*;

fn orders(ids: std::ops::Range<u64>) -> Vec<Message> {
    ids.map(|i| (format!("k{i}"), Some(order_json(i)), None)).collect()
}

#[test]
fn a_warehouse_in_s3_ingests_restarts_and_is_maintained_there() {
    let broker = Broker::start();
    let s3 = S3::start();
    create_topic(&broker.bootstrap(), "orders", 2);
    produce(&broker.bootstrap(), "orders", &orders(0..1000));
    let s = Setup::new(&broker.bootstrap(), &orders_contract("orders", "2s")).on_s3(&s3);
    let read = || read_orders(&s);

    run_to_end(&s, &["run", "--until-caught-up"]);
    assert_orders_exactly(&read(), &(0..1000).collect::<Vec<_>>(), &s.logs());
    let objects = s3.keys("warehouse/shop/orders/");
    assert!(
        objects.iter().any(|k| k.contains("/data/") && k.ends_with(".parquet"))
            && objects
                .iter()
                .any(|k| k.contains("/metadata/") && k.ends_with(".metadata.json")),
        "data and metadata are objects in the bucket: {objects:?}"
    );
    assert!(!s.warehouse().exists(), "nothing was written to a local warehouse");

    // A restart resumes from the restore point in the bucket's metadata.
    produce(&broker.bootstrap(), "orders", &orders(1000..2000));
    run_to_end(&s, &["run", "--until-caught-up"]);
    let all: Vec<u64> = (0..2000).collect();
    assert_orders_exactly(&read(), &all, &s.logs());

    // Maintenance on the bucket: compaction and expiry rewrite and delete objects, and the
    // orphan sweep lists the table's prefix through the store. An object nobody committed is
    // younger than the contract's orphan_min_age (1d), so it stays (its removal once old is
    // crates/table/tests/object_storage.rs).
    let orphan = "warehouse/shop/orders/data/never-committed.parquet";
    s3.put(orphan, b"PAR1 not really".to_vec());
    run_to_end(&s, &["maintain"]);
    let after = s3.keys("warehouse/shop/orders/");
    assert!(after.contains(&orphan.to_string()), "a young orphan is kept: {after:?}");
    let view = read();
    assert_orders_exactly(&view, &all, &s.logs());
    let data_files = view.files().len();
    assert!(data_files >= 1, "files listed by PyIceberg");
    for f in view.files() {
        let path = f["file_path"].as_str().unwrap();
        let key = path
            .strip_prefix("s3://lake/")
            .unwrap_or_else(|| panic!("{path} is in the bucket"));
        assert!(after.contains(&key.to_string()), "{key} is still an object");
    }
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(
        ok && status.contains("2000"),
        "calve status reads the table in the bucket:\n{status}"
    );
}

/// Erasure in the bucket: every object that held a customer's value is rewritten or deleted,
/// proven by reading every object's bytes, and the request is recorded as an object of its own.
#[test]
fn erasure_in_s3_leaves_no_object_holding_the_key() {
    let broker = Broker::start();
    let s3 = S3::start();
    create_topic(&broker.bootstrap(), "customers", 2);
    let s = Setup::new(
        &broker.bootstrap(),
        &CUSTOMERS.replace("freshness = \"1m\"", "freshness = \"1s\""),
    )
    .on_s3(&s3);
    produce(&broker.bootstrap(), "customers", &customer_versions(0..100, 1));
    run_to_end(&s, &["run", "--until-caught-up"]);
    produce(&broker.bootstrap(), "customers", &customer_versions(50..100, 2));
    run_to_end(&s, &["run", "--until-caught-up"]);
    erase_99_from_bucket(&s, &s3);
    let view = read_from(&s, "crm.customers", &["customer_id"]);
    for reader in ["pyiceberg", "duckdb"] {
        let ids: Vec<u64> = view.rows(reader).iter().map(|r| r[0].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), 99, "{reader}: every customer but 99");
        assert!(!ids.contains(&99), "{reader}");
    }
    let log = s3.keys("warehouse/_calve/erasure-log/");
    assert_eq!(log.len(), 1, "one record of the one request: {log:?}");
    let entry: serde_json::Value = serde_json::from_slice(&s3.get(&log[0])).unwrap();
    let key = String::from_utf8(s3.get("warehouse/_calve/erasure-log.key")).unwrap();
    assert_eq!(
        entry["key_hmac_sha256"][0],
        calve_service::key_hmac(key.trim().as_bytes(), "99")
    );
    assert_eq!(entry["verified"], true);
}
