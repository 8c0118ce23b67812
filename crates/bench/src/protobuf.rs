//! `calve-bench protobuf`: the orders workload of `ingest`, encoded as Protobuf in the
//! Confluent wire format (schema id, message indexes, body) with its `.proto` in a registry
//! (the test kit's), read by calve end to end.
//!
//! Same headline as `ingest` and `avro` (value bytes per CPU-second of calve's process, and
//! rows per CPU-second, since the Protobuf bytes of an order are fewer than its JSON bytes).
//! Beside it, in memory on one core: calve's Protobuf decoder with the table's schema into
//! Parquet. There is no decoder-only ceiling: no Protobuf → Arrow decoder exists to compare
//! with (calve's is prost-reflect's dynamic messages turned into Arrow).

use calve_ingest::registry::SchemaKind;
use calve_testkit::registry::RegistryServer;
use calve_testkit::workload::order_json;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::json;

use crate::avro::{best_of_five, decode_into_parquet, megabytes, print_run, registered, through_registry};
use crate::{events, table_schema};

/// The orders contract's columns as a Protobuf message.
const SCHEMA: &str = r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Order {
  int64 order_id = 1;
  string customer = 2;
  double amount = 3;
  string status = 4;
  google.protobuf.Timestamp ts = 5;
}
"#;

/// The `Order` message, compiled here (with protox, as calve compiles it) to encode the values.
fn order_message() -> anyhow::Result<MessageDescriptor> {
    let mut files = protox::file::ChainFileResolver::new();
    files.add(protox::file::GoogleFileResolver::new());
    files.add(Source);
    let mut compiler = protox::Compiler::with_file_resolver(files);
    compiler.open_file("order.proto").map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_message_by_name("shop.Order")
        .ok_or_else(|| anyhow::anyhow!("no shop.Order"))
}

struct Source;

impl protox::file::FileResolver for Source {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match name {
            "order.proto" => protox::file::File::from_source(name, SCHEMA),
            _ => Err(protox::Error::file_not_found(name)),
        }
    }
}

pub fn protobuf() -> anyhow::Result<()> {
    let events = events();
    let registry = RegistryServer::start();
    let body = json!({"schemaType": "PROTOBUF", "schema": SCHEMA});
    let (status, answer) = registry
        .call("POST", "/subjects/orders-value/versions", Some(&body))
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(status == 200, "registering the schema: {answer}");
    let id = answer["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no id: {answer}"))? as u32;
    let order = order_message()?;
    let values: Vec<Vec<u8>> = (0..events)
        .map(|i| {
            // The JSON order is proto3 JSON of the message already (RFC 3339 `ts`).
            let text = order_json(i);
            let mut de = serde_json::Deserializer::from_str(&text);
            let msg = DynamicMessage::deserialize(order.clone(), &mut de)?;
            let mut v = vec![0];
            v.extend_from_slice(&id.to_be_bytes());
            v.push(0); // message indexes: the first message
            v.extend(msg.encode_to_vec());
            Ok(v)
        })
        .collect::<anyhow::Result<_>>()?;
    let (run, contract) = through_registry(&values, "Protobuf", "protobuf", &registry)?;
    let calve_cpu = in_memory(&values, id, &contract)?;

    let mb = megabytes(&values);
    print_run(mb, &run);
    println!(
        "in mem  : {:.1} MB per CPU-second, {:.0} rows per CPU-second with calve's Protobuf decoder (fit to the table, conformed; Parquet zstd(1), 1 core)",
        mb / calve_cpu,
        events as f64 / calve_cpu
    );
    anyhow::ensure!(run.rows == events, "table holds {} rows, expected {events}", run.rows);
    Ok(())
}

/// Best-of-five CPU-seconds of calve's Protobuf decoder into Parquet, in memory.
fn in_memory(values: &[Vec<u8>], id: u32, contract: &str) -> anyhow::Result<f64> {
    let contract = calve_contract::Contract::parse(contract, "orders")?;
    let table = table_schema(&contract)?;
    let mut calve = calve_ingest::ProtobufDecoder::new(table.clone(), contract.columns())?;
    calve
        .learn(id, &registered(id, SchemaKind::Protobuf, SCHEMA))
        .map_err(anyhow::Error::msg)?;
    best_of_five(|| decode_into_parquet(values, &table, |v| calve.decode(v)))
}
