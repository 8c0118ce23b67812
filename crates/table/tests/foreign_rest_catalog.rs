//! The commit layer against rustberg, an Iceberg REST catalog nobody here wrote (crates.io).
//!
//! `rest_catalog.rs` asserts the exact requests calve sends, against the test kit's own server;
//! this file asks whether a server with its own reading of the spec accepts them and enforces
//! what calve's guarantees rest on: the table is loaded, not re-created, by a second process;
//! a claim fences the old owner; a commit built on an old `main` is refused (409), however it
//! got past calve's own epoch check; concurrent committers and a foreign writer (PyIceberg
//! through the same server) are rebased, never lost; schema changes and expiry go through.
//! PyIceberg and DuckDB read every outcome back through rustberg.

mod common;

use calve_table::commit::restore;
use calve_table::commit::{claim_epoch, Append, Committer, RestoreUpdate, SchemaChange, UpdateSchema};
use calve_table::TableError;
use common::{committer, concurrent_appends, expire_to_head, ids_of, offsets, stale_change, Fixture};
use iceberg::spec::PrimitiveType;

#[tokio::test(flavor = "multi_thread")]
async fn commits_schema_changes_and_expiry_on_rustberg() {
    let (f, server) = Fixture::on_rustberg().await;
    let again = Fixture::on_rest_again(&f, &server.uri()).await;
    let uuid = |st: &calve_table::TableState| st.metadata.uuid();
    assert_eq!(
        uuid(&f.catalog.load(&f.ident).await.unwrap()),
        uuid(&again.catalog.load(&again.ident).await.unwrap()),
        "a second process loads the table rustberg has"
    );

    let c = committer(&f).await;
    c.commit(
        &Append::new(f.files(0..10).await),
        &RestoreUpdate::new(offsets(0), offsets(7)),
    )
    .await
    .unwrap();
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert!(
        st.metadata_location.starts_with(&server.warehouse),
        "rustberg wrote the metadata under its warehouse: {}",
        st.metadata_location
    );
    assert_eq!(restore::restore_point(&st.metadata).unwrap(), Some(offsets(7)));

    c.commit(
        &Append::new(f.files(10..20).await),
        &RestoreUpdate::new(offsets(7), offsets(9)),
    )
    .await
    .unwrap();
    c.update_metadata(&UpdateSchema {
        changes: vec![SchemaChange::AddColumn {
            name: "note".into(),
            ty: PrimitiveType::String,
            doc: None,
        }],
    })
    .await
    .unwrap();
    let view = f.read_columns(&["id", "note"]);
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), (0..20).collect::<Vec<_>>(), "{reader}");
    }
    assert!(
        view.json["pyiceberg"]["schema"].as_str().unwrap().contains("note"),
        "PyIceberg sees the new column through rustberg"
    );

    let report = expire_to_head(&c).await;
    assert_eq!(report.expired_snapshots.len(), 2, "the claim and the first append");
    let view = f.read();
    assert_eq!(view.snapshots().len(), 1, "rustberg applied remove-snapshots");
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(
            ids_of(&view, reader),
            (0..20).collect::<Vec<_>>(),
            "{reader} after expiry"
        );
    }
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(
        restore::restore_point(&st.metadata).unwrap(),
        Some(offsets(9)),
        "the restore point survives expiry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rustberg_fences_stale_owners_and_rebases_other_writers() {
    let (f, server) = Fixture::on_rustberg().await;
    let old = committer(&f).await;
    old.commit(
        &Append::new(f.files(0..10).await),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();

    // The race only the server can close: a stale owner that passed its own epoch check just
    // before a new owner's claim landed posts against the pre-claim main.
    let before_claim = f.catalog.load(&f.ident).await.unwrap();
    let new_epoch = claim_epoch(&f.catalog, &f.ident).await.unwrap();
    assert_eq!(new_epoch, 2);
    assert!(
        f.catalog
            .commit(&before_claim, &stale_change(&before_claim))
            .await
            .unwrap()
            .is_none(),
        "rustberg must refuse a commit against an old main:\n{}",
        server.log()
    );

    // Through the commit layer the old owner is fenced by the epoch, and the files it wrote
    // for the commit it can no longer make are removed (an erasure must not find them later).
    let abandoned = f.files(10..20).await;
    let on_disk = |files: &[iceberg::spec::DataFile]| {
        files
            .iter()
            .filter(|d| std::path::Path::new(d.file_path().trim_start_matches("file://")).exists())
            .count()
    };
    assert_eq!(on_disk(&abandoned), abandoned.len());
    let err = old
        .commit(
            &Append::new(abandoned.clone()),
            &RestoreUpdate::new(offsets(1), offsets(2)),
        )
        .await
        .unwrap_err();
    assert_eq!(on_disk(&abandoned), 0, "the fenced commit's files are gone");
    assert!(
        matches!(
            err,
            TableError::Fenced {
                ours: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );

    // Three committers of the new owner race; rustberg's 409s make each rebase and land.
    concurrent_appends(&f, new_epoch).await;
    // PyIceberg commits through rustberg between two of ours: ours is rebased on top.
    let c = Committer::new(f.catalog.clone(), f.ident.clone(), new_epoch);
    let warehouse = std::path::Path::new(&f.warehouse);
    calve_testkit::python::append_with_pyiceberg_at(&server.uri(), warehouse, "t.events", &[1000, 1001]);
    c.commit(
        &Append::new(f.files(20..30).await),
        &RestoreUpdate::new(offsets(1), offsets(3)),
    )
    .await
    .unwrap();

    let want: Vec<i64> = (0..10).chain(20..30).chain(100..130).chain([1000, 1001]).collect();
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader}");
    }
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(restore::restore_point(&st.metadata).unwrap().unwrap()["topic"][&0], 3);
    assert_eq!(
        st.metadata.properties().get("calve.writer-epoch").map(String::as_str),
        Some("2")
    );
}
