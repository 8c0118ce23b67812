//! `calve-bench avro`: the orders workload of `ingest`, encoded as Avro in the Confluent wire
//! format with its writer schema in a registry (the test kit's), read by calve end to end.
//!
//! Same headline as `ingest` (value bytes per CPU-second of calve's process) plus rows per
//! CPU-second, since the Avro bytes of an order are fewer than its JSON bytes. Beside it, two
//! in-memory figures on one core: arrow-avro decoding the same values with their writer
//! schema into Arrow and Parquet (the ceiling), and calve's Avro decoder doing the same with
//! the table's schema (what calve adds: framing checks, the fit to the table, conforming).

use std::sync::Arc;
use std::time::Instant;

use apache_avro::types::Value as AvroValue;
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use calve_ingest::registry::{Fetched, SchemaKind, WriterSchema};
use calve_testkit::broker::Broker;
use calve_testkit::kafka::{create_topic, produce_bytes, RawMessage};
use calve_testkit::registry::RegistryServer;
use calve_testkit::workload::order_json;
use parquet::arrow::ArrowWriter;

use crate::{cpu_seconds, events, run_in_process_with, table_schema, Run, PARTITIONS};

/// The orders contract's columns as an Avro record.
const SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"order_id","type":"long"},
  {"name":"customer","type":["null","string"],"default":null},
  {"name":"amount","type":["null","double"],"default":null},
  {"name":"status","type":["null","string"],"default":null},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;

/// Order `id` as the Avro datum of [`SCHEMA`] (from the JSON event, so both benches carry the
/// same orders).
fn datum(schema: &apache_avro::Schema, id: u64) -> anyhow::Result<Vec<u8>> {
    let json: serde_json::Value = serde_json::from_str(&order_json(id))?;
    let text = |k: &str| AvroValue::Union(1, Box::new(AvroValue::String(json[k].as_str().unwrap_or("").into())));
    let ts = chrono::DateTime::parse_from_rfc3339(json["ts"].as_str().unwrap_or(""))?;
    let record = AvroValue::Record(vec![
        ("order_id".into(), AvroValue::Long(id as i64)),
        ("customer".into(), text("customer")),
        (
            "amount".into(),
            AvroValue::Union(1, Box::new(AvroValue::Double(json["amount"].as_f64().unwrap_or(0.0)))),
        ),
        ("status".into(), text("status")),
        ("ts".into(), AvroValue::TimestampMicros(ts.timestamp_micros())),
    ]);
    Ok(apache_avro::to_avro_datum(schema, record)?)
}

pub fn avro() -> anyhow::Result<()> {
    let events = events();
    let registry = RegistryServer::start();
    let id = registry
        .register("orders-value", SCHEMA)
        .map_err(|e| anyhow::anyhow!("registering the schema: {e}"))?;
    let schema = apache_avro::Schema::parse_str(SCHEMA)?;
    let values: Vec<Vec<u8>> = (0..events)
        .map(|i| {
            let mut v = vec![0];
            v.extend_from_slice(&id.to_be_bytes());
            v.extend(datum(&schema, i)?);
            Ok(v)
        })
        .collect::<anyhow::Result<_>>()?;
    let (run, _) = through_registry(&values, "Avro", "avro", &registry)?;
    let (ceiling_cpu, calve_cpu) = in_memory(&values, id)?;

    let mb = megabytes(&values);
    print_run(mb, &run);
    println!(
        "ceiling : {:.1} MB per CPU-second, {:.0} rows per CPU-second (arrow-avro → Parquet zstd(1), in memory, 1 core)",
        mb / ceiling_cpu,
        events as f64 / ceiling_cpu
    );
    println!(
        "in mem  : {:.1} MB per CPU-second with calve's Avro decoder (fit to the table, conformed; same Parquet)",
        mb / calve_cpu
    );
    println!(
        "ratio   : calve reaches {:.0}% of the ceiling per CPU-second",
        100.0 * ceiling_cpu / run.cpu
    );
    anyhow::ensure!(run.rows == events, "table holds {} rows, expected {events}", run.rows);
    Ok(())
}

/// The orders as registry-framed `values` (`name`: what they are, `format`: the contract's
/// format), produced to the test broker and read by calve end to end (the workload is said
/// first): the run, and the contract it read them with.
pub(crate) fn through_registry(
    values: &[Vec<u8>],
    name: &str,
    format: &str,
    registry: &RegistryServer,
) -> anyhow::Result<(Run, String)> {
    let events = values.len() as u64;
    let json_bytes: usize = (0..events).map(|i| order_json(i).len()).sum();
    println!(
        "workload: {events} {name} order events, {:.1} MB of values ({:.0}% of the same orders as JSON), {PARTITIONS} partitions",
        megabytes(values),
        100.0 * megabytes(values) * 1e6 / json_bytes as f64
    );
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", PARTITIONS);
    let msgs: Vec<RawMessage> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("k{i}"), Some(v.clone()), None))
        .collect();
    let t = Instant::now();
    produce_bytes(&broker.bootstrap(), "orders", &msgs);
    drop(msgs);
    println!("produced in {:.1}s", t.elapsed().as_secs_f64());

    let dir = tempfile::tempdir()?;
    let contract = include_str!("../../../examples/contracts/orders.toml")
        .replace("freshness = \"1m\"", "freshness = \"1s\"")
        .replace("format = \"json\"", &format!("format = \"{format}\""));
    let extra = format!("\n[registry]\nurl = \"{}\"\n", registry.url());
    let mut run = run_in_process_with(dir.path(), &broker.bootstrap(), &contract, "orders", &extra)?;
    run.floor = Some(crate::floor::read_alone(&broker.bootstrap(), "orders")?);
    Ok((run, contract))
}

/// Megabytes of `values`.
pub(crate) fn megabytes(values: &[Vec<u8>]) -> f64 {
    values.iter().map(Vec::len).sum::<usize>() as f64 / 1e6
}

/// calve's figures for a run over `mb` megabytes of values.
pub(crate) fn print_run(mb: f64, run: &Run) {
    println!();
    println!(
        "calve   : {} rows, {:.2}s wall, {:.2} CPU-s",
        run.rows, run.wall, run.cpu
    );
    println!(
        "calve   : {:.1} MB per CPU-second, {:.0} rows per CPU-second",
        mb / run.cpu,
        run.rows as f64 / run.cpu
    );
    if let Some(floor) = run.floor {
        crate::floor::print(mb, run.cpu, floor);
    }
}

/// The writer schema `text` (of `kind`) as the registry would hand it over under `id`.
pub(crate) fn registered(id: u32, kind: SchemaKind, text: &str) -> Fetched {
    Fetched::Found(Arc::new(WriterSchema {
        id,
        kind,
        text: text.into(),
        references: Vec::new(),
        imports: Vec::new(),
    }))
}

/// The fewest CPU-seconds `once` took in five runs: one pass is a fraction of a second, short
/// enough for scheduler noise to matter.
pub(crate) fn best_of_five(once: impl Fn() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let cpu0 = cpu_seconds();
        once()?;
        best = best.min(cpu_seconds() - cpu0);
    }
    Ok(best)
}

/// `values`, 10,000 at a time through one of calve's registry-format decoders (`decode`, which
/// must reject none), into Parquet in memory with the table's settings.
pub(crate) fn decode_into_parquet(
    values: &[Vec<u8>],
    table: &arrow_schema::SchemaRef,
    decode: impl Fn(&[&[u8]]) -> Result<calve_ingest::Decoded, arrow_schema::ArrowError>,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, table.clone(), Some(calve_table::write::parquet_properties()))?;
    for chunk in values.chunks(10_000) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let decoded = decode(&refs)?;
        anyhow::ensure!(decoded.rejected.is_empty(), "{:?}", decoded.rejected.first());
        if let Some(b) = decoded.batch {
            w.write(&b)?;
        }
    }
    w.close()?;
    Ok(())
}

/// Best-of-five CPU-seconds of the in-memory ceiling (arrow-avro alone) and of calve's
/// decoder, each into Parquet.
fn in_memory(values: &[Vec<u8>], id: u32) -> anyhow::Result<(f64, f64)> {
    let contract = calve_contract::Contract::parse(
        &include_str!("../../../examples/contracts/orders.toml").replace("format = \"json\"", "format = \"avro\""),
        "orders",
    )?;
    let table = table_schema(&contract)?;
    let mut calve = calve_ingest::AvroDecoder::new(table.clone(), contract.columns())?;
    calve
        .learn(id, &registered(id, SchemaKind::Avro, SCHEMA))
        .map_err(anyhow::Error::msg)?;
    let props = calve_table::write::parquet_properties();
    let ceiling = best_of_five(|| {
        let mut w: Option<ArrowWriter<Vec<u8>>> = None;
        for chunk in values.chunks(10_000) {
            let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
            store.set(Fingerprint::Id(id), AvroSchema::new(SCHEMA.into()))?;
            let mut d = ReaderBuilder::new()
                .with_writer_schema_store(store)
                .with_active_fingerprint(Fingerprint::Id(id))
                .with_batch_size(chunk.len())
                .build_decoder()?;
            for v in chunk {
                d.decode(v)?;
            }
            if let Some(b) = d.flush()? {
                let w = match &mut w {
                    Some(w) => w,
                    None => w.insert(ArrowWriter::try_new(Vec::new(), b.schema(), Some(props.clone()))?),
                };
                w.write(&b)?;
            }
        }
        if let Some(w) = w {
            w.close()?;
        }
        Ok(())
    })?;
    let calve_cpu = best_of_five(|| decode_into_parquet(values, &table, |v| calve.decode(v)))?;
    Ok((ceiling, calve_cpu))
}
