//! Whole-table operations that are neither ingestion nor routine commits: erasure (every
//! version of a key removed from storage, and proven gone) and orphan cleanup (files no
//! retained metadata references).

pub mod erase;
pub mod orphans;
