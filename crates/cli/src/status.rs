//! `calve status`: what each table holds and where its restore point is.

use std::path::Path;
use std::process::ExitCode;

use calve_contract::Contract;
use calve_service::{ask_readiness, schema_holds, summarize, Action};

use crate::schema::{print_hold, time};
use calve_service::Catalog;
use calve_service::{dead_letter_definition, table_definition, RunConfig};
use calve_service::{human_bytes, maintenance_status as status};

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    // How each table is right now (a failing table's reason lives only in the running process).
    let live = match &cfg.http {
        Some(http) => Some(ask_readiness(http).await),
        None => None,
    };
    if let Some(Err(why)) = &live {
        println!("live state: {why}");
    }
    for c in cfg.contracts()? {
        for def in [table_definition(&c)?, dead_letter_definition(&c)?] {
            if !catalog.exists(&def.ident).await? {
                println!("{}: not created yet", def.ident);
                continue;
            }
            let s = summarize(&catalog, &def.ident).await?;
            println!(
                "{}: {} rows in {} data files, {} delete files, {} snapshots (metadata.json {})",
                def.ident,
                s.records,
                s.data_files,
                s.delete_files,
                s.snapshots,
                human_bytes(s.metadata_bytes)
            );
            println!("  metadata: {}", s.metadata_location);
            println!(
                "  restore point: {}",
                s.restore
                    .as_ref()
                    .map(|o| format!("{o:?}"))
                    .unwrap_or_else(|| "none".into())
            );
            let in_contract =
                |name: &str| def.ident.name().ends_with("__dlq") || c.columns().iter().any(|col| col.name == name);
            let added: Vec<&str> = s
                .columns
                .iter()
                .map(String::as_str)
                .filter(|n| !in_contract(n))
                .collect();
            if !added.is_empty() {
                println!(
                    "  in the table, not in the contract (added from events; adopt them in the contract): {}",
                    added.join(", ")
                );
            }
            if !s.unknown_fields.is_empty() {
                let fields: Vec<String> = s
                    .unknown_fields
                    .iter()
                    .map(|(f, n)| format!("{f} ({n} records)"))
                    .collect();
                println!("  in records, not in the table (not stored): {}", fields.join(", "));
            }
            let live_line = live.as_ref().and_then(|l| l.as_ref().ok()).and_then(|page| {
                page.lines()
                    .find_map(|l| l.strip_prefix(&format!("{}: ", c.table.name)))
            });
            if let (Some(line), true) = (live_line, def.ident == table_definition(&c)?.ident) {
                println!("  now (calve run): {line}");
            }
            if def.ident == table_definition(&c)?.ident {
                print_event_time(&s);
            }
            for gap in &s.lost_records {
                println!(
                    "  RECORDS LOST (Kafka deleted them before calve read them; found {}): {gap}",
                    time(gap.found_ms)
                );
            }
            if def.ident == table_definition(&c)?.ident {
                print_schema_holds(&catalog, &c).await?;
            }
            print_maintenance(&catalog, catalog.storage().state_root(), &def.ident.to_string()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The table's event-time watermark, what it has declared complete, and the last reopening.
fn print_event_time(s: &calve_service::TableSummary) {
    use calve_service::format_instant;
    let e = &s.event_time;
    let Some(w) = e.watermark_us else { return };
    let through = match e.complete_through_us {
        Some(c) => format!(", complete through {}", format_instant(c)),
        None => String::new(),
    };
    println!("  event time: watermark {}{through}", format_instant(w));
    if let Some(at) = s.reopened_at_ms {
        println!(
            "  reopened by late events (latest, {}): {}",
            time(at),
            e.reopened.join(", ")
        );
    }
}

/// The table's hold, if it is held, and the approvers' decisions so far.
async fn print_schema_holds(catalog: &Catalog, contract: &Contract) -> anyhow::Result<()> {
    let state = schema_holds(catalog, contract).await?;
    if let Some(hold) = &state.hold {
        print_hold(&contract.table.name, hold);
    }
    for a in &state.applied {
        let d = &a.decision;
        let what = match d.action {
            Action::Approve => a
                .hold
                .proposal
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            Action::Reject => format!(
                "held records breaking `{}` ({}) sent to the dead-letter table",
                a.hold.path, a.hold.kind
            ),
        };
        println!(
            "  schema history: {} {:?} by {}: {what} (schema {}; because: {})",
            time(d.at_ms),
            d.action,
            d.by,
            a.schema_id,
            a.hold.reason
        );
    }
    Ok(())
}

/// The last maintenance cycle's view, and the falls-behind signal if it is up.
async fn print_maintenance(catalog: &Catalog, warehouse: &str, table: &str) -> anyhow::Result<()> {
    // A status torn by a full disk must not hide the rest of the page.
    let st = match status::read(catalog.file_io(), warehouse, table).await {
        Ok(Some(st)) => st,
        Ok(None) => {
            println!("  maintenance: no cycle yet");
            return Ok(());
        }
        Err(e) => {
            println!("  maintenance: its last status cannot be read ({e})");
            return Ok(());
        }
    };
    let b = &st.backlog;
    println!(
        "  maintenance (as of {}): backlog {} in {} compaction jobs, {} small files, {} delete files, {} snapshots past retention; budget {}",
        st.at, human_bytes(b.compaction_bytes), b.compaction_jobs, b.small_files, b.delete_files, b.expirable_snapshots, st.budget
    );
    if let Some(behind) = &st.behind {
        println!(
            "  FALLS BEHIND: backlog grew {}/h for {} cycles; the budget is {}/h, it needs about {}/h",
            human_bytes(behind.growth_bytes_per_hour),
            behind.cycles,
            human_bytes(behind.budget_bytes_per_hour),
            human_bytes(behind.needed_bytes_per_hour)
        );
    }
    Ok(())
}
