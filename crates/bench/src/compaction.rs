//! `calve-bench compaction [rows]`: what one compaction job costs — rows per CPU-second, and
//! the memory it holds against the job's rows decompressed (the baseline, measured in the same
//! run by reading the input files one at a time).
//!
//! The job: `rows` (default 2M) order rows committed as 40 small files into one hour
//! partition, compacted by one maintenance cycle into target-size files sorted by event time.
//! Peak memory is the process's resident high-water mark during the cycle (reset just before
//! it), less what was resident when it started.

use std::time::Instant;

use calve_maintain::{human_bytes, Maintainer, MaintenancePolicy, NoProgress};
use calve_table::commit::{Append, RestoreUpdate};
use calve_table::read::live::live_files;
use calve_table::read::read_data_file;
use calve_table::write::data::DataWriter;

use crate::cpu_seconds;
use crate::day::{batch, offsets, Row, SimTable};

pub(crate) const FILES: i64 = 40;
/// 2026-11-24T05:00Z: every row falls in this hour.
const HOUR_START_US: i64 = 1_795_496_400_000_000;
const STATUSES: [&str; 4] = ["placed", "paid", "shipped", "returned"];

pub fn compaction(rows: i64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(rows))
}

async fn run(rows: i64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (t, contract) = SimTable::create(dir.path(), "compact").await?;
    let per_file = small_files(&t, rows).await?;
    let meta = t.state().await?.metadata;
    let live = live_files(t.catalog.file_io(), &meta).await?;
    let on_disk: u64 = live.data.iter().map(|f| f.file.file_size_in_bytes()).sum();
    let mut decompressed = 0usize;
    for f in &live.data {
        decompressed += read_data_file(t.catalog.file_io(), &meta, f.file.file_path())
            .await?
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum::<usize>();
    }
    println!(
        "job: {} rows in {} files of one hour partition, {} on disk, {} as Arrow",
        per_file * FILES,
        live.data.len(),
        human_bytes(on_disk),
        human_bytes(decompressed as u64)
    );

    let mut policy = MaintenancePolicy::from_contract(&contract);
    policy.budget = None;
    policy.min_input_files = 2;
    let now = chrono::Utc::now().timestamp_millis();
    let mut m = Maintainer::new(t.catalog.clone(), t.ident.clone(), policy, now);
    let before = resident();
    reset_peak();
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let r = m.cycle(now, false, &NoProgress).await?;
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    let peak = peak_resident().saturating_sub(before);
    anyhow::ensure!(
        r.files_in == live.data.len() && r.rows_written == (per_file * FILES) as u64,
        "the cycle did not compact the job: {r:?}"
    );
    println!(
        "compacted: {} files into {}, {} rows, {} written",
        r.files_in,
        r.files_out,
        r.rows_written,
        human_bytes(r.bytes_out)
    );
    println!(
        "  cost   : {:.0} rows per CPU-second, {cpu:.2} CPU-s, {wall:.2}s wall",
        r.rows_written as f64 / cpu
    );
    println!(
        "  memory : peak {} above the start = {:.2}x the job's rows as Arrow",
        human_bytes(peak),
        peak as f64 / decompressed as f64
    );
    Ok(())
}

/// Commits `rows` order rows into `t` as [`FILES`] small files of one hour partition, whose
/// event times interleave; returns the rows per file.
pub(crate) async fn small_files(t: &SimTable, rows: i64) -> anyhow::Result<i64> {
    let per_file = rows / FILES;
    for f in 0..FILES {
        let meta = t.state().await?.metadata;
        // Event times interleave across files, so the sort has real work to do.
        let part: Vec<(i64, Row)> = (0..per_file)
            .map(|i| {
                let id = f * per_file + i;
                let ts = HOUR_START_US + ((i * FILES + f) % 3_600_000) * 1_000;
                (
                    id,
                    (id % 5000, (id % 997) as f64 * 1.25, STATUSES[(id % 4) as usize], ts),
                )
            })
            .collect();
        let files = DataWriter::new(&meta, t.catalog.file_io().clone(), 256 << 20)?
            .write(&[batch(&meta, &part)?])
            .await?;
        t.committer
            .commit(&Append::new(files), &RestoreUpdate::new(offsets(f), offsets(f + 1)))
            .await?;
    }
    Ok(per_file)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn resident() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn peak_resident() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// Resets the resident high-water mark to the current resident size (Linux `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
