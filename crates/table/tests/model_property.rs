//! Property test of the commit layer: a seeded random sequence of append, row delta, rewrite
//! and expire against an in-memory model of the table's rows. After every step, PyIceberg and
//! DuckDB must read exactly the model's rows, and the snapshot summary's file counts must match
//! the model's. The seed is fixed (1) unless `CALVE_PROP_SEED=<seed>` or `=random` says otherwise; `CALVE_PROP_STEPS` sets the length.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use calve_table::commit::restore::restore_point;
use calve_table::commit::{claim_epoch, Append, Committer, ExpirePolicy, RestoreUpdate, Rewrite, RowDelta};
use calve_table::write::deletes::{PositionDelete, PositionDeleteWriter};
use common::{ids_of, offsets, Fixture};
use iceberg::spec::DataFile;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A live data file as the model sees it: ids by row position, and deleted positions.
struct ModelFile {
    file: DataFile,
    ids: Vec<i64>,
    deleted: BTreeSet<usize>,
}

#[derive(Default)]
struct Model {
    files: Vec<ModelFile>,
    delete_files: Vec<DataFile>,
    next_id: i64,
}

impl Model {
    fn live(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .files
            .iter()
            .flat_map(|f| {
                f.ids
                    .iter()
                    .enumerate()
                    .filter(|(p, _)| !f.deleted.contains(p))
                    .map(|(_, id)| *id)
            })
            .collect();
        v.sort();
        v
    }

    fn fresh(&mut self, rng: &mut StdRng) -> Vec<i64> {
        let n = rng.gen_range(1..6);
        let ids = (self.next_id..self.next_id + n).collect();
        self.next_id += n;
        ids
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_operation_sequences_match_the_model() {
    let seed = calve_testkit::seed("CALVE_PROP_SEED", 1);
    let steps = calve_testkit::env_count("CALVE_PROP_STEPS", 24) as i64;
    eprintln!("property test: {steps} steps");
    let mut rng = StdRng::seed_from_u64(seed);
    let f = Fixture::new().await;
    let c = Committer::new(
        f.catalog.clone(),
        f.ident.clone(),
        claim_epoch(&f.catalog, &f.ident).await.unwrap(),
    );
    let mut m = Model::default();
    let mut history = Vec::new();

    for step in 0..steps {
        let restore = RestoreUpdate::new(offsets(step), offsets(step + 1));
        let op = if m.files.is_empty() { 0 } else { rng.gen_range(0..4) };
        let name = match op {
            0 => {
                let ids = m.fresh(&mut rng);
                let file = f.one_file(ids.clone()).await;
                c.commit(&Append::new(vec![file.clone()]), &restore).await.unwrap();
                m.files.push(ModelFile {
                    file,
                    ids,
                    deleted: BTreeSet::new(),
                });
                "append"
            }
            1 => {
                let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
                let mut picks: Vec<(usize, usize)> = Vec::new();
                for _ in 0..rng.gen_range(1..4) {
                    let fi = rng.gen_range(0..m.files.len());
                    let pos = rng.gen_range(0..m.files[fi].ids.len());
                    if !m.files[fi].deleted.contains(&pos) && !picks.contains(&(fi, pos)) {
                        picks.push((fi, pos));
                    }
                }
                let with_data = rng.gen_bool(0.5);
                let new_ids = if with_data { m.fresh(&mut rng) } else { Vec::new() };
                let new_file = if with_data {
                    Some(f.one_file(new_ids.clone()).await)
                } else {
                    None
                };
                let dels: Vec<PositionDelete> = picks
                    .iter()
                    .map(|(fi, pos)| PositionDelete {
                        data_file: &m.files[*fi].file,
                        pos: *pos as i64,
                    })
                    .collect();
                let delete_files = if dels.is_empty() {
                    vec![]
                } else {
                    PositionDeleteWriter::new(&meta, f.catalog.file_io().clone())
                        .unwrap()
                        .write(&dels)
                        .await
                        .unwrap()
                };
                c.commit(
                    &RowDelta::new(new_file.iter().cloned().collect(), delete_files.clone()),
                    &restore,
                )
                .await
                .unwrap();
                for (fi, pos) in picks {
                    m.files[fi].deleted.insert(pos);
                }
                m.delete_files.extend(delete_files);
                if let Some(file) = new_file {
                    m.files.push(ModelFile {
                        file,
                        ids: new_ids,
                        deleted: BTreeSet::new(),
                    });
                }
                "row delta"
            }
            2 => {
                // Compact: a random subset, or everything including every delete file.
                let full = rng.gen_bool(0.3);
                let mut chosen: Vec<usize> = (0..m.files.len()).filter(|_| full || rng.gen_bool(0.5)).collect();
                if chosen.is_empty() {
                    chosen.push(0);
                }
                let live: Vec<i64> = chosen
                    .iter()
                    .flat_map(|i| {
                        let mf = &m.files[*i];
                        mf.ids
                            .iter()
                            .enumerate()
                            .filter(|(p, _)| !mf.deleted.contains(p))
                            .map(|(_, id)| *id)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let added = if live.is_empty() {
                    vec![]
                } else {
                    vec![f.one_file(live.clone()).await]
                };
                let mut removed: Vec<DataFile> = chosen.iter().map(|i| m.files[*i].file.clone()).collect();
                if full {
                    removed.append(&mut m.delete_files);
                }
                let planned_at = f.catalog.load(&f.ident).await.unwrap().metadata.current_snapshot_id();
                c.commit_maintenance(&Rewrite {
                    removed,
                    added: added.clone(),
                    planned_at,
                })
                .await
                .unwrap();
                for i in chosen.iter().rev() {
                    m.files.remove(*i);
                }
                if let Some(file) = added.into_iter().next() {
                    m.files.push(ModelFile {
                        file,
                        ids: live,
                        deleted: BTreeSet::new(),
                    });
                }
                "rewrite"
            }
            _ => {
                let keep = rng.gen_range(1..4);
                c.expire_snapshots(
                    ExpirePolicy {
                        max_age: Duration::ZERO,
                        retain_last: keep,
                        retain_at_most: None,
                    },
                    i64::MAX / 2,
                )
                .await
                .unwrap();
                "expire"
            }
        };
        history.push(name);
        let view = f.read();
        for reader in ["pyiceberg", "duckdb"] {
            assert_eq!(
                ids_of(&view, reader),
                m.live(),
                "{reader} after step {step} ({history:?}), seed {seed}"
            );
        }
        let summary = view.current_summary();
        let count = |k: &str| summary[k].as_str().unwrap_or("0").parse::<usize>().unwrap();
        assert_eq!(
            count("total-data-files"),
            m.files.len(),
            "data files after {history:?}, seed {seed}"
        );
        assert_eq!(
            count("total-delete-files"),
            m.delete_files.len(),
            "delete files after {history:?}, seed {seed}"
        );
        let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
        assert!(
            restore_point(&meta).unwrap().is_some(),
            "restore point after {history:?}, seed {seed}"
        );
    }
}
