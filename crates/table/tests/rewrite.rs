//! Rewrite (compaction's commit): same live rows in fewer files, deletes applied; abandoned,
//! never committed wrong, when its inputs changed after planning.

mod common;

use calve_table::commit::restore::restore_point;
use calve_table::commit::{Append, Committer, DeleteFiles, RestoreUpdate, Rewrite, RowDelta};
use calve_table::write::deletes::{PositionDelete, PositionDeleteWriter};
use calve_table::TableError;
use common::{committer, files_on_disk, ids_of, offsets, referenced_by_head, Fixture};
use iceberg::spec::{ManifestContentType, ManifestList, ManifestStatus};

async fn setup() -> (Fixture, Committer) {
    let f = Fixture::new().await;
    let c = committer(&f).await;
    (f, c)
}

async fn delete(f: &Fixture, c: &Committer, rows: &[(&iceberg::spec::DataFile, i64)], step: i64) {
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let w = PositionDeleteWriter::new(&meta, f.catalog.file_io().clone()).unwrap();
    let dels: Vec<PositionDelete> = rows
        .iter()
        .map(|(d, p)| PositionDelete { data_file: d, pos: *p })
        .collect();
    let files = w.write(&dels).await.unwrap();
    c.commit(
        &RowDelta::new(vec![], files),
        &RestoreUpdate::new(offsets(step), offsets(step + 1)),
    )
    .await
    .unwrap();
}

async fn head_id(f: &Fixture) -> Option<i64> {
    f.catalog.load(&f.ident).await.unwrap().metadata.current_snapshot_id()
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_replaces_files_and_drops_applied_deletes() {
    let (f, c) = setup().await;
    let (f1, f2, f3) = (
        f.one_file(0..10).await,
        f.one_file(10..20).await,
        f.one_file(20..30).await,
    );
    c.commit(
        &Append::new(vec![f1.clone(), f2.clone(), f3.clone()]),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();
    delete(&f, &c, &[(&f1, 3), (&f2, 0)], 1).await;
    let live: Vec<i64> = (0..30).filter(|i| *i != 3 && *i != 10).collect();
    let st = f.catalog.load(&f.ident).await.unwrap();
    let delete_file = {
        let view = f.read();
        let d = view.files().into_iter().find(|x| x["content"] == 1).unwrap();
        d["file_path"].as_str().unwrap().to_string()
    };
    // The delete file as the commit layer knows it: find it in the head's manifests.
    let mut removed = vec![f1.clone(), f2.clone(), f3.clone()];
    for mf in iceberg::spec::ManifestList::parse_with_version(
        &f.catalog
            .file_io()
            .new_input(st.metadata.current_snapshot().unwrap().manifest_list())
            .unwrap()
            .read()
            .await
            .unwrap(),
        st.metadata.format_version(),
    )
    .unwrap()
    .entries()
    {
        for e in mf.load_manifest(f.catalog.file_io()).await.unwrap().entries() {
            if e.file_path() == delete_file {
                removed.push(e.data_file().clone());
            }
        }
    }
    assert_eq!(removed.len(), 4);
    let compacted = f.one_file(live.clone()).await;
    let planned_at = head_id(&f).await;
    c.commit_maintenance(&Rewrite {
        removed,
        added: vec![compacted.clone()],
        planned_at,
    })
    .await
    .unwrap();

    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), live, "{reader}");
    }
    let s = view.current_summary();
    assert_eq!(s["operation"], "replace");
    assert_eq!(s["total-data-files"], "1");
    assert_eq!(s["total-delete-files"], "0");
    assert_eq!(s["total-position-deletes"], "0");
    assert_eq!(s["total-records"], "28");
    let files = view.files();
    assert_eq!(files.len(), 1, "only the compacted file is live: {files:?}");
    assert_eq!(files[0]["file_path"].as_str().unwrap(), compacted.file_path());
    // The restore point was carried forward from the row delta it replaced.
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(restore_point(&st.metadata).unwrap(), Some(offsets(2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewrite_is_abandoned_when_a_delete_lands_after_planning() {
    let (f, c) = setup().await;
    let f1 = f.one_file(0..10).await;
    c.commit(
        &Append::new(vec![f1.clone()]),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();
    let planned_at = head_id(&f).await;
    let compacted = f.one_file(0..10).await;
    // Meanwhile the ingest path deletes row 4 of the file being compacted.
    delete(&f, &c, &[(&f1, 4)], 1).await;
    let snapshots = f.catalog.load(&f.ident).await.unwrap().metadata.snapshots().count();

    let err = c
        .commit_maintenance(&Rewrite {
            removed: vec![f1.clone()],
            added: vec![compacted.clone()],
            planned_at,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::RewriteConflict { .. }), "{err}");
    assert_eq!(
        f.catalog.load(&f.ident).await.unwrap().metadata.snapshots().count(),
        snapshots
    );
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(
            ids_of(&f.read(), reader),
            (0..10).filter(|i| *i != 4).collect::<Vec<_>>(),
            "{reader}: the delete is not lost"
        );
    }
    // The abandoned attempt left no manifest behind; its caller removes its own output.
    f.catalog.file_io().delete(compacted.file_path()).await.unwrap();
    let location = f.catalog.load(&f.ident).await.unwrap().metadata.location().to_string();
    assert_eq!(files_on_disk(&location), referenced_by_head(&f).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewrite_of_files_already_replaced_is_abandoned() {
    let (f, c) = setup().await;
    let f1 = f.one_file(0..5).await;
    c.commit(
        &Append::new(vec![f1.clone()]),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();
    let planned_at = head_id(&f).await;
    let first = f.one_file(0..5).await;
    c.commit_maintenance(&Rewrite {
        removed: vec![f1.clone()],
        added: vec![first],
        planned_at,
    })
    .await
    .unwrap();
    let second = f.one_file(0..5).await;
    let err = c
        .commit_maintenance(&Rewrite {
            removed: vec![f1],
            added: vec![second],
            planned_at,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no longer in the table"), "{err}");
    assert_eq!(
        ids_of(&f.read(), "pyiceberg"),
        (0..5).collect::<Vec<_>>(),
        "no duplicate rows"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_files_drops_whole_files_with_spec_valid_manifests() {
    let (f, c) = setup().await;
    let (a, b) = (f.one_file(0..4).await, f.one_file(4..9).await);
    c.commit(
        &Append::new(vec![a.clone(), b.clone()]),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();
    delete(&f, &c, &[(&b, 0)], 1).await;
    c.commit_maintenance(&DeleteFiles { files: vec![a.clone()] })
        .await
        .unwrap();

    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), (5..9).collect::<Vec<_>>(), "{reader}");
    }
    let s = view.current_summary();
    assert_eq!(s["operation"], "delete");
    assert_eq!(s["deleted-data-files"], "1");
    assert_eq!(s["deleted-records"], "4");
    assert_eq!(s["total-data-files"], "1");
    assert_eq!(s["total-records"], "5");
    // The manifest list's counts agree with the entries: the rewritten data manifest has one
    // DELETED entry (file a, with its original sequence number) and one EXISTING (file b).
    let st = f.catalog.load(&f.ident).await.unwrap();
    let head = st.metadata.current_snapshot().unwrap();
    let list = ManifestList::parse_with_version(
        &f.catalog
            .file_io()
            .new_input(head.manifest_list())
            .unwrap()
            .read()
            .await
            .unwrap(),
        st.metadata.format_version(),
    )
    .unwrap();
    let first_seq = st.metadata.snapshots().map(|s| s.sequence_number()).min().unwrap();
    for mf in list.entries() {
        let entries = mf.load_manifest(f.catalog.file_io()).await.unwrap().entries().to_vec();
        let count = |st: ManifestStatus| entries.iter().filter(|e| e.status() == st).count() as u32;
        assert_eq!(mf.added_files_count, Some(count(ManifestStatus::Added)));
        assert_eq!(mf.existing_files_count, Some(count(ManifestStatus::Existing)));
        assert_eq!(mf.deleted_files_count, Some(count(ManifestStatus::Deleted)));
        if mf.content == ManifestContentType::Data && mf.added_snapshot_id == head.snapshot_id() {
            let deleted: Vec<_> = entries
                .iter()
                .filter(|e| e.status() == ManifestStatus::Deleted)
                .collect();
            assert_eq!(deleted.len(), 1);
            assert_eq!(deleted[0].file_path(), a.file_path());
            assert_eq!(deleted[0].sequence_number(), Some(first_seq));
            assert_eq!(deleted[0].snapshot_id(), Some(head.snapshot_id()));
        }
    }
}
