//! Tables sharing a Kafka consumer on the real broker (tansu): each reads exactly its own
//! topic's records from the offsets it chose, and what one table does to its partitions
//! (positioning them again, pausing them, giving them back) leaves the others' reading whole.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use calve_ingest::{KafkaClients, KafkaConfig, KafkaSource};
use calve_testkit::broker::Broker;
use calve_testkit::kafka::{create_topics, produce, Message};

const PER_PARTITION: i64 = 40;
const WAIT: Duration = Duration::from_secs(60);

/// `PER_PARTITION` records into each of the two partitions of `topic`.
fn fill(bootstrap: &str, topic: &str) {
    let messages: Vec<Message> = (0..PER_PARTITION * 2)
        .map(|i| (format!("k{i}"), Some(format!("{topic}-{i}")), Some((i % 2) as i32)))
        .collect();
    produce(bootstrap, topic, &messages);
}

/// Reads until `source` holds every record from `from` to the end of both partitions, and
/// checks each came once, in order, from its own topic, and nothing after.
async fn read_all(source: &KafkaSource, topic: &str, from: &BTreeMap<i32, i64>) {
    let mut next = from.clone();
    let deadline = Instant::now() + WAIT;
    while next.values().any(|o| *o < PER_PARTITION) {
        assert!(Instant::now() < deadline, "{topic}: read up to {next:?} only");
        for r in source.poll(1_000, Duration::from_millis(200)).await.unwrap() {
            assert_eq!(&*r.topic, topic, "a record of another table's topic");
            let want = next.get_mut(&r.partition).expect("an assigned partition");
            assert_eq!(r.offset, *want, "{topic}/{}: offsets in order, each once", r.partition);
            assert_eq!(
                r.value.as_deref(),
                Some(format!("{topic}-{}", r.offset * 2 + i64::from(r.partition)).as_bytes())
            );
            *want += 1;
        }
    }
    assert_eq!(source.positions(), next, "{topic}: positions after the last record");
    let more = source.poll(1_000, Duration::from_millis(300)).await.unwrap();
    assert!(more.is_empty(), "{topic}: {} records past the end", more.len());
}

fn from(p0: i64, p1: i64) -> BTreeMap<i32, i64> {
    BTreeMap::from([(0, p0), (1, p1)])
}

#[test]
fn tables_share_consumers_and_read_only_their_own_records() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topics: Vec<String> = ["a", "b", "c"].iter().map(|t| format!("shared-{t}")).collect();
    create_topics(&bootstrap, &topics, 2);
    for t in &topics {
        fill(&bootstrap, t);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(share(bootstrap, topics));
}

async fn share(bootstrap: String, topics: Vec<String>) {
    let clients = KafkaClients::new(KafkaConfig {
        brokers: bootstrap.clone(),
        group_id: "shared-consumer-test".into(),
        properties: BTreeMap::new(),
        tables_per_consumer: 2,
    });
    let (ta, tb, tc) = (&topics[0], &topics[1], &topics[2]);
    let mut a = clients.source(ta).await.unwrap();
    let mut b = clients.source(tb).await.unwrap();
    assert_eq!(clients.consumers().await, 1, "two tables on one consumer");
    let mut c = clients.source(tc).await.unwrap();
    assert_eq!(
        clients.consumers().await,
        2,
        "a third table is past tables_per_consumer"
    );

    let parts = a.first_partitions(WAIT).await.unwrap();
    assert_eq!(parts, vec![0, 1]);
    a.assign(&parts, &from(0, 0)).unwrap();
    b.assign(&parts, &from(5, 0)).unwrap();
    c.assign(&parts, &from(0, 30)).unwrap();
    read_all(&a, ta, &from(0, 0)).await;
    read_all(&b, tb, &from(5, 0)).await;
    read_all(&c, tc, &from(0, 30)).await;

    // a reads again from where its table says; b, on the same consumer, has nothing more.
    a.assign(&parts, &from(10, 20)).unwrap();
    read_all(&a, ta, &from(10, 20)).await;
    assert!(b.poll(1_000, Duration::from_millis(500)).await.unwrap().is_empty());

    // A paused table gets nothing; its neighbour reads on.
    a.assign(&parts, &from(0, 0)).unwrap();
    a.set_paused(true).unwrap();
    b.assign(&parts, &from(30, 30)).unwrap();
    read_all(&b, tb, &from(30, 30)).await;
    assert!(a.poll(1_000, Duration::from_millis(500)).await.unwrap().is_empty());
    a.set_paused(false).unwrap();
    read_all(&a, ta, &from(0, 0)).await;

    // A second table on a's topic (a rebuild beside the live table) needs a consumer that
    // does not read it: c's has room.
    let mut again = clients.source(ta).await.unwrap();
    assert_eq!(clients.consumers().await, 2);
    again.assign(&parts, &from(35, 35)).unwrap();
    read_all(&again, ta, &from(35, 35)).await;

    // A table given back while paused (it rested for the memory budget when it stopped):
    // the next table on its topic, on the same consumer, reads the partitions all the same.
    again.set_paused(true).unwrap();
    drop(again);
    let mut again = clients.source(ta).await.unwrap();
    assert_eq!(clients.consumers().await, 2, "the place is taken on the same consumer");
    again.assign(&parts, &from(20, 20)).unwrap();
    read_all(&again, ta, &from(20, 20)).await;

    // A table gone gives its topic back: the next one on it takes the free place.
    drop(b);
    let mut b = clients.source(tb).await.unwrap();
    assert_eq!(clients.consumers().await, 2, "the place b left is taken again");
    // A third table on a's topic: both consumers read it, and the second is full.
    let _third = clients.source(ta).await.unwrap();
    assert_eq!(clients.consumers().await, 3);
    b.assign(&parts, &from(0, 0)).unwrap();
    read_all(&b, tb, &from(0, 0)).await;
    read_all(&c, tc, &from(PER_PARTITION, PER_PARTITION)).await;
}
