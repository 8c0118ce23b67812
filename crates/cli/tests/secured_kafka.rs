//! Kafka as production clusters run it: TLS with a private CA and SASL SCRAM-SHA-512. calve
//! reaches it through `[kafka] properties` (librdkafka's own names, passed through), with the
//! password as a `${env:…}` reference, and ingests exactly once; a wrong password ingests
//! nothing, says why, and never prints the password.

mod common;

use std::time::Duration;

use calve_testkit::broker::SecuredBroker;
use calve_testkit::calve::{kill9, wait_for, Setup};
use calve_testkit::kafka::{create_topic_with, produce_with, Message};
use calve_testkit::workload::order_json;
use common::*;

/// Points the setup's `[kafka]` at the secured broker: every client property but the password,
/// which comes from `$CALVE_TEST_SASL_PASSWORD`.
fn secure(s: &Setup, broker: &SecuredBroker) {
    let mut props = String::from("\"fetch.wait.max.ms\" = \"50\"");
    for (k, v) in broker.client_properties() {
        let v = if k == "sasl.password" {
            "${env:CALVE_TEST_SASL_PASSWORD}".to_string()
        } else {
            v
        };
        props.push_str(&format!(", \"{k}\" = \"{v}\""));
    }
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let inline = "properties = { \"fetch.wait.max.ms\" = \"50\" }";
    assert!(cfg.contains(inline), "Setup's calve.toml changed:\n{cfg}");
    std::fs::write(&s.config, cfg.replace(inline, &format!("properties = {{ {props} }}"))).unwrap();
}

#[test]
fn ingests_over_sasl_ssl_and_refuses_a_wrong_password_loudly() {
    let broker = SecuredBroker::start();
    let props = broker.client_properties();
    create_topic_with(&broker.bootstrap(), &props, "orders", 2);
    let n = 1000u64;
    let messages: Vec<Message> = (0..n).map(|i| (format!("k{i}"), Some(order_json(i)), None)).collect();
    let mut zstd = props.clone();
    zstd.push(("compression.type".into(), "zstd".into()));
    produce_with(&broker.bootstrap(), &zstd, "orders", &messages);

    let s = Setup::new(&broker.bootstrap(), &orders_contract("orders", "2s"));
    secure(&s, &broker);
    // What every calve process of this test reads (`calve status` too), unless told otherwise.
    std::env::set_var("CALVE_TEST_SASL_PASSWORD", &broker.password);

    // A wrong password: nothing is read, librdkafka's refusal is in the log, the password is not.
    let wrong = format!("wrong-{:016x}", rand::random::<u64>());
    let mut child = s.spawn_with_env(
        &calve_bin(),
        &["run", "--until-caught-up"],
        &[("CALVE_TEST_SASL_PASSWORD", &wrong)],
    );
    let refused = |logs: &str| {
        logs.lines().any(|l| {
            l.contains("pipeline failed")
                && l.contains("the client's last error: Global error: Authentication")
                && l.contains("SASL SCRAM authentication failed")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !refused(&s.logs()) && std::time::Instant::now() < deadline {
        assert!(
            wait_for(&mut child, Duration::from_millis(500)).is_none(),
            "calve cannot catch up on a broker that refuses it:\n{}",
            s.logs()
        );
    }
    kill9(&mut child);
    let logs = s.logs();
    assert!(
        refused(&logs),
        "the table's failure says the broker refused the credentials:\n{logs}"
    );
    assert!(!logs.contains(&wrong), "the password is never logged:\n{logs}");
    assert_eq!(s.restore_point(&calve_bin()), "none", "nothing was committed");

    let mut child = s.spawn(&calve_bin(), &["run", "--until-caught-up"]);
    let st = wait_for(&mut child, Duration::from_secs(120));
    if st.is_none() {
        kill9(&mut child);
    }
    assert!(
        st.is_some_and(|st| st.success()),
        "calve catches up over SASL_SSL:\n{}",
        s.latest_log()
    );
    assert_orders_exactly(&read_orders(&s), &(0..n).collect::<Vec<_>>(), &s.logs());
    assert!(!s.logs().contains(&broker.password), "the password is never logged");
}
