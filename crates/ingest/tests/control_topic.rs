//! The control topic on the real broker (tansu): made on first open, read by every process
//! from where it ended when that process opened it, each key's messages in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use calve_ingest::{ControlMessage, ControlTopic, KafkaConfig};
use calve_testkit::broker::Broker;

const WAIT: Duration = Duration::from_secs(60);

fn config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: bootstrap.to_string(),
        group_id: "control-test".into(),
        properties: BTreeMap::new(),
        tables_per_consumer: 64,
    }
}

/// Everything `control` receives until it holds `n` messages, then checks nothing more comes.
async fn receive(control: &ControlTopic, n: usize) -> Vec<ControlMessage> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "received {} of {n}", got.len());
        got.extend(control.recv(Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(
        control.recv(Duration::from_millis(500)).await.unwrap(),
        None,
        "more than was sent"
    );
    got
}

/// Per key, the payloads in the order they came.
fn by_key(messages: &[ControlMessage]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in messages {
        out.entry(m.key.clone())
            .or_default()
            .push(String::from_utf8(m.payload.clone()).unwrap());
    }
    out
}

fn sent(keys: usize, per_key: usize, round: &str) -> BTreeMap<String, Vec<String>> {
    (0..keys)
        .map(|k| {
            let payloads = (0..per_key).map(|i| format!("{round}-{k}-{i}")).collect();
            (format!("table-{k}"), payloads)
        })
        .collect()
}

#[test]
fn processes_hear_what_is_said_after_they_open_each_key_in_order() {
    let broker = Broker::start();
    let cfg = config(&broker.bootstrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let topic = "control-test.control";
        let a = ControlTopic::open(&cfg, topic).await.unwrap();
        let b = ControlTopic::open(&cfg, topic).await.unwrap();
        let first = sent(5, 20, "first");
        // Interleaved over the keys, as several tables' readers would send.
        for i in 0..20 {
            for (key, payloads) in &first {
                a.send(key, payloads[i].as_bytes()).await.unwrap();
            }
        }
        assert_eq!(by_key(&receive(&b, 100).await), first, "b hears a, each key in order");
        assert_eq!(by_key(&receive(&a, 100).await), first, "a hears itself too");

        // A process that opens later hears only what is said from then on.
        let c = ControlTopic::open(&cfg, topic).await.unwrap();
        let second = sent(3, 4, "second");
        for (key, payloads) in &second {
            for p in payloads {
                b.send(key, p.as_bytes()).await.unwrap();
            }
        }
        assert_eq!(by_key(&receive(&c, 12).await), second);
        assert_eq!(by_key(&receive(&a, 12).await), second);
    });
}
