//! Compaction through a maintenance cycle: small files and position deletes of a keyed table
//! become one sorted file per partition with no deletes left, read back identically by
//! PyIceberg and DuckDB; a rewrite whose inputs changed meanwhile is abandoned (the rest
//! lands); manifests are regrouped without disturbing the writer's key index.

mod common;

use std::sync::Mutex;

use calve_maintain::plan::partition_label;
use calve_maintain::{Maintainer, NoProgress, Progress};
use calve_table::commit::restore::restore_point;
use calve_table::commit::{Committer, RestoreUpdate, RowDelta};
use calve_table::ops::orphans::remove_orphans;
use calve_table::read::live::{equality_deletes_in_any_snapshot, live_files};
use calve_table::read::read_data_file;
use calve_table::write::deletes::{PositionDelete, PositionDeleteWriter};
use common::*;
use rand::{Rng, SeedableRng};

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_applies_deletes_sorts_and_drops_delete_files_that_no_longer_apply() {
    let mut t = Table::new().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for c in 0..10 {
        // Updates keep or move a key's hour: deletes land in the old row's partition.
        let rows: Vec<(i64, i64, i64)> = (0..40)
            .map(|_| {
                let id = rng.gen_range(0..150);
                (id, (id + rng.gen_range(0..2)) % 3, c * 1000 + id)
            })
            .collect();
        let deletes: Vec<i64> = (0..3).map(|_| rng.gen_range(0..150)).collect();
        t.commit(&rows, &deletes).await;
    }
    let catalog = t.catalog.clone();
    let io = catalog.file_io();
    let before = live_files(io, &t.catalog.load(&t.ident).await.unwrap().metadata)
        .await
        .unwrap();
    assert!(
        before.position_deletes.len() >= 5 && before.data.len() >= 20,
        "{} deletes, {} data files",
        before.position_deletes.len(),
        before.data.len()
    );

    // Every snapshot kept: only the row delta's check of the `replace` can catch stale positions.
    let mut p = policy();
    p.keep.retain_last = 100;
    p.keep.max_age = std::time::Duration::from_secs(3600);
    let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, now());
    let r = m.cycle(now(), false, &NoProgress).await.unwrap();

    assert_eq!(r.jobs_run, 3, "one job per hour partition: {r:?}");
    assert_eq!(r.files_in, before.data.len());
    assert!(r.deletes_applied > 0);
    assert_eq!(
        r.delete_files_dropped,
        before.position_deletes.len(),
        "every delete file applied and dropped"
    );
    assert_eq!(
        (r.after.data_files, r.after.delete_files, r.after.compaction_jobs),
        (3, 0, 0),
        "{:?}",
        r.after
    );
    assert!(
        r.manifests_rewritten,
        "the compaction's tombstone entries are regrouped away"
    );
    assert_eq!(
        (
            r.after.tombstoned_manifests,
            r.after.data_manifests,
            r.after.delete_manifests
        ),
        (0, 1, 0),
        "{:?}",
        r.after
    );
    assert_eq!(r.rows_written as usize, t.model.len());
    let st = t.catalog.load(&t.ident).await.unwrap();
    assert_eq!(
        restore_point(&st.metadata).unwrap(),
        Some(offsets(10)),
        "the restore point is carried forward"
    );
    for f in live_files(io, &st.metadata).await.unwrap().data {
        let ts: Vec<i64> = read_data_file(io, &st.metadata, f.file.file_path())
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_any()
                    .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "{} is sorted by ts",
            f.file.file_path()
        );
    }
    t.assert_matches_model("after compaction");

    // The writer's key index is stale now: its next commit is refused, rebuilt, and lands.
    let rebuilt = t
        .commit(&[(1, 0, 99_001), (2, 1, 99_002), (500, 2, 99_500)], &[3])
        .await;
    assert!(rebuilt, "positions computed before the compaction must be refused");
    t.assert_matches_model("after the next upsert");
    assert_eq!(
        equality_deletes_in_any_snapshot(io, &t.catalog.load(&t.ident).await.unwrap().metadata)
            .await
            .unwrap(),
        0
    );
}

/// On the first finished job, commits a position delete into `file` (row 0): a change to a
/// rewrite's input that lands between planning and commit.
struct DeleteDuringCompaction {
    committer: Committer,
    catalog: calve_table::Catalog,
    file: iceberg::spec::DataFile,
    fired: Mutex<bool>,
    restore: RestoreUpdate,
}

impl Progress for DeleteDuringCompaction {
    fn job_done(&self, _bytes: u64) {
        let mut fired = self.fired.lock().unwrap();
        if *fired {
            return;
        }
        *fired = true;
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let meta = self.catalog.load(self.committer.ident()).await.unwrap().metadata;
                let writer = PositionDeleteWriter::new(&meta, self.catalog.file_io().clone()).unwrap();
                let files = writer
                    .write(&[PositionDelete {
                        data_file: &self.file,
                        pos: 0,
                    }])
                    .await
                    .unwrap();
                self.committer
                    .commit(&RowDelta::new(vec![], files), &self.restore)
                    .await
                    .unwrap();
            })
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewrite_whose_input_changed_is_abandoned_and_the_other_jobs_land() {
    let mut t = Table::new().await;
    // Fresh keys only, so row 0 of every file is live.
    for c in 0..4 {
        let rows: Vec<(i64, i64, i64)> = (0..20).map(|i| (c * 100 + i, i % 2, c)).collect();
        t.commit(&rows, &[]).await;
    }
    let io = t.catalog.file_io();
    let st = t.catalog.load(&t.ident).await.unwrap();
    let live = live_files(io, &st.metadata).await.unwrap();
    let victim = live
        .data
        .iter()
        .find(|f| partition_label(&st.metadata, &f.file).ends_with("-00"))
        .expect("a file of hour 0")
        .file
        .clone();
    let first_id = read_data_file(io, &st.metadata, victim.file_path()).await.unwrap()[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .value(0);
    let hook = DeleteDuringCompaction {
        committer: t.committer.clone(),
        catalog: t.catalog.clone(),
        file: victim,
        fired: Mutex::new(false),
        restore: RestoreUpdate::new(offsets(4), offsets(5)),
    };
    let mut p = policy();
    p.max_concurrent_rewrites = 1;
    let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, now());
    let r = m.cycle(now(), false, &hook).await.unwrap();
    t.model.remove(&first_id);

    assert_eq!((r.jobs_run, r.jobs_abandoned), (1, 1), "{r:?}");
    t.assert_matches_model("after the abandoned rewrite");
    let orphans = remove_orphans(&t.catalog, &t.ident, std::time::Duration::ZERO, true)
        .await
        .unwrap();
    let stray: Vec<_> = orphans.orphans.iter().filter(|p| p.ends_with(".parquet")).collect();
    assert!(stray.is_empty(), "the abandoned job's files were removed: {stray:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_are_regrouped_without_making_the_key_index_stale() {
    let mut t = Table::new().await;
    for c in 0..20 {
        // Inserts only: a key with deletes would be compacted, whatever min_input_files says.
        let rows: Vec<(i64, i64, i64)> = (0..5).map(|i| (c * 10 + i, c % 4, c)).collect();
        t.commit(&rows, &[]).await;
    }
    let mut p = policy();
    p.min_input_files = 1000; // no compaction: only the manifests change
    p.max_manifests = 4;
    p.keep.retain_last = 100;
    p.keep.max_age = std::time::Duration::from_secs(3600);
    let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, now());
    let r = m.cycle(now(), false, &NoProgress).await.unwrap();

    assert!(
        r.before.data_manifests + r.before.delete_manifests > 4,
        "{:?}",
        r.before
    );
    assert!(r.manifests_rewritten);
    assert_eq!(
        (r.after.data_manifests, r.after.delete_manifests),
        (1, 0),
        "{:?}",
        r.after
    );
    assert_eq!(r.after.data_files, r.before.data_files);
    t.assert_matches_model("after the manifest rewrite");
    let rebuilt = t.commit(&[(0, 0, 5000), (1, 3, 5001)], &[2]).await;
    assert!(!rebuilt, "a manifest rewrite moves no row");
    t.assert_matches_model("after the next upsert");
}

/// Updates spread thin over old partitions: no data file loses enough rows to be worth a
/// rewrite, so each partition's delete files are merged into one instead. Readers see the
/// same rows; the key index takes the merged files as already applied (no stale commit, no
/// rebuild), and a later compaction still lands correctly.
#[tokio::test(flavor = "multi_thread")]
async fn thin_updates_get_their_delete_files_merged_not_their_data_rewritten() {
    let mut t = Table::new().await;
    let base: Vec<(i64, i64, i64)> = (0..600).map(|i| (i, i % 3, 0)).collect();
    t.commit(&base, &[]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for c in 1..=8 {
        // Two updates and one delete per commit, each landing in its row's own partition.
        let ids: Vec<i64> = (0..2)
            .map(|_| rng.gen_range(0..600))
            .filter(|i| t.model.contains_key(i))
            .collect();
        let rows: Vec<(i64, i64, i64)> = ids.iter().map(|i| (*i, t.model[i].0, c)).collect();
        let gone = rng.gen_range(0..600);
        t.commit(&rows, &[gone]).await;
    }
    let io = t.catalog.file_io().clone();
    let before = live_files(&io, &t.catalog.load(&t.ident).await.unwrap().metadata)
        .await
        .unwrap();
    assert!(
        before.position_deletes.len() >= 6,
        "{} delete files",
        before.position_deletes.len()
    );
    let mut p = policy();
    p.min_input_files = 1000; // only deletes could trigger a rewrite
    p.delete_ratio = 0.1; // `rewrite_delete_ratio = 0.1` in the contract
    p.keep.retain_last = 20; // the key index's head snapshot stays, as retention keeps it in production
    let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, now());
    let r = m.cycle(now(), false, &NoProgress).await.unwrap();

    assert_eq!(r.jobs_run, 0, "no file lost 10% of its rows: {r:?}");
    assert_eq!(r.delete_files_merged, before.position_deletes.len(), "{r:?}");
    let after = live_files(&io, &t.catalog.load(&t.ident).await.unwrap().metadata)
        .await
        .unwrap();
    assert_eq!(after.data.len(), before.data.len(), "data untouched");
    assert_eq!(after.position_deletes.len(), r.delete_files_written);
    assert!(
        after.position_deletes.len() <= 3,
        "one delete file per partition: {}",
        after.position_deletes.len()
    );
    assert_eq!(r.after.delete_merges, 0);
    t.assert_matches_model("after the delete files were merged");
    let meta = t.catalog.load(&t.ident).await.unwrap().metadata;
    let caught = t.upserter.refresh(&io, &meta).await.unwrap();
    assert_eq!(
        (
            caught.rebuilt,
            caught.files_read,
            caught.files_scanned,
            caught.deletes_applied
        ),
        (false, 0, 0, 0),
        "{caught:?}"
    );
    assert_eq!(
        caught.deletes_restated, r.delete_files_written,
        "merged files taken as applied, unread"
    );

    let index_head = t.upserter.index().head();
    let stale = t.commit(&[(1, t.model.get(&1).map_or(1, |r| r.0), 500)], &[2]).await;
    assert!(
        !stale,
        "a merge of delete files moves no row: the next upsert commits as is"
    );
    assert_ne!(t.upserter.index().head(), index_head);
    t.assert_matches_model("after the next upsert");

    // A compaction now (every file qualifies) makes the index catch up by reading only the
    // files it wrote: the merged delete files count as applied, nothing is rebuilt.
    let mut p = policy();
    p.delete_ratio = 0.0;
    p.keep.retain_last = 20;
    let r = Maintainer::new(t.catalog.clone(), t.ident.clone(), p, now())
        .cycle(now(), false, &NoProgress)
        .await
        .unwrap();
    assert!(r.jobs_run > 0 && r.after.delete_files == 0, "{r:?}");
    let meta = t.catalog.load(&t.ident).await.unwrap().metadata;
    let caught = t.upserter.refresh(&io, &meta).await.unwrap();
    assert!(
        !caught.rebuilt && caught.files_read == r.files_out,
        "{caught:?} vs {r:?}"
    );
    assert!(!t.commit(&[(3, 0, 600)], &[4]).await);
    t.assert_matches_model("after compaction and one more upsert");
}
