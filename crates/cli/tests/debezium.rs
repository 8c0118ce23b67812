//! Debezium change events into a keyed table, end to end on a real broker: snapshot reads,
//! creates, updates, deletes (each followed by Debezium's tombstone), a primary-key change
//! (delete of the old key, tombstone, create of the new key), with and without the schema
//! wrapper, plus a truncate and a malformed event for the dead-letter table. Two runs, so the
//! second resolves its changes against a key index rebuilt from the table. Read back by
//! PyIceberg and DuckDB against a model.

mod common;

use std::collections::BTreeMap;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::read_table;
use calve_testkit::workload::{customer_json, debezium_event, debezium_key};
use common::*;
use serde_json::Value;

struct Events {
    msgs: Vec<Message>,
    model: BTreeMap<u64, u64>,
    lsn: u64,
}

impl Events {
    fn event(&mut self, op: &str, before: Option<(u64, u64)>, after: Option<(u64, u64)>) {
        self.lsn += 8;
        let id = after.or(before).unwrap().0;
        let wrapped = self.lsn.is_multiple_of(16);
        self.msgs.push((
            debezium_key(id, wrapped),
            Some(debezium_event(op, before, after, self.lsn, wrapped)),
            Some((id % 2) as i32),
        ));
        match (op, after) {
            ("d", _) => {
                self.model.remove(&id);
                // What Debezium sends next, for log compaction.
                self.msgs.push((debezium_key(id, wrapped), None, Some((id % 2) as i32)));
            }
            (_, Some((id, v))) => {
                self.model.insert(id, v);
            }
            _ => {}
        }
    }
}

fn run(s: &Setup) {
    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, std::time::Duration::from_secs(120)).expect("calve did not catch up");
    assert!(st.success(), "calve failed\n{}", s.logs());
}

#[test]
fn debezium_changes_land_as_the_source_tables_state() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "crm.public.customers", 2);
    let contract = CUSTOMERS
        .replace("topic = \"customers\"", "topic = \"crm.public.customers\"")
        .replace("format = \"json\"", "format = \"debezium-json\"")
        .replace("from_kafka_key = true", "from_kafka_key = false")
        .replace("freshness = \"1m\"", "freshness = \"1s\"");
    let s = Setup::new(&broker.bootstrap(), &contract);
    let mut ev = Events {
        msgs: Vec::new(),
        model: BTreeMap::new(),
        lsn: 0,
    };

    // The initial snapshot, then live changes.
    for id in 1..=40 {
        ev.event("r", None, Some((id, 1)));
    }
    for id in 41..=50 {
        ev.event("c", None, Some((id, 1)));
    }
    for id in (1..=50).step_by(3) {
        ev.event("u", Some((id, 1)), Some((id, 2)));
    }
    for id in [2, 5, 41] {
        ev.event("d", Some((id, ev.model[&id])), None);
    }
    // Bad events: a truncate and a malformed envelope go to the dead-letter table.
    ev.msgs.push((
        debezium_key(1, false),
        Some(r#"{"before":null,"after":null,"op":"t","ts_ms":1}"#.into()),
        Some(1),
    ));
    ev.msgs.push((
        debezium_key(1, false),
        Some(r#"{"before":null,"after":{"customer_id":1}"#.into()),
        Some(1),
    ));
    produce(&broker.bootstrap(), "crm.public.customers", &ev.msgs);
    run(&s);

    // Second run: the key index is rebuilt from the table. A primary-key change moves
    // customer 7 to id 107; a row updated twice and deleted; a deleted id re-created.
    ev.msgs.clear();
    let v7 = ev.model[&7];
    ev.event("d", Some((7, v7)), None);
    ev.event("c", None, Some((107, v7 + 1)));
    ev.event("u", Some((10, ev.model[&10])), Some((10, 3)));
    ev.event("u", Some((10, 3)), Some((10, 4)));
    ev.event("d", Some((10, 4)), None);
    ev.event("c", None, Some((2, 5)));
    produce(&broker.bootstrap(), "crm.public.customers", &ev.msgs);
    run(&s);
    assert!(s.logs().contains("key index built from the table"));

    let view = read_table(
        &s.catalog_db(),
        &s.warehouse(),
        "crm.customers",
        &["customer_id", "name", "version"],
    );
    let want: Vec<Vec<Value>> = ev
        .model
        .iter()
        .map(|(id, v)| {
            let j: Value = serde_json::from_str(&customer_json(*id, *v)).unwrap();
            vec![j["customer_id"].clone(), j["name"].clone(), j["version"].clone()]
        })
        .collect();
    for reader in ["pyiceberg", "duckdb"] {
        let mut got = view.rows(reader);
        got.sort_by_key(|r| r[0].as_u64());
        assert_eq!(got, want, "{reader}\n{}", s.logs());
    }
    assert!(!ev.model.contains_key(&7) && ev.model.contains_key(&107));
    let dlq = read_table(&s.catalog_db(), &s.warehouse(), "crm.customers__dlq", DLQ_COLUMNS);
    let kinds: Vec<String> = dlq
        .rows("duckdb")
        .iter()
        .map(|r| r[3].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        vec!["malformed-json", "malformed-json"],
        "the truncate and the malformed event"
    );
}
