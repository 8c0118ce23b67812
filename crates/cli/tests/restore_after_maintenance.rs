//! The restore point survives maintenance: after calve ingested, the table is compacted into
//! one file (a `replace` snapshot) and every snapshot but the newest is expired; calve restarts
//! and resumes exactly where it was, proven by PyIceberg and DuckDB.

mod common;

use std::time::Duration;

use calve_table::commit::{Committer, ExpirePolicy, Rewrite, claim_epoch};
use calve_table::inspect::scan_all;
use calve_table::writer::DataWriter;
use calve_table::{Catalog, CatalogConfig};
use calve_testkit::broker::Broker;
use calve_testkit::calve::{Setup, wait_for};
use calve_testkit::kafka::{Message, create_topic, produce};
use calve_testkit::workload::order_json;
use common::*;

fn produce_ids(broker: &Broker, ids: std::ops::Range<u64>) {
    let msgs: Vec<Message> = ids.map(|i| (format!("k{i}"), Some(order_json(i)), None)).collect();
    produce(&broker.bootstrap(), "orders", &msgs);
}

fn run_until_caught_up(s: &Setup) {
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "{}", s.logs());
}

/// Compacts every data file into one per partition and expires all but the newest snapshot.
async fn compact_and_expire(s: &Setup) -> usize {
    let catalog = Catalog::open(&CatalogConfig::new(
        format!("sqlite:{}", s.catalog_db().display()),
        s.warehouse().display().to_string(),
    ))
    .await
    .unwrap();
    let ident = Catalog::ident(&["shop".into()], "orders").unwrap();
    let committer = Committer::new(catalog.clone(), ident.clone(), claim_epoch(&catalog, &ident).await.unwrap());
    let st = catalog.load(&ident).await.unwrap();
    let rows = scan_all(&catalog, &ident).await.unwrap();
    let added = DataWriter::new(&st.metadata, catalog.file_io().clone(), 256 << 20).unwrap().write(&rows).await.unwrap();
    let removed_files = live_data_files(&catalog, &st).await;
    committer
        .commit_maintenance(&Rewrite { removed: removed_files, added: added.clone(), planned_at: st.metadata.current_snapshot_id() })
        .await
        .unwrap();
    let report = committer.expire_snapshots(ExpirePolicy { max_age: Duration::ZERO, retain_last: 1 }, i64::MAX / 2).await.unwrap();
    assert!(!report.expired_snapshots.is_empty());
    assert_eq!(catalog.load(&ident).await.unwrap().metadata.snapshots().count(), 1);
    added.len()
}

/// Every live data file of the head snapshot.
async fn live_data_files(catalog: &Catalog, st: &calve_table::TableState) -> Vec<iceberg::spec::DataFile> {
    let m = st.metadata.as_ref();
    let bytes = catalog.file_io().new_input(m.current_snapshot().unwrap().manifest_list()).unwrap().read().await.unwrap();
    let mut out = Vec::new();
    for mf in iceberg::spec::ManifestList::parse_with_version(&bytes, m.format_version()).unwrap().entries() {
        for e in mf.load_manifest(catalog.file_io()).await.unwrap().entries() {
            if e.is_alive() && e.content_type() == iceberg::spec::DataContentType::Data {
                out.push(e.data_file().clone());
            }
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn restore_point_survives_compaction_and_expiry() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 3);
    let s = Setup::new(&broker.bootstrap(), &orders_contract("orders", "1s"));
    produce_ids(&broker, 0..600);
    run_until_caught_up(&s);
    produce_ids(&broker, 600..900);
    run_until_caught_up(&s);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let compacted = rt.block_on(compact_and_expire(&s));
    let view = read_orders(&s);
    assert_eq!(view.current_summary()["operation"], "replace");
    assert_eq!(view.files().len(), compacted, "one file per day partition after compaction");
    assert_orders_exactly(&view, &(0..900).collect::<Vec<_>>(), &s.logs());

    // calve restarts from the compacted, expired table: nothing is read twice or skipped.
    produce_ids(&broker, 900..1500);
    run_until_caught_up(&s);
    assert_orders_exactly(&read_orders(&s), &(0..1500).collect::<Vec<_>>(), &s.logs());
    assert!(s.logs().contains("resuming from the table's restore point"));
}
