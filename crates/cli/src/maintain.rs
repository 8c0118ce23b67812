//! `calve maintain`: one maintenance pass over some or all tables, now, with a progress bar
//! and a summary of what it did. `calve run` does the same in the background, within each
//! contract's budget; on demand the whole backlog is worked off unless `--respect-budget`.

use std::path::Path;
use std::process::ExitCode;

use calve_service::Catalog;
use calve_service::{dead_letter_definition, table_definition, RunConfig};
use calve_service::{human_bytes, CycleReport, Maintainer, MaintenancePolicy, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// What to maintain and how.
pub struct Request<'a> {
    pub config: &'a Path,
    pub table: Option<String>,
    pub dry_run: bool,
    pub respect_budget: bool,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn planned(&self, table: &str, jobs: usize, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_position(0);
        self.0.set_message(format!("{table}: {jobs} compaction jobs"));
    }
    fn job_done(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

pub async fn run(req: Request<'_>) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(req.config)?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    let contracts = cfg.contracts()?;
    let wanted = |name: &str| req.table.as_deref().is_none_or(|t| t == name);
    if let Some(t) = &req.table {
        if !contracts.iter().any(|c| c.table.name == *t) {
            anyhow::bail!("no contract in {} defines table {t}", req.config.display());
        }
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let bar = Bar(bar);
    let mut failed = false;
    for c in contracts.iter().filter(|c| wanted(&c.table.name)) {
        let mut policy = MaintenancePolicy::from_contract(c);
        policy.orphan_every = std::time::Duration::ZERO;
        // Asked for now: any two small files of a partition are worth merging.
        policy.min_input_files = 2;
        if !req.respect_budget {
            policy.budget = None;
        }
        for (def, policy) in [
            (table_definition(c)?, policy.clone()),
            (dead_letter_definition(c)?, policy.for_dead_letters()),
        ] {
            if !catalog.exists(&def.ident).await? {
                println!("{}: not created yet", def.ident);
                continue;
            }
            let now = chrono::Utc::now().timestamp_millis();
            let mut m = Maintainer::new(catalog.clone(), def.ident.clone(), policy, now)
                .publish_status_to(catalog.storage().state_root().to_string());
            match m.cycle(now, req.dry_run, &bar).await {
                Ok(r) => {
                    bar.0.set_message(String::new());
                    bar.0.finish_and_clear();
                    print_report(&r);
                }
                Err(e) => {
                    bar.0.finish_and_clear();
                    eprintln!("{}: maintenance failed: {e}", def.ident);
                    failed = true;
                }
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_report(r: &CycleReport) {
    let (b, a) = (&r.before, &r.after);
    if r.dry_run {
        println!(
            "{} (dry run): would compact {} files ({}) in {} jobs, applying {} deleted rows; would merge {} delete files; would expire {} snapshots; {} orphan files found",
            r.table, r.files_in, human_bytes(r.bytes_in), r.jobs_run, r.deletes_applied, r.delete_files_merged, b.expirable_snapshots, r.orphans_removed
        );
    } else {
        println!(
            "{}: compacted {} files ({}) into {} ({}), {} deleted rows applied, {} delete files dropped, {} merged into {}; expired {} snapshots ({} files deleted); manifests {}; {} orphan files removed",
            r.table, r.files_in, human_bytes(r.bytes_in), r.files_out, human_bytes(r.bytes_out), r.deletes_applied,
            r.delete_files_dropped, r.delete_files_merged, r.delete_files_written, r.snapshots_expired, r.files_expired,
            if r.manifests_rewritten { "regrouped" } else { "left as they were" }, r.orphans_removed
        );
    }
    println!(
        "  before: {} data files ({} small) in {} partitions, {} delete files, {} snapshots, {} manifests, metadata.json {}",
        b.data_files, b.small_files, b.partitions, b.delete_files, b.snapshots, b.data_manifests + b.delete_manifests, human_bytes(b.metadata_json_bytes)
    );
    if !r.dry_run {
        println!(
            "  after:  {} data files ({} small) in {} partitions, {} delete files, {} snapshots, {} manifests, metadata.json {}",
            a.data_files, a.small_files, a.partitions, a.delete_files, a.snapshots, a.data_manifests + a.delete_manifests, human_bytes(a.metadata_json_bytes)
        );
    }
    if r.jobs_deferred > 0 || r.jobs_abandoned > 0 {
        println!(
            "  {} jobs left for the budget, {} abandoned because their inputs changed",
            r.jobs_deferred, r.jobs_abandoned
        );
    }
}
