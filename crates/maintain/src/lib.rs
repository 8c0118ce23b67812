//! Table maintenance as a standing service: the table stays as fast to read as a freshly
//! written one, whatever the freshness band made of it.
//!
//! Every commit at a short band adds a small file per partition, a manifest, a snapshot and a
//! metadata file; every upsert adds position deletes readers must merge. A [`Maintainer`] pays
//! that debt back, one table at a time, inside a budget of bytes rewritten per hour:
//!
//! - [`plan`] measures the debt (small files, deletes, per partition) and proposes compaction
//!   jobs ranked by read speed bought per byte rewritten;
//! - [`compact`] runs the jobs that fit the [`budget`]: rows minus deletes, sorted, written to
//!   target-size files, swapped in as one `replace` snapshot;
//! - [`merge_deletes`] merges the delete files of each partition into one, so a table whose
//!   updates are spread thin pays one extra file per partition, not one per commit;
//! - the cycle also expires snapshots (the restore point always kept), regroups manifests by
//!   partition, and removes orphans older than the safety age;
//! - [`signal`] watches whether the debt keeps growing at this budget and says loudly what
//!   budget the table would need; [`status`] records it where `calve status` reads it.
//!
//! Nothing here blocks ingestion: every change is a compare-and-swap commit through the commit
//! layer, validated against the table as it is at commit time.

pub mod backlog;
pub mod budget;
pub mod compact;
mod cycle;
mod error;
pub mod merge_deletes;
pub mod metadata_budget;
pub mod plan;
pub mod signal;
pub mod status;

pub use cycle::{human_bytes, CycleReport, Maintainer, MaintenancePolicy, NoProgress, Progress};
pub use error::{MaintainError, Result};
pub use metadata_budget::MetadataBudget;
