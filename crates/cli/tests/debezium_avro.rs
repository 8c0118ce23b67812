//! Debezium change events as Avro (Confluent's AvroConverter: the envelope with `before`,
//! `after`, `source`, `op`; Connect decimals, `io.debezium.time.*` epoch numbers,
//! `VariableScaleDecimal`) into a keyed table, end to end on a real broker through the test
//! kit's registry, produced with confluent-kafka's `AvroSerializer`. Snapshot reads, updates,
//! deletes (each followed by Debezium's tombstone) and creates over two runs — the second
//! resolves its changes against a key index rebuilt from the table — read back by PyIceberg
//! and DuckDB against a model.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::create_topic;
use calve_testkit::python::read_table;
use calve_testkit::registry::{produce_avro, RegistryServer};
use common::*;
use serde_json::{json, Value};

const CONTRACT: &str = r##"
[table]
name = "crm.customers"
topic = "customers"
format = "debezium-avro"

[schema]
columns = [
  { name = "customer_id", type = "long",          required = true },
  { name = "name",        type = "string" },
  { name = "balance",     type = "decimal(12,2)" },
  { name = "score",       type = "decimal(10,3)" },
  { name = "birthday",    type = "date" },
  { name = "updated_at",  type = "timestamptz",   required = true },
]
evolution = "additive"
approver = "data-platform"
on_breaking = "dead-letter"

[keys]
columns = ["customer_id"]
from_kafka_key = false

[event_time]
column = "updated_at"
partition = "month"

[late_data]
policy = "rewrite"
allowed_lateness = "30d"

[deletes]
tombstone = "delete-row"
erasure = "physical"

[maintenance]
target_file_size = "256MB"
keep_snapshots = { min = 5, max_age = "24h" }
orphan_min_age = "1d"
budget = "20GB/h"

[owner]
team = "crm-data"
contact = "#crm-data"

[sla]
freshness = "1s"
completeness = "none"
"##;

/// The envelope schema Debezium's Postgres connector gives `inventory.customers` with
/// Confluent's AvroConverter (its `source` record trimmed to a few fields).
fn envelope() -> Value {
    let decimal = json!({"type": "bytes", "scale": 2, "precision": 12, "connect.version": 1,
        "connect.parameters": {"scale": "2", "connect.decimal.precision": "12"},
        "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"});
    let variable = json!({"type": "record", "name": "VariableScaleDecimal", "namespace": "io.debezium.data",
        "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
        "connect.doc": "Variable scaled decimal", "connect.version": 1,
        "connect.name": "io.debezium.data.VariableScaleDecimal"});
    let value = json!({"type": "record", "name": "Value", "fields": [
        {"name": "customer_id", "type": "long"},
        {"name": "name", "type": ["null", "string"], "default": null},
        {"name": "balance", "type": ["null", decimal], "default": null},
        {"name": "score", "type": ["null", variable], "default": null},
        {"name": "birthday", "type": ["null", {"type": "int", "connect.version": 1, "connect.name": "io.debezium.time.Date"}], "default": null},
        {"name": "updated_at", "type": {"type": "long", "connect.version": 1, "connect.name": "io.debezium.time.MicroTimestamp"}}
    ], "connect.name": "dbserver1.inventory.customers.Value"});
    json!({"type": "record", "name": "Envelope", "namespace": "dbserver1.inventory.customers", "fields": [
        {"name": "before", "type": ["null", value], "default": null},
        {"name": "after", "type": ["null", "Value"], "default": null},
        {"name": "source", "type": {"type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql",
            "fields": [{"name": "version", "type": "string"}, {"name": "connector", "type": "string"},
                       {"name": "lsn", "type": ["null", "long"], "default": null}]}},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": null}
    ], "connect.name": "dbserver1.inventory.customers.Envelope"})
}

const T0_US: i64 = 1_764_000_000_000_000;

/// Customer `id` at `version`: the row image as the source table holds it.
fn image(id: u64, version: u64) -> Value {
    let score_unscaled = (id * 1000 + version) as i64; // at scale 3 or 2, alternately
    let (scale, unscaled) = if id.is_multiple_of(2) {
        (3, score_unscaled)
    } else {
        (2, score_unscaled)
    };
    json!({
        "customer_id": id,
        "name": if id.is_multiple_of(7) { Value::Null } else { json!(format!("c{id}v{version}")) },
        "balance": {"$decimal": format!("{}.{:02}", id * 10 + version, version % 100)},
        "score": {"scale": scale, "value": {"$bytes_b64": b64(&unscaled.to_be_bytes())}},
        "birthday": 19_000 + id as i64,
        "updated_at": T0_US + (id * 1_000 + version) as i64 * 1_000_000,
    })
}

/// What both readers must show for customer `id` at `version`.
fn expected(id: u64, version: u64) -> Vec<Value> {
    let unscaled = id * 1000 + version;
    let score = if id.is_multiple_of(2) {
        format!("{}.{:03}", unscaled / 1000, unscaled % 1000)
    } else {
        format!("{}.{:02}0", unscaled / 100, unscaled % 100)
    };
    let birthday = chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + 19_000 + id as i32).unwrap();
    let at = chrono::DateTime::from_timestamp_micros(T0_US + (id * 1_000 + version) as i64 * 1_000_000).unwrap();
    vec![
        json!(id),
        if id.is_multiple_of(7) {
            Value::Null
        } else {
            json!(format!("c{id}v{version}"))
        },
        json!(format!("{}.{:02}", id * 10 + version, version % 100)),
        json!(score),
        json!(birthday.format("%Y-%m-%d").to_string()),
        json!(at.format("%Y-%m-%dT%H:%M:%S").to_string()),
    ]
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    // Without redundant sign bytes, as Java's BigInteger.toByteArray() writes them.
    let mut b = bytes;
    while b.len() > 1 && ((b[0] == 0 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0)) {
        b = &b[1..];
    }
    base64::engine::general_purpose::STANDARD.encode(b)
}

struct Events {
    lines: Vec<Value>,
    model: BTreeMap<u64, u64>,
}

impl Events {
    fn event(&mut self, op: &str, id: u64, before: Option<u64>, after: Option<u64>) {
        let lsn = self.lines.len() as i64;
        let value = json!({
            "before": before.map(|v| image(id, v)),
            "after": after.map(|v| image(id, v)),
            "source": {"version": "2.7.0", "connector": "postgresql", "lsn": lsn},
            "op": op,
            "ts_ms": null,
        });
        self.lines
            .push(json!({"schema": envelope(), "key": format!("{id}"), "value": value}));
        match after {
            Some(v) => self.model.insert(id, v),
            None => self.model.remove(&id),
        };
        if op == "d" {
            self.lines.push(json!({"key": format!("{id}"), "value": null}));
        }
    }
}

fn run(s: &Setup) {
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "calve failed\n{}", s.logs());
}

fn check(s: &Setup, model: &BTreeMap<u64, u64>) {
    let columns = ["customer_id", "name", "balance", "score", "birthday", "updated_at"];
    let view = read_table(&s.catalog_db(), &s.warehouse(), "crm.customers", &columns);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = view.rows(reader);
        rows.sort_by_key(|r| r[0].as_u64());
        let ids: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
        assert_eq!(
            ids,
            model.keys().copied().collect::<Vec<_>>(),
            "{reader}: live customers\n{}",
            s.logs()
        );
        for r in rows {
            let id = r[0].as_u64().unwrap();
            let want = expected(id, model[&id]);
            assert_eq!(r[..5], want[..5], "{reader}: customer {id}");
            let at = r[5].as_str().unwrap();
            assert!(
                at.starts_with(want[5].as_str().unwrap()),
                "{reader}: updated_at of {id}: {at} vs {}",
                want[5]
            );
        }
    }
}

#[test]
fn debezium_avro_changes_land_as_the_source_tables_state() {
    let broker = Broker::start();
    let registry = RegistryServer::start();
    create_topic(&broker.bootstrap(), "customers", 1);
    let s = Setup::new(&broker.bootstrap(), CONTRACT);
    with_registry(&s, &registry.url());
    let opts = registry.produce_opts();
    let mut ev = Events {
        lines: Vec::new(),
        model: BTreeMap::new(),
    };
    for id in 0..40 {
        ev.event("r", id, None, Some(0));
    }
    produce_avro(&broker.bootstrap(), "customers", &registry.url(), &ev.lines, &opts);
    run(&s);
    check(&s, &ev.model);

    ev.lines.clear();
    for id in (0..40u64).filter(|i| i.is_multiple_of(3)) {
        ev.event("u", id, Some(0), Some(1));
    }
    for id in (0..40u64).filter(|i| i.is_multiple_of(5)) {
        let v = ev.model[&id];
        ev.event("d", id, Some(v), None);
    }
    for id in 40..50 {
        ev.event("c", id, None, Some(2));
    }
    ev.event("u", 41, Some(2), Some(3));
    // In one run: a key deleted, then created again; a key created, then deleted.
    ev.event("c", 10, None, Some(4));
    ev.event("d", 45, Some(2), None);
    produce_avro(&broker.bootstrap(), "customers", &registry.url(), &ev.lines, &opts);
    run(&s);
    assert!(
        s.latest_log().contains("key index built from the table"),
        "{}",
        s.latest_log()
    );
    check(&s, &ev.model);
    let dlq = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "crm.customers__dlq",
        &["offset", "error_kind"],
    );
    assert!(
        dlq.rows("duckdb").is_empty(),
        "nothing dead-lettered: {:?}",
        dlq.rows("duckdb")
    );

    // Erasure on a Debezium Avro table: every version of the key gone, and the report says
    // plainly that Avro dead letters were matched by Kafka key only.
    let erase = [
        "erase",
        "--table",
        "crm.customers",
        "--key",
        "3",
        "--requested-by",
        "dpo@example.com",
    ];
    let (ok, out) = s.cli(&calve_bin(), &erase);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "caveat: dead letters of a schema-registry topic (Avro, Protobuf, JSON Schema) were matched by their Kafka key only"
        ),
        "{out}"
    );
    ev.model.remove(&3);
    check(&s, &ev.model);
}
