//! The commit layer against a real SQLite catalog and local warehouse, read back by PyIceberg
//! and DuckDB where it matters.

mod common;

use calve_retry::Classify;
use std::collections::{BTreeMap, HashMap};

use calve_table::commit::restore::{restore_point, Offsets};
use calve_table::commit::{claim_epoch, Append, CommitOutcome, Committer, MergePolicy, RestoreUpdate};
use calve_table::TableError;
use common::{ids_of, offsets, Fixture};
use iceberg::spec::{ManifestList, ManifestStatus};

#[tokio::test(flavor = "multi_thread")]
async fn appends_merge_manifests_keep_sequence_numbers_and_totals() {
    let f = Fixture::new().await;
    let epoch = claim_epoch(&f.catalog, &f.ident).await.unwrap();
    let c = Committer::new(f.catalog.clone(), f.ident.clone(), epoch);
    let merge = MergePolicy {
        min_count_to_merge: 8,
        target_manifest_bytes: 8 << 20,
    };
    // file path -> sequence number of the snapshot that added it
    let mut added_at: HashMap<String, i64> = HashMap::new();
    let commits = 30;
    for i in 0..commits {
        let files = f.files(i * 10..i * 10 + 10).await;
        let paths: Vec<String> = files.iter().map(|d| d.file_path().to_string()).collect();
        let op = Append { files, merge };
        let out = c
            .commit(&op, &RestoreUpdate::new(offsets(i), offsets(i + 1)))
            .await
            .unwrap();
        assert!(matches!(out, CommitOutcome::Committed { .. }));
        let seq = f
            .catalog
            .load(&f.ident)
            .await
            .unwrap()
            .metadata
            .current_snapshot()
            .unwrap()
            .sequence_number();
        paths.into_iter().for_each(|p| {
            added_at.insert(p, seq);
        });
    }
    let st = f.catalog.load(&f.ident).await.unwrap();
    let m = st.metadata.as_ref();
    let snap = m.current_snapshot().unwrap();
    let list = ManifestList::parse_with_version(
        &f.catalog
            .file_io()
            .new_input(snap.manifest_list())
            .unwrap()
            .read()
            .await
            .unwrap(),
        m.format_version(),
    )
    .unwrap();
    assert!(
        list.entries().len() < 8,
        "manifests stay bounded, got {}",
        list.entries().len()
    );
    let mut seen = 0;
    let mut merged = 0;
    for mf in list.entries() {
        for e in mf.load_manifest(f.catalog.file_io()).await.unwrap().entries() {
            assert!(e.is_alive());
            assert_eq!(
                Some(added_at[e.file_path()]),
                e.sequence_number(),
                "sequence number of {}",
                e.file_path()
            );
            // Entries a merge rewrote keep their sequence numbers and become EXISTING.
            if mf.added_snapshot_id == snap.snapshot_id() && e.sequence_number() != Some(snap.sequence_number()) {
                assert_eq!(e.status(), ManifestStatus::Existing);
                merged += 1;
            }
            seen += 1;
        }
    }
    assert!(
        merged > 0 || list.entries().iter().any(|m| m.existing_files_count.unwrap_or(0) > 0),
        "a merge happened"
    );
    assert_eq!(seen, added_at.len(), "every file listed exactly once");
    let summary = &snap.summary().additional_properties;
    assert_eq!(summary["total-records"], (commits * 10).to_string());
    assert_eq!(summary["total-data-files"], added_at.len().to_string());
    assert_eq!(restore_point(m).unwrap(), Some(offsets(commits)));
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), (0..commits * 10).collect::<Vec<_>>(), "{reader}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_commit_that_landed_is_not_applied_twice() {
    let f = Fixture::new().await;
    let epoch = claim_epoch(&f.catalog, &f.ident).await.unwrap();
    let c = Committer::new(f.catalog.clone(), f.ident.clone(), epoch);
    let restore = RestoreUpdate::new(offsets(0), offsets(5));
    let first = c.commit(&Append::new(f.files(0..5).await), &restore).await.unwrap();
    let CommitOutcome::Committed { snapshot_id } = first else {
        panic!("{first:?}")
    };
    let again = c.commit(&Append::new(f.files(0..5).await), &restore).await.unwrap();
    assert_eq!(
        again,
        CommitOutcome::AlreadyCommitted { snapshot_id },
        "names the snapshot that landed it"
    );
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(st.metadata.snapshots().count(), 1);
    assert_eq!(ids_of(&f.read(), "pyiceberg"), (0..5).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_owner_is_fenced() {
    let f = Fixture::new().await;
    let old = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    old.commit(
        &Append::new(f.files(0..3).await),
        &RestoreUpdate::new(offsets(0), offsets(3)),
    )
    .await
    .unwrap();
    let new = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    assert!(new.epoch() > old.epoch());
    let err = old
        .commit(
            &Append::new(f.files(3..6).await),
            &RestoreUpdate::new(offsets(3), offsets(6)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::Fenced { .. }), "{err}");
    assert_eq!(err.class(), calve_retry::RetryClass::Permanent);
    new.commit(
        &Append::new(f.files(3..6).await),
        &RestoreUpdate::new(offsets(3), offsets(6)),
    )
    .await
    .unwrap();
    assert_eq!(ids_of(&f.read(), "duckdb"), (0..6).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_committers_retry_and_lose_nothing() {
    let f = Fixture::new().await;
    let epoch = claim_epoch(&f.catalog, &f.ident).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..3i64 {
        let c = Committer::new(f.catalog.clone(), f.ident.clone(), epoch);
        let mut batches = Vec::new();
        for k in 0..4i64 {
            let base = (w * 4 + k) * 10;
            batches.push(f.files(base..base + 10).await);
        }
        tasks.push(tokio::spawn(async move {
            for (k, files) in batches.into_iter().enumerate() {
                let key = BTreeMap::from([(format!("w{w}"), BTreeMap::from([(0, k as i64 + 1)]))]);
                c.commit(&Append::new(files), &RestoreUpdate::new(Offsets::new(), key))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(st.metadata.snapshots().count(), 12);
    // Abandoned attempts left no manifest lists behind: one per snapshot.
    let meta_dir = std::path::Path::new(st.metadata.location().trim_start_matches("file:")).join("metadata");
    let lists = std::fs::read_dir(&meta_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("snap-"))
        .count();
    assert_eq!(lists, 12, "manifest lists in {}", meta_dir.display());
    assert_eq!(ids_of(&f.read(), "pyiceberg"), (0..120).collect::<Vec<_>>());
}
