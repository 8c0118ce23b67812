//! The key index turns upserts and deletes into position deletes: resolved per commit (last
//! change per key wins), committed as row deltas, rebuilt from the table with the same
//! answer, and refused when another writer rewrote files after the positions were computed.
//! Read back by PyIceberg and DuckDB; no equality delete anywhere.

mod common;

use calve_retry::Classify;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use calve_table::commit::{CommitOutcome, Committer, ComputedAt, RestoreUpdate, Rewrite, RowDelta};
use calve_table::keyed::index::{KeyIndex, PlanStats, SeqBatch};
use calve_table::read::live::{equality_deletes_in_any_snapshot, live_files};
use calve_table::write::data::{arrow_schema, DataWriter};
use calve_table::write::deletes::PositionDeleteWriter;
use calve_table::TableError;
use common::{committer, offsets, Fixture};

const DAY_US: i64 = 86_400_000_000;
const BASE_US: i64 = 1_763_942_400_000_000;

/// Rows `(id, version)`: the version is stored as the event time's day, so every update moves
/// the key to another partition (its old row's delete lands in the old partition).
fn rows(f: &Fixture, meta: &iceberg::spec::TableMetadata, rows: &[(i64, i64)]) -> RecordBatch {
    let _ = f;
    RecordBatch::try_new(
        arrow_schema(meta).unwrap(),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| BASE_US + r.1 * DAY_US).collect::<Vec<_>>())
                    .with_timezone("+00:00"),
            ),
        ],
    )
    .unwrap()
}

fn keys(ids: &[i64]) -> RecordBatch {
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "id",
        arrow_schema::DataType::Int64,
        false,
    )]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap()
}

/// One upsert commit the way the pipeline's sink does it.
async fn commit_changes(
    f: &Fixture,
    c: &Committer,
    index: &mut KeyIndex,
    upserts: Vec<SeqBatch>,
    deletes: Vec<SeqBatch>,
    n: i64,
) -> PlanStats {
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let plan = index.plan(&upserts, &deletes).unwrap();
    let stats = plan.stats;
    let written = DataWriter::new(&meta, f.catalog.file_io().clone(), 64 << 20)
        .unwrap()
        .write_tracked(&plan.rows)
        .await
        .unwrap();
    let positions = index.deletes_for(&plan);
    let delete_files = match positions.is_empty() {
        true => vec![],
        false => PositionDeleteWriter::new(&meta, f.catalog.file_io().clone())
            .unwrap()
            .write(&positions)
            .await
            .unwrap(),
    };
    let data_files = written.iter().flat_map(|w| w.files.clone()).collect();
    let op = RowDelta::new(data_files, delete_files).computed_at(ComputedAt {
        snapshot_id: index.head(),
        epoch: c.epoch(),
    });
    let CommitOutcome::Committed { snapshot_id } = c
        .commit(&op, &RestoreUpdate::new(offsets(n), offsets(n + 1)))
        .await
        .unwrap()
    else {
        panic!()
    };
    index
        .apply(plan, &written, &op.delete_files, Some(snapshot_id))
        .unwrap();
    stats
}

/// (id, version) pairs one reader sees, sorted.
type Rows = Vec<(i64, i64)>;

/// (id, version) pairs both readers see, sorted.
fn state(f: &Fixture) -> (Rows, Rows) {
    let view = f.read_columns(&["id", "ts"]);
    let of = |reader: &str| {
        let mut v: Vec<(i64, i64)> = view
            .rows(reader)
            .iter()
            .map(|r| {
                let ts = chrono::DateTime::parse_from_rfc3339(r[1].as_str().unwrap())
                    .unwrap()
                    .timestamp_micros();
                (r[0].as_i64().unwrap(), (ts - BASE_US) / DAY_US)
            })
            .collect();
        v.sort();
        v
    };
    (of("pyiceberg"), of("duckdb"))
}

#[tokio::test(flavor = "multi_thread")]
async fn upserts_and_deletes_become_position_deletes_and_survive_a_rebuild() {
    let f = Fixture::new().await;
    let c = committer(&f).await;
    let key = vec!["id".to_string()];
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let mut index = KeyIndex::build(f.catalog.file_io(), &meta, &key, &Default::default())
        .await
        .unwrap();
    let mut model: BTreeMap<i64, i64> = BTreeMap::new();

    // Commit 1: ids 0..100 at version 0, with id 7 written twice (the later one, version 3, wins).
    let mut first: Vec<(i64, i64)> = (0..100).map(|i| (i, 0)).collect();
    first.push((7, 3));
    let seq = (0..first.len() as u64).collect();
    let s = commit_changes(
        &f,
        &c,
        &mut index,
        vec![SeqBatch {
            batch: rows(&f, &meta, &first),
            seq,
        }],
        vec![],
        0,
    )
    .await;
    assert_eq!(
        s,
        PlanStats {
            inserts: 100,
            collapsed: 1,
            ..PlanStats::default()
        }
    );
    model.extend((0..100).map(|i| (i, 0)));
    model.insert(7, 3);

    // Commit 2: update 50..150 to version 1, delete 0..10 — but id 5 is re-inserted after its
    // delete (version 2) and id 60 deleted after its update; id 999 deleted but never existed.
    let upd: Vec<(i64, i64)> = (50..150).map(|i| (i, 1)).collect();
    let upserts = vec![
        SeqBatch {
            batch: rows(&f, &meta, &upd),
            seq: (0..100).collect(),
        },
        SeqBatch {
            batch: rows(&f, &meta, &[(5, 2)]),
            seq: vec![300],
        },
    ];
    let deletes = vec![SeqBatch {
        batch: keys(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 60, 999]),
        seq: vec![200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211],
    }];
    let s = commit_changes(&f, &c, &mut index, upserts, deletes, 1).await;
    for i in 50..150 {
        model.insert(i, 1);
    }
    for i in (0..10).chain([60]) {
        model.remove(&i);
    }
    model.insert(5, 2);
    assert_eq!(
        s,
        PlanStats {
            inserts: 50,
            updates: 50,
            deletes: 10,
            deletes_of_absent_keys: 1,
            collapsed: 2
        },
        "5 and 60 changed twice"
    );
    let want: Vec<(i64, i64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
    let (py, duck) = state(&f);
    assert_eq!(py, want, "pyiceberg");
    assert_eq!(duck, want, "duckdb");
    assert_eq!(index.len(), model.len());

    // Rebuilt from the table, the index holds the same keys and drives a correct third commit.
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let mut rebuilt = KeyIndex::build(f.catalog.file_io(), &meta, &key, &Default::default())
        .await
        .unwrap();
    assert_eq!(rebuilt.len(), model.len());
    assert_eq!(rebuilt.head(), meta.current_snapshot_id());
    let third: Vec<(i64, i64)> = model.keys().map(|k| (*k, 4)).collect();
    let n = third.len() as u64;
    let s = commit_changes(
        &f,
        &c,
        &mut rebuilt,
        vec![SeqBatch {
            batch: rows(&f, &meta, &third),
            seq: (0..n).collect(),
        }],
        vec![],
        2,
    )
    .await;
    assert_eq!((s.updates, s.inserts), (n, 0));
    model.values_mut().for_each(|v| *v = 4);
    let want: Vec<(i64, i64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
    let (py, duck) = state(&f);
    assert_eq!(py, want, "pyiceberg after the rebuilt index's commit");
    assert_eq!(duck, want, "duckdb after the rebuilt index's commit");

    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    assert_eq!(
        equality_deletes_in_any_snapshot(f.catalog.file_io(), &meta)
            .await
            .unwrap(),
        0
    );
    let live = live_files(f.catalog.file_io(), &meta).await.unwrap();
    assert!(!live.position_deletes.is_empty());
    // Every version-0..3 row is dead: the live rows per the index equal the model.
    assert_eq!(
        KeyIndex::build(f.catalog.file_io(), &meta, &key, &Default::default())
            .await
            .unwrap()
            .len(),
        model.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn positions_computed_before_another_writers_rewrite_are_refused() {
    let f = Fixture::new().await;
    let c = committer(&f).await;
    let key = vec!["id".to_string()];
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let mut index = KeyIndex::build(f.catalog.file_io(), &meta, &key, &Default::default())
        .await
        .unwrap();
    let first: Vec<(i64, i64)> = (0..20).map(|i| (i, 0)).collect();
    commit_changes(
        &f,
        &c,
        &mut index,
        vec![SeqBatch {
            batch: rows(&f, &meta, &first),
            seq: (0..20).collect(),
        }],
        vec![],
        0,
    )
    .await;

    // Another process compacts: the file the index points at is replaced by a copy.
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let old = live_files(f.catalog.file_io(), &meta)
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|l| l.file)
        .collect::<Vec<_>>();
    let copy = DataWriter::new(&meta, f.catalog.file_io().clone(), 64 << 20)
        .unwrap()
        .write(&[rows(&f, &meta, &first)])
        .await
        .unwrap();
    let other = Committer::new(f.catalog.clone(), f.ident.clone(), c.epoch());
    other
        .commit_maintenance(&Rewrite {
            removed: old,
            added: copy,
            planned_at: meta.current_snapshot_id(),
        })
        .await
        .unwrap();

    // Our next update's positions name the replaced file: refused, never committed wrong.
    let plan = index
        .plan(
            &[SeqBatch {
                batch: rows(&f, &meta, &[(3, 1)]),
                seq: vec![0],
            }],
            &[],
        )
        .unwrap();
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let deletes = PositionDeleteWriter::new(&meta, f.catalog.file_io().clone())
        .unwrap()
        .write(&index.deletes_for(&plan))
        .await
        .unwrap();
    let data = DataWriter::new(&meta, f.catalog.file_io().clone(), 64 << 20)
        .unwrap()
        .write(&plan.rows)
        .await
        .unwrap();
    let op = RowDelta::new(data, deletes).computed_at(ComputedAt {
        snapshot_id: index.head(),
        epoch: c.epoch(),
    });
    let err = c
        .commit(&op, &RestoreUpdate::new(offsets(1), offsets(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::StaleDeletes { .. }), "{err}");
    assert_eq!(
        err.class(),
        calve_retry::RetryClass::Temporary,
        "refreshing the index is the fix"
    );

    // Caught up, the index points at the copy (read alone, not the table) and the same update
    // now lands correctly.
    let r = index.refresh(f.catalog.file_io(), &meta).await.unwrap();
    assert_eq!((r.rebuilt, r.files_dropped, r.files_read), (false, 1, 1), "{r:?}");
    commit_changes(
        &f,
        &c,
        &mut index,
        vec![SeqBatch {
            batch: rows(&f, &meta, &[(3, 1)]),
            seq: vec![0],
        }],
        vec![],
        1,
    )
    .await;
    let mut want: Vec<(i64, i64)> = (0..20).map(|i| (i, 0)).collect();
    want[3] = (3, 1);
    let (py, duck) = state(&f);
    assert_eq!(py, want);
    assert_eq!(duck, want);
}

/// Another writer's compaction of one partition: its data files' live rows (deletes applied)
/// rewritten into one file. Returns how many files it wrote.
async fn compact_partition(f: &Fixture, c: &Committer, day: i64) -> usize {
    use calve_table::commit::Rewrite;
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let io = f.catalog.file_io();
    let live = live_files(io, &meta).await.unwrap();
    let deletes = calve_table::read::read_deletes(io, &live).await.unwrap();
    let in_day = |df: &iceberg::spec::DataFile| {
        df.partition().fields()[0] == Some(iceberg::spec::Literal::int((BASE_US / DAY_US + day) as i32))
    };
    let removed: Vec<_> = live
        .data
        .iter()
        .map(|l| l.file.clone())
        .filter(|df| in_day(df))
        .collect();
    let mut kept = Vec::new();
    for df in &removed {
        let dead = deletes.of(df.file_path());
        let mut pos = 0i64;
        for b in calve_table::read::read_data_file(io, &meta, df.file_path())
            .await
            .unwrap()
        {
            let mask: Vec<bool> = (0..b.num_rows())
                .map(|i| dead.binary_search(&(pos + i as i64)).is_err())
                .collect();
            pos += b.num_rows() as i64;
            kept.push(arrow_select::filter::filter_record_batch(&b, &arrow_array::BooleanArray::from(mask)).unwrap());
        }
    }
    if removed.len() < 2 {
        return 0;
    }
    let added = DataWriter::new(&meta, io.clone(), 64 << 20)
        .unwrap()
        .write(&kept)
        .await
        .unwrap();
    let n = added.len();
    let other = Committer::new(f.catalog.clone(), f.ident.clone(), c.epoch());
    other
        .commit_maintenance(&Rewrite {
            removed,
            added,
            planned_at: meta.current_snapshot_id(),
        })
        .await
        .unwrap();
    n
}

/// Where the index says each of `ids` lives: (file, position), sorted; and how many it holds.
fn places(
    index: &KeyIndex,
    meta: &iceberg::spec::TableMetadata,
    f: &Fixture,
    ids: &[i64],
) -> (Vec<(String, i64)>, usize) {
    let probe: Vec<(i64, i64)> = ids.iter().map(|i| (*i, 0)).collect();
    let plan = index
        .plan(
            &[SeqBatch {
                batch: rows(f, meta, &probe),
                seq: (0..ids.len() as u64).collect(),
            }],
            &[],
        )
        .unwrap();
    let mut out: Vec<(String, i64)> = index
        .deletes_for(&plan)
        .iter()
        .map(|d| (d.data_file.file_path().to_string(), d.pos))
        .collect();
    out.sort();
    (out, index.len())
}

/// The key index under a memory limit far below its size spills to disk, and stays exact
/// while it follows the table: its own upserts and deletes, other writers' compactions and
/// a foreign position delete, caught up by `refresh` (which reads only the changed files).
/// After every step it must place every key exactly where a fresh build from the table does,
/// and hold exactly the model's keys; at the end both foreign readers return the model.
#[tokio::test(flavor = "multi_thread")]
async fn a_spilled_index_follows_compactions_and_foreign_deletes_like_a_fresh_build() {
    use rand::{Rng, SeedableRng};
    let f = Fixture::new().await;
    let c = committer(&f).await;
    let key = vec!["id".to_string()];
    let spill = tempfile::tempdir().unwrap();
    let tiny = calve_table::keyed::index::IndexSettings {
        memory_limit: 1 << 20,
        spill_dir: spill.path().to_path_buf(),
    };
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let mut index = KeyIndex::build(f.catalog.file_io(), &meta, &key, &tiny).await.unwrap();
    let mut model: BTreeMap<i64, i64> = BTreeMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    const IDS: i64 = 40_000;
    for round in 0..8i64 {
        let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
        let version = round % 3;
        let upserts: Vec<(i64, i64)> = (0..12_000).map(|_| (rng.gen_range(0..IDS), version)).collect();
        let deleted: Vec<i64> = (0..400).map(|_| rng.gen_range(0..IDS)).collect();
        let n = upserts.len() as u64;
        let batch = SeqBatch {
            batch: rows(&f, &meta, &upserts),
            seq: (0..n).collect(),
        };
        let dels = SeqBatch {
            batch: keys(&deleted),
            seq: (n..n + deleted.len() as u64).collect(),
        };
        commit_changes(&f, &c, &mut index, vec![batch], vec![dels], round).await;
        model.extend(upserts.iter().copied());
        deleted.iter().for_each(|k| {
            model.remove(k);
        });
        if round % 3 == 2 {
            let wrote = compact_partition(&f, &c, rng.gen_range(0..3)).await;
            let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
            let r = index.refresh(f.catalog.file_io(), &meta).await.unwrap();
            assert!(
                !r.rebuilt && r.files_read == wrote,
                "round {round}: only the compaction's output is read: {r:?}"
            );
        }
        if round == 4 {
            // A position delete another writer commits: the row it names is gone for the index too.
            let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
            let victim = *model.keys().nth(model.len() / 2).unwrap();
            let probe = index
                .plan(
                    &[SeqBatch {
                        batch: rows(&f, &meta, &[(victim, 0)]),
                        seq: vec![0],
                    }],
                    &[],
                )
                .unwrap();
            let d = PositionDeleteWriter::new(&meta, f.catalog.file_io().clone())
                .unwrap()
                .write(&index.deletes_for(&probe))
                .await
                .unwrap();
            let other = Committer::new(f.catalog.clone(), f.ident.clone(), c.epoch());
            other.commit_maintenance(&RowDelta::new(vec![], d)).await.unwrap();
            model.remove(&victim);
            let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
            let r = index.refresh(f.catalog.file_io(), &meta).await.unwrap();
            assert_eq!((r.rebuilt, r.files_read, r.deletes_applied), (false, 0, 1), "{r:?}");
        }
        let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
        let fresh = KeyIndex::build(f.catalog.file_io(), &meta, &key, &Default::default())
            .await
            .unwrap();
        let all: Vec<i64> = (0..IDS).collect();
        let (ours, held) = places(&index, &meta, &f, &all);
        let (truth, fresh_held) = places(&fresh, &meta, &f, &all);
        assert_eq!(held, model.len(), "round {round}: keys held");
        assert_eq!(fresh_held, model.len(), "round {round}: keys in the table");
        assert_eq!(ours.len(), model.len(), "round {round}: every model key has a place");
        assert!(
            ours == truth,
            "round {round}: the followed index and a fresh build disagree on places"
        );
    }
    assert!(index.disk_bytes() > 0, "a 1 MiB limit for {} keys spilled", model.len());
    assert!(
        index.approx_bytes() < 2 << 20,
        "memory stayed bounded: {} bytes",
        index.approx_bytes()
    );
    let want: Vec<(i64, i64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
    let (py, duck) = state(&f);
    assert!(
        py == want,
        "pyiceberg disagrees with the model ({} rows, {} expected)",
        py.len(),
        want.len()
    );
    assert!(
        duck == want,
        "duckdb disagrees with the model ({} rows, {} expected)",
        duck.len(),
        want.len()
    );
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    assert_eq!(
        equality_deletes_in_any_snapshot(f.catalog.file_io(), &meta)
            .await
            .unwrap(),
        0
    );
}
