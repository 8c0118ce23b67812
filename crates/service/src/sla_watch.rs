//! Judges every table's SLA once a second on its own task, so a breach is logged within a
//! second of beginning even while the table's pipeline is stuck in a commit, a backoff or a
//! hold (a pipeline cannot report that it stopped reporting).

use std::time::Duration;

use tokio::sync::watch;

use crate::health::TableState;
use crate::stats::Observed;

const EVERY: Duration = Duration::from_secs(1);

/// Checks each table of `observed` every second until `shutdown` turns true; a table that is
/// done (shut down, caught up) is not judged.
pub async fn watch_slas(observed: Observed, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (_, t) in observed.iter() {
            // Another process of the group commits a standby table and judges its SLA.
            if !matches!(t.state().0, TableState::Done | TableState::Standby) {
                t.sla.check(now_ms);
            }
        }
    }
}
