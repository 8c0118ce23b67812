//! `calve-bench upserts`: what keeping one live row per key costs, against plain appends of
//! the same events in the same run, and what it costs readers (DuckDB over the un-compacted
//! upsert table against the same rows freshly written).
//!
//! `calve-bench index [keys]`: building the key index from a table of `keys` rows (default
//! 10M), in memory and spilled under a 64 MiB limit: time, memory and disk per key, one
//! commit's lookups, and catching up after another writer compacted a tenth of the table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use calve_table::commit::{claim_epoch, Append, Committer, RestoreUpdate};
use calve_table::keyed::index::{IndexSettings, KeyIndex};
use calve_table::write::data::{arrow_schema, DataWriter};
use calve_table::{Catalog, CatalogConfig};
use calve_testkit::broker::Broker;
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::workload::customer_json;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{cpu_seconds, run_in_process, Run};

const CUSTOMERS: &str = include_str!("../../../examples/contracts/customers.toml");
const PARTITIONS: i32 = 4;

/// `(id, version)` per event: each event updates an existing key with probability `ratio`.
fn workload(events: u64, ratio: f64, seed: u64) -> (Vec<(u64, u64)>, BTreeMap<u64, u64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut latest: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out = Vec::with_capacity(events as usize);
    for _ in 0..events {
        let n = latest.len() as u64;
        let id = if n > 0 && rng.gen_bool(ratio) {
            rng.gen_range(0..n)
        } else {
            n
        };
        let v = latest.entry(id).or_insert(0);
        *v += 1;
        out.push((id, *v));
    }
    (out, latest)
}

fn contract(table: &str, topic: &str, keyed: bool) -> String {
    let mut c = CUSTOMERS
        .replace("name = \"crm.customers\"", &format!("name = \"crm.{table}\""))
        .replace("topic = \"customers\"", &format!("topic = \"{topic}\""))
        .replace("freshness = \"1m\"", "freshness = \"1s\"");
    if !keyed {
        c = c
            .replace("columns = [\"customer_id\"]", "columns = []")
            .replace("from_kafka_key = true", "from_kafka_key = false")
            .replace("tombstone = \"delete-row\"", "tombstone = \"dead-letter\"");
    }
    c
}

/// The model's rows written once, as a freshly loaded table would be: one file per partition.
fn fresh_table(dir: &std::path::Path, latest: &BTreeMap<u64, u64>) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let d = dir.display();
        let catalog = Catalog::open(&CatalogConfig::new(
            format!("sqlite:{d}/fresh.db"),
            format!("{d}/fresh"),
        ))
        .await?;
        let c = calve_contract::Contract::parse(&contract("fresh", "none", false), "fresh")?;
        let def = calve_service::table_definition(&c)?;
        let st = catalog.ensure_table(&def).await?;
        let schema = arrow_schema(&st.metadata)?;
        let lines: Vec<String> = latest.iter().map(|(id, v)| customer_json(*id, *v)).collect();
        let mut decoder = arrow_json::ReaderBuilder::new(schema)
            .with_batch_size(lines.len().max(1))
            .build_decoder()?;
        for l in &lines {
            decoder.decode(l.as_bytes())?;
        }
        let batch = decoder.flush()?.context("rows")?;
        let files = DataWriter::new(&st.metadata, catalog.file_io().clone(), 256 << 20)?
            .write(&[batch])
            .await?;
        let committer = Committer::new(
            catalog.clone(),
            def.ident.clone(),
            claim_epoch(&catalog, &def.ident).await?,
        );
        committer
            .commit(
                &Append::new(files),
                &RestoreUpdate::new(Default::default(), Default::default()),
            )
            .await?;
        Ok(catalog.load(&def.ident).await?.metadata_location)
    })
}

pub fn upserts() -> anyhow::Result<()> {
    let events = crate::events();
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    println!("workload: {events} customer change events per run, {PARTITIONS} partitions, 1 s band");
    for (pct, seed) in [(10u32, 1u64), (90, 2)] {
        let (events_list, latest) = workload(events, pct as f64 / 100.0, seed);
        for topic in [format!("upsert{pct}"), format!("append{pct}")] {
            create_topic(&broker.bootstrap(), &topic, PARTITIONS);
            let msgs: Vec<Message> = events_list
                .iter()
                .map(|(id, v)| {
                    (
                        id.to_string(),
                        Some(customer_json(*id, *v)),
                        Some((*id % PARTITIONS as u64) as i32),
                    )
                })
                .collect();
            produce(&broker.bootstrap(), &topic, &msgs);
        }
        let append = run_in_process(
            dir.path(),
            &broker.bootstrap(),
            &contract(&format!("append{pct}"), &format!("append{pct}"), false),
            &format!("append{pct}"),
        )?;
        let upsert = run_in_process(
            dir.path(),
            &broker.bootstrap(),
            &contract(&format!("upsert{pct}"), &format!("upsert{pct}"), true),
            &format!("upsert{pct}"),
        )?;
        let per_cpu = |r: &Run| events as f64 / r.cpu;
        println!();
        println!("{pct}% updates ({} live keys at the end)", latest.len());
        println!(
            "  append : {:.0} rows per CPU-second, {:.2}s wall, {:.2} CPU-s",
            per_cpu(&append),
            append.wall,
            append.cpu
        );
        println!(
            "  upsert : {:.0} rows per CPU-second, {:.2}s wall, {:.2} CPU-s",
            per_cpu(&upsert),
            upsert.wall,
            upsert.cpu
        );
        println!(
            "  ratio  : upserts run at {:.0}% of append throughput per CPU-second",
            100.0 * per_cpu(&upsert) / per_cpu(&append)
        );

        let fresh_dir = dir.path().join(format!("fresh{pct}"));
        std::fs::create_dir_all(&fresh_dir)?;
        let fresh = fresh_table(&fresh_dir, &latest)?;
        let maintained = maintain_once(
            dir.path(),
            &contract(&format!("upsert{pct}"), &format!("upsert{pct}"), true),
        )?;
        let spec = serde_json::json!({
            "tables": {"upsert": upsert.metadata, "maintained": maintained, "fresh": fresh, "append": append.metadata},
            "queries": {
                "full count": "SELECT count(*) FROM {t}",
                "event-time filter": "SELECT count(*) FROM {t} WHERE updated_at >= TIMESTAMPTZ '2025-10-01 00:00:00+00' AND updated_at < TIMESTAMPTZ '2025-10-15 00:00:00+00'",
                "key filter": "SELECT name, version FROM {t} WHERE customer_id = 4242",
                "aggregate": "SELECT tier, count(*), max(version) FROM {t} GROUP BY tier ORDER BY tier",
            },
            "repeats": 7,
        });
        let times = calve_testkit::python::query_bench(&spec);
        for (name, t) in times.as_object().context("query times")? {
            anyhow::ensure!(
                t["upsert"]["result"] == t["fresh"]["result"],
                "{name}: the upsert table and the fresh table disagree: {t}"
            );
            anyhow::ensure!(
                t["maintained"]["result"] == t["fresh"]["result"],
                "{name}: the maintained table and the fresh table disagree: {t}"
            );
            let secs = |l: &str| t[l]["seconds"].as_f64().unwrap_or(0.0);
            let (u, m, f, a) = (secs("upsert"), secs("maintained"), secs("fresh"), secs("append"));
            println!(
                "  duckdb {name:<18}: un-compacted {:.1} ms = {:.2}x fresh ({:.1} ms); after one maintenance pass {:.1} ms = {:.2}x  (append table, same commits, all {events} rows: {:.1} ms)",
                u * 1e3, u / f, f * 1e3, m * 1e3, m / f, a * 1e3
            );
        }
    }
    Ok(())
}

/// One maintenance pass over the table of `contract_text` in `dir` (as `calve maintain` runs
/// it: no budget, any two small files merged); returns the table's metadata file afterwards.
fn maintain_once(dir: &std::path::Path, contract_text: &str) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let d = dir.display();
        let catalog = Catalog::open(&CatalogConfig::new(format!("sqlite:{d}/catalog.db"), format!("{d}/warehouse"))).await?;
        let c = calve_contract::Contract::parse(contract_text, "maintained")?;
        let ident = calve_service::table_definition(&c)?.ident;
        let mut policy = calve_maintain::MaintenancePolicy::from_contract(&c);
        policy.budget = None;
        policy.min_input_files = 2;
        let now = chrono::Utc::now().timestamp_millis();
        let r = calve_maintain::Maintainer::new(catalog.clone(), ident.clone(), policy, now).cycle(now, false, &calve_maintain::NoProgress).await?;
        println!(
            "  maintenance pass: {} files into {}, {} deleted rows applied, {} delete files dropped, manifests {} -> {}",
            r.files_in, r.files_out, r.deletes_applied, r.delete_files_dropped,
            r.before.data_manifests + r.before.delete_manifests, r.after.data_manifests + r.after.delete_manifests
        );
        Ok(catalog.load(&ident).await?.metadata_location)
    })
}

/// Rows in the `resident` set of this process (bytes), from /proc.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

pub fn index(keys: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display();
        let catalog = Catalog::open(&CatalogConfig::new(format!("sqlite:{d}/c.db"), format!("{d}/w"))).await?;
        let c = calve_contract::Contract::parse(&contract("index", "none", true), "index")?;
        let def = calve_service::table_definition(&c)?;
        let st = catalog.ensure_table(&def).await?;
        let schema = arrow_schema(&st.metadata)?;
        let writer = DataWriter::new(&st.metadata, catalog.file_io().clone(), 256 << 20)?;
        let committer = Committer::new(catalog.clone(), def.ident.clone(), claim_epoch(&catalog, &def.ident).await?);
        let t = Instant::now();
        let chunk = 1_000_000u64;
        let mut start = 0;
        while start < keys {
            let n = chunk.min(keys - start);
            let ids = Int64Array::from_iter_values((start..start + n).map(|i| i as i64));
            // All in one month partition: the index cost, not partitioning, is measured.
            let ts = TimestampMicrosecondArray::from_iter_values((0..n).map(|_| 1_759_276_800_000_000i64)).with_timezone("+00:00");
            let mut columns: Vec<arrow_array::ArrayRef> = vec![Arc::new(ids)];
            for f in schema.fields().iter().skip(1) {
                columns.push(match f.name().as_str() {
                    "updated_at" => Arc::new(ts.clone()),
                    _ => arrow_array::new_null_array(f.data_type(), n as usize),
                });
            }
            let batch = RecordBatch::try_new(schema.clone(), columns)?;
            let files = writer.write(&[batch]).await?;
            // Distinct restore points: equal ones would make each commit look like a retry of the first.
            let at = |o: u64| [("bench".to_string(), [(0, o as i64)].into())].into();
            committer.commit(&Append::new(files), &RestoreUpdate::new(at(start), at(start + n))).await?;
            start += n;
        }
        println!("wrote {keys} keys in {:.1}s", t.elapsed().as_secs_f64());
        let key = ["customer_id".to_string()];
        let meta = catalog.load(&def.ident).await?.metadata;
        let spill = tempfile::tempdir()?;
        let bounded = IndexSettings { memory_limit: 64 << 20, spill_dir: spill.path().to_path_buf() };
        let mut built = Vec::new();
        for (label, settings) in [("in memory (1 GiB limit)", IndexSettings::default()), ("64 MiB limit, spilled", bounded)] {
            let rss0 = resident_bytes();
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let index = KeyIndex::build(catalog.file_io(), &meta, &key, &settings).await?;
            let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
            let rss = resident_bytes().saturating_sub(rss0);
            anyhow::ensure!(index.len() as u64 == keys, "index holds {} keys, expected {keys}", index.len());
            println!("key index build, {label}: {keys} keys in {wall:.2}s wall, {cpu:.2} CPU-s ({:.2}M keys per second)", keys as f64 / wall / 1e6);
            println!(
                "  memory {:.1} bytes per key by the index's own count, {:.1} bytes per key resident growth; disk {:.1} bytes per key",
                index.approx_bytes() as f64 / keys as f64, rss as f64 / keys as f64, index.disk_bytes() as f64 / keys as f64
            );
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let probes = lookups(&index, keys, 5_000)?;
            println!("  one commit's lookups: {probes} keys in {:.1} ms ({:.1} us per key, {:.1} ms CPU)", t0.elapsed().as_secs_f64() * 1e3, t0.elapsed().as_secs_f64() * 1e6 / probes as f64, (cpu_seconds() - cpu0) * 1e3);
            built.push((label, index, wall));
        }
        // A compaction of one file (a tenth of the table) by another writer: the index catches
        // up by reading the new file only.
        let first = calve_table::read::live::live_files(catalog.file_io(), &meta).await?.data.remove(0).file;
        let rows = calve_table::read::read_data_file(catalog.file_io(), &meta, first.file_path()).await?;
        let copy = writer.write(&rows).await?;
        committer.commit_maintenance(&calve_table::commit::Rewrite { removed: vec![first.clone()], added: copy, planned_at: meta.current_snapshot_id() }).await?;
        let meta = catalog.load(&def.ident).await?.metadata;
        for (label, index, build_wall) in &mut built {
            let t0 = Instant::now();
            let r = index.refresh(catalog.file_io(), &meta).await?;
            let wall = t0.elapsed().as_secs_f64();
            anyhow::ensure!(!r.rebuilt && index.len() as u64 == keys, "refresh after compaction: {r:?}, {} keys", index.len());
            println!(
                "refresh after a compaction of {} keys, {label}: {wall:.2}s ({:.0}% of a full build)",
                first.record_count(), 100.0 * wall / *build_wall
            );
        }
        Ok(())
    })
}

/// Plans an update of `n` random existing keys against `index`; returns how many it found.
fn lookups(index: &KeyIndex, keys: u64, n: usize) -> anyhow::Result<u64> {
    let mut rng = StdRng::seed_from_u64(5);
    let ids = Int64Array::from_iter_values((0..n).map(|_| rng.gen_range(0..keys) as i64));
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "customer_id",
        arrow_schema::DataType::Int64,
        false,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(ids)])?;
    let plan = index.plan(
        &[],
        &[calve_table::keyed::index::SeqBatch {
            batch,
            seq: (0..n as u64).collect(),
        }],
    )?;
    Ok(plan.stats.deletes)
}
