//! The commit layer on the Iceberg REST catalog protocol.
//!
//! No REST catalog server can be installed here, so the server is the testkit's in-process one
//! (requirement checks and update application are the `iceberg` crate's). Three things keep
//! the test honest: the exact requests calve sends are asserted field by field against the
//! REST spec; PyIceberg's own RestCatalog reads and writes through the same server; DuckDB
//! reads the files the server's metadata points at.

mod common;

use std::time::Duration;

use calve_table::commit::restore;
use calve_table::commit::{
    claim_epoch, Append, CommitOutcome, Committer, ExpirePolicy, RestoreUpdate, Rewrite, SchemaChange, UpdateSchema,
};
use calve_table::TableError;
use calve_testkit::rest_catalog::Fault;
use common::{concurrent_appends, files_on_disk, ids_of, offsets, referenced_by_head, stale_change, Fixture};
use iceberg::spec::PrimitiveType;
use serde_json::Value;

fn actions(commit: &Value) -> Vec<&str> {
    commit["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["action"].as_str().unwrap())
        .collect()
}

fn requirement<'a>(commit: &'a Value, kind: &str) -> &'a Value {
    commit["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {commit}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_speak_the_rest_protocol_and_read_back() {
    let (f, server) = Fixture::on_rest().await;
    // A second process starting loads the same table instead of creating another.
    let again = Fixture::on_rest_again(&f, &server.uri()).await;
    assert_eq!(
        f.catalog.load(&f.ident).await.unwrap().metadata.uuid(),
        again.catalog.load(&again.ident).await.unwrap().metadata.uuid()
    );
    let uuid = f.catalog.load(&f.ident).await.unwrap().metadata.uuid().to_string();

    let c = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    let claim = server.commits().pop().unwrap().body;
    assert_eq!(
        actions(&claim),
        ["add-snapshot", "set-snapshot-ref", "set-properties"],
        "{claim}"
    );
    assert_eq!(claim["updates"][2]["updates"]["calve.writer-epoch"], "1");
    assert_eq!(
        requirement(&claim, "assert-ref-snapshot-id")["snapshot-id"],
        Value::Null,
        "a new table has no main yet"
    );

    let head_before = f
        .catalog
        .load(&f.ident)
        .await
        .unwrap()
        .metadata
        .current_snapshot_id()
        .unwrap();
    let outcome = c
        .commit(
            &Append::new(f.files(0..10).await),
            &RestoreUpdate::new(offsets(0), offsets(7)),
        )
        .await
        .unwrap();
    let CommitOutcome::Committed { snapshot_id } = outcome else {
        panic!("{outcome:?}")
    };
    let append = server.commits().pop().unwrap();
    assert_eq!(append.path, "namespaces/t/tables/events");
    let body = append.body;
    assert_eq!(
        body["identifier"],
        serde_json::json!({"namespace": ["t"], "name": "events"})
    );
    assert_eq!(actions(&body), ["add-snapshot", "set-snapshot-ref"]);
    assert_eq!(requirement(&body, "assert-table-uuid")["uuid"], uuid.as_str());
    let main = requirement(&body, "assert-ref-snapshot-id");
    assert_eq!(
        (main["ref"].as_str(), main["snapshot-id"].as_i64()),
        (Some("main"), Some(head_before))
    );
    for kind in [
        "assert-current-schema-id",
        "assert-last-assigned-field-id",
        "assert-default-spec-id",
        "assert-last-assigned-partition-id",
        "assert-default-sort-order-id",
    ] {
        requirement(&body, kind);
    }
    let snap = &body["updates"][0]["snapshot"];
    assert_eq!(snap["snapshot-id"].as_i64(), Some(snapshot_id));
    assert_eq!(snap["parent-snapshot-id"].as_i64(), Some(head_before));
    assert_eq!(snap["summary"]["operation"], "append");
    assert_eq!(
        snap["summary"]["calve.offsets"],
        restore::format_offsets(&offsets(7)).as_str()
    );
    assert_eq!(snap["summary"]["added-records"], "10");
    let set_ref = &body["updates"][1];
    assert_eq!(
        (set_ref["ref-name"].as_str(), set_ref["type"].as_str()),
        (Some("main"), Some("branch"))
    );

    // The server, not calve, wrote the metadata file calve now holds.
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(
        Some(st.metadata_location.clone()),
        server.metadata_location("t", "events")
    );
    assert_eq!(restore::restore_point(&st.metadata).unwrap(), Some(offsets(7)));

    // A schema change is a metadata-only commit with the same requirements.
    c.update_metadata(&UpdateSchema {
        changes: vec![SchemaChange::AddColumn {
            name: "note".into(),
            ty: PrimitiveType::String,
            doc: None,
        }],
    })
    .await
    .unwrap();
    assert_eq!(
        actions(&server.commits().pop().unwrap().body),
        ["add-schema", "set-current-schema"]
    );

    let view = f.read_columns(&["id", "note"]);
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), (0..10).collect::<Vec<_>>(), "{reader}");
    }
    let now = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(
        view.json["pyiceberg"]["metadata_location"].as_str(),
        Some(now.metadata_location.as_str())
    );
    assert!(
        view.json["pyiceberg"]["schema"].as_str().unwrap().contains("note"),
        "PyIceberg sees the new column"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_owner_is_fenced_through_the_main_ref() {
    let (f, server) = Fixture::on_rest().await;
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

    // The new owner's claim moves main and keeps the restore point.
    let new_epoch = claim_epoch(&f.catalog, &f.ident).await.unwrap();
    assert_eq!(new_epoch, 2);
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(
        restore::restore_point(&st.metadata).unwrap(),
        Some(offsets(1)),
        "the claim carries the restore point"
    );
    let claim_summary = &st.metadata.current_snapshot().unwrap().summary().additional_properties;
    assert_eq!(claim_summary.get("added-data-files"), None);

    let before = server.commits().len();
    let err = old
        .commit(
            &Append::new(f.files(10..20).await),
            &RestoreUpdate::new(offsets(1), offsets(2)),
        )
        .await
        .unwrap_err();
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
    // The old owner reloaded before posting, so it never even reached the server.
    assert_eq!(server.commits().len(), before);

    concurrent_appends(&f, new_epoch).await;
    let rejected = server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .count();
    assert!(
        rejected >= 4,
        "concurrent committers went through the server ({rejected} commits)"
    );
    let want: Vec<i64> = (0..10).chain(100..130).collect();
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader}");
    }
}

/// The race the requirement closes: a stale owner that passed its own epoch check just before
/// the new owner's claim landed. Only the main-ref requirement can stop it on REST.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_between_check_and_post_fails_the_stale_commit() {
    let (f, _server) = Fixture::on_rest().await;
    claim_epoch(&f.catalog, &f.ident).await.unwrap();
    let base = f.catalog.load(&f.ident).await.unwrap();
    claim_epoch(&f.catalog, &f.ident).await.unwrap();
    // Replay what the stale owner would post: a property change against the pre-claim base.
    assert!(
        f.catalog.commit(&base, &stale_change(&base)).await.unwrap().is_none(),
        "the server must refuse a commit against an old main"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_unknown_outcomes_and_foreign_writers() {
    let (f, server) = Fixture::on_rest().await;
    let c = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );

    // 409: the attempt's manifest and list are deleted, the retry lands.
    server.inject(Fault::Conflict);
    c.commit(
        &Append::new(f.files(0..10).await),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();

    // 503 after the server applied it: the retry finds its own commit id and stops.
    server.inject(Fault::ApplyThenUnavailable);
    let outcome = c
        .commit(
            &Append::new(f.files(10..20).await),
            &RestoreUpdate::new(offsets(1), offsets(2)),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, CommitOutcome::AlreadyCommitted { .. }), "{outcome:?}");

    // PyIceberg appends through the same REST server between two of our commits; ours is
    // refused once (main moved), re-based and retried.
    let warehouse = f.dir.path().join("warehouse");
    calve_testkit::python::append_with_pyiceberg_at(&server.uri(), &warehouse, "t.events", &[1000, 1001]);
    c.commit(
        &Append::new(f.files(20..30).await),
        &RestoreUpdate::new(offsets(2), offsets(3)),
    )
    .await
    .unwrap();

    let mut want: Vec<i64> = (0..30).collect();
    want.extend([1000, 1001]);
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader}");
    }
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(restore::restore_point(&st.metadata).unwrap(), Some(offsets(3)));

    // Expiry through REST (remove-snapshots), then nothing on disk but what the head needs.
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
    assert_eq!(report.expired_snapshots.len(), 4, "claim, two appends and PyIceberg's");
    assert_eq!(actions(&server.commits().pop().unwrap().body), ["remove-snapshots"]);
    let on_disk = files_on_disk(st.metadata.location());
    let referenced = referenced_by_head(&f).await;
    let data_or_manifests: Vec<_> = on_disk
        .iter()
        .filter(|p| !p.ends_with(".metadata.json"))
        .filter(|p| !referenced.contains(*p))
        .collect();
    assert!(
        data_or_manifests.is_empty(),
        "files no snapshot references: {data_or_manifests:?}"
    );
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), want, "{reader} after expiry");
    }

    // A maintenance rewrite applied, then answered 503: its commit id is made once per commit,
    // so the retry finds it landed instead of failing over inputs it already removed (which
    // would have had compaction delete the output a snapshot now references).
    let st = f.catalog.load(&f.ident).await.unwrap();
    let live = calve_table::read::live::live_files(f.catalog.file_io(), &st.metadata)
        .await
        .unwrap();
    let old = live.data[0].file.clone();
    let rows = old.record_count() as i64;
    let replacement = f.one_file(5000..5000 + rows).await;
    server.inject(Fault::ApplyThenUnavailable);
    let outcome = c
        .commit_maintenance(&Rewrite {
            removed: vec![old],
            added: vec![replacement.clone()],
            planned_at: st.metadata.current_snapshot_id(),
        })
        .await
        .unwrap();
    assert!(matches!(outcome, CommitOutcome::AlreadyCommitted { .. }), "{outcome:?}");
    let st = f.catalog.load(&f.ident).await.unwrap();
    let live = calve_table::read::live::live_files(f.catalog.file_io(), &st.metadata)
        .await
        .unwrap();
    assert!(
        live.data.iter().any(|l| l.file.file_path() == replacement.file_path()),
        "the rewrite's output is live"
    );
}
