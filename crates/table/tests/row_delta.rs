//! Row delta: data files and position deletes in one snapshot, read back by PyIceberg and
//! DuckDB, with the spec's sequence-number rules and no equality delete anywhere.

mod common;

use calve_table::commit::{claim_epoch, Append, Committer, RestoreUpdate, RowDelta};
use calve_table::write::deletes::{PositionDelete, PositionDeleteWriter};
use common::{ids_of, offsets, Fixture};
use iceberg::spec::DataContentType;

fn expected(v: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut v: Vec<i64> = v.into_iter().collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn position_deletes_remove_exactly_the_named_rows() {
    let f = Fixture::new().await;
    let c = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    let a = f.one_file(0..10).await;
    c.commit(
        &Append::new(vec![a.clone()]),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();

    // Upsert-shaped commit: new rows 100..103, and rows 2 and 5 of file A superseded.
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let dw = PositionDeleteWriter::new(&meta, f.catalog.file_io().clone()).unwrap();
    let b = f.one_file(100..103).await;
    let deletes = dw
        .write(&[
            PositionDelete { data_file: &a, pos: 5 },
            PositionDelete { data_file: &a, pos: 2 },
        ])
        .await
        .unwrap();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].content_type(), DataContentType::PositionDeletes);
    assert_eq!(
        deletes[0].referenced_data_file().as_deref(),
        Some(a.file_path()),
        "covers one data file"
    );
    assert_eq!(deletes[0].record_count(), 2);
    c.commit(
        &RowDelta::new(vec![b.clone()], deletes),
        &RestoreUpdate::new(offsets(1), offsets(2)),
    )
    .await
    .unwrap();
    let want = expected((0..10).filter(|i| ![2, 5].contains(i)).chain(100..103));
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader} after the first row delta");
    }
    let summary = view.current_summary();
    assert_eq!(summary["operation"], "overwrite");
    assert_eq!(summary["added-position-deletes"], "2");
    assert_eq!(summary["total-position-deletes"], "2");
    assert_eq!(summary["total-records"], "13", "rows written, before deletes");

    // A delete naming a file added in the same snapshot applies to it (same sequence number),
    // together with deletes against two older files in one delete file.
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let dw = PositionDeleteWriter::new(&meta, f.catalog.file_io().clone()).unwrap();
    let new = f.one_file(200..204).await;
    let deletes = dw
        .write(&[
            PositionDelete {
                data_file: &new,
                pos: 1,
            },
            PositionDelete { data_file: &b, pos: 0 },
            PositionDelete { data_file: &a, pos: 7 },
        ])
        .await
        .unwrap();
    assert_eq!(deletes.len(), 1, "one delete file per partition");
    assert_eq!(deletes[0].referenced_data_file(), None, "covers three data files");
    c.commit(
        &RowDelta::new(vec![new], deletes),
        &RestoreUpdate::new(offsets(2), offsets(3)),
    )
    .await
    .unwrap();
    let want = expected(
        (0..10)
            .filter(|i| ![2, 5, 7].contains(i))
            .chain(101..103)
            .chain([200, 202, 203]),
    );
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader} after the second row delta");
    }
    // Position deletes only: no equality-delete file (content 2) is live anywhere.
    let contents: Vec<i64> = view.files().iter().map(|f| f["content"].as_i64().unwrap()).collect();
    assert!(contents.contains(&1) && !contents.contains(&2), "{contents:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_delta_refuses_equality_deletes() {
    let f = Fixture::new().await;
    let c = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    let a = f.one_file(0..3).await;
    let err = c
        .commit(
            &RowDelta::new(vec![], vec![a]),
            &RestoreUpdate::new(offsets(0), offsets(1)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no equality deletes"), "{err}");
    assert_eq!(f.catalog.load(&f.ident).await.unwrap().metadata.snapshots().count(), 0);
}
