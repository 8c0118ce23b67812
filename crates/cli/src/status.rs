//! `calve status`: what each table holds and where its restore point is.

use std::path::Path;
use std::process::ExitCode;

use calve_service::{RunConfig, dead_letter_definition, table_definition};
use calve_table::Catalog;
use calve_table::inspect::summarize;

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    for c in cfg.contracts()? {
        for def in [table_definition(&c)?, dead_letter_definition(&c)?] {
            if !catalog.exists(&def.ident).await? {
                println!("{}: not created yet", def.ident);
                continue;
            }
            let s = summarize(&catalog, &def.ident).await?;
            println!(
                "{}: {} rows in {} data files, {} delete files, {} snapshots",
                def.ident, s.records, s.data_files, s.delete_files, s.snapshots
            );
            println!("  metadata: {}", s.metadata_location);
            println!("  restore point: {}", s.restore.map(|o| format!("{o:?}")).unwrap_or_else(|| "none".into()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
