//! Another engine (PyIceberg) commits to the table between our read and our pointer swap: the
//! commit layer loses the compare-and-swap, removes what the attempt wrote, re-validates on the
//! new base and commits. Nothing is lost, nothing of the abandoned attempt is left behind, and
//! the restore point is still found behind the foreign snapshots.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use calve_table::commit::restore::restore_point;
use calve_table::commit::{
    claim_epoch, Append, Committer, Produced, RestoreUpdate, SnapshotContext, SnapshotOperation,
};
use calve_testkit::python::append_with_pyiceberg;
use common::{files_on_disk, ids_of, offsets, referenced_by_head, Fixture};

/// An append whose first attempt is overtaken by a PyIceberg commit.
struct Overtaken<'a> {
    inner: Append,
    fixture: &'a Fixture,
    attempts: AtomicUsize,
}

impl SnapshotOperation for Overtaken<'_> {
    async fn produce(
        &self,
        ctx: &mut SnapshotContext<'_>,
        extra: &HashMap<String, String>,
    ) -> calve_table::Result<Produced> {
        // Produce first (manifests written), then let the foreign writer swap the pointer.
        let produced = self.inner.produce(ctx, extra).await?;
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            let d = self.fixture.dir.path();
            append_with_pyiceberg(&d.join("catalog.db"), &d.join("warehouse"), "t.events", &[1000, 1001]);
        }
        Ok(produced)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_commit_between_read_and_swap_is_retried_over() {
    let f = Fixture::new().await;
    let c = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    c.commit(
        &Append::new(f.files(0..5).await),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();

    let op = Overtaken {
        inner: Append::new(f.files(5..10).await),
        fixture: &f,
        attempts: AtomicUsize::new(0),
    };
    c.commit(&op, &RestoreUpdate::new(offsets(1), offsets(2)))
        .await
        .unwrap();
    assert_eq!(op.attempts.load(Ordering::SeqCst), 2, "the first attempt lost the swap");

    let want: Vec<i64> = (0..10).chain([1000, 1001]).collect();
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader}");
    }
    let location = f.catalog.load(&f.ident).await.unwrap().metadata.location().to_string();
    assert_eq!(
        files_on_disk(&location),
        referenced_by_head(&f).await,
        "the lost attempt's files are gone"
    );

    // A foreign snapshot on top carries no restore point; ours is found behind it.
    let d = f.dir.path();
    append_with_pyiceberg(&d.join("catalog.db"), &d.join("warehouse"), "t.events", &[2000]);
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    assert_eq!(restore_point(&meta).unwrap(), Some(offsets(2)));
}
