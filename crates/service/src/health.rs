//! Whether each table is doing its job, for `/readyz` and `calve_table_state`: an operator's
//! probe must turn unready when a table fails and ready again when it recovers, without
//! reading the log.

use std::fmt;
use std::time::Duration;

/// Where a table's pipeline is.
#[derive(Debug, Clone, PartialEq)]
pub enum TableState {
    /// Opening (claiming the table, reading the restore point), at start or after a failure
    /// or an approval.
    Starting,
    /// Consuming and committing.
    Running,
    /// The last attempt failed with a temporary error; the supervisor reopens the table after
    /// a backoff.
    Failing {
        /// Failures in a row.
        failures: u32,
        /// The last one.
        error: String,
    },
    /// Held for the approver at `hold` (`topic/partition@offset`).
    Held {
        /// Where.
        hold: String,
        /// When the hold began (ms since the epoch; it may predate this process).
        since_ms: i64,
    },
    /// Paused while a rebuild swaps itself in (everything read is committed; the table goes
    /// on from the swapped-in table afterwards).
    Paused {
        /// The rebuild's id.
        rebuild: String,
    },
    /// Stopped for good (a permanent error: the contract, the table or the format needs a
    /// person).
    Stopped {
        /// Why.
        error: String,
    },
    /// Committed by another process of the group (`[group]`): this one stands by and takes
    /// the table when the group gives it the table's commit duty.
    Standby,
    /// Shut down or caught up.
    Done,
}

impl TableState {
    /// Every state's name, as the `state` label of `calve_table_state`.
    pub const NAMES: [&'static str; 8] = [
        "starting", "running", "failing", "held", "paused", "stopped", "standby", "done",
    ];

    /// This state's name.
    pub fn name(&self) -> &'static str {
        match self {
            TableState::Starting => "starting",
            TableState::Running => "running",
            TableState::Failing { .. } => "failing",
            TableState::Held { .. } => "held",
            TableState::Paused { .. } => "paused",
            TableState::Stopped { .. } => "stopped",
            TableState::Standby => "standby",
            TableState::Done => "done",
        }
    }

    /// Whether a table `for_` in this state counts as ready: running, committed by another
    /// process of the group, or held for no longer than its freshness band (a hold is the
    /// contract working, until consumers notice it).
    pub fn ready(&self, for_: Duration, freshness: Duration) -> bool {
        match self {
            TableState::Running | TableState::Standby => true,
            TableState::Held { .. } | TableState::Paused { .. } => for_ <= freshness,
            _ => false,
        }
    }
}

impl fmt::Display for TableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableState::Failing { failures, error } => write!(f, "failing ({failures} in a row): {error}"),
            TableState::Held { hold, .. } => write!(f, "held at {hold} for the approver"),
            TableState::Paused { rebuild } => write!(f, "paused for the swap of rebuild {rebuild}"),
            TableState::Stopped { error } => write!(f, "stopped: {error}"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_tables_and_short_holds_are_ready() {
        let band = Duration::from_secs(60);
        let short = Duration::from_secs(5);
        let long = Duration::from_secs(61);
        assert!(TableState::Running.ready(long, band));
        assert!(TableState::Standby.ready(long, band));
        let held = TableState::Held {
            hold: "t/0@5".into(),
            since_ms: 0,
        };
        assert!(held.ready(short, band));
        assert!(!held.ready(long, band));
        for s in [
            TableState::Starting,
            TableState::Failing {
                failures: 1,
                error: "broker down".into(),
            },
            TableState::Stopped { error: "bad".into() },
            TableState::Done,
        ] {
            assert!(!s.ready(short, band), "{s}");
            assert!(TableState::NAMES.contains(&s.name()));
        }
    }
}
