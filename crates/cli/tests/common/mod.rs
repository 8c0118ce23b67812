//! Shared helpers for the end-to-end tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use calve_testkit::calve::Setup;
use calve_testkit::python::{read_table, ForeignView};
use serde_json::Value;

pub mod chaos;

pub const ORDERS: &str = include_str!("../../../../examples/contracts/orders.toml");
pub const CUSTOMERS: &str = include_str!("../../../../examples/contracts/customers.toml");
pub const ORDER_COLUMNS: &[&str] = &["order_id", "customer", "amount", "status", "ts"];
pub const DLQ_COLUMNS: &[&str] = &["topic", "partition", "offset", "error_kind", "value"];

pub fn calve_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calve"))
}

/// The orders contract for `topic`, with `freshness` as its band.
pub fn orders_contract(topic: &str, freshness: &str) -> String {
    ORDERS
        .replace("topic = \"orders\"", &format!("topic = \"{topic}\""))
        .replace("freshness = \"1m\"", &format!("freshness = \"{freshness}\""))
}

/// Adds `[registry]` at `url` to the setup's `calve.toml`.
pub fn with_registry(s: &Setup, url: &str) {
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!("\n[registry]\nurl = \"{url}\"\n"));
    std::fs::write(&s.config, cfg).unwrap();
}

/// Microseconds since the epoch of a reader's timestamp text (with or without offset).
pub fn instant(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|d| d.and_utc().timestamp_micros())
        })
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn read_orders(s: &Setup) -> ForeignView {
    read_from(s, "shop.orders", ORDER_COLUMNS)
}

pub fn read_dlq(s: &Setup) -> ForeignView {
    read_from(s, "shop.orders__dlq", DLQ_COLUMNS)
}

/// Reads `table` of the setup's catalog and warehouse, wherever they are.
pub fn read_from(s: &Setup, table: &str, columns: &[&str]) -> ForeignView {
    use calve_testkit::python::{read_table_at_with, read_table_on};
    match (&s.catalog_uri, &s.object_store) {
        (Some(uri), Some((warehouse, props))) => {
            read_table_at_with(uri, props, std::path::Path::new(warehouse), table, columns)
        }
        (Some(uri), None) => calve_testkit::python::read_table_at(uri, &s.warehouse(), table, columns),
        (None, Some((warehouse, props))) => read_table_on(&s.catalog_db(), warehouse, props, table, columns),
        (None, None) => read_table(&s.catalog_db(), &s.warehouse(), table, columns),
    }
}

/// order_id values of rows, sorted (duplicates kept, so a duplicate fails equality).
pub fn ids(rows: &[Vec<Value>]) -> Vec<u64> {
    let mut v: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
    v.sort();
    v
}

/// Asserts both foreign readers see exactly the orders `expected` (every column checked
/// against the generator), each once.
pub fn assert_orders_exactly(view: &ForeignView, expected: &[u64], logs: &str) {
    for reader in ["pyiceberg", "duckdb"] {
        let rows = view.rows(reader);
        let got = ids(&rows);
        if got != expected {
            let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
            got.iter().for_each(|i| *counts.entry(*i).or_default() += 1);
            let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(10).collect();
            let missing: Vec<_> = expected.iter().filter(|i| !counts.contains_key(i)).take(10).collect();
            panic!(
                "{reader}: {} rows, expected {}; duplicates {dups:?}; missing {missing:?}\n--- logs ---\n{}",
                got.len(),
                expected.len(),
                &logs[logs.len().saturating_sub(6000)..]
            );
        }
        for r in &rows {
            let id = r[0].as_u64().unwrap();
            let want: Value = serde_json::from_str(&calve_testkit::workload::order_json(id)).unwrap();
            assert_eq!(r[1], want["customer"], "{reader} customer of {id}");
            assert_eq!(r[2].as_f64(), want["amount"].as_f64(), "{reader} amount of {id}");
            assert_eq!(r[3], want["status"], "{reader} status of {id}");
            let ts = r[4].as_str().unwrap();
            let want_ts = want["ts"].as_str().unwrap().trim_end_matches('Z');
            assert!(ts.starts_with(want_ts), "{reader} ts of {id}: {ts} vs {want_ts}");
        }
    }
}

/// Runs `calve <args>` to its end (at most 120 s), asserting it succeeded.
pub fn run_to_end(s: &Setup, args: &[&str]) {
    let mut child = s.spawn(&calve_bin(), args);
    let st = calve_testkit::calve::wait_for(&mut child, std::time::Duration::from_secs(120));
    if st.is_none() {
        calve_testkit::calve::kill9(&mut child);
    }
    assert!(
        st.is_some_and(|st| st.success()),
        "calve {args:?} failed:\n{}",
        s.latest_log()
    );
}

/// Version `v` of customers `ids`, keyed by customer id.
pub fn customer_versions(ids: std::ops::Range<u64>, v: u64) -> Vec<calve_testkit::kafka::Message> {
    ids.map(|id| {
        (
            id.to_string(),
            Some(calve_testkit::workload::customer_json(id, v)),
            None,
        )
    })
    .collect()
}

/// Erases customer 99 from a warehouse in `s3`'s bucket, proving by every object's bytes that
/// its values were there before and are gone after. Customer 99's name sorts last, so it is in
/// Parquet footers and manifest bounds as text.
pub fn erase_99_from_bucket(s: &Setup, s3: &calve_testkit::s3::S3) {
    let erased = b"customer 99 v";
    assert!(
        !s3.grep("warehouse/crm/", erased).is_empty(),
        "the value is in the bucket's bytes before erasure"
    );
    run_to_end(
        s,
        &[
            "erase",
            "--table",
            "crm.customers",
            "--key",
            "99",
            "--requested-by",
            "dpo",
        ],
    );
    let left = s3.grep("warehouse/", erased);
    assert!(left.is_empty(), "objects still holding the erased value: {left:?}");
}

/// Equality-delete files in any retained snapshot of `crm.customers` in the setup's SQLite
/// catalog (calve writes position deletes only, so this must be 0).
pub fn customers_equality_deletes(s: &Setup) -> usize {
    use calve_table::{Catalog, CatalogConfig};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let catalog = Catalog::open(&CatalogConfig::new(
            format!("sqlite:{}", s.catalog_db().display()),
            s.warehouse().display().to_string(),
        ))
        .await
        .unwrap();
        let st = catalog
            .load(&Catalog::ident(&["crm".into()], "customers").unwrap())
            .await
            .unwrap();
        calve_table::read::live::equality_deletes_in_any_snapshot(catalog.file_io(), &st.metadata)
            .await
            .unwrap()
    })
}

/// `calve status --json`'s table pages (empty when status could not be read).
pub fn status_pages(s: &Setup) -> Vec<Value> {
    let (ok, out) = s.cli(&calve_bin(), &["status", "--json"]);
    let doc: Value = match ok {
        true => serde_json::from_str(&out).unwrap(),
        false => Value::Null,
    };
    doc["tables"].as_array().cloned().unwrap_or_default()
}

/// How many records of its topics the restore point of `table`'s page covers.
pub fn consumed(pages: &[Value], table: &str) -> u64 {
    pages
        .iter()
        .find(|p| p["table"] == table)
        .and_then(|p| p["facts"]["restore_point"].as_object().cloned())
        .map(|topics| {
            topics
                .values()
                .flat_map(|parts| parts.as_object().unwrap().values().map(|v| v.as_u64().unwrap()))
                .sum()
        })
        .unwrap_or(0)
}
