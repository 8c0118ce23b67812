//! Deterministic faults for the chaos and isolation tests.
//!
//! Random SIGKILLs rarely land inside the few milliseconds between two commits of one flush,
//! yet that is where exactly-once is hardest. With `CALVE_CRASH_AT=<point>[:<n>]` the process
//! aborts (like a SIGKILL: no flush, no destructors) the n-th time (default 1st) it reaches
//! `<point>`; with `CALVE_PANIC_AT=<point>[:<n>]` it panics there instead, as a bug would, so
//! a test can watch the supervisor catch it. `CALVE_PANIC_ON=<text>` panics while routing any
//! record whose value contains `<text>`: a poison pill. Unset, every check is one relaxed
//! atomic load or a check of an empty option.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use calve_ingest::KafkaRecord;

/// Where a flush can be cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Data files and dead-letter files written, nothing committed.
    FilesWritten,
    /// Dead letters committed, target table not yet.
    DeadLettersCommitted,
    /// Both tables committed, progress not yet reported to Kafka.
    BothCommitted,
    /// Everything before a breach committed, the hold not yet written.
    BeforeHold,
    /// An approved schema change committed, no row after it yet.
    AfterApproval,
    /// A rebuild swapped the dead-letter table in, not the target table yet.
    BetweenSwaps,
}

impl CrashPoint {
    fn name(self) -> &'static str {
        match self {
            CrashPoint::FilesWritten => "after-files-written",
            CrashPoint::DeadLettersCommitted => "after-dead-letter-commit",
            CrashPoint::BothCommitted => "after-commit",
            CrashPoint::BeforeHold => "before-hold",
            CrashPoint::AfterApproval => "after-approval",
            CrashPoint::BetweenSwaps => "between-swaps",
        }
    }
}

static CRASH: OnceLock<Option<(String, u64)>> = OnceLock::new();
static CRASH_HITS: AtomicU64 = AtomicU64::new(0);
static PANIC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PANIC_HITS: AtomicU64 = AtomicU64::new(0);
static POISON: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process (`CALVE_CRASH_AT`) or panics (`CALVE_PANIC_AT`) if the configured point
/// is reached for the configured time.
pub fn crash_point(point: CrashPoint) {
    if planned(&CRASH, "CALVE_CRASH_AT", &CRASH_HITS, point) {
        eprintln!("CALVE_CRASH_AT: aborting at {}", point.name());
        std::process::abort();
    }
    if planned(&PANIC, "CALVE_PANIC_AT", &PANIC_HITS, point) {
        panic!("CALVE_PANIC_AT: panicking at {}", point.name());
    }
}

fn planned(plan: &OnceLock<Option<(String, u64)>>, var: &str, hits: &AtomicU64, point: CrashPoint) -> bool {
    let plan = plan.get_or_init(|| {
        let v = std::env::var(var).ok()?;
        let (name, n) = v
            .split_once(':')
            .map_or((v.as_str(), 1), |(a, b)| (a, b.parse().unwrap_or(1)));
        Some((name.to_string(), n))
    });
    let Some((name, n)) = plan else { return false };
    name == point.name() && hits.fetch_add(1, Ordering::Relaxed) + 1 == *n
}

/// Panics when a record's value contains `CALVE_PANIC_ON`'s text (a poison pill for the
/// isolation test).
pub fn panic_if_poisoned(records: &[KafkaRecord]) {
    let Some(marker) = POISON.get_or_init(|| std::env::var("CALVE_PANIC_ON").ok().filter(|m| !m.is_empty())) else {
        return;
    };
    let poisoned = records.iter().any(|r| {
        r.value
            .as_deref()
            .is_some_and(|v| v.windows(marker.len()).any(|w| w == marker.as_bytes()))
    });
    if poisoned {
        panic!("CALVE_PANIC_ON: a record carries `{marker}`");
    }
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (None, Some(s)) => s.clone(),
        _ => "a panic without a message".into(),
    }
}
