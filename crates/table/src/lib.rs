//! The Iceberg side of calve: catalog access, data-file writers and the commit layer.
//!
//! This crate knows Iceberg and nothing of Kafka: it receives Arrow batches and a restore point
//! (opaque offsets) and turns them into correct snapshots. The commit layer is calve's own
//! because `iceberg` 0.10 exposes only fast-append; see [`commit`].

pub mod catalog;
pub mod commit;
pub mod deletes;
pub mod erase;
mod error;
pub mod inspect;
pub mod key_index;
pub mod live;
pub mod manifests;
pub mod orphans;
mod reachable;
pub mod read;
pub mod restore;
pub mod schema;
pub mod summary;
pub mod upsert;
pub mod writer;

pub use catalog::{Catalog, CatalogConfig, TableDefinition, TableState};
pub use error::{Result, TableError};
