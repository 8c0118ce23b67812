//! The live half of `calve status`: what the running process knows of each table (its state,
//! why it fails, its SLA measurements) and nothing the table itself records, served as JSON at
//! `/status` so `calve status` (and an on-call person's own tooling) can put it beside what
//! the catalog says.

use serde::{Deserialize, Serialize};

use crate::health::TableState;
use crate::sla::SlaReport;
use crate::stats::Observed;

/// One table as the running process sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveTable {
    /// The table's name.
    pub table: String,
    /// `starting`, `running`, `behind` (running, and its freshness SLA is breached), `held`,
    /// `failing`, `stopped` or `done`.
    pub state: String,
    /// The state with its reason (`failing (3 in a row): …`).
    pub detail: String,
    /// How long the table has been in it.
    pub for_seconds: u64,
    /// Whether `/readyz` counts it as ready.
    pub ready: bool,
    /// Its SLA measurements.
    pub sla: SlaReport,
}

/// Every table of `observed`, judged at `now_ms`.
pub fn live_tables(observed: &Observed, now_ms: i64) -> Vec<LiveTable> {
    observed
        .iter()
        .map(|(name, t)| {
            let (state, for_) = t.state();
            let sla = t.sla.report(now_ms);
            let name_of = match (&state, sla.freshness.breached) {
                (TableState::Running, true) => "behind",
                (s, _) => s.name(),
            };
            LiveTable {
                table: name.clone(),
                state: name_of.to_string(),
                detail: state.to_string(),
                for_seconds: for_.as_secs(),
                ready: state.ready(for_, t.freshness()),
                sla,
            }
        })
        .collect()
}
