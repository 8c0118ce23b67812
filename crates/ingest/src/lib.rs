//! The ingest stages of the data path: the Kafka source, decoding values into Arrow rows of the
//! table's schema, the contract's per-record rules (tombstones, late data) and dead letters.
//!
//! Nothing here knows Iceberg: the Arrow schema to decode into is handed in. A record that
//! cannot become a row becomes a [`DeadLetter`], never an error that stops the table.

mod control;
mod dead_letter;
mod debezium;
mod decode;
mod error;
mod group;
mod key;
mod late;
mod record;
pub mod registry;
mod route;
mod source;

pub use control::{ControlMessage, ControlTopic};
pub use dead_letter::{dead_letters_to_batch, DeadLetter, DeadLetterKind};
pub use decode::{framed, AvroDecoder, Decoded, Inferred, JsonDecoder, JsonSchemaDecoder, ProtobufDecoder, Rejected};
pub use error::IngestError;
pub use group::{DutyGroup, GroupSettings, Share};
pub use key::{key_candidates, KeyDecoder};
pub use late::{event_micros, split_late};
pub use record::KafkaRecord;
pub use route::{EventClock, Routed, Router};
pub use source::{KafkaClients, KafkaConfig, KafkaSource, PartitionEnds, MIN_PARTITION_QUEUE};
