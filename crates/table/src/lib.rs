//! The Iceberg side of calve: catalog access, data-file writers, keyed changes and the commit
//! layer.
//!
//! This crate knows Iceberg and nothing of Kafka: it receives Arrow batches and a restore point
//! (opaque offsets) and turns them into correct snapshots. The commit layer is calve's own
//! because `iceberg` 0.10 exposes only fast-append; see [`commit`].
//!
//! The folders follow a change through the crate:
//!
//! - [`catalog`]: where tables live (SQL or REST catalog), what a contract's table looks like
//!   in Iceberg ([`catalog::schema`]), and the atomic pointer swap that makes a version current;
//! - [`write`]: Parquet data files and position-delete files, written but not yet committed;
//! - [`keyed`]: keyed (upsert) tables: the key index that finds each key's live row, and the
//!   row delta that replaces it, retried against a fresh index when maintenance moved rows;
//! - [`commit`]: one file per snapshot operation (append, row delta, rewrite, expire, …), the
//!   restore point and writer epoch every snapshot carries, and snapshot summaries;
//! - [`read`]: what a table holds (live files, manifests, rows of its own files, summaries);
//! - [`ops`]: whole-table operations: erasure and orphan cleanup.

pub mod catalog;
pub mod commit;
mod error;
mod fault;
pub mod keyed;
pub mod ops;
pub mod read;
pub mod storage;
pub mod write;

pub use catalog::{Catalog, CatalogConfig, TableDefinition, TableState};
pub use error::{Result, TableError};
pub use fault::StorageFault;
