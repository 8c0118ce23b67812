//! The maintenance budget: bytes a table's compaction may rewrite per unit of time, as a token
//! bucket on a clock the caller passes in (so a simulated day runs in minutes).
//!
//! The bucket holds at most ten minutes of budget, or one target-size file if that is more,
//! so a job as large as the largest file compaction writes can always run eventually, and a
//! quiet hour does not turn into a burst that starves ingestion of the machine.

use std::time::Duration;

use calve_contract::ByteRate;

/// How much budget the bucket may save up.
const SAVE_UP: Duration = Duration::from_secs(600);

/// A token bucket of rewrite bytes.
#[derive(Debug, Clone)]
pub struct Budget {
    rate: ByteRate,
    capacity: f64,
    tokens: f64,
    at_ms: i64,
}

impl Budget {
    /// A full bucket at `now_ms`, refilling at `rate`.
    pub fn new(rate: ByteRate, target_file_size: u64, now_ms: i64) -> Self {
        let capacity = (rate.bytes_per_second() * SAVE_UP.as_secs_f64()).max(target_file_size as f64);
        Budget {
            rate,
            capacity,
            tokens: capacity,
            at_ms: now_ms,
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> ByteRate {
        self.rate
    }

    /// Takes `bytes` if the bucket holds them at `now_ms`.
    pub fn try_take(&mut self, bytes: u64, now_ms: i64) -> bool {
        self.refill(now_ms);
        if self.tokens < bytes as f64 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }

    /// Bytes available at `now_ms`.
    pub fn available(&mut self, now_ms: i64) -> u64 {
        self.refill(now_ms);
        self.tokens as u64
    }

    fn refill(&mut self, now_ms: i64) {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate.bytes_per_second()).min(self.capacity);
        self.at_ms = self.at_ms.max(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bytes: u64) -> ByteRate {
        ByteRate {
            bytes,
            per: Duration::from_secs(3600),
        }
    }

    #[test]
    fn refills_at_the_rate_and_caps_at_ten_minutes() {
        let mut b = Budget::new(rate(3600 * 1000), 1, 0); // 1000 B/s, cap 600,000
        assert!(b.try_take(600_000, 0));
        assert!(!b.try_take(1, 0));
        assert_eq!(b.available(1_000), 1_000);
        assert_eq!(b.available(10_000_000), 600_000, "capped");
    }

    #[test]
    fn a_target_size_job_fits_even_under_a_tiny_budget() {
        let mut b = Budget::new(rate(3600), 1 << 20, 0); // 1 B/s, but one 1 MiB file may run
        assert!(b.try_take(1 << 20, 0));
        assert!(!b.try_take(1, 0));
    }
}
