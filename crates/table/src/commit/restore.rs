//! The exactly-once restore point: which Kafka offsets a table already holds.
//!
//! Every snapshot calve writes carries, in its summary, the next offset to read for each
//! topic-partition that feeds the table. On start calve reads it from the newest snapshot that
//! has it and seeks there, so Kafka's own committed offsets never decide what is replayed.
//! Operations that do not consume Kafka (maintenance) copy it forward, so expiring old
//! snapshots can never lose it.

use std::collections::BTreeMap;

use iceberg::spec::{Snapshot, TableMetadata};
use sha2::{Digest, Sha256};

use crate::error::{Result, TableError};

/// Summary key: JSON `{topic: {partition: next_offset}}`.
pub const OFFSETS_KEY: &str = "calve.offsets";
/// Summary key: deterministic id of the commit, to recognise a retried commit that landed.
pub const COMMIT_ID_KEY: &str = "calve.commit-id";
/// Summary key and table property: the owner's writer epoch.
pub const WRITER_EPOCH_KEY: &str = "calve.writer-epoch";
/// Summary key and table property: the process that committed the snapshot, and the one that
/// last claimed the table (`host pid N`), so a person can tell which of several processes
/// sharing the tables commits which.
pub const COMMITTER_KEY: &str = "calve.committer";

/// This process as [`COMMITTER_KEY`] names it.
pub fn committer_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host} pid {}", std::process::id())
    })
}

/// Next offset to read, per topic and partition.
pub type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// How far back to look for our own commit when an attempt's outcome is unknown. A commit
/// that landed is at most this many snapshots behind the head before we look again.
const COMMIT_ID_SEARCH_DEPTH: usize = 32;

/// The newest restore point in the table's main-branch history, if any. Snapshots written by
/// other engines carry none, so ancestry is walked until one is found.
pub fn restore_point(metadata: &TableMetadata) -> Result<Option<Offsets>> {
    for snapshot in ancestry(metadata) {
        if let Some(raw) = snapshot.summary().additional_properties.get(OFFSETS_KEY) {
            return parse_offsets(raw).map(Some).map_err(|reason| TableError::CorruptState {
                table: metadata.location().to_string(),
                reason: format!(
                    "snapshot {} has unreadable {OFFSETS_KEY}: {reason}",
                    snapshot.snapshot_id()
                ),
            });
        }
    }
    Ok(None)
}

/// Fields the table's records carried that it has no column for, counted by path since the
/// table began (a JSON object in the summary, carried forward like the restore point, so
/// `calve status`, a person and any engine can see what is being dropped).
pub const UNKNOWN_FIELDS_KEY: &str = "calve.unknown-fields";

/// The running count of unknown fields, from the snapshot that holds the restore point.
pub fn unknown_fields(metadata: &TableMetadata) -> Result<BTreeMap<String, u64>> {
    carried(metadata, UNKNOWN_FIELDS_KEY)
}

/// The newest main-branch snapshot that holds a restore point: what calve carries forward
/// with it lives in its summary.
pub(crate) fn restore_snapshot(metadata: &TableMetadata) -> Option<&Snapshot> {
    ancestry(metadata).find(|s| s.summary().additional_properties.contains_key(OFFSETS_KEY))
}

/// The JSON value under `key` that calve carries forward with the restore point (from the
/// snapshot that holds it; the default when none does).
pub(crate) fn carried<T: serde::de::DeserializeOwned + Default>(metadata: &TableMetadata, key: &str) -> Result<T> {
    let Some(snapshot) = restore_snapshot(metadata) else {
        return Ok(T::default());
    };
    match snapshot.summary().additional_properties.get(key) {
        None => Ok(T::default()),
        Some(raw) => serde_json::from_str(raw).map_err(|e| TableError::CorruptState {
            table: metadata.location().to_string(),
            reason: format!("snapshot {} has unreadable {key}: {e}", snapshot.snapshot_id()),
        }),
    }
}

/// Distinct unknown-field paths a table counts one by one; past them (producers that use keys
/// as data, such as ids or dates) the rest are counted together, so the summary that every
/// snapshot carries stays small.
pub const UNKNOWN_FIELDS_CAP: usize = 500;
/// The path under which unknown fields past the cap are counted.
pub const OTHER_UNKNOWN_FIELDS: &str = "(other fields)";

/// Adds the counts `from` to `into`, within [`UNKNOWN_FIELDS_CAP`].
pub fn add_unknown_fields(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (path, n) in from {
        let path = match into.contains_key(path) || into.len() < UNKNOWN_FIELDS_CAP {
            true => path.as_str(),
            false => OTHER_UNKNOWN_FIELDS,
        };
        *into.entry(path.to_string()).or_default() += n;
    }
}

/// The summary form of a count of unknown fields.
pub fn format_unknown_fields(counts: &BTreeMap<String, u64>) -> String {
    serde_json::to_string(counts).unwrap_or_default()
}

/// Whether a snapshot with this commit id is among the newest snapshots of main.
pub fn has_commit(metadata: &TableMetadata, commit_id: &str) -> bool {
    find_commit(metadata, commit_id).is_some()
}

/// The snapshot that landed `commit_id`, if it is among the recent ancestors of main.
pub fn find_commit(metadata: &TableMetadata, commit_id: &str) -> Option<i64> {
    ancestry(metadata)
        .take(COMMIT_ID_SEARCH_DEPTH)
        .find(|s| s.summary().additional_properties.get(COMMIT_ID_KEY).map(String::as_str) == Some(commit_id))
        .map(|s| s.snapshot_id())
}

/// Snapshots of the main branch from newest to oldest (stops where expiry cut the chain).
pub fn ancestry(metadata: &TableMetadata) -> impl Iterator<Item = &Snapshot> + '_ {
    let mut next = metadata.current_snapshot_id();
    std::iter::from_fn(move || {
        let s = metadata.snapshot_by_id(next?)?;
        next = s.parent_snapshot_id();
        Some(s.as_ref())
    })
}

/// Serialises offsets for the summary.
pub fn format_offsets(offsets: &Offsets) -> String {
    serde_json::to_string(offsets).expect("offsets serialise")
}

/// Parses offsets from the summary.
pub fn parse_offsets(raw: &str) -> std::result::Result<Offsets, String> {
    serde_json::from_str(raw).map_err(|e| e.to_string())
}

/// Deterministic commit id: the same owner committing the same offset range always produces
/// the same id, so a retry after an unknown outcome can tell whether the first try landed.
pub fn commit_id(table_uuid: &str, epoch: u64, from: &Offsets, to: &Offsets) -> String {
    let mut h = Sha256::new();
    h.update(table_uuid.as_bytes());
    h.update(epoch.to_be_bytes());
    h.update(format_offsets(from).as_bytes());
    h.update(format_offsets(to).as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The writer epoch recorded as a table property (0 when never claimed).
pub fn table_epoch(metadata: &TableMetadata) -> Result<u64> {
    match metadata.properties().get(WRITER_EPOCH_KEY) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| TableError::CorruptState {
            table: metadata.location().to_string(),
            reason: format!("table property {WRITER_EPOCH_KEY} = `{v}` is not a number"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_commit_ids_are_deterministic() {
        let mut o = Offsets::new();
        o.entry("orders".into()).or_default().insert(0, 42);
        o.entry("orders".into()).or_default().insert(3, 7);
        assert_eq!(parse_offsets(&format_offsets(&o)).unwrap(), o);
        let empty = Offsets::new();
        assert_eq!(commit_id("u", 1, &empty, &o), commit_id("u", 1, &empty, &o));
        assert_ne!(commit_id("u", 1, &empty, &o), commit_id("u", 2, &empty, &o));
        assert_ne!(commit_id("u", 1, &empty, &o), commit_id("u", 1, &o, &o));
    }
}
