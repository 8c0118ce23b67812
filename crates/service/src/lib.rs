//! The running service: one actor per table (its pipeline), a supervisor that restarts
//! pipelines after temporary failures, and graceful shutdown. This crate wires `ingest` to
//! `table`; it parses no formats and writes no files itself.

mod buffer;
mod config;
mod definition;
mod duty;
mod erase;
mod erasure_log;
mod error;
mod faults;
mod health;
mod hold;
mod http;
mod interpolate;
mod lost_records;
mod maintenance;
mod maintenance_threads;
mod memory;
mod partitioning;
mod pipeline;
mod preflight;
mod rebuild;
mod registry_check;
mod sink;
mod size_trigger;
mod sla;
mod sla_watch;
mod stats;
mod status_page;
mod supervisor;
mod target;
mod watermark;

pub use config::{MaintenanceConfig, RunConfig};
pub use definition::{dead_letter_definition, table_definition};
pub use duty::{Duty, GroupConfig};
pub use erase::{erase_keys, ErasureOutcome};
pub use erasure_log::{key_hmac, ErasureConfig, ErasureLog};
pub use error::ServiceError;
pub use health::TableState;
pub use hold::{decide_hold, schema_holds};
pub use http::{ask_status, bind as bind_http, install_exporter, readiness, serve as serve_http, HttpConfig};
pub use maintenance::maintain;
pub use maintenance_threads::MaintenanceThreads;
pub use memory::{MemoryBudget, MemoryConfig, Pressure};
pub use pipeline::{Pipeline, StopWhen, Tables};
pub use preflight::{check_schema_against_table, SchemaCheck};
pub use rebuild::{abandon as abandon_rebuild, rebuild, Abandoned, Loss, ReadFrom, RebuildOutcome, RebuildRequest};
pub use registry_check::{check_registry_schema, RegistryCheck, RegistryVerdict};
pub use sla::{CompletenessReport, FreshnessReport, SlaReport, SlaTerms, SlaTracker};
pub use stats::{Observed, TableStats};
pub use status_page::LiveTable;
pub use supervisor::{run_tables, Outcomes, Services};

// What the `calve` binary needs of the crates below, so that it depends on this crate (and on
// `contract` for `calve check`) and the dependency graph keeps pointing one way.
pub use calve_ingest::registry::Registry;
pub use calve_maintain::metadata_budget::WARN_SNAPSHOTS;
pub use calve_maintain::{
    human_bytes, status as maintenance_status, CycleReport, Maintainer, MaintenancePolicy, MetadataBudget, Progress,
};
pub use calve_table::commit::event_time::format_instant;
pub use calve_table::commit::hold::{Action, Applied, Hold, HoldState, Proposed};
pub use calve_table::commit::swap::RebuildMark;
pub use calve_table::ops::erase::ErasureReport;
pub use calve_table::read::inspect::{scan_all, summarize, TableSummary};
pub use calve_table::{Catalog, TableDefinition};
