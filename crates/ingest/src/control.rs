//! The control topic: how the processes of a group that read one hot topic hand the files they
//! wrote to each table's one committer, and hear back (the hand-off itself is
//! `calve_table::commit::handoff`; this is its transport).
//!
//! A Kafka topic, like the Iceberg Kafka Connect sink's, because the deployment runs Kafka
//! already and nothing else is shared. Every process reads the whole topic, from where it
//! ended when the process opened it: what was said before is nobody's business, since a
//! reader that heard no answer says it again and the committer judges every hand-off against
//! the table. So the topic's offsets are never committed and nothing about it needs to
//! survive a crash. Messages are keyed (a table's name, or a reader's), so one key's
//! messages keep their order on one partition.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::IngestError;
use crate::group::ensure_topic;
use crate::source::{is_fatal, refused_config, KafkaConfig};

/// Partitions a control topic is made with: keys spread over them, and a busy table's
/// messages do not queue behind another's.
const PARTITIONS: i32 = 16;
/// How long a send may wait for the broker before it fails (the sender says it again).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long learning where the topic ends may take.
const ENDS_TIMEOUT: Duration = Duration::from_secs(10);

/// A message on the control topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage {
    /// Who it is for or about (a table, a reader).
    pub key: String,
    /// What it says (the caller's encoding).
    pub payload: Vec<u8>,
}

/// One process's end of the control topic: it sends, and reads what every process sends from
/// the moment it opened.
pub struct ControlTopic {
    topic: String,
    producer: FutureProducer,
    consumer: Arc<StreamConsumer>,
}

impl ControlTopic {
    /// Opens `topic` on `cfg`'s cluster, making it when it is missing, and starts reading it at
    /// its current end.
    pub async fn open(cfg: &KafkaConfig, topic: &str) -> Result<Self, IngestError> {
        let mut c = ClientConfig::new();
        cfg.apply_connection(&mut c);
        let partitions = ensure_topic(&c, topic, PARTITIONS, "control").await?;
        if partitions == 0 {
            return Err(IngestError::TopicMissing(topic.to_string()));
        }
        let producer: FutureProducer = c
            .clone()
            // A hand-off is small and waits for an answer: send it at once, and only once the
            // broker holds it everywhere it should.
            .set("linger.ms", "5")
            .set("acks", "all")
            // The whole wait for the broker (librdkafka's default is 5 minutes); the sender
            // says it again later.
            .set("message.timeout.ms", SEND_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(refused_config)?;
        let consumer: Arc<StreamConsumer> = c
            // Never joined or committed under: the topic is read by assignment, whole.
            .set("group.id", format!("{}.control-reader", cfg.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map(Arc::new)
            .map_err(refused_config)?;
        let control = ControlTopic {
            topic: topic.to_string(),
            producer,
            consumer,
        };
        control.read_from_end(partitions).await?;
        Ok(control)
    }

    /// Assigns every partition at its end now (asked of the broker, not `Offset::End`, which is
    /// resolved only at the first fetch: a message sent after `open` returned would be skipped).
    async fn read_from_end(&self, partitions: i32) -> Result<(), IngestError> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        // Broker round trips: on the blocking pool, never on a runtime worker.
        let assigned = tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                let (_, end) = consumer.fetch_watermarks(&topic, p, ENDS_TIMEOUT)?;
                tpl.add_partition_offset(&topic, p, Offset::Offset(end))?;
            }
            consumer.assign(&tpl)
        })
        .await;
        match assigned {
            Ok(done) => Ok(done?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(IngestError::Kafka(KafkaError::Canceled)),
        }
    }

    /// Sends `payload` under `key`; returns once the broker holds it. A sender that awaits
    /// each send before the next keeps its messages of one key in order (no idempotent
    /// producer needed, which not every broker offers).
    pub async fn send(&self, key: &str, payload: &[u8]) -> Result<(), IngestError> {
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        // The wait for room in the client's queue; the wait for the broker is the producer's
        // message timeout.
        match self.producer.send(record, SEND_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.into()),
        }
    }

    /// The next message any process sent, waiting up to `wait` (`None`: nothing came).
    pub async fn recv(&self, wait: Duration) -> Result<Option<ControlMessage>, IngestError> {
        let mut stream = self.consumer.stream();
        match tokio::time::timeout(wait, stream.next()).await {
            Err(_) | Ok(None) => Ok(None),
            // librdkafka recovers from broker hiccups by itself.
            Ok(Some(Err(KafkaError::MessageConsumption(code)))) if !is_fatal(code) => {
                tracing::warn!(topic = %self.topic, "control topic: {code} (librdkafka retries)");
                Ok(None)
            }
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(m))) => Ok(Some(ControlMessage {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: m.payload().unwrap_or_default().to_vec(),
            })),
        }
    }
}
