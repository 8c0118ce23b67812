//! The Kafka source: reads a topic's partitions from offsets the *table* chose.
//!
//! Offsets come from the table's restore point, never from Kafka's committed offsets; calve
//! commits offsets back to the group only so that standard lag tooling shows progress.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calve_contract::redacted;
use futures::StreamExt;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use crate::error::IngestError;
use crate::record::KafkaRecord;

/// `[kafka]` in `calve.toml`. `Debug` shows secret properties (see
/// [`calve_contract::is_secret_name`]) as `<redacted>`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group calve reports progress under (for lag dashboards).
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Any librdkafka consumer property: security (`security.protocol = "SASL_SSL"`,
    /// `sasl.mechanism = "SCRAM-SHA-512"`, `sasl.username`, `sasl.password`, `ssl.ca.location`
    /// …), timeouts, fetch sizes. calve's own settings win where they matter for correctness
    /// (auto commit off, read_committed, the group id).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("properties", &redacted(&self.properties))
            .finish()
    }
}

/// A configuration librdkafka refused, said without the value (which may be a password).
pub(crate) fn refused_config(e: KafkaError) -> IngestError {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => IngestError::Config(format!("property `{key}`: {desc}")),
        other => IngestError::Config(other.to_string()),
    }
}

impl KafkaConfig {
    /// Sets what every client of this cluster needs in `c`: `[kafka] properties` (security,
    /// timeouts …) and the bootstrap servers.
    pub(crate) fn apply_connection(&self, c: &mut ClientConfig) {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        // The vendored OpenSSL looks for CA certificates where no distribution keeps them;
        // "probe" finds the system's store, so a publicly signed broker verifies out of the box.
        let tls = self
            .properties
            .get("security.protocol")
            .is_some_and(|p| p.to_ascii_lowercase().contains("ssl"));
        if tls && !self.properties.contains_key("ssl.ca.location") {
            c.set("ssl.ca.location", "probe");
        }
        c.set("bootstrap.servers", &self.brokers);
    }
}

fn default_group() -> String {
    "calve".into()
}

/// How often librdkafka reports its view of the topic (each partition's first and last
/// offsets), unless `statistics.interval.ms` is set in `[kafka] properties`.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// How long one metadata request of [`KafkaSource::first_partitions`] may take.
const METADATA_ATTEMPT: Duration = Duration::from_secs(1);

/// A partition's offsets as librdkafka last saw them in fetch responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionEnds {
    /// The first offset the broker still holds.
    pub low: i64,
    /// The offset a read-committed consumer reads up to (the last stable offset, else the
    /// high watermark).
    pub end: i64,
    /// When the broker leading the partition was last heard from (ms since the epoch): the
    /// ends are what the topic held then. `None` while librdkafka cannot say (no connection
    /// up, nothing received yet). Freshness is judged from it: a broker that stopped
    /// answering cannot show that the table holds everything the topic has.
    pub heard_ms: Option<i64>,
}

/// Keeps the partition ends librdkafka's statistics report, so lag is known without asking
/// the broker (which would cost a round trip per partition).
struct SourceContext {
    topic: String,
    ends: Arc<Mutex<BTreeMap<i32, PartitionEnds>>>,
    /// The client's last error callback ("Authentication: SASL SCRAM authentication failed…"),
    /// which says why a request timed out when the request's own error cannot.
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(topic = %self.topic, "librdkafka: {error}: {reason}");
        // "All brokers down" follows every refused connection; it must not hide the refusal.
        let consequence = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if let Ok(mut last) = self.last_error.lock() {
            if !consequence || last.is_none() {
                *last = Some(format!("{error}: {reason}"));
            }
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let Ok(mut ends) = self.ends.lock() else {
            return;
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (p, part) in &topic.partitions {
            // librdkafka lists an internal partition -1; offsets it has not learnt are -1.
            let end = if part.ls_offset >= 0 {
                part.ls_offset
            } else {
                part.hi_offset
            };
            if *p >= 0 && end >= 0 {
                let heard_ms =
                    leader_heard_ms(&statistics, part.leader, now_ms).or_else(|| ends.get(p).and_then(|e| e.heard_ms));
                ends.insert(
                    *p,
                    PartitionEnds {
                        low: part.lo_offset.max(0),
                        end,
                        heard_ms,
                    },
                );
            }
        }
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

impl ConsumerContext for SourceContext {}

/// A consumer for one topic, positioned by the caller.
pub struct KafkaSource {
    /// Shared with the blocking pool for the requests that wait for the broker.
    consumer: Arc<StreamConsumer<SourceContext>>,
    topic: Arc<str>,
    ends: Arc<Mutex<BTreeMap<i32, PartitionEnds>>>,
    last_error: Arc<Mutex<Option<String>>>,
    /// Set when a partition's next offset is out of the broker's range (see
    /// [`KafkaSource::take_out_of_range`]).
    out_of_range: AtomicBool,
}

impl KafkaSource {
    /// Creates the consumer (no partitions assigned yet).
    pub fn new(cfg: &KafkaConfig, topic: &str) -> Result<Self, IngestError> {
        let mut c = ClientConfig::new();
        c.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        if let Some(every) = cfg.properties.get("statistics.interval.ms") {
            tracing::warn!(
                %topic, every_ms = %every,
                "[kafka] properties sets statistics.interval.ms: lag and SLA freshness are measured only that often \
                 (0 turns the measurement off, and every table then counts as behind its freshness SLA)"
            );
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
        let ends = Arc::new(Mutex::new(BTreeMap::new()));
        let last_error = Arc::new(Mutex::new(None));
        let context = SourceContext {
            topic: topic.to_string(),
            ends: ends.clone(),
            last_error: last_error.clone(),
        };
        let consumer: StreamConsumer<SourceContext> = c.create_with_context(context).map_err(refused_config)?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            topic: topic.into(),
            ends,
            last_error,
            out_of_range: AtomicBool::new(false),
        })
    }

    /// The topic's partition ids before anything is assigned, waiting up to `timeout` for the
    /// broker. Between short attempts the consumer is polled, which serves librdkafka's error
    /// callbacks: a broker that refuses calve (a wrong password, an untrusted certificate)
    /// fails the wait with that reason rather than a bare "timed out".
    pub async fn first_partitions(&self, timeout: Duration) -> Result<Vec<i32>, IngestError> {
        let deadline = Instant::now() + timeout;
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
        let mut attempt = METADATA_ATTEMPT;
        loop {
            // Doubling, so a broker slow to answer metadata still gets the whole wait.
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self.partitions(attempt.min(left).max(METADATA_ATTEMPT)).await;
            attempt *= 2;
            match result {
                Err(IngestError::Kafka(e)) if Instant::now() < deadline => {
                    tracing::debug!(topic = %self.topic, "topic metadata: {e}; asking again");
                    // Nothing is assigned, so this hands out no record: it only runs callbacks.
                    let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
                }
                Err(IngestError::Kafka(e)) => {
                    let client = self.last_error.lock().ok().and_then(|l| l.clone());
                    return Err(match client {
                        Some(client) => IngestError::Unreachable { request: e, client },
                        None => IngestError::Kafka(e),
                    });
                }
                other => return other,
            }
        }
    }

    /// Per assigned partition, the offset after the last record handed to calve (or where
    /// reading starts): a local question, no broker round trip.
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        let Ok(tpl) = self.consumer.position() else {
            return BTreeMap::new();
        };
        tpl.elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    /// Each assigned partition's first and last offsets as librdkafka last reported them
    /// (empty until its first statistics, about a second after the first fetch).
    pub fn partition_ends(&self) -> BTreeMap<i32, PartitionEnds> {
        self.ends.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Runs a librdkafka request that blocks until the broker answers or `timeout` passes on
    /// the blocking pool: a slow or unreachable broker then holds up this table's pipeline
    /// only, never a runtime worker and the other tables' pipelines and `/metrics` on it.
    async fn ask_broker<T: Send + 'static>(
        &self,
        request: impl FnOnce(&StreamConsumer<SourceContext>, &str) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, IngestError> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        match tokio::task::spawn_blocking(move || request(&consumer, &topic)).await {
            Ok(answer) => Ok(answer?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a blocking task.
            Err(_) => Err(IngestError::Kafka(KafkaError::Canceled)),
        }
    }

    /// The topic's partition ids, from broker metadata.
    pub async fn partitions(&self, timeout: Duration) -> Result<Vec<i32>, IngestError> {
        let ids = self
            .ask_broker(move |c, topic| {
                let md = c.fetch_metadata(Some(topic), timeout)?;
                Ok(match md.topics().iter().find(|t| t.name() == topic) {
                    Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
                    _ => Vec::new(),
                })
            })
            .await?;
        match ids.is_empty() {
            true => Err(IngestError::TopicMissing(self.topic.to_string())),
            false => Ok(ids),
        }
    }

    /// Assigns `partitions`, each starting at `start[p]` or at the beginning when the table
    /// holds nothing of it yet.
    pub fn assign(&self, partitions: &[i32], start: &BTreeMap<i32, i64>) -> Result<(), IngestError> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let off = start.get(p).map(|o| Offset::Offset(*o)).unwrap_or(Offset::Beginning);
            tpl.add_partition_offset(&self.topic, *p, off)?;
        }
        self.consumer.assign(&tpl)?;
        Ok(())
    }

    /// Pauses (or resumes) every assigned partition: a paused partition is not fetched, so
    /// what the consumer holds stops growing, while polling goes on serving the client's
    /// callbacks (statistics, errors). Positions are kept.
    pub fn set_paused(&self, paused: bool) -> Result<(), IngestError> {
        let assigned = self.consumer.assignment()?;
        match paused {
            true => self.consumer.pause(&assigned)?,
            false => self.consumer.resume(&assigned)?,
        }
        Ok(())
    }

    /// Waits up to `wait` for records, returning at most `max` (possibly none).
    pub async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<KafkaRecord>, IngestError> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        // One stream for the whole poll: `recv()` makes one per record, and each registers
        // and unregisters a waker under a lock.
        let mut stream = self.consumer.stream();
        while out.len() < max {
            // After the first record only drain what librdkafka already holds, without a timer
            // per record (a tokio timer and two clock reads each cost more than the record).
            let next = match out.is_empty() {
                true => tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), stream.next())
                    .await
                    .ok()
                    .flatten(),
                false => ready_now(stream.next()).flatten(),
            };
            match next {
                None => break,
                // librdkafka reports broker hiccups as consumption errors and recovers by
                // itself; only errors it cannot recover from stop the table.
                // The partition stops fetching until it is positioned again; librdkafka does not
                // say which partition, so the pipeline compares positions with the broker's.
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    tracing::debug!(topic = %self.topic, "a partition's next offset is out of the broker's range");
                    self.out_of_range.store(true, Ordering::Relaxed);
                    break;
                }
                Some(Err(KafkaError::MessageConsumption(code))) if !is_fatal(code) => {
                    tracing::warn!(topic = %self.topic, "kafka consumer: {code} (librdkafka retries)");
                    break;
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => out.push(to_record(&m, &self.topic)),
            }
        }
        Ok(out)
    }

    /// Reports progress to the consumer group (for lag tools only; never read back).
    pub fn report_progress(&self, next: &BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            if tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o)).is_err() {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(topic = %self.topic, "progress report to the group failed: {e}");
        }
    }

    /// High watermark (next offset to be written) per partition.
    pub async fn high_watermarks(
        &self,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, i64>, IngestError> {
        Ok(self
            .watermarks(partitions, timeout)
            .await?
            .into_iter()
            .map(|(p, e)| (p, e.end))
            .collect())
    }

    /// The first offset the broker holds and the high watermark, per partition, asked of the
    /// broker (one round trip per partition).
    pub async fn watermarks(
        &self,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, PartitionEnds>, IngestError> {
        let partitions = partitions.to_vec();
        self.ask_broker(move |c, topic| {
            partitions
                .iter()
                .map(|p| {
                    let (low, end) = c.fetch_watermarks(topic, *p, timeout)?;
                    let heard_ms = Some(chrono::Utc::now().timestamp_millis());
                    Ok((*p, PartitionEnds { low, end, heard_ms }))
                })
                .collect()
        })
        .await
    }

    /// Per partition, the first offset whose record was written at or after `at_ms` (ms since
    /// the epoch); the high watermark when none was.
    pub async fn offsets_at(
        &self,
        partitions: &[i32],
        at_ms: i64,
        timeout: Duration,
    ) -> Result<BTreeMap<i32, i64>, IngestError> {
        let ends = self.high_watermarks(partitions, timeout).await?;
        // Nothing is written in the future; some brokers answer such a question with offset 0.
        if at_ms > chrono::Utc::now().timestamp_millis() {
            return Ok(ends);
        }
        let partitions = partitions.to_vec();
        let found = self
            .ask_broker(move |c, topic| {
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    tpl.add_partition_offset(topic, *p, Offset::Offset(at_ms))?;
                }
                c.offsets_for_times(tpl, timeout)
            })
            .await?;
        let mut out = BTreeMap::new();
        for e in found.elements() {
            let end = ends.get(&e.partition()).copied().unwrap_or(0);
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => end,
            };
            out.insert(e.partition(), at);
        }
        Ok(out)
    }

    /// Whether a poll since the last call met a partition whose next offset the broker no
    /// longer (or not yet) holds: that partition reads nothing until it is assigned again.
    pub fn take_out_of_range(&self) -> bool {
        self.out_of_range.swap(false, Ordering::Relaxed)
    }
}

fn is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
    )
}

fn to_record<M: Message>(m: &M, topic: &Arc<str>) -> KafkaRecord {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    KafkaRecord {
        // The source reads one topic; the name librdkafka hands back is that one.
        topic: Arc::clone(topic),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
    }
}

/// The output of `fut` if it is ready without waiting, else `None` (the future is dropped:
/// a record librdkafka had not yet handed over stays in its queue for the next poll).
fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
