//! A table's schema hold, its approver's decision and what approvers decided before, kept in
//! the table's own properties.
//!
//! Keeping them in the table (not in a file beside the process) means every calve process and
//! every `calve schema …` command sharing the catalog sees the same hold, a restart (kill -9
//! included) finds the table still held at the same offset, and an approval applies in the
//! same metadata update as the schema change it approves: no crash can leave one without the
//! other.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use serde::{Deserialize, Serialize};

use super::MetadataUpdate;
use crate::error::{Result, TableError};

/// Property: the hold the table is under (JSON [`Hold`]); absent when the table runs.
pub const HOLD_KEY: &str = "calve.schema.hold";
/// Property: the approver's decision on the hold (JSON [`Decision`]), until applied.
pub const DECISION_KEY: &str = "calve.schema.decision";
/// Property: decisions applied so far (JSON list of [`Applied`]), newest last.
pub const DECISIONS_KEY: &str = "calve.schema.decisions";
/// Property: breaches the approver rejected (JSON list of [`Rejection`]) still ahead of the
/// restore point.
pub const REJECTIONS_KEY: &str = "calve.schema.rejections";

/// The kind of a hold on a breaking contract edit (rather than on a record).
pub const CONTRACT_EDIT: &str = "contract-edit";

/// Decisions kept in [`DECISIONS_KEY`]: the newest; older ones stay in the metadata log.
const DECISIONS_KEPT: usize = 20;

/// Why a table stopped: the first record that broke its schema, and what calve proposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// `topic/partition@offset` of the first offending record: the same record always gives
    /// the same id, so a restart that meets it again holds under the same id.
    pub id: String,
    /// When the hold began, milliseconds since the epoch.
    pub since_ms: i64,
    /// Where the first offending record is (for a contract edit: the topic, partition -1,
    /// offset -1).
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset: nothing at or past it in this partition is in the table.
    pub offset: i64,
    /// The column path it breaks (`qty`, `addr.zip`).
    pub path: String,
    /// The dead-letter kind it would have had (`schema-mismatch`, `missing-required`,
    /// `undeclared-field`), or [`CONTRACT_EDIT`].
    pub kind: String,
    /// Why, in words.
    pub reason: String,
    /// The record's value as text (cut at 512 bytes); empty for a contract edit.
    pub sample: String,
    /// What `calve schema approve` would change; empty when no schema change can admit the
    /// record (then only `reject` can resume the table).
    pub proposal: Vec<Proposed>,
    /// Who the contract names to decide.
    pub approver: String,
}

/// A schema change proposed to the approver, as it is stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Proposed {
    /// Add an optional column of a contract type (`long`, `struct<a: int>`).
    AddColumn {
        /// Name.
        name: String,
        /// Contract type text.
        #[serde(rename = "type")]
        ty: String,
    },
    /// Widen a column to a contract type (`long`, `double`, `decimal(20,2)`).
    Widen {
        /// Column.
        name: String,
        /// Contract type text.
        to: String,
    },
    /// Let a required column hold nulls.
    MakeOptional {
        /// Column.
        name: String,
    },
    /// Rename a column, keeping its field id.
    Rename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Drop a column from the table's schema.
    Drop {
        /// Column.
        name: String,
    },
}

impl std::fmt::Display for Proposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proposed::AddColumn { name, ty } => write!(f, "add optional column `{name}` {ty}"),
            Proposed::Widen { name, to } => write!(f, "widen `{name}` to {to}"),
            Proposed::MakeOptional { name } => write!(f, "make `{name}` optional"),
            Proposed::Rename { from, to } => write!(f, "rename `{from}` to `{to}`"),
            Proposed::Drop { name } => write!(f, "drop column `{name}`"),
        }
    }
}

/// What the approver decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Apply the proposal and resume.
    Approve,
    /// Send the held records to the dead-letter table and resume.
    Reject,
}

/// The approver's decision on one hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The hold decided on.
    pub hold_id: String,
    /// Approve or reject.
    pub action: Action,
    /// Who decided.
    pub by: String,
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
}

/// A decision as applied: the record `calve status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The decision.
    pub decision: Decision,
    /// The hold it resolved.
    pub hold: Hold,
    /// The schema id the table had after it (the same as before for a rejection).
    pub schema_id: i32,
}

/// Breaches the approver rejected: records breaking the schema the same way (same column
/// path and kind) below `through` go to the dead-letter table rather than holding the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The hold rejected.
    pub hold_id: String,
    /// Column path.
    pub path: String,
    /// Dead-letter kind.
    pub kind: String,
    /// Per partition, the end of the topic when the rejection applied.
    pub through: BTreeMap<i32, i64>,
}

impl Rejection {
    /// Whether a record at `partition`/`offset` breaking `path` as `kind` is covered.
    pub fn covers(&self, path: &str, kind: &str, partition: i32, offset: i64) -> bool {
        self.path == path && self.kind == kind && self.through.get(&partition).is_some_and(|t| offset < *t)
    }
}

/// Everything the table's properties say about schema holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HoldState {
    /// The current hold.
    pub hold: Option<Hold>,
    /// A decision not yet applied.
    pub decision: Option<Decision>,
    /// Decisions applied, oldest first.
    pub applied: Vec<Applied>,
    /// Rejections in force.
    pub rejections: Vec<Rejection>,
}

impl HoldState {
    /// Reads the state from `meta`'s properties.
    pub fn of(meta: &TableMetadata) -> Result<Self> {
        Ok(HoldState {
            hold: parse(meta, HOLD_KEY)?,
            decision: parse(meta, DECISION_KEY)?,
            applied: parse(meta, DECISIONS_KEY)?.unwrap_or_default(),
            rejections: parse(meta, REJECTIONS_KEY)?.unwrap_or_default(),
        })
    }

    /// Columns an approver made optional: records may lack them although the contract still
    /// says required.
    pub fn approved_optional(&self) -> Vec<String> {
        self.applied
            .iter()
            .filter(|a| a.decision.action == Action::Approve)
            .flat_map(|a| &a.hold.proposal)
            .filter_map(|p| match p {
                Proposed::MakeOptional { name } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// The decision on the current hold, if the approver has made one.
    pub fn decided(&self) -> Option<(&Hold, &Decision)> {
        let hold = self.hold.as_ref()?;
        let decision = self.decision.as_ref().filter(|d| d.hold_id == hold.id)?;
        Some((hold, decision))
    }
}

fn parse<T: for<'de> Deserialize<'de>>(meta: &TableMetadata, key: &str) -> Result<Option<T>> {
    meta.properties()
        .get(key)
        .map(|r| serde_json::from_str(r))
        .transpose()
        .map_err(|e| TableError::CorruptState {
            table: meta.location().to_string(),
            reason: format!("table property {key} is unreadable: {e}"),
        })
}

/// Sets and removes hold properties (one metadata update, so they change together).
#[derive(Debug, Clone, Default)]
pub struct SetHoldState {
    /// Properties to set.
    pub set: HashMap<String, String>,
    /// Properties to remove.
    pub remove: Vec<String>,
    /// Only when the table (at commit time) is held under this id with no decision yet: a
    /// decision read against an older hold, or racing another approver's, is refused rather
    /// than overwriting what the table holds now.
    pub undecided: Option<String>,
    /// Set when this puts the table under a new hold of this kind: refused if the table
    /// holds another hold, unless both are contract edits and the other is undecided (an
    /// edit replaced by a newer one). So neither a hold on records nor a decision is ever
    /// overwritten, whichever process writes.
    pub new_hold: Option<String>,
}

impl SetHoldState {
    /// Puts the table under `hold` (see [`SetHoldState::new_hold`] for when that is refused).
    pub fn hold(hold: &Hold) -> Self {
        SetHoldState {
            set: HashMap::from([(HOLD_KEY.to_string(), json(hold))]),
            remove: vec![DECISION_KEY.to_string()],
            undecided: None,
            new_hold: Some(hold.kind.clone()),
        }
    }

    /// Records the approver's `decision` on the current hold.
    pub fn decide(decision: &Decision) -> Self {
        SetHoldState {
            set: HashMap::from([(DECISION_KEY.to_string(), json(decision))]),
            remove: Vec::new(),
            undecided: Some(decision.hold_id.clone()),
            new_hold: None,
        }
    }

    /// Ends the hold in `state` as `applied`, keeping `rejections` in force.
    pub fn resolve(state: &HoldState, applied: Applied, rejections: &[Rejection]) -> Self {
        let mut log = state.applied.clone();
        log.push(applied);
        let cut = log.len().saturating_sub(DECISIONS_KEPT);
        log.drain(..cut);
        SetHoldState {
            set: HashMap::from([
                (DECISIONS_KEY.to_string(), json(&log)),
                (REJECTIONS_KEY.to_string(), json(&rejections)),
            ]),
            remove: vec![HOLD_KEY.to_string(), DECISION_KEY.to_string()],
            undecided: None,
            new_hold: None,
        }
    }

    /// Ends the hold `id` without a decision (the contract no longer asks for it); refused
    /// when the table holds another one, or the approver has decided this one meanwhile.
    pub fn clear(id: &str) -> Self {
        SetHoldState {
            set: HashMap::new(),
            remove: vec![HOLD_KEY.to_string(), DECISION_KEY.to_string()],
            undecided: Some(id.to_string()),
            new_hold: None,
        }
    }
}

impl MetadataUpdate for SetHoldState {
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        let now = HoldState::of(base)?;
        let refuse = |reason: String| TableError::InvalidData {
            table: base.location().to_string(),
            reason,
        };
        if let (Some(kind), Some(other)) = (&self.new_hold, &now.hold) {
            let replaceable = kind == CONTRACT_EDIT && other.kind == CONTRACT_EDIT && now.decided().is_none();
            if !replaceable {
                return Err(refuse(format!(
                    "the table is held at {} ({}); that hold must be decided first",
                    other.id, other.kind
                )));
            }
        }
        if let Some(id) = &self.undecided {
            match (&now.hold, &now.decision) {
                (Some(h), _) if &h.id != id => {
                    return Err(refuse(format!("the table is now held at {}, not {id}", h.id)))
                }
                (None, _) => return Err(refuse(format!("the hold at {id} has ended"))),
                (Some(_), Some(d)) if &d.hold_id == id => {
                    return Err(refuse(format!(
                        "{:?} by {} already decided the hold at {id}",
                        d.action, d.by
                    )))
                }
                _ => {}
            }
        }
        let builder = match self.set.is_empty() {
            true => builder,
            false => builder.set_properties(self.set.clone())?,
        };
        Ok(match self.remove.is_empty() {
            true => builder,
            false => builder.remove_properties(&self.remove)?,
        })
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_covers_only_its_breach_below_its_end() {
        let r = Rejection {
            hold_id: "t/0@5".into(),
            path: "qty".into(),
            kind: "schema-mismatch".into(),
            through: BTreeMap::from([(0, 10), (1, 3)]),
        };
        assert!(r.covers("qty", "schema-mismatch", 0, 9));
        assert!(!r.covers("qty", "schema-mismatch", 0, 10));
        assert!(!r.covers("qty", "missing-required", 0, 5));
        assert!(!r.covers("price", "schema-mismatch", 0, 5));
        assert!(
            !r.covers("qty", "schema-mismatch", 2, 0),
            "a partition the end did not name"
        );
    }

    #[test]
    fn proposals_round_trip_as_tagged_json() {
        let p = vec![
            Proposed::Widen {
                name: "qty".into(),
                to: "long".into(),
            },
            Proposed::AddColumn {
                name: "coupon".into(),
                ty: "struct<code: string>".into(),
            },
        ];
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""op":"widen""#), "{text}");
        assert_eq!(serde_json::from_str::<Vec<Proposed>>(&text).unwrap(), p);
    }
}
