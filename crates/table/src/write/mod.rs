//! Files that are not yet part of the table: Parquet data files (one per partition per commit)
//! and position-delete files. Nothing here commits; the commit layer makes written files
//! visible, and a file whose commit never happens is an orphan that maintenance removes.

pub mod conform;
pub mod data;
pub mod deletes;
