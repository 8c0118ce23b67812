//! Orphan cleanup and expiry in an S3 bucket (moto): files are listed through the store, the
//! safety age is honoured, and afterwards the bucket holds exactly the files the table
//! references.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use calve_table::commit::ExpirePolicy;
use calve_table::ops::orphans::remove_orphans;
use calve_testkit::s3::S3;
use common::{appends, committer, offsets, referenced_by_head, Fixture};

/// The test kit's S3 client blocks; these tests run on a runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn objects(s3: &S3) -> BTreeSet<String> {
    blocking(|| s3.keys("warehouse/t/events/"))
        .into_iter()
        .map(|k| format!("s3://{}/{k}", s3.bucket))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_and_expired_files_leave_the_bucket_and_referenced_ones_stay() {
    let s3 = blocking(S3::start);
    let f = Fixture::on_s3(&s3).await;
    let c = committer(&f).await;
    appends(&f, &c, 4, 5).await;
    // Written and never committed: a crashed writer's file, and one nobody owns.
    let in_flight: Vec<String> = f
        .files(100..105)
        .await
        .iter()
        .map(|d| d.file_path().to_string())
        .collect();
    blocking(|| s3.put("warehouse/t/events/metadata/00000000-crashed-m0.avro", b"x".to_vec()));
    let stray = format!(
        "s3://{}/warehouse/t/events/metadata/00000000-crashed-m0.avro",
        s3.bucket
    );

    let kept = remove_orphans(&f.catalog, &f.ident, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(kept.orphans.is_empty(), "nothing is old enough: {:?}", kept.orphans);
    let mut young: Vec<String> = in_flight.iter().cloned().chain([stray.clone()]).collect();
    young.sort();
    assert_eq!(
        kept.too_young, young,
        "unreferenced objects are found by listing the bucket"
    );

    let location = f.catalog.load(&f.ident).await.unwrap().metadata.location().to_string();
    assert_eq!(
        location,
        format!("s3://{}/warehouse/t/events", s3.bucket),
        "no doubled `/`"
    );
    let report = remove_orphans(&f.catalog, &f.ident, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(report.orphans, young);
    assert_eq!(
        objects(&s3),
        referenced_by_head(&f).await,
        "exactly the referenced objects remain"
    );

    let expired = c
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
    assert_eq!(expired.expired_snapshots.len(), 3);
    assert_eq!(
        objects(&s3),
        referenced_by_head(&f).await,
        "expiry deletes its files from the bucket"
    );
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(
        calve_table::commit::restore::restore_point(&st.metadata).unwrap(),
        Some(offsets(4)),
        "the restore point survives"
    );
}
