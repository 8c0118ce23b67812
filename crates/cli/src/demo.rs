//! `calve demo`: the whole path on the embedded default, with nothing installed.
//!
//! librdkafka's in-process mock cluster stands in for Kafka (a real broker is what the
//! integration tests use); the catalog is SQLite and the warehouse a local directory, exactly
//! as `calve run` uses them, so the table it leaves behind can be opened by any Iceberg reader.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use arrow::util::pretty::pretty_format_batches;
use calve_service::Catalog;
use calve_service::{dead_letter_definition, run_tables, table_definition, Observed, RunConfig, Services, StopWhen};
use calve_service::{scan_all, summarize};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;

const CONTRACT: &str = include_str!("../../../examples/contracts/orders.toml");

/// Records that must end in the dead-letter table, each for a different reason.
const BAD: &[(&str, Option<&str>)] = &[
    ("malformed JSON", Some(r#"{"order_id": 1, "amount": "#)),
    ("not an object", Some("[1, 2, 3]")),
    (
        "missing required order_id",
        Some(r#"{"customer": "c1", "ts": "2026-11-24T10:00:00Z"}"#),
    ),
    (
        "amount is not a number",
        Some(r#"{"order_id": 9, "amount": "a lot", "ts": "2026-11-24T10:00:00Z"}"#),
    ),
    ("bad timestamp", Some(r#"{"order_id": 10, "ts": "yesterday"}"#)),
    ("tombstone", None),
];

pub async fn run(dir: Option<PathBuf>, events: usize) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("calve-demo-").tempdir()?.keep(),
    };
    std::fs::create_dir_all(&dir)?;
    let mock = MockCluster::new(1).context("starting the in-process Kafka mock cluster")?;
    mock.create_topic(TOPIC, PARTITIONS, 1)?;
    println!(
        "Kafka (in-process mock cluster) at {}; topic `{TOPIC}` with {PARTITIONS} partitions",
        mock.bootstrap_servers()
    );

    let config_path = write_config(&dir, &mock.bootstrap_servers())?;
    produce(&mock.bootstrap_servers(), events)?;
    println!("produced {events} good events and {} bad ones", BAD.len());

    let cfg = RunConfig::load(&config_path)?;
    let contracts = cfg.contracts()?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    println!("running calve until the topic is fully committed (freshness band 2s) ...");
    let outcomes = run_tables(
        contracts.clone(),
        Services::new(&cfg, catalog.clone())?,
        &Observed::of(&contracts),
        rx,
        StopWhen::CaughtUp,
    )
    .await;
    for (t, r) in outcomes {
        r.with_context(|| format!("table {t}"))?;
    }
    report(&catalog, &contracts[0], &dir, &config_path, events).await?;
    Ok(ExitCode::SUCCESS)
}

fn write_config(dir: &std::path::Path, brokers: &str) -> anyhow::Result<PathBuf> {
    let contract = CONTRACT.replace("freshness = \"1m\"", "freshness = \"2s\"");
    std::fs::write(dir.join("orders.toml"), contract)?;
    let config = format!(
        "contracts = [\"orders.toml\"]\n\n\
         [catalog]\nuri = \"sqlite:{d}/catalog.db\"\nwarehouse = \"{d}/warehouse\"\nname = \"calve\"\n\n\
         [kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"calve-demo\"\n",
        d = dir.display()
    );
    let path = dir.join("calve.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

fn produce(brokers: &str, events: usize) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()?;
    let now = chrono::Utc::now().timestamp();
    let statuses = ["placed", "paid", "shipped", "delivered"];
    for i in 0..events {
        // Spread over the last three days so the table gets several day partitions.
        let ts = chrono::DateTime::from_timestamp(now - (i as i64 * 131) % (3 * 86_400), 0).unwrap();
        let value = serde_json::json!({
            "order_id": i,
            "customer": format!("customer-{}", i % 97),
            "amount": (i % 500) as f64 + 0.99,
            "status": statuses[i % statuses.len()],
            "ts": ts.to_rfc3339(),
        })
        .to_string();
        let key = format!("order-{i}");
        send(&producer, BaseRecord::to(TOPIC).key(&key).payload(&value))?;
    }
    for (i, (_, value)) in BAD.iter().enumerate() {
        let key = format!("bad-{i}");
        let mut rec: BaseRecord<'_, String, str> = BaseRecord::to(TOPIC).key(&key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        send(&producer, rec)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

fn send<'a>(p: &ThreadedProducer<DefaultProducerContext>, mut rec: BaseRecord<'a, String, str>) -> anyhow::Result<()> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                std::thread::sleep(Duration::from_millis(10));
                rec = back;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

async fn report(
    catalog: &Catalog,
    contract: &calve_contract::Contract,
    dir: &std::path::Path,
    config: &std::path::Path,
    events: usize,
) -> anyhow::Result<()> {
    let main = table_definition(contract)?.ident;
    let dlq = dead_letter_definition(contract)?.ident;
    let m = summarize(catalog, &main).await?;
    let d = summarize(catalog, &dlq).await?;
    println!(
        "\n== {main}: {} rows in {} data files, {} snapshots",
        m.records, m.data_files, m.snapshots
    );
    println!("   restore point (next offsets): {:?}", m.restore.unwrap_or_default());
    println!("== {dlq}: {} dead letters", d.records);
    println!(
        "   in = table + dead letters: {} = {} + {}",
        events + BAD.len(),
        m.records,
        d.records
    );
    let mut rows = scan_all(catalog, &main).await?;
    rows.truncate(1);
    if let Some(b) = rows.first() {
        println!(
            "\nfirst rows of {main}:\n{}",
            pretty_format_batches(&[b.slice(0, b.num_rows().min(5))])?
        );
    }
    let letters = scan_all(catalog, &dlq).await?;
    let projected: Vec<_> = letters
        .iter()
        .map(|b| b.project(&[1, 2, 6, 7]))
        .collect::<Result<_, _>>()?;
    println!("dead letters:\n{}", pretty_format_batches(&projected)?);
    println!("\nEverything is under {}:", dir.display());
    println!("  calve status --config {}", config.display());
    println!("  query with DuckDB (iceberg extension):");
    println!(
        "    SELECT status, count(*), sum(amount) FROM iceberg_scan('{}') GROUP BY status;",
        m.metadata_location
    );
    println!("  or PyIceberg: SqlCatalog('calve', uri='sqlite:///{}/catalog.db', warehouse='file://{}/warehouse').load_table('shop.orders')",
        dir.display(), dir.display());
    Ok(())
}
