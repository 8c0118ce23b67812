//! Contract validation as `calve check` reports it: every problem, with its field path.

use calve_contract::{Contract, PartitionGrain, SECTIONS};

const ORDERS: &str = include_str!("../../../examples/contracts/orders.toml");

/// Removes the `[name]` section (header and body) from a contract text.
fn without_section(text: &str, name: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with('[') && !line.starts_with("[[") {
            skipping = line.trim() == format!("[{name}]");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn problems(text: &str) -> Vec<String> {
    Contract::parse(text, "t.toml")
        .unwrap_err()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn example_contract_is_valid() {
    let c = Contract::parse(ORDERS, "orders.toml").unwrap();
    assert_eq!(c.namespace(), vec!["shop"]);
    assert_eq!(c.table_name(), "orders");
    assert_eq!(c.dead_letter_table_name(), "orders__dlq");
    assert_eq!(c.event_time.partition, PartitionGrain::Day);
    assert_eq!(c.columns().len(), 5);
    assert!(!c.is_keyed());
}

#[test]
fn each_missing_section_is_named() {
    for section in SECTIONS {
        let text = without_section(ORDERS, section);
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|m| m.starts_with(&format!("{section}:")) && m.contains("missing")),
            "removing [{section}] gave {p:?}"
        );
    }
}

#[test]
fn all_missing_sections_are_reported_together() {
    let text = without_section(&without_section(ORDERS, "owner"), "sla");
    let p = problems(&text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("owner:") && p[1].starts_with("sla:"), "{p:?}");
}

#[test]
fn missing_field_names_its_section() {
    let text = ORDERS.replace("partition = \"day\"\n", "");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|m| m.starts_with("event_time:") && m.contains("partition")),
        "{p:?}"
    );
}

#[test]
fn unknown_fields_and_sections_are_refused() {
    let p = problems(&ORDERS.replace("team = ", "teem = "));
    assert!(p.iter().any(|m| m.starts_with("owner:") && m.contains("teem")), "{p:?}");
    let p = problems(&format!("{ORDERS}\n[extras]\nx = 1\n"));
    assert!(
        p.iter()
            .any(|m| m.starts_with("extras:") && m.contains("unknown section")),
        "{p:?}"
    );
}

#[test]
fn semantic_rules_point_at_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("column = \"ts\"", "column = \"nope\"", "event_time.column"),
        ("column = \"ts\"", "column = \"amount\"", "event_time.column"),
        ("columns = []", "columns = [\"customer\"]", "keys.columns[0]"),
        ("columns = []", "columns = [\"missing\"]", "keys.columns[0]"),
        (
            "tombstone = \"dead-letter\"",
            "tombstone = \"delete-row\"",
            "deletes.tombstone",
        ),
        (
            "policy = \"rewrite\"",
            "policy = \"current-partition\"\narrival_column = \"ts\"",
            "late_data.arrival_column",
        ),
        (
            "policy = \"rewrite\"",
            "policy = \"rewrite\"\narrival_column = \"arrived\"",
            "late_data.arrival_column",
        ),
        (
            "policy = \"rewrite\"",
            "policy = \"current-partition\"\narrival_column = \"TS\"",
            "late_data.arrival_column",
        ),
        (
            "policy = \"rewrite\"",
            "policy = \"current-partition\"\narrival_column = \"arrived.at\"",
            "late_data.arrival_column",
        ),
        ("freshness = \"1m\"", "freshness = \"2d\"", "sla.freshness"),
        (
            "orphan_min_age = \"1d\"",
            "orphan_min_age = \"5m\"",
            "maintenance.orphan_min_age",
        ),
        (
            "target_file_size = \"256MB\"",
            "target_file_size = \"1KB\"",
            "maintenance.target_file_size",
        ),
        ("min = 5", "min = 0", "maintenance.keep_snapshots.min"),
        ("max = 1000", "max = 3", "maintenance.keep_snapshots.max"),
        ("team = \"checkout-data\"", "team = \" \"", "owner.team"),
        ("name = \"shop.orders\"", "name = \"orders\"", "table.name"),
        ("type = \"double\"", "type = \"money\"", "schema.columns[2].type"),
        ("name = \"status\"", "name = \"amount\"", "schema.columns[3].name"),
    ];
    for (from, to, path) in cases {
        assert!(ORDERS.contains(from), "fixture lacks {from}");
        let p = problems(&ORDERS.replacen(from, to, 1));
        assert!(
            p.iter().any(|m| m.starts_with(&format!("{path}:"))),
            "{from} -> {to}: {p:?}"
        );
    }
}

#[test]
fn bad_quantities_are_explained() {
    let p = problems(&ORDERS.replace("budget = \"20GB/h\"", "budget = \"lots\""));
    assert!(
        p.iter().any(|m| m.starts_with("maintenance:") && m.contains("lots")),
        "{p:?}"
    );
}

#[test]
fn the_delete_ratio_is_a_share() {
    let c = Contract::parse(
        &ORDERS.replace(
            "budget = \"20GB/h\"",
            "budget = \"20GB/h\"\nrewrite_delete_ratio = 0.25",
        ),
        "o.toml",
    )
    .unwrap();
    assert_eq!(c.maintenance.rewrite_delete_ratio, 0.25);
    assert_eq!(
        Contract::parse(ORDERS, "o.toml")
            .unwrap()
            .maintenance
            .rewrite_delete_ratio,
        0.0,
        "default: any delete is applied"
    );
    let p = problems(&ORDERS.replace("budget = \"20GB/h\"", "budget = \"20GB/h\"\nrewrite_delete_ratio = 1.5"));
    assert!(
        p.iter()
            .any(|m| m.starts_with("maintenance.rewrite_delete_ratio:") && m.contains("1.5")),
        "{p:?}"
    );
}

#[test]
fn broken_toml_is_a_single_file_problem() {
    let p = problems("[table\nname=");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("(file):"), "{p:?}");
}

const CUSTOMERS: &str = include_str!("../../../examples/contracts/customers.toml");

#[test]
fn keyed_contracts_say_how_deletes_find_their_row() {
    let c = Contract::parse(CUSTOMERS, "customers.toml").unwrap();
    assert!(c.is_keyed());
    assert_eq!(c.keys.columns, vec!["customer_id"]);

    // A tombstone has only its Kafka key: delete-row without from_kafka_key cannot work.
    let p = problems(&CUSTOMERS.replace("from_kafka_key = true", "from_kafka_key = false"));
    assert!(
        p.iter()
            .any(|p| p.starts_with("deletes.tombstone:") && p.contains("from_kafka_key")),
        "{p:?}"
    );
    // ... unless deletes come as Debezium events, whose `before` image names the row.
    let debezium = CUSTOMERS
        .replace("from_kafka_key = true", "from_kafka_key = false")
        .replace("format = \"json\"", "format = \"debezium-json\"");
    Contract::parse(&debezium, "d.toml").unwrap();
    // Debezium needs keys; from_kafka_key needs key columns.
    let p = problems(
        &debezium
            .replace("columns = [\"customer_id\"]", "columns = []")
            .replace("tombstone = \"delete-row\"", "tombstone = \"ignore\""),
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("keys.columns:") && p.contains("debezium-json")),
        "{p:?}"
    );
    let p = problems(&CUSTOMERS.replace("columns = [\"customer_id\"]", "columns = []"));
    assert!(p.iter().any(|p| p.starts_with("keys.from_kafka_key:")), "{p:?}");
}

#[test]
fn registry_keys_are_said_and_need_a_registry_format() {
    let registry = CUSTOMERS.replace("# kafka_key_format = \"registry\"", "kafka_key_format = \"registry\"");
    let avro = registry.replace("format = \"json\"", "format = \"avro\"");
    let c = Contract::parse(&avro, "c.toml").unwrap();
    assert_eq!(c.keys.kafka_key_format, calve_contract::KafkaKeyFormat::Registry);
    for refused in [
        registry.clone(),
        avro.replace("format = \"avro\"", "format = \"debezium-avro\""),
        avro.replace("from_kafka_key = true", "from_kafka_key = false"),
    ] {
        let p = problems(&refused);
        assert!(p.iter().any(|p| p.starts_with("keys.kafka_key_format:")), "{p:?}");
    }
}

#[test]
fn a_rename_names_an_old_column_no_declared_column_has() {
    let renamed = ORDERS.replace(
        r#"{ name = "customer", type = "string" },"#,
        r#"{ name = "buyer", type = "string", renamed_from = "customer" },"#,
    );
    assert_ne!(renamed, ORDERS);
    let c = Contract::parse(&renamed, "t.toml").unwrap();
    assert_eq!(c.renames(), vec![("customer".to_string(), "buyer".to_string())]);
    for bad in ["status", "buyer", "not a name"] {
        let text = renamed.replace(r#"renamed_from = "customer""#, &format!(r#"renamed_from = "{bad}""#));
        let p = problems(&text);
        assert!(
            p.iter().any(|m| m.starts_with("schema.columns[1].renamed_from:")),
            "renamed_from = {bad}: {p:?}"
        );
    }
    let text = renamed.replace(r#"on_breaking = "dead-letter""#, r#"on_breaking = "sometimes""#);
    let p = problems(&text);
    assert!(
        p.iter().any(|m| m.contains("expected `hold` or `dead-letter`")),
        "{p:?}"
    );
}

#[test]
fn current_partition_partitions_by_an_arrival_column_calve_adds() {
    let c = Contract::parse(
        &ORDERS.replace("policy = \"rewrite\"", "policy = \"current-partition\""),
        "o.toml",
    )
    .unwrap();
    assert_eq!(c.arrival_column(), Some("arrived_at"));
    assert_eq!(c.partition_column(), "arrived_at");
    let last = c.columns().last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.ty.to_string(), last.required),
        ("arrived_at", "timestamptz".into(), false)
    );
    let named = Contract::parse(
        &ORDERS.replace(
            "policy = \"rewrite\"",
            "policy = \"current-partition\"\narrival_column = \"received\"",
        ),
        "o.toml",
    )
    .unwrap();
    assert_eq!(named.partition_column(), "received");
    let plain = Contract::parse(ORDERS, "o.toml").unwrap();
    assert_eq!((plain.arrival_column(), plain.partition_column()), (None, "ts"));
    assert!(plain.columns().iter().all(|c| c.name != "arrived_at"));
}
