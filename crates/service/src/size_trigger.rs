//! When a table's buffer is big enough to commit before its freshness band ends.
//!
//! The contract's `target_file_size` is a size of Parquet files, while the buffer holds Arrow,
//! several times larger for the same rows (Parquet encodes and compresses them). Comparing the
//! two directly committed files of a fraction of the target at high throughput: the small
//! files maintenance must then compact. So the trigger estimates the Parquet size of what is
//! buffered from the ratio the table's own commits showed, and a memory cap keeps the buffer
//! bounded whatever that ratio is. Dead letters count as they are (raw record bytes), so a
//! stream of bad records commits too and cannot grow memory without bound.

/// The buffer never holds more than this many target file sizes of Arrow and dead letters.
/// Arrow (as allocated) is commonly 5 to 8 times the Parquet it becomes: a smaller cap would
/// decide the file size instead of the estimate.
const MEMORY_CAP_TARGETS: u64 = 8;
/// Commits smaller than this say little about compression (file footers dominate).
const MIN_SAMPLE: u64 = 256 << 10;

/// A table's size trigger: a target Parquet size and the Parquet bytes per Arrow byte learnt
/// from its commits.
#[derive(Debug, Clone)]
pub(crate) struct SizeTrigger {
    target: u64,
    parquet_per_arrow: f64,
    /// Whether a commit has taught it anything yet (until then the ratio is a guess).
    learnt: bool,
}

impl SizeTrigger {
    /// A trigger for files of `target` bytes. Until a commit has been seen it assumes one
    /// Parquet byte per Arrow byte, which commits early rather than late.
    pub(crate) fn new(target: u64) -> Self {
        SizeTrigger {
            target,
            parquet_per_arrow: 1.0,
            learnt: false,
        }
    }

    /// Whether `arrow` bytes of rows and `dead` bytes of dead letters should be committed now.
    pub(crate) fn full(&self, arrow: u64, dead: u64) -> bool {
        let estimate = arrow as f64 * self.parquet_per_arrow + dead as f64;
        estimate >= self.target as f64 || arrow.saturating_add(dead) >= self.memory_cap()
    }

    /// Most bytes the buffer holds before it commits, whatever the estimate says.
    pub(crate) fn memory_cap(&self) -> u64 {
        self.target.saturating_mul(MEMORY_CAP_TARGETS)
    }

    /// Learns from a commit: `arrow` bytes of buffered rows became `parquet` bytes of files.
    /// The first commit replaces the guess; after it the newest commit weighs most: a table's
    /// data compresses alike from one commit to the next, and changes when its data does.
    pub(crate) fn learn(&mut self, arrow: u64, parquet: u64) {
        if arrow < MIN_SAMPLE || parquet == 0 {
            return;
        }
        let seen = (parquet as f64 / arrow as f64).clamp(0.01, 2.0);
        self.parquet_per_arrow = match self.learnt {
            false => seen,
            true => 0.25 * self.parquet_per_arrow + 0.75 * seen,
        };
        self.learnt = true;
    }

    /// The Parquet bytes per Arrow byte it assumes now.
    #[cfg(test)]
    fn ratio(&self) -> f64 {
        self.parquet_per_arrow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn learns_the_tables_compression_and_waits_for_parquet_bytes() {
        let mut t = SizeTrigger::new(8 * MB);
        assert!(!t.full(7 * MB, 0) && t.full(8 * MB, 0), "one to one before any commit");
        // The table's Parquet is a fifth of its Arrow: the first commit replaces the guess.
        t.learn(10 * MB, 2 * MB);
        assert!((t.ratio() - 0.2).abs() < 1e-9, "{}", t.ratio());
        // Later ones move it, the newest weighing most.
        t.learn(10 * MB, MB);
        assert!((t.ratio() - 0.125).abs() < 1e-9, "{}", t.ratio());
        t.learn(10 * MB, 2 * MB);
        t.learn(10 * MB, 2 * MB);
        assert!((t.ratio() - 0.2).abs() < 0.01, "{}", t.ratio());
        assert!(!t.full(30 * MB, 0), "30 MB of Arrow is about 6 MB of Parquet");
        assert!(t.full(41 * MB, 0), "about 8 MB of Parquet");
        // Tiny commits (footers) and empty ones teach nothing.
        t.learn(10 << 10, 10 << 10);
        t.learn(10 * MB, 0);
        assert!((t.ratio() - 0.2).abs() < 0.01);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_ratio() {
        let mut t = SizeTrigger::new(8 * MB);
        t.learn(100 * MB, MB);
        assert!(t.ratio() < 0.05);
        assert!(!t.full(63 * MB, 0));
        assert!(t.full(64 * MB, 0), "eight targets of Arrow at most");
        assert!(t.full(0, 8 * MB), "dead letters count as they are");
        assert!(t.full(60 * MB, 4 * MB), "and toward the memory cap");
    }
}
