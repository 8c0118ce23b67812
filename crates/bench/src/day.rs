//! `calve-bench day [commits]`: a simulated day of a keyed, hour-partitioned table at the
//! one-minute band — 1,440 commits of 500 events, 10 % of them updates of earlier keys — with
//! maintenance every ten simulated minutes at the contract's budget, and the same commits into
//! a second table nobody maintains.
//!
//! Time is simulated: commits run back to back, and the maintenance clock (budget, retention)
//! advances one minute per commit. Snapshot timestamps are real and the maintenance clock
//! starts two days ahead of them, so every snapshot is "old" and retention keeps its minimum
//! count, as it would at the end of a real day.
//!
//! The report: files per partition, delete files, snapshots, metadata.json size, manifests,
//! what maintenance rewrote (write amplification) and what it cost in CPU next to ingestion;
//! then DuckDB query times over the maintained table, the unmaintained one, and the same rows
//! written optimally (one sorted file per partition), as ratios.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use calve_maintain::plan::partition_label;
use calve_maintain::{human_bytes, Maintainer, MaintenancePolicy, NoProgress};
use calve_table::commit::restore::Offsets;
use calve_table::commit::{claim_epoch, Append, Committer, RestoreUpdate};
use calve_table::keyed::index::SeqBatch;
use calve_table::keyed::{Changes, Upserter};
use calve_table::read::live::live_files;
use calve_table::write::data::{arrow_schema, DataWriter};
use calve_table::{Catalog, CatalogConfig, TableState};
use rand::{Rng, SeedableRng};

use crate::cpu_seconds;

const EVENTS_PER_MINUTE: usize = 500;
const UPDATE_SHARE: f64 = 0.10;
const MINUTE_MS: i64 = 60_000;
const MINUTE_US: i64 = 60_000_000;
/// 2026-11-24T00:00Z: the simulated day.
const DAY_START_US: i64 = 1_795_478_400_000_000;
const STATUSES: [&str; 4] = ["placed", "paid", "shipped", "returned"];

const CONTRACT: &str = r#"
[table]
name = "sim.TABLE"
topic = "sim"
format = "json"

[schema]
columns = [
  { name = "order_id", type = "long", required = true },
  { name = "customer", type = "string" },
  { name = "amount",   type = "double" },
  { name = "status",   type = "string" },
  { name = "ts",       type = "timestamptz", required = true },
]
evolution = "additive"
approver = "bench"
on_breaking = "dead-letter"

[keys]
columns = ["order_id"]
from_kafka_key = false

[event_time]
column = "ts"
partition = "hour"

[late_data]
policy = "rewrite"
allowed_lateness = "3d"

[deletes]
tombstone = "ignore"
erasure = "physical"

[maintenance]
target_file_size = "256MB"
keep_snapshots = { min = 5, max_age = "1h" }
orphan_min_age = "1d"
budget = "20GB/h"

[owner]
team = "bench"
contact = "bench"

[sla]
freshness = "1m"
completeness = "none"
"#;

/// One order version: (customer, amount, status, ts µs).
pub(crate) type Row = (i64, f64, &'static str, i64);

pub(crate) struct SimTable {
    pub(crate) catalog: Catalog,
    pub(crate) ident: iceberg::TableIdent,
    pub(crate) committer: Committer,
    upserter: Upserter,
    commits: i64,
    ingest_cpu: f64,
    /// Commits refused as stale (maintenance moved rows), and the CPU their catch-up took.
    refreshes: u64,
    refresh_secs: f64,
}

impl SimTable {
    pub(crate) async fn create(
        dir: &std::path::Path,
        name: &str,
    ) -> anyhow::Result<(SimTable, calve_contract::Contract)> {
        let d = dir.display();
        let catalog = Catalog::open(&CatalogConfig::new(
            format!("sqlite:{d}/{name}.db"),
            format!("{d}/{name}"),
        ))
        .await?;
        let contract = calve_contract::Contract::parse(&CONTRACT.replace("TABLE", name), name)?;
        let def = calve_service::table_definition(&contract)?;
        let st = catalog.ensure_table(&def).await?;
        let committer = Committer::new(
            catalog.clone(),
            def.ident.clone(),
            claim_epoch(&catalog, &def.ident).await?,
        );
        let upserter = Upserter::open(
            catalog.file_io(),
            &st.metadata,
            &contract.keys.columns,
            256 << 20,
            &Default::default(),
        )
        .await?;
        Ok((
            SimTable {
                catalog,
                ident: def.ident,
                committer,
                upserter,
                commits: 0,
                ingest_cpu: 0.0,
                refreshes: 0,
                refresh_secs: 0.0,
            },
            contract,
        ))
    }

    async fn commit(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let cpu = cpu_seconds();
        let restore = RestoreUpdate::new(offsets(self.commits), offsets(self.commits + 1));
        let changes = Changes::new(
            vec![SeqBatch {
                seq: (0..batch.num_rows() as u64).collect(),
                batch: batch.clone(),
            }],
            vec![],
        );
        let prepared = self.upserter.write(&changes).await?;
        // Maintenance may have moved rows: the commit catches the index up and commits again,
        // as in the pipeline.
        let committed = self
            .upserter
            .commit(&self.catalog, &self.committer, prepared, &changes, &restore)
            .await?;
        self.refreshes += committed.refreshes.len() as u64;
        self.refresh_secs += committed.refreshes.iter().map(|r| r.took.as_secs_f64()).sum::<f64>();
        self.commits += 1;
        self.ingest_cpu += cpu_seconds() - cpu;
        Ok(())
    }

    pub(crate) async fn state(&self) -> anyhow::Result<TableState> {
        Ok(self.catalog.load(&self.ident).await?)
    }
}

pub(crate) fn offsets(n: i64) -> Offsets {
    BTreeMap::from([("sim".to_string(), BTreeMap::from([(0, n)]))])
}

pub(crate) fn batch(meta: &iceberg::spec::TableMetadata, rows: &[(i64, Row)]) -> anyhow::Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        arrow_schema(meta)?,
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(
                rows.iter().map(|r| format!("c{}", r.1 .0)).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.1 .1).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.1 .2).collect::<Vec<_>>())),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.1 .3).collect::<Vec<_>>())
                    .with_timezone("+00:00"),
            ),
        ],
    )?)
}

/// Layout numbers of a table as it is.
async fn layout(t: &SimTable) -> anyhow::Result<String> {
    let st = t.state().await?;
    let live = live_files(t.catalog.file_io(), &st.metadata).await?;
    let mut per_partition: HashMap<String, usize> = HashMap::new();
    for f in &live.data {
        *per_partition.entry(partition_label(&st.metadata, &f.file)).or_default() += 1;
    }
    let max = per_partition.values().max().copied().unwrap_or(0);
    let mean = live.data.len() as f64 / per_partition.len().max(1) as f64;
    let bytes = t
        .catalog
        .file_io()
        .new_input(&st.metadata_location)?
        .metadata()
        .await?
        .size;
    let manifests = match st.metadata.current_snapshot() {
        Some(s) => {
            let list = t.catalog.file_io().new_input(s.manifest_list())?.read().await?;
            iceberg::spec::ManifestList::parse_with_version(&list, st.metadata.format_version())?
                .entries()
                .len()
        }
        None => 0,
    };
    Ok(format!(
        "{} data files in {} partitions ({mean:.1} per partition, max {max}), {} delete files, {} snapshots, {} manifests, metadata.json {}",
        live.data.len(), per_partition.len(), live.position_deletes.len(), st.metadata.snapshots().count(), manifests, human_bytes(bytes)
    ))
}

/// The model's rows as a freshly written table: one file per partition, sorted by event time.
async fn optimal(dir: &std::path::Path, model: &BTreeMap<i64, Row>) -> anyhow::Result<String> {
    let (t, _) = SimTable::create(dir, "optimal").await?;
    let st = t.state().await?;
    let mut rows: Vec<(i64, Row)> = model.iter().map(|(k, v)| (*k, *v)).collect();
    rows.sort_by_key(|r| (r.1 .3, r.0));
    let files = DataWriter::new(&st.metadata, t.catalog.file_io().clone(), 256 << 20)?
        .write(&[batch(&st.metadata, &rows)?])
        .await?;
    t.committer
        .commit(&Append::new(files), &RestoreUpdate::new(Offsets::new(), offsets(1)))
        .await?;
    Ok(t.state().await?.metadata_location)
}

pub fn day(commits: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(commits))
}

async fn run(commits: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut maintained, contract) = SimTable::create(dir.path(), "maintained").await?;
    let (mut raw, _) = SimTable::create(dir.path(), "raw").await?;
    let policy = MaintenancePolicy::from_contract(&contract);
    println!(
        "simulated day: {commits} commits at a 1-minute band, {EVENTS_PER_MINUTE} events each ({:.0}% updates), hour partitions; maintenance every 10 minutes, budget {}",
        UPDATE_SHARE * 100.0, contract.maintenance.budget
    );
    let start_ms = chrono::Utc::now().timestamp_millis() + 2 * 86_400_000;
    let mut maintainer = Maintainer::new(maintained.catalog.clone(), maintained.ident.clone(), policy, start_ms);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1440);
    let mut model: BTreeMap<i64, Row> = BTreeMap::new();
    let (mut next_id, mut maintain_cpu, mut rewritten, mut cycles, mut deferred) = (0i64, 0.0, 0u64, 0, 0);
    let meta = maintained.state().await?.metadata;
    for minute in 0..commits as i64 {
        let now_us = DAY_START_US + minute * MINUTE_US;
        let rows: Vec<(i64, Row)> = (0..EVENTS_PER_MINUTE)
            .map(|i| {
                let update = next_id > 0 && rng.gen_bool(UPDATE_SHARE);
                let id = if update {
                    rng.gen_range(0..next_id)
                } else {
                    next_id += 1;
                    next_id - 1
                };
                let row = (
                    rng.gen_range(0..5_000),
                    rng.gen_range(1..50_000) as f64 / 100.0,
                    STATUSES[rng.gen_range(0..4)],
                    now_us + i as i64 * 100_000,
                );
                (id, row)
            })
            .collect();
        let b = batch(&meta, &rows)?;
        maintained.commit(&b).await?;
        raw.commit(&b).await?;
        model.extend(rows);
        if minute % 10 == 9 {
            let cpu = cpu_seconds();
            let r = maintainer
                .cycle(start_ms + (minute + 1) * MINUTE_MS, false, &NoProgress)
                .await?;
            maintain_cpu += cpu_seconds() - cpu;
            rewritten += r.bytes_in;
            deferred += r.jobs_deferred;
            cycles += 1;
            if r.behind.is_some() {
                println!("  minute {minute}: falls behind: {:?}", r.behind);
            }
        }
        if minute % 240 == 239 {
            println!("  minute {}: maintained: {}", minute + 1, layout(&maintained).await?);
        }
    }
    let data_bytes: u64 = live_files(maintained.catalog.file_io(), &maintained.state().await?.metadata)
        .await?
        .data
        .iter()
        .map(|f| f.file.file_size_in_bytes())
        .sum();
    println!();
    println!("end of day, {} live rows", model.len());
    println!("  maintained  : {}", layout(&maintained).await?);
    println!("  unmaintained: {}", layout(&raw).await?);
    println!(
        "  maintenance : {cycles} cycles, {} rewritten ({:.1}x the live data), {deferred} jobs deferred for budget; {maintain_cpu:.1} CPU-s next to {:.1} CPU-s of ingestion ({:.0}%)",
        human_bytes(rewritten), rewritten as f64 / data_bytes.max(1) as f64, maintained.ingest_cpu, 100.0 * maintain_cpu / maintained.ingest_cpu
    );
    println!(
        "  ingestion   : {} commits refused as stale after a compaction; the key index caught up in {:.1} s (wall clock, single-threaded) of the {:.1} CPU-s (unmaintained table: {:.1} CPU-s of ingestion)",
        maintained.refreshes, maintained.refresh_secs, maintained.ingest_cpu, raw.ingest_cpu
    );

    let opt = optimal(dir.path(), &model).await?;
    let last_hour = DAY_START_US + (commits as i64 - 60).max(0) * MINUTE_US;
    let first_hour_end = DAY_START_US + 60 * MINUTE_US;
    let ts = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%S+00")
            .to_string()
    };
    let key = next_id / 3;
    let spec = serde_json::json!({
        "tables": {"maintained": maintained.state().await?.metadata_location, "unmaintained": raw.state().await?.metadata_location, "optimal": opt},
        "queries": {
            "full count": "SELECT count(*) FROM {t}",
            "event-time filter (first hour)": format!("SELECT count(*), round(sum(amount), 2) FROM {{t}} WHERE ts < TIMESTAMPTZ '{}'", ts(first_hour_end)),
            "event-time filter (last hour)": format!("SELECT count(*), round(sum(amount), 2) FROM {{t}} WHERE ts >= TIMESTAMPTZ '{}'", ts(last_hour)),
            "key filter": format!("SELECT customer, status FROM {{t}} WHERE order_id = {key}"),
            "aggregate": "SELECT status, count(*), round(sum(amount), 2) FROM {t} GROUP BY status ORDER BY status",
        },
        // The unmaintained table takes seconds a query: one run of it keeps the bench in minutes.
        "repeats": 41,
        "repeats_for": {"unmaintained": 1},
    });
    let times = calve_testkit::python::query_bench(&spec);
    println!();
    for (name, t) in times.as_object().context("query times")? {
        anyhow::ensure!(
            t["maintained"]["result"] == t["optimal"]["result"],
            "{name}: the maintained table and the optimal one disagree: {t}"
        );
        anyhow::ensure!(
            t["unmaintained"]["result"] == t["optimal"]["result"],
            "{name}: the unmaintained table and the optimal one disagree: {t}"
        );
        let secs = |l: &str| t[l]["seconds"].as_f64().unwrap_or(0.0);
        let (m, u, o) = (secs("maintained"), secs("unmaintained"), secs("optimal"));
        println!(
            "  duckdb {name:<32}: maintained {:.1} ms = {:.2}x optimal ({:.1} ms); unmaintained {:.1} ms = {:.2}x",
            m * 1e3,
            m / o,
            o * 1e3,
            u * 1e3,
            u / o
        );
    }
    Ok(())
}
