//! The commit layer on a PostgreSQL catalog (a real server, started per test): the same
//! compare-and-swap, fencing and retries as on SQLite, read back by PyIceberg through its
//! SqlCatalog on the same database and by DuckDB.

mod common;

use calve_table::commit::{claim_epoch, Append, Committer, RestoreUpdate};
use calve_table::TableError;
use calve_testkit::postgres::Postgres;
use common::{concurrent_appends, ids_of, offsets, Fixture};

#[tokio::test(flavor = "multi_thread")]
async fn commits_fencing_and_concurrency_on_postgres() {
    let pg = Postgres::start();
    let f = Fixture::on_postgres(&pg).await;
    // Creating again (a second process starting) loads the same table.
    let again = Fixture::on_postgres(&pg).await;
    assert_eq!(
        f.catalog.load(&f.ident).await.unwrap().metadata.uuid(),
        again.catalog.load(&again.ident).await.unwrap().metadata.uuid()
    );

    let old = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    old.commit(
        &Append::new(f.files(0..10).await),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();

    let epoch = claim_epoch(&f.catalog, &f.ident).await.unwrap();
    let err = old
        .commit(
            &Append::new(f.files(10..20).await),
            &RestoreUpdate::new(offsets(1), offsets(2)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::Fenced { .. }), "{err}");

    concurrent_appends(&f, epoch).await;
    let want: Vec<i64> = (0..10).chain(100..130).collect();
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader}");
    }
    assert_eq!(f.catalog.load(&f.ident).await.unwrap().metadata.snapshots().count(), 4);
}
