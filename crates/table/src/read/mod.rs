//! What a table holds: the live files of its head, its manifests (cached), the files a set of
//! snapshots reaches, the rows of its own data and delete files, and read-only summaries for
//! `calve status`, the demo and tests.

mod files;
pub mod inspect;
pub mod live;
pub mod manifests;
pub(crate) mod reachable;

pub use files::{ranged_parquet, read_data_file, read_deletes, DeleteMap};
