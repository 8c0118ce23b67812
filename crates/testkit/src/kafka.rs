//! Topic creation and producing through librdkafka.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

/// Client properties beyond the bootstrap servers (security, for a secured broker).
pub type Properties = [(String, String)];

fn client(bootstrap: &str, properties: &Properties) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, &[], topic, partitions)
}

/// Like [`create_topic`], connecting with `properties`.
pub fn create_topic_with(bootstrap: &str, properties: &Properties, topic: &str, partitions: i32) {
    create_topics_with(bootstrap, properties, &[topic.to_string()], partitions)
}

/// Creates the `topics`, `partitions` each, in one request.
pub fn create_topics(bootstrap: &str, topics: &[String], partitions: i32) {
    create_topics_with(bootstrap, &[], topics, partitions)
}

fn create_topics_with(bootstrap: &str, properties: &Properties, topics: &[String], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap, properties).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let res = rt
        .block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
        ))
        .unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// A message to produce: key, value (None = tombstone), explicit partition.
pub type Message = (String, Option<String>, Option<i32>);

/// Produces `messages` in order and waits until all are acknowledged.
pub fn produce(bootstrap: &str, topic: &str, messages: &[Message]) {
    produce_with(bootstrap, &[], topic, messages)
}

/// Like [`produce`], connecting with `properties`.
pub fn produce_with(bootstrap: &str, properties: &Properties, topic: &str, messages: &[Message]) {
    let raw: Vec<RawMessage> = messages
        .iter()
        .map(|(k, v, p)| (k.clone(), v.clone().map(String::into_bytes), *p))
        .collect();
    produce_bytes_with(bootstrap, properties, topic, &raw);
}

/// A message whose value is bytes (Avro, say): key, value (None = tombstone), partition.
pub type RawMessage = (String, Option<Vec<u8>>, Option<i32>);

/// Produces `messages` in order and waits until all are acknowledged.
pub fn produce_bytes(bootstrap: &str, topic: &str, messages: &[RawMessage]) {
    produce_bytes_with(bootstrap, &[], topic, messages)
}

/// Like [`produce_bytes`], connecting with `properties`.
pub fn produce_bytes_with(bootstrap: &str, properties: &Properties, topic: &str, messages: &[RawMessage]) {
    let p = producer(bootstrap, properties);
    send_all(&p, topic, messages);
    p.flush(Duration::from_secs(60)).expect("all messages delivered");
}

/// Produces each topic's messages through one producer (many topics at once: one client, not
/// one per topic), and waits until all are acknowledged.
pub fn produce_to_many(bootstrap: &str, topics: &[(String, Vec<RawMessage>)]) {
    let p = producer(bootstrap, &[]);
    for (topic, messages) in topics {
        send_all(&p, topic, messages);
    }
    p.flush(Duration::from_secs(120)).expect("all messages delivered");
}

fn producer(bootstrap: &str, properties: &Properties) -> ThreadedProducer<DefaultProducerContext> {
    client(bootstrap, properties)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

fn send_all(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, messages: &[RawMessage]) {
    for (k, v, part) in messages {
        let mut rec: BaseRecord<'_, String, Vec<u8>> = BaseRecord::to(topic).key(k);
        if let Some(v) = v {
            rec = rec.payload(v);
        }
        if let Some(part) = part {
            rec = rec.partition(*part);
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    std::thread::sleep(Duration::from_millis(5));
                    rec = back;
                }
            }
        }
    }
}

/// Produces `value(n)` for n = 0, 1, … to `topic`, one every `every` (a steady trickle, each
/// stamped with its send time), until `stop` turns true; the thread returns how many it sent
/// (all acknowledged).
pub fn produce_steadily(
    bootstrap: &str,
    topic: &str,
    every: Duration,
    stop: Arc<AtomicBool>,
    value: impl Fn(u64) -> String + Send + 'static,
) -> JoinHandle<u64> {
    let p: ThreadedProducer<DefaultProducerContext> = client(bootstrap, &[]).set("linger.ms", "0").create().unwrap();
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let (key, v) = (format!("k{n}"), value(n));
            p.send(BaseRecord::to(&topic).key(&key).payload(&v))
                .map_err(|(e, _)| e)
                .expect("the producer queue has room for a trickle");
            n += 1;
            std::thread::sleep(every);
        }
        p.flush(Duration::from_secs(30)).expect("all messages delivered");
        n
    })
}
