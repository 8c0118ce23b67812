//! Expiry, metadata cleanup and orphan cleanup, checked by listing the table directory and
//! asserting exactly which files exist, then reading the table back with foreign readers.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use calve_table::commit::restore::restore_point;
use calve_table::commit::{Append, ExpirePolicy, RestoreUpdate};
use calve_table::ops::orphans::remove_orphans;
use common::{appends, committer, files_on_disk, ids_of, offsets, referenced_by_head, Fixture};

#[tokio::test(flavor = "multi_thread")]
async fn expiring_all_but_the_head_keeps_exactly_the_needed_files_and_the_restore_point() {
    let f = Fixture::new().await;
    let c = committer(&f).await;
    appends(&f, &c, 12, 5).await;
    let location = f.catalog.load(&f.ident).await.unwrap().metadata.location().to_string();
    let before = files_on_disk(&location);

    let report = c
        .expire_snapshots(
            ExpirePolicy {
                max_age: Duration::ZERO,
                retain_last: 1,
                retain_at_most: None,
            },
            i64::MAX / 2,
        )
        .await
        .unwrap();
    assert_eq!(report.expired_snapshots.len(), 11);

    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(st.metadata.snapshots().count(), 1);
    assert_eq!(
        restore_point(&st.metadata).unwrap(),
        Some(offsets(12)),
        "the restore point survives expiry"
    );
    let after = files_on_disk(&location);
    assert_eq!(
        after,
        referenced_by_head(&f).await,
        "exactly the referenced files remain"
    );
    for d in &report.deleted_files {
        assert!(before.contains(d) && !after.contains(d), "{d} was on disk and is gone");
    }
    // Merged-away manifests and 11 manifest lists were deleted; no data file was (append-only).
    assert!(
        report
            .deleted_files
            .iter()
            .filter(|p| p.contains("/metadata/snap-"))
            .count()
            == 11
    );
    assert!(report.deleted_files.iter().all(|p| !p.ends_with(".parquet")));
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), (0..60).collect::<Vec<_>>(), "{reader}");
    }
}

/// `n` commits of one file with one row each (ids 0..n): `n` snapshots. The committer.
async fn commits_of_one_row(f: &Fixture, n: i64) -> calve_table::commit::Committer {
    let c = committer(f).await;
    for i in 0..n {
        c.commit(
            &Append::new(f.files(i..i + 1).await),
            &RestoreUpdate::new(offsets(i), offsets(i + 1)),
        )
        .await
        .unwrap();
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_keeps_young_and_last_n_snapshots() {
    let f = Fixture::new().await;
    let c = commits_of_one_row(&f, 5).await;
    let now = chrono::Utc::now().timestamp_millis();
    // Everything is younger than an hour: nothing goes.
    let r = c
        .expire_snapshots(
            ExpirePolicy {
                max_age: Duration::from_secs(3600),
                retain_last: 1,
                retain_at_most: None,
            },
            now,
        )
        .await
        .unwrap();
    assert!(r.expired_snapshots.is_empty() && r.deleted_files.is_empty());
    // Judged an hour later, only the newest three stay.
    let r = c
        .expire_snapshots(
            ExpirePolicy {
                max_age: Duration::from_secs(60),
                retain_last: 3,
                retain_at_most: None,
            },
            now + 3_600_000,
        )
        .await
        .unwrap();
    assert_eq!(r.expired_snapshots.len(), 2);
    assert_eq!(f.catalog.load(&f.ident).await.unwrap().metadata.snapshots().count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_count_cap_expires_young_snapshots_too() {
    let f = Fixture::new().await;
    let c = commits_of_one_row(&f, 6).await;
    let now = chrono::Utc::now().timestamp_millis();
    let policy = |most| ExpirePolicy {
        max_age: Duration::from_secs(3600),
        retain_last: 2,
        retain_at_most: Some(most),
    };
    // All six are younger than an hour; the cap keeps the newest four.
    let r = c.expire_snapshots(policy(4), now).await.unwrap();
    assert_eq!(r.expired_snapshots.len(), 2);
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    assert_eq!(meta.snapshots().count(), 4);
    // Never below `retain_last`.
    c.expire_snapshots(policy(1), now).await.unwrap();
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    assert_eq!(meta.snapshots().count(), 2);
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(
            ids_of(&view, reader),
            (0..6).collect::<Vec<_>>(),
            "{reader}: expiry drops no row"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_metadata_files_are_deleted_after_commit() {
    let props = HashMap::from([
        (
            "write.metadata.delete-after-commit.enabled".to_string(),
            "true".to_string(),
        ),
        ("write.metadata.previous-versions-max".to_string(), "3".to_string()),
    ]);
    let f = Fixture::with_properties(props).await;
    let c = committer(&f).await;
    for i in 0..8 {
        c.commit(
            &Append::new(f.files(i..i + 1).await),
            &RestoreUpdate::new(offsets(i), offsets(i + 1)),
        )
        .await
        .unwrap();
    }
    let st = f.catalog.load(&f.ident).await.unwrap();
    let on_disk: Vec<String> = files_on_disk(st.metadata.location())
        .into_iter()
        .filter(|p| p.ends_with(".metadata.json"))
        .collect();
    assert_eq!(on_disk.len(), 4, "current + 3 previous: {on_disk:?}");
    assert!(on_disk.contains(&st.metadata_location));
    assert_eq!(ids_of(&f.read(), "pyiceberg"), (0..8).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_cleanup_removes_old_unreferenced_files_only() {
    let f = Fixture::new().await;
    let c = committer(&f).await;
    c.commit(
        &Append::new(f.files(0..10).await),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();
    let location = f.catalog.load(&f.ident).await.unwrap().metadata.location().to_string();
    let root = location.trim_start_matches("file:").to_string();
    // A crashed writer's file from long ago, and a stray manifest: both old orphans.
    let old_data = format!("{root}/data/ts_day=2025-11-24/00000000-crashed.parquet");
    let old_manifest = format!("{root}/metadata/00000000-crashed-m0.avro");
    for p in [&old_data, &old_manifest] {
        std::fs::write(p, b"x").unwrap();
        let file = std::fs::File::options().write(true).open(p).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(2 * 86_400))
            .unwrap();
    }
    // A writer that has written but not committed yet: young, must survive.
    let in_flight_files = f.files(10..20).await;
    let in_flight: Vec<String> = in_flight_files.iter().map(|d| d.file_path().to_string()).collect();
    let referenced = referenced_by_head(&f).await;

    let dry = remove_orphans(&f.catalog, &f.ident, Duration::from_secs(86_400), true)
        .await
        .unwrap();
    assert_eq!(
        dry.orphans,
        vec![old_data.clone(), old_manifest.clone()]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(std::path::Path::new(&old_data).exists(), "a dry run deletes nothing");

    let report = remove_orphans(&f.catalog, &f.ident, Duration::from_secs(86_400), false)
        .await
        .unwrap();
    assert_eq!(report.orphans.len(), 2);
    let mut young = in_flight.clone();
    young.sort();
    assert_eq!(
        report.too_young, young,
        "uncommitted files younger than the safety age are kept"
    );
    let mut expected: BTreeSet<String> = referenced;
    expected.extend(in_flight.iter().cloned());
    assert_eq!(files_on_disk(&location), expected);
    // The in-flight writer can still commit what it wrote.
    c.commit(
        &Append::new(in_flight_files),
        &RestoreUpdate::new(offsets(1), offsets(2)),
    )
    .await
    .unwrap();
    assert_eq!(ids_of(&f.read(), "duckdb"), (0..20).collect::<Vec<_>>());
}
