//! The table contract: one TOML file per table answering the eight questions a topic must answer
//! before it may become a table (keys, event time, late data, deletes, schema rules, maintenance
//! budget, owner, consumer SLAs), plus which topic feeds it.
//!
//! This crate only parses and validates; it does no IO so that `calve check`, the service and
//! tests all agree on what a valid contract is. Validation collects *every* problem with the
//! field path it concerns, because a person fixing a contract wants the whole list at once.

mod column_type;
pub mod dead_letter;
mod grain;
mod secret;
mod types;
mod units;
mod validate;

pub use column_type::{ColumnType, Element, StructField, TimeUnit};
pub use secret::{is_secret_name, redact_uri, redacted, Secret, REDACTED};
pub use types::*;
pub use units::{ByteRate, ByteSize, HumanDuration};
pub use validate::{Contract, ContractError, Problem, ResolvedColumn, SECTIONS};
