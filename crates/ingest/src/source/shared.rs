//! One librdkafka consumer for many tables.
//!
//! A librdkafka client is a handful of threads, a connection per broker and its own buffers:
//! about 4.5 threads and 0.9 MiB each. One per table made a process with 1,000 tables run
//! 4,500 threads and hold a gigabyte beyond its memory budget. Here the tables of a process
//! share consumers: each table assigns its own topic's partitions to one (incrementally, so
//! the others' assignments stay), and reads them from partition queues of its own, split off
//! the consumer's queue before they are assigned, so one table's records never pass through
//! another's hands and one table resting (paused) holds up nobody else.
//!
//! A consumer serves at most `[kafka] tables_per_consumer` tables (64): each of its fetch
//! requests lists all its partitions and its records come through one connection per broker,
//! so one consumer for 300 tables took 10 s (p50) to hand them their first records where
//! consumers of 64 took 6. A table needs a consumer that does not read its topic yet
//! (positions are per partition), so a second table on one topic in a process (a rebuild
//! beside the live table) gets another consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;

use super::{is_fatal, refused_config, KafkaConfig, PartitionEnds};
use crate::error::IngestError;

/// How often librdkafka reports its view of the topics (each partition's first and last
/// offsets), unless `statistics.interval.ms` is set in `[kafka] properties`.
const STATISTICS_INTERVAL_MS: &str = "1000";
/// How long the partition count behind the prefetch budget may take to learn.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed count, how long new consumers take the floor without asking again.
const COUNT_HOLDOFF: Duration = Duration::from_secs(30);
/// No partition's prefetch queue is made smaller than this (bytes): librdkafka needs room
/// for a fetch.
pub const MIN_PARTITION_QUEUE: u64 = 64 << 10;
/// Nor larger than librdkafka's default (64 MiB): a bigger queue buys nothing.
const MAX_QUEUE_KB: u64 = 65_536;

/// A lock whose holder panicked leaves plain data behind, as good as it was.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the consumer's own queue told one table (set by the task serving it, taken by the
/// table's source).
#[derive(Default)]
pub(crate) struct TopicFlags {
    /// A partition's next offset is out of the broker's range (see
    /// [`super::KafkaSource::take_out_of_range`]).
    pub(crate) out_of_range: AtomicBool,
    /// A record of the topic reached the consumer's queue instead of its partition's.
    pub(crate) strayed: AtomicBool,
}

/// What the client's callbacks learn, kept per topic for the tables reading it.
#[derive(Default)]
pub(crate) struct SharedContext {
    /// Per topic read through this consumer, its partitions' ends from the statistics.
    ends: Mutex<HashMap<String, BTreeMap<i32, PartitionEnds>>>,
    /// Per topic read through this consumer, what the client tells its table.
    readers: Mutex<HashMap<String, Arc<TopicFlags>>>,
    /// The client's last error callback and when it came ("Authentication: SASL SCRAM
    /// authentication failed…"): it says why a request timed out when the request cannot.
    last_error: Mutex<Option<(Instant, String)>>,
    /// An error that stops every table on this consumer (the client's fatal error, a group
    /// the credentials may not use), met by the task serving the consumer's own queue.
    fatal: Mutex<Option<KafkaError>>,
}

impl ClientContext for SharedContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
        // "All brokers down" follows every refused connection; it must not hide the refusal.
        let consequence = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        let mut last = lock(&self.last_error);
        if !consequence || last.is_none() {
            *last = Some((Instant::now(), format!("{error}: {reason}")));
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        // Held throughout (readers, then ends, as `release` takes them), so the ends of a
        // topic given back meanwhile are not put back.
        let readers = lock(&self.readers);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut ends = lock(&self.ends);
        for topic in readers.keys().cloned() {
            let Some(stats) = statistics.topics.get(&topic) else {
                continue;
            };
            let ends = ends.entry(topic).or_default();
            for (p, part) in &stats.partitions {
                // librdkafka lists an internal partition -1; offsets it has not learnt are -1.
                let end = if part.ls_offset >= 0 {
                    part.ls_offset
                } else {
                    part.hi_offset
                };
                if *p >= 0 && end >= 0 {
                    let heard_ms = leader_heard_ms(&statistics, part.leader, now_ms)
                        .or_else(|| ends.get(p).and_then(|e| e.heard_ms));
                    let low = part.lo_offset.max(0);
                    ends.insert(*p, PartitionEnds { low, end, heard_ms });
                }
            }
        }
    }
}

impl ConsumerContext for SharedContext {}

impl SharedContext {
    /// `topic`'s partition ends as the statistics last told them.
    pub(crate) fn ends(&self, topic: &str) -> BTreeMap<i32, PartitionEnds> {
        lock(&self.ends).get(topic).cloned().unwrap_or_default()
    }

    /// The client's last error if it came after `since`.
    pub(crate) fn error_since(&self, since: Instant) -> Option<String> {
        lock(&self.last_error)
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| e.clone())
    }

    /// The error that stopped this consumer, if one did.
    pub(crate) fn fatal(&self) -> Option<KafkaError> {
        lock(&self.fatal).clone()
    }
}

/// When the connection to broker `leader` last received anything (ms since the epoch), if it
/// is up. A live broker answers a fetch at least every `fetch.wait.max.ms`, so this stays
/// within about a second of `now_ms`; a frozen or unreachable one falls behind.
fn leader_heard_ms(statistics: &rdkafka::Statistics, leader: i32, now_ms: i64) -> Option<i64> {
    // No leader known: bootstrap and internal brokers carry node id -1 too, and say nothing of it.
    if leader < 0 {
        return None;
    }
    let broker = statistics.brokers.values().find(|b| b.nodeid == leader)?;
    (broker.state == "UP" && broker.rxidle >= 0).then(|| now_ms - broker.rxidle / 1000)
}

/// A consumer shared by tables, and the task that serves its own queue (statistics, errors)
/// while the tables read their partition queues. Dropped, it stops the task and the client.
pub(crate) struct Shared {
    pub(crate) consumer: Arc<StreamConsumer<SharedContext>>,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl Shared {
    /// A consumer on `cfg`; with `queue_kb`, each partition's prefetch queue is that big.
    /// Must be called within the Tokio runtime, which serves the consumer's own queue.
    fn new(cfg: &KafkaConfig, queue_kb: Option<u64>) -> Result<Self, IngestError> {
        let mut c = ClientConfig::new();
        c.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        if let Some(every) = cfg.properties.get("statistics.interval.ms") {
            tracing::warn!(
                every_ms = %every,
                "[kafka] properties sets statistics.interval.ms: lag and SLA freshness are measured only that often \
                 (0 turns the measurement off, and every table then counts as behind its freshness SLA)"
            );
        }
        if let Some(kb) = queue_kb {
            c.set("queued.max.messages.kbytes", kb.to_string());
            // A fetch may overshoot the queue by one partition's fetch: keep that within it too.
            c.set("fetch.message.max.bytes", (kb * 1024).min(1 << 20).to_string());
            // `fetch.max.bytes` stays unset, so librdkafka cuts a whole fetch request to one
            // partition's queue (or `message.max.bytes`). Its 50 MiB default instead cost
            // 1,000 tables 84 MiB more at peak, over the budget, and 8 s more to their first
            // records (calve-bench tables); a link with high latency may want it raised in
            // `[kafka] properties`.
        }
        cfg.apply_connection(&mut c);
        c.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            // An offset Kafka no longer holds is a gap in the table: the pipeline decides what
            // to do about it under the contract, never librdkafka silently.
            .set("auto.offset.reset", "error");
        let consumer: StreamConsumer<SharedContext> = c
            .create_with_context(SharedContext::default())
            .map_err(refused_config)?;
        let consumer = Arc::new(consumer);
        let serving = tokio::spawn(serve(consumer.clone()));
        Ok(Shared { consumer, serving })
    }

    /// Makes `topic` this consumer's to read for one table; `None` when a table reads it
    /// through this consumer already, or it serves as many tables as one may.
    fn take(&self, topic: &str, tables_per_consumer: usize) -> Option<Arc<TopicFlags>> {
        let mut readers = lock(&self.consumer.context().readers);
        if readers.contains_key(topic) || readers.len() >= tables_per_consumer.max(1) {
            return None;
        }
        let flags = Arc::new(TopicFlags::default());
        readers.insert(topic.to_string(), flags.clone());
        Some(flags)
    }

    /// Gives `topic` back (its table's source is gone).
    pub(crate) fn release(&self, topic: &str) {
        let context = self.consumer.context();
        let mut readers = lock(&context.readers);
        readers.remove(topic);
        lock(&context.ends).remove(topic);
    }
}

/// Serves the consumer's own queue: statistics and error callbacks, and the errors that are
/// nobody's partition's. Records never arrive here (every assigned partition is split off
/// first, and librdkafka never forwards a split partition's queue again); if one did, its
/// table is stopped before its next poll or commit and reopens from the restore point, so
/// the record is read again rather than skipped by the records after it.
async fn serve(consumer: Arc<StreamConsumer<SharedContext>>) {
    loop {
        match consumer.recv().await {
            Ok(m) => {
                let topic = m.topic().to_string();
                tracing::error!(
                    %topic, partition = m.partition(), offset = m.offset(),
                    "a record reached the shared consumer's queue instead of its table's; the table reopens"
                );
                if let Some(flags) = lock(&consumer.context().readers).get(&topic) {
                    flags.strayed.store(true, Ordering::Relaxed);
                }
            }
            // librdkafka reports broker hiccups as consumption errors and recovers by itself.
            Err(KafkaError::MessageConsumption(code)) if !is_fatal(code) => {
                tracing::warn!("kafka consumer: {code} (librdkafka retries)");
            }
            Err(e) => {
                tracing::error!("kafka consumer: {e}: every table reading through this consumer stops");
                *lock(&consumer.context().fatal) = Some(e);
            }
        }
    }
}

/// The consumers of a process: tables share them (see the module docs).
pub struct KafkaClients {
    cfg: KafkaConfig,
    /// The prefetch all partition queues share, and the topics they are expected to be of.
    prefetch: Option<(u64, Vec<String>)>,
    /// Each partition's queue (KiB), once the topics' partitions are counted.
    queue_kb: tokio::sync::OnceCell<u64>,
    /// When counting them last failed (and one count at a time).
    count_failed: tokio::sync::Mutex<Option<Instant>>,
    consumers: tokio::sync::Mutex<Vec<Arc<Shared>>>,
}

impl KafkaClients {
    /// Consumers on `cfg`, made as tables need them.
    pub fn new(cfg: KafkaConfig) -> Self {
        KafkaClients {
            cfg,
            prefetch: None,
            queue_kb: tokio::sync::OnceCell::new(),
            count_failed: tokio::sync::Mutex::new(None),
            consumers: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Consumers whose partition queues share `bytes` of prefetch (librdkafka sizes its queue
    /// per partition once a table reads from a partition queue of its own), spread over the
    /// partitions of `topics`, learnt when the first consumer is made. A
    /// `queued.max.messages.kbytes` set in `[kafka] properties` wins.
    pub fn within_prefetch(cfg: KafkaConfig, bytes: u64, topics: Vec<String>) -> Self {
        let prefetch = (!cfg.properties.contains_key("queued.max.messages.kbytes")).then_some((bytes, topics));
        KafkaClients {
            prefetch,
            ..KafkaClients::new(cfg)
        }
    }

    /// How many consumers the tables have made so far.
    pub async fn consumers(&self) -> usize {
        self.consumers.lock().await.len()
    }

    /// The Kafka settings the consumers are made with.
    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// A consumer on which `topic` is free to read, made if none is, and the flag its
    /// table's source watches.
    pub(crate) async fn take(&self, topic: &str) -> Result<(Arc<Shared>, Arc<TopicFlags>), IngestError> {
        if let Some(place) = self.place(&mut *self.consumers.lock().await, topic) {
            return Ok(place);
        }
        // Outside the pool's lock: counting may wait for the broker, and the tables that find
        // room on a consumer need not.
        let queue_kb = match &self.prefetch {
            Some((bytes, topics)) => Some(self.queue_kb(*bytes, topics).await),
            None => None,
        };
        let mut consumers = self.consumers.lock().await;
        // Another table may have made room meanwhile.
        if let Some(place) = self.place(&mut consumers, topic) {
            return Ok(place);
        }
        let shared = Arc::new(Shared::new(&self.cfg, queue_kb)?);
        let flag = shared.take(topic, 1).expect("a new consumer reads no topic");
        consumers.push(shared.clone());
        Ok((shared, flag))
    }

    /// A consumer of `consumers` with room for `topic`, if one has.
    fn place(&self, consumers: &mut Vec<Arc<Shared>>, topic: &str) -> Option<(Arc<Shared>, Arc<TopicFlags>)> {
        // A consumer stopped by a fatal error is of no use any more: its tables, reopening,
        // get a new one.
        consumers.retain(|s| s.consumer.context().fatal().is_none());
        consumers
            .iter()
            .find_map(|shared| Some((shared.clone(), shared.take(topic, self.cfg.tables_per_consumer)?)))
    }

    /// Each partition's share of `bytes` (KiB), counting the partitions of `topics` once, so
    /// every consumer's queues are alike. Until the broker can say, the floor; counted again
    /// for a consumer made after [`COUNT_HOLDOFF`].
    async fn queue_kb(&self, bytes: u64, topics: &[String]) -> u64 {
        // One count at a time: tables opening together wait for the first.
        let mut failed = self.count_failed.lock().await;
        if let Some(kb) = self.queue_kb.get() {
            return *kb;
        }
        if failed.is_some_and(|at| at.elapsed() < COUNT_HOLDOFF) {
            return MIN_PARTITION_QUEUE / 1024;
        }
        let cfg = self.cfg.clone();
        let wanted = topics.to_vec();
        let counted = match tokio::task::spawn_blocking(move || count_partitions(&cfg, &wanted)).await {
            Ok(counted) => counted.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let partitions = match counted {
            Ok(n) => n.max(1),
            Err(e) => {
                tracing::warn!("counting the topics' partitions for the prefetch budget: {e}; their queues are kept at the floor for now");
                *failed = Some(Instant::now());
                return MIN_PARTITION_QUEUE / 1024;
            }
        };
        let kb = (bytes / partitions / 1024).clamp(MIN_PARTITION_QUEUE / 1024, MAX_QUEUE_KB);
        if partitions * MIN_PARTITION_QUEUE > bytes {
            tracing::warn!(
                partitions, prefetch_kb = bytes / 1024,
                "the memory budget's Kafka part is too small for this many partitions: each partition's queue takes at \
                 least {} KiB; the process will use more than the budget",
                MIN_PARTITION_QUEUE / 1024
            );
        }
        tracing::info!(
            partitions,
            queue_each_kb = kb,
            "Kafka prefetch shared by the topics' partitions"
        );
        *self.queue_kb.get_or_init(|| async { kb }).await
    }
}

/// How many partitions `topics` have together (one for a topic the broker does not know yet).
fn count_partitions(cfg: &KafkaConfig, topics: &[String]) -> Result<u64, IngestError> {
    let mut c = ClientConfig::new();
    cfg.apply_connection(&mut c);
    let client: BaseConsumer = c.create().map_err(refused_config)?;
    let md = client.fetch_metadata(None, COUNT_TIMEOUT)?;
    let of = |topic: &String| {
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(1, |t| t.partitions().len().max(1) as u64)
    };
    Ok(topics.iter().map(of).sum())
}
