//! Compaction planning: which data files to rewrite together, and which jobs first.
//!
//! Per partition, the candidates are the small files (under 3/4 of the target size, as Java's
//! `min-file-size-bytes` default) and the files position deletes removed a large share of
//! (`delete_ratio`, by row count): a reader opens each of the first and scans the dead rows
//! of the second. Candidates are bin-packed by their live bytes into target-size groups. A
//! partition whose only debt is a few small files waits until it has `min_input_files` of
//! them, so the partition being written now is not rewritten after every commit (each
//! rewrite of a growing file costs its whole size).
//!
//! By default any deleted row qualifies a file: DuckDB, for one, pays several times a query's
//! cost for delete files (measured by `calve-bench day`). A contract may set a higher share
//! for readers that merge deletes cheaply. What stays — below the share, or deferred by the
//! budget — costs readers one more file per commit that updated the partition; those delete
//! files are merged ([`DeleteMerge`]): every partition with two or more gets one file, written
//! from the positions they hold, for a few kilobytes of I/O.
//!
//! Jobs are ranked by read speed bought per byte rewritten: files removed plus (weighted)
//! files freed of deletes, divided by the bytes the job reads and writes. The budget then
//! takes them in that order.

use std::collections::{BTreeMap, HashSet};

use calve_table::read::live::LiveFiles;
use calve_table::read::DeleteMap;
use iceberg::spec::{DataFile, Literal, PrimitiveLiteral, TableMetadata, Transform};

/// A file with deletes costs a reader an extra file and a merge: worth two small files.
const DELETE_WEIGHT: f64 = 2.0;

/// What a plan is made against.
#[derive(Debug, Clone, Copy)]
pub struct PlanSettings {
    /// Size compacted files are written towards.
    pub target_file_size: u64,
    /// Small files (without deletes) a partition needs before it is compacted.
    pub min_input_files: usize,
    /// Share of a file's rows deleted that makes it worth rewriting on its own.
    pub delete_ratio: f64,
}

/// Position-delete files of one partition to merge into one.
#[derive(Debug, Clone)]
pub struct DeleteMerge {
    /// The partition, as readers see it.
    pub partition: String,
    /// Its live position-delete files.
    pub files: Vec<DataFile>,
    /// Their bytes.
    pub bytes: u64,
}

/// One compaction job: data files of one partition rewritten together.
#[derive(Debug, Clone)]
pub struct CompactionJob {
    /// The partition, as readers see it (for reports).
    pub partition: String,
    /// Data files to rewrite.
    pub files: Vec<DataFile>,
    /// Bytes of those files (what the job reads; it writes about as much).
    pub bytes: u64,
    /// Deleted rows the rewrite drops.
    pub deleted_rows: u64,
    /// Files among them that deletes point into.
    pub files_with_deletes: usize,
    /// Read speed bought per MiB rewritten; higher runs first.
    pub score: f64,
}

/// A plan: jobs in the order they should run, and delete files that apply to nothing.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Jobs, best first.
    pub jobs: Vec<CompactionJob>,
    /// Delete files whose data files are all gone: dropped by any rewrite at no cost.
    pub dangling_deletes: Vec<DataFile>,
    /// Partitions whose delete files should be merged, as the table is now.
    pub delete_merges: Vec<DeleteMerge>,
    /// Data files in the table (default spec).
    pub data_files: usize,
    /// Small data files among them.
    pub small_files: usize,
    /// Partitions holding data.
    pub partitions: usize,
}

impl Plan {
    /// Bytes all jobs would rewrite: the table's compaction debt.
    pub fn debt_bytes(&self) -> u64 {
        self.jobs.iter().map(|j| j.bytes).sum()
    }
}

/// Plans compaction of the live files `live` of the table `meta`, whose deletes are `deletes`.
/// Files of older partition specs are left alone (a rewrite cannot move them to the new spec).
pub fn plan(meta: &TableMetadata, live: &LiveFiles, deletes: &DeleteMap, s: &PlanSettings) -> Plan {
    let small = s.target_file_size * 3 / 4;
    let spec_id = meta.default_partition_spec_id();
    let mut by_partition: BTreeMap<String, Vec<&DataFile>> = BTreeMap::new();
    let mut out = Plan::default();
    for f in live.data.iter().filter(|f| f.spec_id == spec_id).map(|f| &f.file) {
        out.data_files += 1;
        out.small_files += (f.file_size_in_bytes() < small) as usize;
        by_partition.entry(partition_label(meta, f)).or_default().push(f);
    }
    out.partitions = by_partition.len();
    for (partition, files) in by_partition {
        out.jobs.extend(plan_partition(&partition, &files, deletes, s, small));
    }
    out.jobs.sort_by(|a, b| b.score.total_cmp(&a.score));
    let live_paths: HashSet<&str> = live.data.iter().map(|f| f.file.file_path()).collect();
    out.dangling_deletes = droppable(live, deletes, &live_paths, &HashSet::new());
    out.delete_merges = delete_merges(meta, live);
    out
}

/// Every partition (of the default spec) holding two or more position-delete files.
pub fn delete_merges(meta: &TableMetadata, live: &LiveFiles) -> Vec<DeleteMerge> {
    let spec_id = meta.default_partition_spec_id();
    let mut by_partition: BTreeMap<String, Vec<&DataFile>> = BTreeMap::new();
    for d in live.position_deletes.iter().filter(|d| d.spec_id == spec_id) {
        by_partition
            .entry(partition_label(meta, &d.file))
            .or_default()
            .push(&d.file);
    }
    by_partition
        .into_iter()
        .filter(|(_, files)| files.len() >= 2)
        .map(|(partition, files)| DeleteMerge {
            partition,
            bytes: files.iter().map(|f| f.file_size_in_bytes()).sum(),
            files: files.into_iter().cloned().collect(),
        })
        .collect()
}

/// Delete files that apply to no live data file once `removed` are gone.
pub fn droppable(
    live: &LiveFiles,
    deletes: &DeleteMap,
    live_paths: &HashSet<&str>,
    removed: &HashSet<&str>,
) -> Vec<DataFile> {
    live.position_deletes
        .iter()
        .filter(|d| {
            deletes.targets.get(d.file.file_path()).is_some_and(|t| {
                t.iter()
                    .all(|p| removed.contains(p.as_str()) || !live_paths.contains(p.as_str()))
            })
        })
        .map(|d| d.file.clone())
        .collect()
}

fn plan_partition(
    partition: &str,
    files: &[&DataFile],
    deletes: &DeleteMap,
    s: &PlanSettings,
    small: u64,
) -> Vec<CompactionJob> {
    let mut candidates: Vec<Candidate> = files
        .iter()
        .map(|f| {
            let dead = deletes.of(f.file_path()).len() as u64;
            Candidate {
                file: f,
                live: live_bytes(f, dead),
                dead,
            }
        })
        .filter(|c| heavy(c.file, c.dead, s.delete_ratio) || c.file.file_size_in_bytes() < small)
        .collect();
    let any_heavy = candidates.iter().any(|c| heavy(c.file, c.dead, s.delete_ratio));
    if !any_heavy && candidates.len() < s.min_input_files.max(2) {
        return Vec::new();
    }
    // First-fit decreasing by live bytes.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.live));
    let mut bins: Vec<Bin> = Vec::new();
    for c in candidates {
        match bins.iter_mut().find(|b| b.live + c.live <= s.target_file_size) {
            Some(bin) => {
                bin.live += c.live;
                bin.files.push(c);
            }
            None => bins.push(Bin {
                live: c.live,
                files: vec![c],
            }),
        }
    }
    bins.into_iter()
        .filter(|b| b.files.len() >= 2 || b.files.iter().any(|c| heavy(c.file, c.dead, s.delete_ratio)))
        .map(|b| job(partition, &b.files))
        .collect()
}

/// A file that may join a compaction job.
struct Candidate<'a> {
    file: &'a DataFile,
    /// Bytes of its rows that deletes left.
    live: u64,
    /// Rows deletes removed.
    dead: u64,
}

/// Candidates bound for one output file.
struct Bin<'a> {
    live: u64,
    files: Vec<Candidate<'a>>,
}

/// Whether deletes removed enough of `f` (`dead` rows) for a rewrite of it alone to pay.
fn heavy(f: &DataFile, dead: u64, ratio: f64) -> bool {
    dead > 0 && dead as f64 >= ratio * f.record_count().max(1) as f64
}

fn job(partition: &str, bin: &[Candidate]) -> CompactionJob {
    let bytes: u64 = bin.iter().map(|c| c.file.file_size_in_bytes()).sum();
    let files_with_deletes = bin.iter().filter(|c| c.dead > 0).count();
    let benefit = (bin.len() - 1) as f64 + DELETE_WEIGHT * files_with_deletes as f64;
    CompactionJob {
        partition: partition.to_string(),
        files: bin.iter().map(|c| c.file.clone()).collect(),
        bytes,
        deleted_rows: bin.iter().map(|c| c.dead).sum(),
        files_with_deletes,
        score: benefit / (bytes as f64 / (1 << 20) as f64).max(1e-3),
    }
}

/// A file's bytes without its deleted rows (rows are assumed to be of even size).
fn live_bytes(f: &DataFile, deleted: u64) -> u64 {
    let rows = f.record_count().max(1);
    f.file_size_in_bytes() * rows.saturating_sub(deleted) / rows
}

/// A data file's partition as people read it (`ts_hour=2026-11-25-06`), to group and report.
pub fn partition_label(meta: &TableMetadata, f: &DataFile) -> String {
    let spec = meta.default_partition_spec();
    let values = f.partition().fields();
    if spec.fields().is_empty() {
        return "(unpartitioned)".into();
    }
    let parts: Vec<String> = spec
        .fields()
        .iter()
        .zip(values)
        .map(|(field, v)| format!("{}={}", field.name, human(field.transform, v.as_ref())))
        .collect();
    parts.join("/")
}

/// Time transforms count from the epoch; show them as dates, like Iceberg's own partition paths.
fn human(t: Transform, v: Option<&Literal>) -> String {
    let Some(v) = v else { return "null".into() };
    let n = match v {
        Literal::Primitive(PrimitiveLiteral::Int(n)) => *n as i64,
        Literal::Primitive(PrimitiveLiteral::Long(n)) => *n,
        Literal::Primitive(PrimitiveLiteral::String(s)) => return s.clone(),
        other => return format!("{other:?}"),
    };
    let epoch = chrono::DateTime::UNIX_EPOCH;
    match t {
        Transform::Hour => (epoch + chrono::Duration::hours(n)).format("%Y-%m-%d-%H").to_string(),
        Transform::Day => (epoch + chrono::Duration::days(n)).format("%Y-%m-%d").to_string(),
        Transform::Month => format!("{:04}-{:02}", 1970 + n.div_euclid(12), n.rem_euclid(12) + 1),
        Transform::Year => format!("{}", 1970 + n),
        _ => n.to_string(),
    }
}
