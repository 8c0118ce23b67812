//! The running service: one actor per table (its pipeline), a supervisor that restarts
//! pipelines after temporary failures, and graceful shutdown. This crate wires `ingest` to
//! `table`; it parses no formats and writes no files itself.

mod buffer;
mod config;
mod definition;
mod error;
mod faults;
mod maintenance;
mod pipeline;
mod sink;
mod stats;
mod supervisor;

pub use config::{MaintenanceConfig, RunConfig};
pub use definition::{dead_letter_definition, table_definition};
pub use error::ServiceError;
pub use pipeline::{Pipeline, StopWhen};
pub use stats::TableStats;
pub use supervisor::{run_tables, Outcomes, Services};
