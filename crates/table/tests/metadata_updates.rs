//! Schema, partition-spec and sort-order updates: metadata-only commits whose results every
//! reader sees, with files written before and after the change read together.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use calve_table::commit::{Append, RestoreUpdate, SchemaChange, UpdatePartitionSpec, UpdateSchema, UpdateSortOrder};
use calve_table::write::data::{arrow_schema, DataWriter};
use common::{committer, ids_of, offsets, Fixture};
use iceberg::spec::{NullOrder, PrimitiveType, SortDirection, SortField, SortOrder, Transform, UnboundPartitionSpec};

#[tokio::test(flavor = "multi_thread")]
async fn schema_evolution_reads_old_and_new_files_together() {
    let f = Fixture::new().await;
    let c = committer(&f).await;
    c.commit(
        &Append::new(f.files(0..4).await),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();
    c.update_metadata(&UpdateSchema {
        changes: vec![
            SchemaChange::AddColumn {
                name: "amount".into(),
                ty: PrimitiveType::Float,
                doc: None,
            },
            SchemaChange::AddColumn {
                name: "note".into(),
                ty: PrimitiveType::String,
                doc: Some("free text".into()),
            },
        ],
    })
    .await
    .unwrap();
    // Rows written under the new schema.
    let st = f.catalog.load(&f.ident).await.unwrap();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![10, 11])),
        Arc::new(TimestampMicrosecondArray::from(vec![1_763_942_400_000_000; 2]).with_timezone("+00:00")),
        Arc::new(Float32Array::from(vec![1.5, 2.5])),
        Arc::new(StringArray::from(vec![Some("a"), None])),
    ];
    let batch = RecordBatch::try_new(arrow_schema(&st.metadata).unwrap(), cols).unwrap();
    let files = DataWriter::new(&st.metadata, f.catalog.file_io().clone(), 1 << 20)
        .unwrap()
        .write(&[batch])
        .await
        .unwrap();
    c.commit(&Append::new(files), &RestoreUpdate::new(offsets(1), offsets(2)))
        .await
        .unwrap();
    c.update_metadata(&UpdateSchema {
        changes: vec![
            SchemaChange::Widen {
                name: "amount".into(),
                to: PrimitiveType::Double,
            },
            SchemaChange::Rename {
                from: "note".into(),
                to: "comment".into(),
            },
        ],
    })
    .await
    .unwrap();

    let view = f.read_columns(&["id", "amount", "comment"]);
    for reader in ["pyiceberg", "duckdb"] {
        let rows = view.rows(reader);
        let by_id = |id: i64| {
            rows.iter()
                .find(|r| r[0].as_i64() == Some(id))
                .unwrap_or_else(|| panic!("{reader}: no row {id}"))
                .clone()
        };
        assert_eq!(rows.len(), 6, "{reader}");
        assert!(
            by_id(0)[1].is_null() && by_id(0)[2].is_null(),
            "{reader}: old rows have no values for new columns"
        );
        assert_eq!(
            by_id(10)[1].as_f64(),
            Some(1.5),
            "{reader}: widened float read as double"
        );
        assert_eq!(by_id(10)[2], "a", "{reader}: renamed column keeps its data");
        assert!(by_id(11)[2].is_null());
    }
    assert!(view.json["pyiceberg"]["schema"]
        .as_str()
        .unwrap()
        .contains("amount: optional double"));
    // A new writer uses the evolved schema: a double column now.
    let st = f.catalog.load(&f.ident).await.unwrap();
    assert_eq!(
        arrow_schema(&st.metadata).unwrap().field(2).data_type(),
        &arrow_schema::DataType::Float64
    );

    // Refused changes leave the table as it was.
    let before = f.catalog.load(&f.ident).await.unwrap().metadata_location;
    for bad in [
        SchemaChange::Widen {
            name: "id".into(),
            to: PrimitiveType::Int,
        },
        SchemaChange::AddColumn {
            name: "amount".into(),
            ty: PrimitiveType::Long,
            doc: None,
        },
        SchemaChange::Rename {
            from: "missing".into(),
            to: "x".into(),
        },
    ] {
        let err = c
            .update_metadata(&UpdateSchema {
                changes: vec![bad.clone()],
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    assert_eq!(f.catalog.load(&f.ident).await.unwrap().metadata_location, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_partition_spec_and_sort_order_apply_to_new_files() {
    let f = Fixture::new().await;
    let c = committer(&f).await;
    c.commit(
        &Append::new(f.files(0..6).await),
        &RestoreUpdate::new(offsets(0), offsets(1)),
    )
    .await
    .unwrap();
    let hourly = UnboundPartitionSpec::builder()
        .add_partition_field(2, "ts_hour", Transform::Hour)
        .unwrap()
        .build();
    c.update_metadata(&UpdatePartitionSpec { spec: hourly }).await.unwrap();
    let order = SortOrder::builder()
        .with_sort_field(
            SortField::builder()
                .source_id(1)
                .direction(SortDirection::Ascending)
                .null_order(NullOrder::First)
                .transform(Transform::Identity)
                .build(),
        )
        .build_unbound()
        .unwrap();
    c.update_metadata(&UpdateSortOrder { order }).await.unwrap();
    c.commit(
        &Append::new(f.files(6..12).await),
        &RestoreUpdate::new(offsets(1), offsets(2)),
    )
    .await
    .unwrap();

    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), (0..12).collect::<Vec<_>>(), "{reader}");
    }
    let spec = view.json["pyiceberg"]["spec"].as_str().unwrap();
    assert!(spec.contains("hour"), "{spec}");
    let order = view.json["pyiceberg"]["sort_order"].as_str().unwrap();
    assert!(order.contains("ASC"), "{order}");
    let partitions: Vec<String> = view.files().iter().map(|f| f["partition"].to_string()).collect();
    assert!(
        partitions.iter().any(|p| p.contains("ts_day")) && partitions.iter().any(|p| p.contains("ts_hour")),
        "{partitions:?}"
    );
}

/// A decision lands only on the hold it was made for, once: a second approver, or one who
/// read an older hold, is refused instead of overwriting what the table holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_hold_takes_one_decision_and_only_its_own() {
    use calve_table::commit::hold::{Action, Decision, Hold, HoldState, SetHoldState, CONTRACT_EDIT};
    let f = Fixture::new().await;
    let c = committer(&f).await;
    let hold = |offset: i64| Hold {
        id: format!("orders/0@{offset}"),
        since_ms: 1,
        topic: "orders".into(),
        partition: 0,
        offset,
        path: "qty".into(),
        kind: "schema-mismatch".into(),
        reason: "qty: expected int".into(),
        sample: "{}".into(),
        proposal: Vec::new(),
        approver: "team".into(),
    };
    let decision = |offset: i64, by: &str| Decision {
        hold_id: format!("orders/0@{offset}"),
        action: Action::Reject,
        by: by.into(),
        at_ms: 2,
    };
    let err = c
        .update_metadata(&SetHoldState::decide(&decision(5, "ann")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has ended"), "no hold yet: {err}");
    c.update_metadata(&SetHoldState::hold(&hold(5))).await.unwrap();
    let err = c
        .update_metadata(&SetHoldState::decide(&decision(3, "ann")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("now held at orders/0@5"), "{err}");
    c.update_metadata(&SetHoldState::decide(&decision(5, "ann")))
        .await
        .unwrap();
    let err = c
        .update_metadata(&SetHoldState::decide(&decision(5, "bob")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("by ann already decided"), "{err}");
    let state = HoldState::of(&f.catalog.load(&f.ident).await.unwrap().metadata).unwrap();
    assert_eq!(
        state.decided().map(|(h, d)| (h.offset, d.by.as_str())),
        Some((5, "ann"))
    );

    // No new hold replaces one on records, nor a decided one; only an undecided contract edit
    // gives way to a newer edit.
    let edit = |id: &str| Hold {
        id: id.into(),
        kind: CONTRACT_EDIT.into(),
        ..hold(-1)
    };
    let err = c
        .update_metadata(&SetHoldState::hold(&edit("contract-edit:a")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be decided first"), "{err}");
    c.update_metadata(&SetHoldState::resolve(&state, applied(&state), &[]))
        .await
        .unwrap();
    c.update_metadata(&SetHoldState::hold(&edit("contract-edit:a")))
        .await
        .unwrap();
    c.update_metadata(&SetHoldState::hold(&edit("contract-edit:b")))
        .await
        .unwrap();
    let err = c.update_metadata(&SetHoldState::hold(&hold(9))).await.unwrap_err();
    assert!(
        err.to_string().contains("contract-edit:b"),
        "a record hold waits for the edit: {err}"
    );
    let err = c
        .update_metadata(&SetHoldState::clear("contract-edit:a"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("now held at contract-edit:b"), "{err}");
    c.update_metadata(&SetHoldState::clear("contract-edit:b"))
        .await
        .unwrap();
    let state = HoldState::of(&f.catalog.load(&f.ident).await.unwrap().metadata).unwrap();
    assert_eq!((state.hold, state.applied.len()), (None, 1));
}

fn applied(state: &calve_table::commit::hold::HoldState) -> calve_table::commit::hold::Applied {
    let (hold, decision) = state.decided().unwrap();
    calve_table::commit::hold::Applied {
        decision: decision.clone(),
        hold: hold.clone(),
        schema_id: 0,
    }
}
