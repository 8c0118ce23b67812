//! Shared fixture: a day-partitioned table `t.events` in a temporary SQLite catalog.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use calve_table::commit::restore::Offsets;
use calve_table::write::data::{arrow_schema, DataWriter};
use calve_table::{Catalog, CatalogConfig, TableDefinition};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use iceberg::TableIdent;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub catalog: Catalog,
    pub ident: TableIdent,
    /// SQLAlchemy URL of the catalog for foreign readers; `None`: the SQLite file in `dir`.
    pub reader_uri: Option<String>,
    /// The warehouse as calve.toml and readers name it.
    pub warehouse: String,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Self::with_properties(HashMap::new()).await
    }

    pub async fn with_properties(properties: HashMap<String, String>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite:{}/catalog.db", dir.path().display());
        Self::build(dir, uri, None, properties).await
    }

    /// The same table in a PostgreSQL catalog.
    pub async fn on_postgres(pg: &calve_testkit::postgres::Postgres) -> Fixture {
        Self::build(
            tempfile::tempdir().unwrap(),
            pg.uri(),
            Some(pg.sqlalchemy_uri()),
            HashMap::new(),
        )
        .await
    }

    /// The same table in a REST catalog (the in-process protocol server), read back by
    /// PyIceberg's RestCatalog through the same server.
    pub async fn on_rest() -> (Fixture, calve_testkit::rest_catalog::RestCatalogServer) {
        let dir = tempfile::tempdir().unwrap();
        let server = calve_testkit::rest_catalog::RestCatalogServer::start(&dir.path().join("warehouse"));
        let f = Self::build(dir, server.uri(), Some(server.uri()), HashMap::new()).await;
        (f, server)
    }

    /// The same table in rustberg, a REST catalog nobody here wrote, its warehouse in the
    /// fixture's directory; read back by PyIceberg's RestCatalog through it.
    pub async fn on_rustberg() -> (Fixture, calve_testkit::rustberg::Rustberg) {
        let dir = tempfile::tempdir().unwrap();
        // rustberg serves one warehouse and refuses a client that names another: the same
        // spelling on both sides.
        let warehouse = format!("file://{}/warehouse", dir.path().display());
        let server = calve_testkit::rustberg::Rustberg::start(&warehouse, &[]);
        let cfg = CatalogConfig::new(server.uri(), &warehouse);
        let f = Self::build_with(dir, cfg, Some(server.uri()), HashMap::new()).await;
        (f, server)
    }

    /// A second process opening the same REST table at `uri` (it must load, not create).
    pub async fn on_rest_again(f: &Fixture, uri: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CatalogConfig::new(uri, &f.warehouse);
        let catalog = Catalog::open(&cfg).await.unwrap();
        let def = TableDefinition {
            ident: f.ident.clone(),
            schema: f
                .catalog
                .load(&f.ident)
                .await
                .unwrap()
                .metadata
                .current_schema()
                .as_ref()
                .clone(),
            partition_spec: UnboundPartitionSpec::builder()
                .add_partition_field(2, "ts_day", Transform::Day)
                .unwrap()
                .build(),
            properties: HashMap::new(),
            location: None,
        };
        catalog.ensure_table(&def).await.unwrap();
        Fixture {
            dir,
            catalog,
            ident: f.ident.clone(),
            reader_uri: Some(uri.to_string()),
            warehouse: f.warehouse.clone(),
        }
    }

    /// The same table with its warehouse in an S3 bucket (the catalog stays a SQLite file).
    pub async fn on_s3(s3: &calve_testkit::s3::S3) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // A trailing `/` as people write it: no table path may get a doubled one from it.
        let mut cfg = CatalogConfig::new(
            format!("sqlite:{}/catalog.db", dir.path().display()),
            s3.url("warehouse/"),
        );
        cfg.storage = s3.properties().into_iter().collect();
        Self::build_with(dir, cfg, None, HashMap::new()).await
    }

    async fn build(
        dir: tempfile::TempDir,
        uri: String,
        reader_uri: Option<String>,
        properties: HashMap<String, String>,
    ) -> Fixture {
        let cfg = CatalogConfig::new(uri, format!("{}/warehouse", dir.path().display()));
        Self::build_with(dir, cfg, reader_uri, properties).await
    }

    async fn build_with(
        dir: tempfile::TempDir,
        cfg: CatalogConfig,
        reader_uri: Option<String>,
        properties: HashMap<String, String>,
    ) -> Fixture {
        let catalog = Catalog::open(&cfg).await.unwrap();
        let ident = Catalog::ident(&["t".into()], "events").unwrap();
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            ])
            .build()
            .unwrap();
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(2, "ts_day", Transform::Day)
            .unwrap()
            .build();
        catalog
            .ensure_table(&TableDefinition {
                ident: ident.clone(),
                schema,
                partition_spec: spec,
                properties,
                location: None,
            })
            .await
            .unwrap();
        Fixture {
            dir,
            catalog,
            ident,
            reader_uri,
            warehouse: cfg.warehouse.clone(),
        }
    }

    /// Writes rows `ids` (event time spread over two days) as data files.
    pub async fn files(&self, ids: std::ops::Range<i64>) -> Vec<iceberg::spec::DataFile> {
        let st = self.catalog.load(&self.ident).await.unwrap();
        let schema = arrow_schema(&st.metadata).unwrap();
        let ts: Vec<i64> = ids
            .clone()
            .map(|i| 1_763_942_400_000_000 + (i % 2) * 86_400_000_000)
            .collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.collect::<Vec<_>>())),
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("+00:00")),
            ],
        )
        .unwrap();
        DataWriter::new(&st.metadata, self.catalog.file_io().clone(), 64 << 20)
            .unwrap()
            .write(&[batch])
            .await
            .unwrap()
    }

    /// Writes rows `ids`, all on one day, as exactly one data file (row i at position i).
    pub async fn one_file(&self, ids: impl IntoIterator<Item = i64>) -> iceberg::spec::DataFile {
        let st = self.catalog.load(&self.ident).await.unwrap();
        let ids: Vec<i64> = ids.into_iter().collect();
        let n = ids.len();
        let batch = RecordBatch::try_new(
            arrow_schema(&st.metadata).unwrap(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(TimestampMicrosecondArray::from(vec![1_763_942_400_000_000i64; n]).with_timezone("+00:00")),
            ],
        )
        .unwrap();
        let mut files = DataWriter::new(&st.metadata, self.catalog.file_io().clone(), 64 << 20)
            .unwrap()
            .write(&[batch])
            .await
            .unwrap();
        assert_eq!(files.len(), 1);
        files.pop().unwrap()
    }

    pub fn read(&self) -> calve_testkit::python::ForeignView {
        self.read_columns(&["id"])
    }

    pub fn read_columns(&self, columns: &[&str]) -> calve_testkit::python::ForeignView {
        let warehouse = std::path::Path::new(&self.warehouse);
        match &self.reader_uri {
            Some(uri) => calve_testkit::python::read_table_at(uri, warehouse, "t.events", columns),
            None => {
                calve_testkit::python::read_table(&self.dir.path().join("catalog.db"), warehouse, "t.events", columns)
            }
        }
    }
}

pub fn offsets(n: i64) -> Offsets {
    BTreeMap::from([("topic".to_string(), BTreeMap::from([(0, n)]))])
}

pub fn ids_of(view: &calve_testkit::python::ForeignView, reader: &str) -> Vec<i64> {
    let mut v: Vec<i64> = view.rows(reader).iter().map(|r| r[0].as_i64().unwrap()).collect();
    v.sort();
    v
}

/// Every file under the table's location, as absolute paths.
pub fn files_on_disk(location: &str) -> std::collections::BTreeSet<String> {
    let root = location.trim_start_matches("file://").trim_start_matches("file:");
    let mut out = std::collections::BTreeSet::new();
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p)
            } else {
                out.insert(p.display().to_string());
            }
        }
    }
    out
}

/// Every file the current metadata references: itself, its log, the head snapshot's manifest
/// list, its manifests and their live content files.
pub async fn referenced_by_head(f: &Fixture) -> std::collections::BTreeSet<String> {
    let st = f.catalog.load(&f.ident).await.unwrap();
    let m = st.metadata.as_ref();
    let io = f.catalog.file_io();
    let mut out = std::collections::BTreeSet::from([st.metadata_location.clone()]);
    out.extend(m.metadata_log().iter().map(|l| l.metadata_file.clone()));
    for s in m.snapshots() {
        out.insert(s.manifest_list().to_string());
        let list = iceberg::spec::ManifestList::parse_with_version(
            &io.new_input(s.manifest_list()).unwrap().read().await.unwrap(),
            m.format_version(),
        )
        .unwrap();
        for mf in list.entries() {
            out.insert(mf.manifest_path.clone());
            for e in mf.load_manifest(io).await.unwrap().entries() {
                if e.is_alive() {
                    out.insert(e.file_path().to_string());
                }
            }
        }
    }
    out
}

/// What a stale owner would post: a property change built on `base`, an older state.
pub fn stale_change(base: &calve_table::TableState) -> iceberg::spec::TableMetadataBuildResult {
    iceberg::spec::TableMetadataBuilder::new_from_metadata(
        base.metadata.as_ref().clone(),
        Some(base.metadata_location.clone()),
    )
    .set_properties([("x".to_string(), "y".to_string())].into())
    .unwrap()
    .build()
    .unwrap()
}

/// Expires every snapshot but the head, whatever its age.
pub async fn expire_to_head(c: &calve_table::commit::Committer) -> calve_table::commit::ExpireReport {
    c.expire_snapshots(
        calve_table::commit::ExpirePolicy {
            max_age: std::time::Duration::ZERO,
            retain_last: 1,
            retain_at_most: None,
        },
        i64::MAX / 2,
    )
    .await
    .unwrap()
}

/// A committer that has just claimed the fixture's table.
pub async fn committer(f: &Fixture) -> calve_table::commit::Committer {
    let epoch = calve_table::commit::claim_epoch(&f.catalog, &f.ident).await.unwrap();
    calve_table::commit::Committer::new(f.catalog.clone(), f.ident.clone(), epoch)
}

/// `commits` appends of `rows` rows each (commit `i` adds rows `i*rows..(i+1)*rows` and moves the
/// restore point from `i` to `i+1`), manifests merged once four pile up.
pub async fn appends(f: &Fixture, c: &calve_table::commit::Committer, commits: i64, rows: i64) {
    use calve_table::commit::{Append, MergePolicy, RestoreUpdate};
    let merge = MergePolicy {
        min_count_to_merge: 4,
        target_manifest_bytes: 8 << 20,
    };
    for i in 0..commits {
        let op = Append {
            files: f.files(i * rows..(i + 1) * rows).await,
            merge,
        };
        c.commit(&op, &RestoreUpdate::new(offsets(i), offsets(i + 1)))
            .await
            .unwrap();
    }
}

/// Three committers of `epoch` appending rows 100..130 at once (ten each, each with its own
/// restore-point topic): every one must land, whatever order the catalog sees them in.
pub async fn concurrent_appends(f: &Fixture, epoch: u64) {
    use calve_table::commit::{Append, Committer, RestoreUpdate};
    let mut tasks = Vec::new();
    for w in 0..3i64 {
        let c = Committer::new(f.catalog.clone(), f.ident.clone(), epoch);
        let files = f.files(100 + w * 10..110 + w * 10).await;
        tasks.push(tokio::spawn(async move {
            let to: Offsets = BTreeMap::from([(format!("w{w}"), BTreeMap::from([(0, 1)]))]);
            c.commit(
                &Append::new(files),
                &RestoreUpdate {
                    from: Offsets::new(),
                    to,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
