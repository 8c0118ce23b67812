//! The falls-behind signal: a table whose compaction debt grows cycle after cycle while the
//! budget is what holds jobs back will never catch up on its own. Someone must raise the
//! budget (or slow the band), and they need to be told which table and by how much.
//!
//! Debt that grows while jobs still fit the budget is not a signal: new small files arrive
//! below the planner's threshold all the time. Only growth with jobs deferred for budget, in
//! `window` consecutive cycles, is.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Consecutive cycles of growth under a spent budget that make a table "behind".
pub const DEFAULT_WINDOW: usize = 3;

/// One cycle's observation.
#[derive(Debug, Clone, Copy)]
struct Observation {
    at_ms: i64,
    debt: u64,
    rewritten: u64,
    deferred: bool,
}

/// A table that falls behind: what it owes and what it would need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behind {
    /// Bytes compaction would rewrite now.
    pub debt_bytes: u64,
    /// How fast the debt grew over the window, per hour.
    pub growth_bytes_per_hour: u64,
    /// The budget now, per hour.
    pub budget_bytes_per_hour: u64,
    /// The budget that would have kept the debt flat over the window, per hour.
    pub needed_bytes_per_hour: u64,
    /// Cycles the debt has grown in a row.
    pub cycles: usize,
}

/// Watches one table's debt across cycles.
#[derive(Debug, Clone)]
pub struct FallsBehind {
    window: usize,
    history: VecDeque<Observation>,
}

impl FallsBehind {
    /// A detector that fires after `window` consecutive cycles of growth.
    pub fn new(window: usize) -> Self {
        FallsBehind {
            window: window.max(1),
            history: VecDeque::new(),
        }
    }

    /// Records a cycle: the debt after it, bytes it rewrote, whether jobs waited for budget.
    /// Returns the signal when the table is behind.
    pub fn observe(
        &mut self,
        at_ms: i64,
        debt: u64,
        rewritten: u64,
        deferred: bool,
        budget_per_hour: u64,
    ) -> Option<Behind> {
        self.history.push_back(Observation {
            at_ms,
            debt,
            rewritten,
            deferred,
        });
        while self.history.len() > self.window + 1 {
            self.history.pop_front();
        }
        if self.history.len() <= self.window {
            return None;
        }
        let h: Vec<&Observation> = self.history.iter().collect();
        let growing = h.windows(2).all(|w| w[1].debt > w[0].debt && w[1].deferred);
        if !growing {
            return None;
        }
        let (first, last) = (h[0], h[h.len() - 1]);
        let hours = ((last.at_ms - first.at_ms).max(1) as f64) / 3_600_000.0;
        let growth = (last.debt - first.debt) as f64 / hours;
        let rewritten: u64 = h[1..].iter().map(|o| o.rewritten).sum();
        Some(Behind {
            debt_bytes: last.debt,
            growth_bytes_per_hour: growth as u64,
            budget_bytes_per_hour: budget_per_hour,
            needed_bytes_per_hour: (rewritten as f64 / hours + growth) as u64,
            cycles: self.window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_without_deferral_is_not_behind() {
        let mut s = FallsBehind::new(3);
        for i in 0..10 {
            assert_eq!(s.observe(i * 60_000, 100 * (i as u64 + 1), 0, false, 1000), None);
        }
    }

    #[test]
    fn growth_with_deferral_for_the_whole_window_is_behind() {
        let mut s = FallsBehind::new(3);
        let hour = 3_600_000;
        assert!(s.observe(0, 1000, 0, true, 500).is_none());
        assert!(s.observe(hour, 2000, 500, true, 500).is_none());
        assert!(s.observe(2 * hour, 3000, 500, true, 500).is_none());
        let b = s.observe(3 * hour, 4000, 500, true, 500).expect("behind");
        assert_eq!(b.growth_bytes_per_hour, 1000);
        assert_eq!(
            b.needed_bytes_per_hour, 1500,
            "what it rewrote plus what it fell behind"
        );
        // One cycle that catches up clears the signal.
        assert!(s.observe(4 * hour, 100, 4000, false, 500).is_none());
    }
}
