//! Maintenance cycles over time, on a simulated clock:
//!
//! - orphan cleanup never deletes a file a retained snapshot references, nor an uncommitted
//!   writer's file younger than the safety age (that writer then commits it);
//! - a budget too small for the write rate raises the falls-behind signal (in the cycle
//!   report and the published status); an adequate one does not;
//! - a short simulated stretch of one-minute commits with 10 % updates and maintenance every
//!   ten minutes stays within bounds (files per partition, deletes, snapshots, manifests,
//!   metadata size) and reads back exactly.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use calve_contract::ByteRate;
use calve_maintain::status;
use calve_maintain::{Maintainer, NoProgress};
use calve_table::commit::{Append, RestoreUpdate};
use calve_table::read::live::live_files;
use calve_table::write::data::DataWriter;
use common::*;
use rand::{Rng, SeedableRng};

const MINUTE_MS: i64 = 60_000;

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every file under `root`.
fn files_under(root: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![std::path::PathBuf::from(
        root.trim_start_matches("file://").trim_start_matches("file:"),
    )];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p)
            } else {
                out.insert(p.display().to_string());
            }
        }
    }
    out
}

fn age(path: &str, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

/// Every file any retained snapshot needs: manifest lists, manifests, live content files.
async fn referenced_by_retained(t: &Table) -> BTreeSet<String> {
    let st = t.catalog.load(&t.ident).await.unwrap();
    let m = st.metadata.as_ref();
    let io = t.catalog.file_io();
    let mut out = BTreeSet::from([st.metadata_location.clone()]);
    for s in m.snapshots() {
        out.insert(s.manifest_list().to_string());
        let bytes = io.new_input(s.manifest_list()).unwrap().read().await.unwrap();
        for mf in iceberg::spec::ManifestList::parse_with_version(&bytes, m.format_version())
            .unwrap()
            .entries()
        {
            out.insert(mf.manifest_path.clone());
            for e in mf
                .load_manifest(io)
                .await
                .unwrap()
                .entries()
                .iter()
                .filter(|e| e.is_alive())
            {
                out.insert(e.file_path().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_cleanup_spares_retained_files_and_an_uncommitted_writer() {
    let mut t = Table::new().await;
    for c in 0..4 {
        t.commit(&[(c, 0, c), (c + 100, 1, c), (c % 2, 0, 50 + c)], &[]).await;
    }
    let st = t.catalog.load(&t.ident).await.unwrap();
    let location = st.metadata.location().to_string();
    let writer = DataWriter::new(&st.metadata, t.catalog.file_io().clone(), 64 << 20).unwrap();
    let batch = |id: i64| {
        arrow_array::RecordBatch::try_new(
            calve_table::write::data::arrow_schema(&st.metadata).unwrap(),
            vec![
                std::sync::Arc::new(arrow_array::Int64Array::from(vec![id])),
                std::sync::Arc::new(
                    arrow_array::TimestampMicrosecondArray::from(vec![BASE_US]).with_timezone("+00:00"),
                ),
                std::sync::Arc::new(arrow_array::Int64Array::from(vec![id])),
            ],
        )
        .unwrap()
    };
    let stale = writer.write(&[batch(9_000)]).await.unwrap();
    // Everything on disk is two hours old now: only references protect the table's files.
    for f in files_under(&location) {
        age(&f, Duration::from_secs(7200));
    }
    // A writer that has written its file but not committed it yet: young.
    let pending = writer.write(&[batch(9_001)]).await.unwrap();

    let mut p = policy();
    p.keep.retain_last = 2; // the snapshot before compaction keeps its (replaced) files
    p.keep.max_age = Duration::ZERO;
    let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, now());
    let r = m.cycle(now(), false, &NoProgress).await.unwrap();

    assert!(
        r.jobs_run > 0,
        "compaction ran, so the older retained snapshot holds files the head does not: {r:?}"
    );
    let on_disk = files_under(&location);
    let missing: Vec<_> = referenced_by_retained(&t)
        .await
        .into_iter()
        .filter(|f| !on_disk.contains(f))
        .collect();
    assert!(missing.is_empty(), "files of retained snapshots deleted: {missing:?}");
    assert!(
        !on_disk.contains(stale[0].file_path()),
        "an old unreferenced file is an orphan and goes"
    );
    assert!(
        on_disk.contains(pending[0].file_path()),
        "a file younger than the safety age stays"
    );
    assert!(r.orphans_removed >= 1);

    // The writer commits its file after the sweep, and readers see its row.
    let restore = RestoreUpdate::new(offsets(t.commits), offsets(t.commits + 1));
    t.committer.commit(&Append::new(pending), &restore).await.unwrap();
    t.model.insert(9_001, (0, 9_001));
    t.assert_matches_model("after the late writer committed");
}

/// One simulated minute: a small commit of fresh keys into three hour partitions.
async fn minute(t: &mut Table, i: i64) {
    let rows: Vec<(i64, i64, i64)> = (0..30).map(|k| (i * 1000 + k, k % 3, i)).collect();
    t.commit(&rows, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_too_small_for_the_write_rate_raises_the_falls_behind_signal() {
    for (budget, expect_behind) in [(2_000u64, true), (10_000_000_000, false)] {
        let mut t = Table::new().await;
        let mut p = policy();
        p.target_file_size = 64 << 10; // a small bucket: 64 KiB or ten minutes of budget
        p.budget = Some(ByteRate {
            bytes: budget,
            per: Duration::from_secs(3600),
        });
        let start = now();
        let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, start).publish_status_to(t.warehouse());
        let mut behind = None;
        let mut debts = Vec::new();
        for i in 0..10 {
            minute(&mut t, i).await;
            minute(&mut t, i + 100).await;
            let r = m.cycle(start + i * MINUTE_MS, false, &NoProgress).await.unwrap();
            debts.push(r.after.compaction_bytes);
            behind = behind.or(r.behind);
        }
        let published = status::read(t.catalog.file_io(), &t.warehouse(), "t.events")
            .await
            .unwrap()
            .expect("status published");
        if expect_behind {
            let b = behind.expect("signal raised");
            assert!(b.needed_bytes_per_hour > b.budget_bytes_per_hour, "{b:?}");
            assert!(published.behind.is_some(), "calve status sees it: {published:?}");
            // The saved-up bucket pays for the first cycles; then the debt only grows.
            assert!(
                debts[debts.len() - 4..].windows(2).all(|w| w[1] > w[0]),
                "the debt grows: {debts:?}"
            );
        } else {
            assert_eq!(behind, None, "debts {debts:?}");
            assert_eq!(published.behind, None);
            assert!(published.backlog.small_files <= 3 * 5, "{:?}", published.backlog);
        }
        t.assert_matches_model("after the budgeted cycles");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_simulated_hours_at_a_one_minute_band_stay_within_bounds() {
    let mut t = Table::new().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut p = policy();
    p.min_input_files = 5;
    p.keep.retain_last = 5;
    p.keep.max_age = Duration::from_secs(3600);
    p.budget = Some(ByteRate {
        bytes: 20 << 30,
        per: Duration::from_secs(3600),
    });
    let start = now();
    let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, start);
    let mut next_id = 0i64;
    let mut last = None;
    for minute in 0..120i64 {
        let hour = minute / 60;
        // 90 % new events in the current hour, 10 % updates of any earlier key.
        let mut rows: Vec<(i64, i64, i64)> = (0..27)
            .map(|_| {
                next_id += 1;
                (next_id, hour, minute)
            })
            .collect();
        rows.extend((0..3).map(|_| {
            let id = rng.gen_range(1..=next_id);
            (id, t.model.get(&id).map_or(hour, |r| r.0), 10_000 + minute)
        }));
        t.commit(&rows, &[]).await;
        if minute % 10 == 9 {
            // Simulated time runs far ahead of the wall clock: every snapshot is "old".
            last = Some(
                m.cycle(start + (minute + 60) * MINUTE_MS, false, &NoProgress)
                    .await
                    .unwrap(),
            );
        }
    }
    let r = last.unwrap();
    let b = &r.after;
    let st = t.catalog.load(&t.ident).await.unwrap();
    let live = live_files(t.catalog.file_io(), &st.metadata).await.unwrap();
    eprintln!("after 120 commits: {b:?}");
    assert_eq!(b.partitions, 2);
    assert!(
        b.data_files <= 2 * 5,
        "data files per partition bounded by min_input_files: {b:?}"
    );
    assert_eq!(b.delete_files, 0, "every delete applied by the last cycle: {b:?}");
    assert!(live.position_deletes.is_empty());
    assert!(b.snapshots <= 5 + 2, "retention holds the snapshot count: {b:?}");
    assert!(b.data_manifests + b.delete_manifests <= 16 + 2, "{b:?}");
    assert!(b.metadata_json_bytes < 64 << 10, "{b:?}");
    t.assert_matches_model("after two simulated hours");
}
