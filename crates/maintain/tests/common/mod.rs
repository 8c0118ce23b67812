//! Shared fixture: a keyed, hour-partitioned table `t.events (id, ts, v)` in a temporary
//! SQLite catalog, written the way a keyed pipeline writes it (row deltas through the key
//! index), with an in-memory model of what it must hold.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use calve_maintain::MaintenancePolicy;
use calve_table::commit::restore::Offsets;
use calve_table::commit::{claim_epoch, Committer, ExpirePolicy, RestoreUpdate};
use calve_table::keyed::index::SeqBatch;
use calve_table::keyed::{Changes, Upserter};
use calve_table::write::data::arrow_schema;
use calve_table::{Catalog, CatalogConfig, TableDefinition};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use iceberg::TableIdent;

/// 2025-11-24T00:00Z in microseconds.
pub const BASE_US: i64 = 1_763_942_400_000_000;
pub const HOUR_US: i64 = 3_600_000_000;

/// (id, v) rows one reader sees.
pub type Rows = Vec<(i64, i64)>;

pub struct Table {
    pub dir: tempfile::TempDir,
    pub catalog: Catalog,
    pub ident: TableIdent,
    pub committer: Committer,
    pub upserter: Upserter,
    /// id → (hour, v): what the table must hold.
    pub model: BTreeMap<i64, (i64, i64)>,
    /// Commits so far (the restore point is `topic/0 = commits`).
    pub commits: i64,
}

impl Table {
    pub async fn new() -> Table {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CatalogConfig::new(
            format!("sqlite:{}/catalog.db", dir.path().display()),
            format!("{}/warehouse", dir.path().display()),
        );
        let catalog = Catalog::open(&cfg).await.unwrap();
        let ident = Catalog::ident(&["t".into()], "events").unwrap();
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
                NestedField::optional(3, "v", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(2, "ts_hour", Transform::Hour)
            .unwrap()
            .build();
        let properties = HashMap::from([
            (
                "write.metadata.delete-after-commit.enabled".to_string(),
                "true".to_string(),
            ),
            ("write.metadata.previous-versions-max".to_string(), "10".to_string()),
        ]);
        let st = catalog
            .ensure_table(&TableDefinition {
                ident: ident.clone(),
                schema,
                partition_spec: spec,
                properties,
                location: None,
            })
            .await
            .unwrap();
        let epoch = claim_epoch(&catalog, &ident).await.unwrap();
        let committer = Committer::new(catalog.clone(), ident.clone(), epoch);
        let upserter = Upserter::open(
            catalog.file_io(),
            &st.metadata,
            &["id".to_string()],
            64 << 20,
            &Default::default(),
        )
        .await
        .unwrap();
        Table {
            dir,
            catalog,
            ident,
            committer,
            upserter,
            model: BTreeMap::new(),
            commits: 0,
        }
    }

    /// One commit: `rows` (id, hour, v) upserted, then `deletes` removed. When maintenance
    /// moved rows since the index looked, catches the index up and commits again (as the
    /// pipeline does); returns whether that happened.
    pub async fn commit(&mut self, rows: &[(i64, i64, i64)], deletes: &[i64]) -> bool {
        let meta = self.catalog.load(&self.ident).await.unwrap().metadata;
        let schema = arrow_schema(&meta).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        rows.iter().map(|r| BASE_US + r.1 * HOUR_US + r.0).collect::<Vec<_>>(),
                    )
                    .with_timezone("+00:00"),
                ),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let n = rows.len() as u64;
        let upserts = vec![SeqBatch {
            batch,
            seq: (0..n).collect(),
        }];
        let key_schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "id",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let dels = match deletes.is_empty() {
            true => vec![],
            false => vec![SeqBatch {
                batch: RecordBatch::try_new(key_schema, vec![Arc::new(Int64Array::from(deletes.to_vec()))]).unwrap(),
                seq: (n..n + deletes.len() as u64).collect(),
            }],
        };
        let restore = RestoreUpdate::new(offsets(self.commits), offsets(self.commits + 1));
        let changes = Changes::new(upserts, dels);
        let prepared = self.upserter.write(&changes).await.unwrap();
        let committed = self
            .upserter
            .commit(&self.catalog, &self.committer, prepared, &changes, &restore)
            .await
            .unwrap_or_else(|e| panic!("commit failed: {e}"));
        let rebuilt = !committed.refreshes.is_empty();
        for r in rows {
            self.model.insert(r.0, (r.1, r.2));
        }
        for d in deletes {
            self.model.remove(d);
        }
        self.commits += 1;
        rebuilt
    }

    /// (id, v) per reader, sorted.
    pub fn read(&self) -> (Rows, Rows) {
        let view = calve_testkit::python::read_table(
            &self.dir.path().join("catalog.db"),
            &self.dir.path().join("warehouse"),
            "t.events",
            &["id", "v"],
        );
        let of = |reader: &str| {
            let mut v: Vec<(i64, i64)> = view
                .rows(reader)
                .iter()
                .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
                .collect();
            v.sort();
            v
        };
        (of("pyiceberg"), of("duckdb"))
    }

    pub fn expected(&self) -> Vec<(i64, i64)> {
        self.model.iter().map(|(id, (_, v))| (*id, *v)).collect()
    }

    /// Both foreign readers return exactly the model.
    pub fn assert_matches_model(&self, when: &str) {
        let (py, duck) = self.read();
        let want = self.expected();
        assert_eq!(py, want, "pyiceberg {when}");
        assert_eq!(duck, want, "duckdb {when}");
    }

    pub fn warehouse(&self) -> String {
        format!("{}/warehouse", self.dir.path().display())
    }
}

pub fn offsets(n: i64) -> Offsets {
    BTreeMap::from([("topic".to_string(), BTreeMap::from([(0, n)]))])
}

/// A policy for tests: no budget limit, compact from two small files, keep one snapshot.
pub fn policy() -> MaintenancePolicy {
    MaintenancePolicy {
        target_file_size: 64 << 20,
        keep: ExpirePolicy {
            max_age: Duration::ZERO,
            retain_last: 1,
            retain_at_most: None,
        },
        orphan_min_age: Duration::from_secs(3600),
        orphan_every: Duration::ZERO,
        budget: None,
        max_concurrent_rewrites: 2,
        sort_by: vec!["ts".into()],
        min_input_files: 2,
        delete_ratio: 0.0,
        max_manifests: 16,
    }
}
