//! Membership in the Kafka consumer group through which several calve processes share their
//! tables' commit duty (`[group]` in `calve.toml`).
//!
//! Kafka already elects, balances and detects dead members for consumer groups; calve rides on
//! that instead of a consensus of its own. Every process subscribes, under one group, to a
//! *duty topic* that nobody writes to: partition `i` of it stands for table `i`, and the process
//! the group assigns that partition commits that table. The topic is never read; its partitions
//! are tokens. Safety does not rest on the group: a table's writer epoch fences any process
//! that commits after another claimed the table, so an assignment that briefly overlaps (a
//! member that froze past its session timeout) costs a reopen, never a row.
//!
//! The assignor is librdkafka's `roundrobin`, an eager protocol: partition `p` goes to the
//! `p mod N`-th member, so tables on partitions `0..T` spread evenly. The cooperative protocol
//! would spare the revocations, but the broker the tests run on (tansu 0.6) hands out
//! overlapping cooperative assignments; revocations cost nothing here anyway, since the
//! service acts on the new assignment only and leaves a table that stays with it running.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::error::IngestError;
use crate::source::{refused_config, KafkaConfig};

/// How the group is joined.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// The duty topic (made with `partitions` partitions when missing).
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Partitions the duty topic needs: one per table.
    pub partitions: i32,
    /// A member not heard from this long is dropped and its tables go to the others.
    pub session_timeout: Duration,
}

/// The duty topic's partitions a new topic gets at least, so contracts added later find
/// theirs without growing it (not every broker can).
const MIN_PARTITIONS: i32 = 64;
/// How long one poll of the membership thread blocks: the longest a shutdown waits for it.
const POLL: Duration = Duration::from_millis(200);

/// How long dropping a [`DutyGroup`] waits for the leave to reach the broker.
const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// The group's word on this process: its share of the duty topic's partitions, and a count of
/// every rebalance it went through (so a caller can tell "still mine" from "lost and given
/// back" even when it missed the value in between).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Share {
    /// Rebalances seen (assignments, revocations, lost sessions).
    pub generation: u64,
    /// The partitions; `None` before the first assignment.
    pub partitions: Option<BTreeSet<i32>>,
}

/// This process's membership: which of the duty topic's partitions the group gives it. Leaves
/// the group when dropped, so the others take its tables over at once instead of after the
/// session timeout.
pub struct DutyGroup {
    share: watch::Receiver<Share>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Told when the membership thread has left the group (a `Mutex` only to be `Sync`).
    left: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

struct DutyContext {
    group: String,
    share: watch::Sender<Share>,
}

impl DutyContext {
    /// Counts a rebalance, with the new partitions when it changed them.
    fn publish(&self, partitions: Option<BTreeSet<i32>>) {
        self.share.send_modify(|s| {
            s.generation += 1;
            if let Some(p) = partitions {
                s.partitions = Some(p);
            }
        });
    }
}

impl ClientContext for DutyContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(group = %self.group, "librdkafka (commit duty group): {error}: {reason}");
    }
}

impl ConsumerContext for DutyContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // An eager assignment is the whole new share.
            Rebalance::Assign(tpl) => {
                let share: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, partitions = ?share, "commit duty assigned");
                self.publish(Some(share));
            }
            // A session the group dropped (this process froze, or was cut off): its tables are
            // someone else's already.
            Rebalance::Revoke(_) if consumer.assignment_lost() => {
                tracing::warn!(group = %self.group, "the group dropped this process: its tables go to the others");
                self.publish(Some(BTreeSet::new()));
            }
            // An ordinary revocation is counted, not acted on: what stays with this process
            // keeps running through the rebalance.
            Rebalance::Revoke(_) => self.publish(None),
            Rebalance::Error(e) => tracing::warn!(group = %self.group, "commit duty rebalance failed: {e}"),
        }
    }
}

impl DutyGroup {
    /// Makes the duty topic when it is missing, checks it has a partition per table, and
    /// joins the group. The share arrives later, on [`DutyGroup::assigned`].
    pub async fn join(cfg: &KafkaConfig, s: &GroupSettings) -> Result<Self, IngestError> {
        let mut c = ClientConfig::new();
        cfg.apply_connection(&mut c);
        let has = ensure_topic(&c, &s.topic, s.partitions.max(MIN_PARTITIONS), "duty").await?;
        if has < s.partitions {
            return Err(IngestError::Config(format!(
                "the duty topic {} has {has} partitions and the contracts name {} tables: give it at least {} \
                 (kafka-topics --alter --partitions), or name a new topic in [group] topic",
                s.topic, s.partitions, s.partitions
            )));
        }
        c.set("group.id", &s.group)
            .set("partition.assignment.strategy", "roundrobin")
            .set("session.timeout.ms", s.session_timeout.as_millis().to_string())
            // Also the rebalance timeout: how long the group waits for a member that died
            // mid-rebalance before it deals the partitions again without it (Kafka's default
            // is 5 minutes of tables nobody commits). This consumer polls every 200 ms.
            .set(
                "max.poll.interval.ms",
                (s.session_timeout.as_millis() * 2).max(10_000).to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (s.session_timeout.as_millis() / 4).max(100).to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let (tx, rx) = watch::channel(Share::default());
        let context = DutyContext {
            group: s.group.clone(),
            share: tx,
        };
        let consumer: BaseConsumer<DutyContext> = c.create_with_context(context).map_err(refused_config)?;
        consumer.subscribe(&[&s.topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let (left_tx, left) = std::sync::mpsc::channel();
        // Polling serves the heartbeats and rebalances; the topic has no records to hand out.
        let thread = std::thread::Builder::new()
            .name("calve-duty-group".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    if let Some(Err(e)) = consumer.poll(POLL) {
                        tracing::debug!("commit duty group: {e}");
                    }
                }
                // Leaving at once hands the tables over without waiting for the timeout.
                consumer.unsubscribe();
                let _ = consumer.poll(POLL);
                drop(consumer);
                let _ = left_tx.send(());
            })
            .map_err(|e| IngestError::Config(format!("starting the group thread: {e}")))?;
        Ok(DutyGroup {
            share: rx,
            stop,
            thread: Some(thread),
            left: std::sync::Mutex::new(left),
        })
    }

    /// What the group gives this process, updated with every rebalance.
    pub fn share(&self) -> watch::Receiver<Share> {
        self.share.clone()
    }
}

impl Drop for DutyGroup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A coordinator that cannot be reached must not hold up the exit: the others then
        // take the tables over after the session timeout instead.
        let left = self.left.lock().map(|l| l.recv_timeout(LEAVE_WAIT).is_ok());
        if left.unwrap_or(false) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Creates `topic` (calve's `purpose` topic) with `partitions` partitions when it is missing,
/// and says how many it has.
pub(crate) async fn ensure_topic(
    c: &ClientConfig,
    topic: &str,
    partitions: i32,
    purpose: &str,
) -> Result<i32, IngestError> {
    // A producer-side client lets the broker make a topic it is asked about, with the
    // broker's default partitions: never, here.
    let mut c = c.clone();
    c.set("allow.auto.create.topics", "false");
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(c.create().map_err(refused_config)?);
    // Asked first: where calve may not create topics, an operator makes it beforehand.
    let mut has = partition_count(admin.clone(), topic.to_string()).await?;
    if has == 0 {
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match admin.create_topics([&new], &options).await?.pop() {
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | Some(Ok(_)) | None => {}
            Some(Err((_, code))) => {
                return Err(IngestError::Config(format!(
                    "creating the {purpose} topic {topic}: {code} (create it with at least {partitions} partitions, \
                     or let calve)"
                )))
            }
        }
        // A new topic takes a moment to reach every broker's metadata.
        for _ in 0..20 {
            has = partition_count(admin.clone(), topic.to_string()).await?;
            if has > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(has)
}

/// The topic's partitions (0 while it does not exist).
async fn partition_count(admin: Arc<AdminClient<DefaultClientContext>>, topic: String) -> Result<i32, IngestError> {
    let count = tokio::task::spawn_blocking(move || -> Result<i32, KafkaError> {
        let md = admin.inner().fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32))
    })
    .await
    .map_err(|e| IngestError::Config(format!("asking for a topic's partitions: {e}")))??;
    Ok(count)
}
