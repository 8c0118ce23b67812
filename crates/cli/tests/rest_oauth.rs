//! A REST catalog that demands OAuth2 client credentials (the REST spec's
//! `/v1/oauth/tokens`, tokens that live 2 s): calve fetches tokens with the credential from
//! `${env:…}`, replaces them before they expire while it runs, and a wrong secret stops it at
//! start with the token endpoint's own answer — never with the secret. PyIceberg reads the
//! table back through the same flow.

mod common;

use std::time::Duration;

use calve_testkit::broker::Broker;
use calve_testkit::calve::{terminate, wait_for, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::python::read_table_at_with;
use calve_testkit::rest_catalog::{OAuth, RestCatalogServer};
use calve_testkit::workload::order_json;
use common::*;

fn orders(ids: std::ops::Range<u64>) -> Vec<Message> {
    ids.map(|i| (format!("k{i}"), Some(order_json(i)), None)).collect()
}

/// Adds `credential = "${env:CALVE_TEST_CREDENTIAL}"` to the setup's `[catalog]`.
fn with_credential(s: &Setup) {
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let at = cfg.find("\n\n[kafka]").expect("a [kafka] section after [catalog]");
    let cfg = format!(
        "{}\ncredential = \"${{env:CALVE_TEST_CREDENTIAL}}\"{}",
        &cfg[..at],
        &cfg[at..]
    );
    std::fs::write(&s.config, cfg).unwrap();
}

#[test]
fn tokens_are_fetched_refreshed_and_a_wrong_secret_is_refused_loudly() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 2);
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("secret-{:016x}", rand::random::<u64>());
    let oauth = OAuth {
        client_id: "calve".into(),
        client_secret: secret.clone(),
        ttl: Duration::from_secs(2),
    };
    let server = RestCatalogServer::start_with_oauth(&dir.path().join("warehouse"), oauth);
    let s = Setup::with_catalog(
        &broker.bootstrap(),
        &orders_contract("orders", "1s"),
        dir,
        &server.uri(),
    );
    with_credential(&s);

    // A wrong secret: calve stops at start, saying what the token endpoint said.
    let wrong = format!("calve:wrong-{:016x}", rand::random::<u64>());
    let mut child = s.spawn_with_env(&calve_bin(), &["run"], &[("CALVE_TEST_CREDENTIAL", &wrong)]);
    let st = wait_for(&mut child, Duration::from_secs(60)).expect("calve stops on refused credentials");
    assert!(!st.success());
    let logs = s.logs();
    assert!(
        logs.contains("invalid_client") && logs.contains("unknown client or wrong secret"),
        "the token endpoint's answer, verbatim:\n{logs}"
    );
    assert!(!logs.contains(&wrong[6..]), "the secret is never printed:\n{logs}");
    assert_eq!(server.oauth_log().refused_clients, 1);

    // The right one, over a run several token lifetimes long, with commits every second.
    let credential = format!("calve:{secret}");
    let mut child = s.spawn_with_env(&calve_bin(), &["run"], &[("CALVE_TEST_CREDENTIAL", &credential)]);
    for round in 0..6u64 {
        produce(&broker.bootstrap(), "orders", &orders(round * 100..(round + 1) * 100));
        std::thread::sleep(Duration::from_millis(1200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let st = terminate(&mut child, Duration::from_secs(60));
    assert!(st.success(), "calve exits cleanly:\n{}", s.latest_log());
    let log = server.oauth_log();
    assert!(
        log.issued >= 3,
        "tokens were replaced as they aged ({} issued over ~9 s of 2 s tokens)",
        log.issued
    );
    assert_eq!(log.refused_requests, 0, "no request ever carried an expired token");

    let view = read_table_at_with(
        &server.uri(),
        &[("credential".into(), credential)],
        &s.warehouse(),
        "shop.orders",
        ORDER_COLUMNS,
    );
    assert_orders_exactly(&view, &(0..600).collect::<Vec<_>>(), &s.logs());
}
