//! Files one process wrote for a table another process commits: what lets several processes
//! read one hot topic while the table keeps exactly one committer.
//!
//! A reader (a process given some of a topic's partitions) writes Parquet files for its
//! partitions and does not commit: it hands the files over, with the Kafka range they hold,
//! to the table's committer (the process with the table's commit duty). The committer takes
//! every hand-off that follows on from the table's restore point into one snapshot, which
//! moves the restore point past them. So the rule that makes one process exactly-once makes
//! many exactly-once too: a range enters the table only in the commit that moves the
//! restore point over it, and only if it starts where the table stands.
//!
//! Nothing here needs the hand-offs to arrive once or in order, or the readers and the
//! committer to agree on who reads what: a hand-off sent twice is found covered the second
//! time, one from a reader that lost its partitions to another (a rebalance) is stale once
//! the other's range is in, and a reader told "stale" reads again from the table's restore
//! point. Its files are then no part of the table; orphan cleanup removes them. A hand-off
//! the committer cannot read (a bug, a message cut short) is stale too, never an error: one
//! bad message must not stop a table.

use std::collections::BTreeMap;

use iceberg::spec::{
    deserialize_data_file_from_json, serialize_data_file_to_json, DataContentType, DataFile, TableMetadata,
};
use serde::{Deserialize, Serialize};

use super::lost::LostRange;
use super::restore::{self, Offsets};
use super::RestoreUpdate;
use crate::error::{Result, TableError};

/// A reader's files for one table and the Kafka range of one topic they hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The table's UUID as the reader loaded it: a table dropped and made again under the
    /// same name refuses files written for the old one.
    pub table_uuid: String,
    /// Who wrote the files (`host pid N`): where the answer goes.
    pub reader: String,
    /// The reader's number for this hand-off (it counts up), so an answer names what it
    /// answers.
    pub seq: u64,
    /// The topic the range is of.
    pub topic: String,
    /// For each partition of the range, the offset the table must hold for these files to
    /// follow on; a partition of `to` missing here follows on from a table that holds no
    /// offset for it (nothing read yet).
    pub from: BTreeMap<i32, i64>,
    /// For each partition, the next offset to read after these files: where the table stands
    /// once they are in.
    pub to: BTreeMap<i32, i64>,
    /// The schema the files were written with (the table must have it).
    pub schema_id: i32,
    /// The partition spec they were written with (the table's default when committed).
    pub spec_id: i32,
    /// The data files, each as Iceberg's JSON form of a manifest entry's file.
    pub files: Vec<String>,
    /// Fields the range's records carried that the table has no column for, with counts.
    #[serde(default)]
    pub unknown_fields: BTreeMap<String, u64>,
    /// Gaps in the range: records Kafka deleted before they were read.
    #[serde(default)]
    pub lost_records: Vec<LostRange>,
}

impl Handoff {
    /// A hand-off of `files`, written against `meta` (the table as the reader loaded it), for
    /// the range `from`..`to` of `topic`.
    pub fn new(
        meta: &TableMetadata,
        reader: &str,
        seq: u64,
        topic: &str,
        from: BTreeMap<i32, i64>,
        to: BTreeMap<i32, i64>,
        files: Vec<DataFile>,
    ) -> Result<Self> {
        let spec = meta.default_partition_spec();
        let partition_type = spec.partition_type(meta.current_schema())?;
        let files = files
            .into_iter()
            .map(|f| serialize_data_file_to_json(f, &partition_type, meta.format_version()))
            .collect::<iceberg::Result<Vec<_>>>()?;
        Ok(Handoff {
            table_uuid: meta.uuid().to_string(),
            reader: reader.to_string(),
            seq,
            topic: topic.to_string(),
            from,
            to,
            schema_id: meta.current_schema_id(),
            spec_id: spec.spec_id(),
            files,
            unknown_fields: BTreeMap::new(),
            lost_records: Vec::new(),
        })
    }

    /// The data files, read back against the table as the committer has it.
    pub fn data_files(&self, meta: &TableMetadata) -> Result<Vec<DataFile>> {
        let invalid = |reason: String| TableError::InvalidData {
            table: self.table_uuid.clone(),
            reason,
        };
        let schema = meta.schema_by_id(self.schema_id).ok_or_else(|| {
            invalid(format!(
                "the table has no schema {}, which the files were written with",
                self.schema_id
            ))
        })?;
        let spec = meta
            .partition_spec_by_id(self.spec_id)
            .filter(|_| self.spec_id == meta.default_partition_spec_id())
            .ok_or_else(|| {
                invalid(format!(
                    "the files were written with partition spec {}, the table writes with {}",
                    self.spec_id,
                    meta.default_partition_spec_id()
                ))
            })?;
        let partition_type = spec.partition_type(schema)?;
        let location = format!("{}/", meta.location().trim_end_matches('/'));
        let file = |json: &String| -> Result<DataFile> {
            let f = deserialize_data_file_from_json(json, self.spec_id, &partition_type, schema)?;
            if f.content_type() != DataContentType::Data {
                return Err(invalid(format!("{} is not a data file", f.file_path())));
            }
            if !f.file_path().starts_with(&location) {
                return Err(invalid(format!("{} is outside the table's location", f.file_path())));
            }
            Ok(f)
        };
        self.files.iter().map(file).collect()
    }

    /// Encodes it for the control topic.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and maps with integer keys: nothing serde_json refuses.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a control-topic message.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// What became of a hand-off. Every verdict of a round is sent once the commit of the round
/// landed (covered and stale are judged with the round's taken hand-offs in), or not at all
/// when it failed: the readers then send again and the next round judges afresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged: serde cannot read integer map keys back inside an internally tagged enum.
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Its files are in the commit being made (the reader hears so once that commit lands).
    Taken,
    /// The table holds its whole range already, from this hand-off sent before or from
    /// another reader's: the reader drops those records and keeps its files (they may be
    /// the table's; orphan cleanup knows).
    Covered,
    /// It does not follow on from the table: the reader reads its partitions again from
    /// where the table stands; its files are not the table's.
    Stale {
        /// The table's offsets for the hand-off's partitions (a partition missing: the table
        /// holds none for it, read from the start).
        restore: BTreeMap<i32, i64>,
        /// Why, for the reader's log.
        reason: String,
    },
}

/// The committer's answer to one hand-off, sent once its verdict holds (a taken hand-off's
/// once the commit that took it landed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The reader that sent the hand-off.
    pub reader: String,
    /// Its number there.
    pub seq: u64,
    /// What became of it.
    pub verdict: Verdict,
}

impl Answer {
    /// Encodes it for the control topic.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a control-topic message.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// One commit's worth of hand-offs, gathered against the table as it stands.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// Each hand-off's verdict, in the order given.
    pub verdicts: Vec<Verdict>,
    /// The files of the hand-offs taken, for one append.
    pub files: Vec<DataFile>,
    /// The restore point before and after them, with their unknown fields and gaps.
    pub restore: RestoreUpdate,
}

impl Gathered {
    /// Whether the commit would move the table at all.
    pub fn is_empty(&self) -> bool {
        self.restore.from == self.restore.to
    }
}

/// Judges `handoffs` (in the order they arrived) against `meta`, the table as its committer
/// last loaded it, whose topic is `topic`: a hand-off is taken when each of its partitions
/// starts where the table (with the hand-offs taken before it) stands, so one reader's
/// consecutive hand-offs chain within a commit, and of two readers' ranges over the same
/// offsets only the first goes in. The commit goes in only onto a table that still holds
/// what they were judged against ([`RestoreUpdate::exact`]).
pub fn gather(meta: &TableMetadata, topic: &str, handoffs: &[Handoff]) -> Result<Gathered> {
    let from = restore::restore_point(meta)?.unwrap_or_default();
    let mut to = from.clone();
    let mut verdicts = Vec::with_capacity(handoffs.len());
    let mut files = Vec::new();
    let mut unknown_fields = BTreeMap::new();
    let mut lost_records = Vec::new();
    for h in handoffs {
        let verdict = match judge(meta, topic, &to, h) {
            Ok(()) => match h.data_files(meta) {
                Ok(f) => {
                    files.extend(f);
                    let at = to.entry(h.topic.clone()).or_default();
                    at.extend(h.to.iter().map(|(p, o)| (*p, *o)));
                    restore::add_unknown_fields(&mut unknown_fields, &h.unknown_fields);
                    lost_records.extend(h.lost_records.iter().cloned());
                    Verdict::Taken
                }
                Err(e) => stale(&to, h, format!("its files cannot be read: {e}")),
            },
            Err(verdict) => verdict,
        };
        verdicts.push(verdict);
    }
    let restore = RestoreUpdate {
        unknown_fields,
        lost_records,
        exact: true,
        ..RestoreUpdate::new(from, to)
    };
    Ok(Gathered {
        verdicts,
        files,
        restore,
    })
}

/// `Ok` when `h` follows on from `at` (the table's offsets with the hand-offs taken so far);
/// otherwise the verdict it gets.
fn judge(meta: &TableMetadata, topic: &str, at: &Offsets, h: &Handoff) -> std::result::Result<(), Verdict> {
    if h.table_uuid != meta.uuid().to_string() {
        return Err(stale(
            at,
            h,
            format!("written for table {}, which is gone", h.table_uuid),
        ));
    }
    if h.topic != topic {
        return Err(stale(
            at,
            h,
            format!("its range is of topic {}, the table reads {topic}", h.topic),
        ));
    }
    if h.to.is_empty() {
        return Err(stale(at, h, "it names no partition".to_string()));
    }
    if let Some((p, o)) = h.to.iter().find(|&(p, o)| h.from.get(p).is_some_and(|f| f > o)) {
        return Err(stale(
            at,
            h,
            format!("partition {p} ends at offset {o}, before it starts"),
        ));
    }
    let held = at.get(&h.topic);
    let held = |p: &i32| held.and_then(|m| m.get(p)).copied();
    if h.to.iter().all(|(p, to)| held(p).is_some_and(|o| o >= *to)) {
        return Err(Verdict::Covered);
    }
    if let Some((p, _)) = h.to.iter().find(|&(p, _)| held(p) != h.from.get(p).copied()) {
        let start = |o: Option<i64>| o.map_or("the start".to_string(), |o| format!("offset {o}"));
        return Err(stale(
            at,
            h,
            format!(
                "partition {p} starts at {}, the table stands at {}",
                start(h.from.get(p).copied()),
                start(held(p))
            ),
        ));
    }
    Ok(())
}

fn stale(at: &Offsets, h: &Handoff, reason: String) -> Verdict {
    let held = at.get(&h.topic);
    let restore =
        h.to.keys()
            .filter_map(|p| held.and_then(|m| m.get(p)).map(|o| (*p, *o)))
            .collect();
    Verdict::Stale { restore, reason }
}
