//! The Kafka source: reads a topic's partitions from offsets the *table* chose.
//!
//! Offsets come from the table's restore point, never from Kafka's committed offsets; calve
//! commits offsets back to the group only so that standard lag tooling shows progress.

mod shared;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calve_contract::redacted;
use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{bindings, Offset, TopicPartitionList};
use serde::Deserialize;

use crate::error::IngestError;
use crate::record::KafkaRecord;
pub use shared::{KafkaClients, MIN_PARTITION_QUEUE};
use shared::{Shared, SharedContext, TopicFlags};

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
    /// How many tables read through one Kafka consumer (default 64). Fewer consumers cost
    /// fewer threads, connections and buffers; but every fetch request of a consumer lists
    /// all its tables' partitions, and one consumer's records arrive through one connection
    /// per broker, so a consumer for hundreds of tables fetches slowly.
    #[serde(default = "default_tables_per_consumer")]
    pub tables_per_consumer: usize,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("tables_per_consumer", &self.tables_per_consumer)
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

fn default_tables_per_consumer() -> usize {
    64
}

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

/// One table's reading of a topic, positioned by the caller, through a consumer it may share
/// with the process's other tables (see [`KafkaClients`]).
pub struct KafkaSource {
    shared: Arc<Shared>,
    topic: Arc<str>,
    /// The partitions assigned, and the queue each is read from.
    queues: Vec<(i32, StreamPartitionQueue<SharedContext>)>,
    /// What the consumer's own queue told this table.
    flags: Arc<TopicFlags>,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Err(e) = self.unassign() {
            tracing::warn!(topic = %self.topic, "giving the topic's partitions back to the consumer: {e}");
        }
        self.shared.release(&self.topic);
    }
}

impl KafkaClients {
    /// A source for one table's reading of `topic`, on a consumer that reads `topic` for
    /// no other table.
    pub async fn source(&self, topic: &str) -> Result<KafkaSource, IngestError> {
        let (shared, flags) = self.take(topic).await?;
        Ok(KafkaSource {
            shared,
            topic: topic.into(),
            queues: Vec::new(),
            flags,
        })
    }
}

impl KafkaSource {
    /// A source on a consumer of its own (no partitions assigned yet). Tables of a process
    /// take theirs from [`KafkaClients::source`] instead, to share consumers.
    pub async fn new(cfg: &KafkaConfig, topic: &str) -> Result<Self, IngestError> {
        KafkaClients::new(cfg.clone()).source(topic).await
    }

    fn consumer(&self) -> &StreamConsumer<SharedContext> {
        &self.shared.consumer
    }

    /// The topic's partition ids before anything is assigned, waiting up to `timeout` for the
    /// broker. A broker that refuses calve (a wrong password, an untrusted certificate) fails
    /// the wait with the reason the client's error callback gave rather than a bare "timed out".
    pub async fn first_partitions(&self, timeout: Duration) -> Result<Vec<i32>, IngestError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut attempt = METADATA_ATTEMPT;
        loop {
            // Doubling, so a broker slow to answer metadata still gets the whole wait.
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self.partitions(attempt.min(left).max(METADATA_ATTEMPT)).await;
            attempt *= 2;
            match result {
                Err(IngestError::Kafka(e)) if Instant::now() < deadline => {
                    tracing::debug!(topic = %self.topic, "topic metadata: {e}; asking again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(IngestError::Kafka(e)) => {
                    // A refusal met a moment before the table asked (the consumer is shared,
                    // its connections may be older than this wait) is as much the reason.
                    let since = started.checked_sub(timeout).unwrap_or(started);
                    return Err(match self.consumer().context().error_since(since) {
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
        let tpl = self.assigned();
        // rdkafka asks positions only for the whole assignment, which on a shared consumer is
        // every table's: asked per table and per poll, that grows with the square of the
        // table count. This asks for this table's partitions alone.
        // SAFETY: both pointers are valid for the call: the client lives in `self.shared`,
        // the list in `tpl`; librdkafka writes only the list's offsets and errors.
        let error = unsafe { bindings::rd_kafka_position(self.consumer().client().native_ptr(), tpl.ptr()) };
        if error != bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return BTreeMap::new();
        }
        tpl.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    /// The assigned partitions as a list (no offsets).
    fn assigned(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(self.queues.len());
        for (p, _) in &self.queues {
            tpl.add_partition(&self.topic, *p);
        }
        tpl
    }

    /// Each assigned partition's first and last offsets as librdkafka last reported them
    /// (empty until its first statistics, about a second after the first fetch).
    pub fn partition_ends(&self) -> BTreeMap<i32, PartitionEnds> {
        self.consumer().context().ends(&self.topic)
    }

    /// Runs a librdkafka request that blocks until the broker answers or `timeout` passes on
    /// the blocking pool: a slow or unreachable broker then holds up this table's pipeline
    /// only, never a runtime worker and the other tables' pipelines and `/metrics` on it.
    async fn ask_broker<T: Send + 'static>(
        &self,
        request: impl FnOnce(&StreamConsumer<SharedContext>, &str) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, IngestError> {
        let (shared, topic) = (self.shared.clone(), self.topic.clone());
        match tokio::task::spawn_blocking(move || request(&shared.consumer, &topic)).await {
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

    /// Assigns `partitions` (in place of those assigned before), each starting at `start[p]`
    /// or at the beginning when the table holds nothing of it yet. Each partition's queue is
    /// split off before the partition is assigned, so none of its records reaches the
    /// consumer's shared queue.
    pub fn assign(&mut self, partitions: &[i32], start: &BTreeMap<i32, i64>) -> Result<(), IngestError> {
        self.unassign()?;
        let mut tpl = TopicPartitionList::new();
        let mut queues = Vec::with_capacity(partitions.len());
        for p in partitions {
            let queue = self
                .shared
                .consumer
                .split_partition_queue(&self.topic, *p)
                .ok_or_else(|| IngestError::TopicMissing(format!("{}/{p}", self.topic)))?;
            queues.push((*p, queue));
            let off = start.get(p).map(|o| Offset::Offset(*o)).unwrap_or(Offset::Beginning);
            tpl.add_partition_offset(&self.topic, *p, off)?;
        }
        // Kept only once assigned: the partitions listed are the ones to give back.
        self.consumer().incremental_assign(&tpl)?;
        self.queues = queues;
        Ok(())
    }

    /// Takes this table's partitions off the shared consumer, running: librdkafka keeps a
    /// pause on the partition, not on the assignment, so the next table given a partition
    /// paused here would never read it.
    fn unassign(&mut self) -> Result<(), IngestError> {
        if self.queues.is_empty() {
            return Ok(());
        }
        let tpl = self.assigned();
        // Given back even when resuming fails: the next table on the topic must be able to
        // assign the partitions.
        let resumed = self.consumer().resume(&tpl);
        self.consumer().incremental_unassign(&tpl)?;
        self.queues.clear();
        Ok(resumed?)
    }

    /// Pauses (or resumes) every assigned partition: a paused partition is not fetched, so
    /// what the consumer holds for it stops growing. Positions are kept.
    pub fn set_paused(&self, paused: bool) -> Result<(), IngestError> {
        let assigned = self.assigned();
        match paused {
            true => self.consumer().pause(&assigned)?,
            false => self.consumer().resume(&assigned)?,
        }
        Ok(())
    }

    /// Waits up to `wait` for records, returning at most `max` (possibly none).
    pub async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<KafkaRecord>, IngestError> {
        if let Some(e) = self.consumer().context().fatal() {
            return Err(e.into());
        }
        self.check_strayed()?;
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        if self.queues.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(out);
        }
        // One stream over the partitions for the whole poll: `recv()` makes one per record,
        // and each registers and unregisters a waker under a lock.
        let mut stream = futures::stream::select_all(self.queues.iter().map(|(_, q)| q.stream()));
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
                    self.flags.out_of_range.store(true, Ordering::Relaxed);
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

    /// Reports progress to the consumer group (for lag tools only; never read back). On a
    /// shared consumer, librdkafka starts no table's new assignment while a commit is under
    /// way, so a group coordinator that does not answer slows the tables' opening and
    /// repositioning on that consumer (by up to the request timeout), never their reading.
    pub fn report_progress(&self, next: &BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            if tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o)).is_err() {
                return;
            }
        }
        if let Err(e) = self.consumer().commit(&tpl, CommitMode::Async) {
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
        self.flags.out_of_range.swap(false, Ordering::Relaxed)
    }

    /// An error when a record of this table reached the consumer's shared queue instead of its
    /// partition's (librdkafka should never do that): the records read after it must not be
    /// committed without it, so the table stops and reopens from its restore point.
    pub fn check_strayed(&self) -> Result<(), IngestError> {
        match self.flags.strayed.load(Ordering::Relaxed) {
            true => Err(IngestError::Strayed(self.topic.to_string())),
            false => Ok(()),
        }
    }
}

/// Whether a consumption error stops the client for good (librdkafka recovers from the rest).
pub(crate) fn is_fatal(code: RDKafkaErrorCode) -> bool {
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
