//! Deterministic crash points for the chaos test.
//!
//! Random SIGKILLs rarely land inside the few milliseconds between two commits of one flush,
//! yet that is where exactly-once is hardest. With `CALVE_CRASH_AT=<point>[:<n>]` the process
//! aborts (like a SIGKILL: no flush, no destructors) the n-th time (default 1st) it reaches
//! `<point>`. Unset, every check is one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Where a flush can be cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Data files and dead-letter files written, nothing committed.
    FilesWritten,
    /// Dead letters committed, target table not yet.
    DeadLettersCommitted,
    /// Both tables committed, progress not yet reported to Kafka.
    BothCommitted,
}

impl CrashPoint {
    fn name(self) -> &'static str {
        match self {
            CrashPoint::FilesWritten => "after-files-written",
            CrashPoint::DeadLettersCommitted => "after-dead-letter-commit",
            CrashPoint::BothCommitted => "after-commit",
        }
    }
}

static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Aborts the process if the configured crash point is reached for the configured time.
pub fn crash_point(point: CrashPoint) {
    let plan = PLAN.get_or_init(|| {
        let v = std::env::var("CALVE_CRASH_AT").ok()?;
        let (name, n) = v
            .split_once(':')
            .map_or((v.as_str(), 1), |(a, b)| (a, b.parse().unwrap_or(1)));
        Some((name.to_string(), n))
    });
    let Some((name, n)) = plan else { return };
    if name == point.name() && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        eprintln!("CALVE_CRASH_AT: aborting at {name} (hit {n})");
        std::process::abort();
    }
}
