//! `calve status`: the page an on-call person opens. Per table: its state (running, behind,
//! held, failing, stopped), freshness against the SLA, completeness, lag per partition,
//! dead-letter rate, commit latency, schema version and maintenance backlog — what the
//! running process measures (asked at its `/status`) beside what the table records (read from
//! the catalog, so the page works with calve down too). `--json` prints the same as one
//! document for tooling.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use calve_contract::Contract;
use calve_service::maintenance_status::{self as status, TableStatus};
use calve_service::{ask_status, dead_letter_definition, schema_holds, summarize, table_definition};
use calve_service::{format_instant, Action, Catalog, Hold, LiveTable, RunConfig, TableDefinition, TableSummary};
use serde::Serialize;

use crate::schema::time;
use crate::status_print::print_table;

/// Everything the page says about one contract's table.
#[derive(Debug, Serialize)]
pub struct TablePage {
    /// The contract's table.
    pub table: String,
    /// `owner.team`.
    pub team: String,
    /// `owner.contact`.
    pub contact: String,
    /// The running process's state for it (`behind` when its freshness SLA is breached);
    /// without an answer, `held` when the table records a hold, else `not running` (or
    /// `unknown` without `[http]` to ask).
    pub state: String,
    /// What the running process says, when it answered.
    pub live: Option<LiveTable>,
    /// The table (`None`: not created yet).
    pub facts: Option<TableFacts>,
    /// The hold it is under, if any.
    pub hold: Option<Hold>,
    /// The approvers' decisions so far.
    pub schema_history: Vec<Decision>,
    /// The dead-letter table's name.
    pub dead_letter_name: String,
    /// The dead-letter table.
    pub dead_letter_table: Option<TableFacts>,
}

/// What a table records (the current snapshot's totals and calve's summary keys).
#[derive(Debug, Serialize)]
pub struct TableFacts {
    /// `namespace.table`.
    pub name: String,
    /// Live rows.
    pub rows: u64,
    /// Live data files.
    pub data_files: u64,
    /// Live delete files.
    pub delete_files: u64,
    /// Snapshots retained.
    pub snapshots: usize,
    /// Size of the current metadata.json, which every reader parses.
    pub metadata_bytes: u64,
    /// Where it is (what DuckDB's `iceberg_scan` takes).
    pub metadata_location: String,
    /// The current schema's id: it changes with every schema change.
    pub schema_id: i32,
    /// When the current snapshot was committed.
    pub last_commit: Option<String>,
    /// Next Kafka offset per topic and partition the table holds everything before.
    pub restore_point: Option<BTreeMap<String, BTreeMap<i32, i64>>>,
    /// The process that last claimed the table (`host pid N`): with several processes
    /// sharing the tables (`[group]`), the one that commits it.
    pub committer: Option<String>,
    /// Its writer epoch (each claim adds one).
    pub writer_epoch: u64,
    /// `calve.watermark`.
    pub watermark: Option<String>,
    /// `calve.complete-through`.
    pub complete_through: Option<String>,
    /// Partitions the latest reopening commit reopened.
    pub reopened: Vec<String>,
    /// When it was made.
    pub reopened_at: Option<String>,
    /// Offset ranges Kafka deleted before the table read them.
    pub lost_records: Vec<String>,
    /// The rebuild under way (`calve rebuild`), described.
    pub rebuild: Option<String>,
    /// Columns the table has that the contract lacks (added from events).
    pub added_columns: Vec<String>,
    /// Fields records carried without a column, with how many records carried each.
    pub unknown_fields: BTreeMap<String, u64>,
    /// The last maintenance cycle's view.
    pub maintenance: Option<TableStatus>,
    /// Why it cannot be read, when it cannot.
    pub maintenance_error: Option<String>,
}

/// One approver decision.
#[derive(Debug, Serialize)]
pub struct Decision {
    /// When.
    pub at: String,
    /// `Approve` or `Reject`.
    pub action: String,
    /// Who.
    pub by: String,
    /// What it did to the table.
    pub what: String,
    /// The schema it left the table at.
    pub schema_id: i32,
    /// Why the table was held.
    pub because: String,
}

pub async fn run(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let catalog = Catalog::open(&cfg.catalog).await?;
    let live = match &cfg.http {
        Some(http) => ask_status(http).await,
        None => Err("calve.toml has no [http], so the running process cannot be asked".into()),
    };
    let mut pages = Vec::new();
    for c in cfg.contracts()? {
        let mine = live
            .as_ref()
            .ok()
            .and_then(|l| l.iter().find(|t| t.table == c.table.name));
        pages.push(table_page(&catalog, &c, mine.cloned(), cfg.http.is_some()).await?);
    }
    match json {
        true => {
            let doc = serde_json::json!({
                "live": live.as_ref().err().map_or_else(|| serde_json::json!({"answered": true}), |why| serde_json::json!({"answered": false, "why": why})),
                "tables": pages,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        false => {
            if let Err(why) = &live {
                println!("live state: {why}");
            }
            for page in &pages {
                print_table(page);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn table_page(
    catalog: &Catalog,
    c: &Contract,
    live: Option<LiveTable>,
    asked: bool,
) -> anyhow::Result<TablePage> {
    let facts = facts_of(catalog, &table_definition(c)?, Some(c)).await?;
    let dead_letters = dead_letter_definition(c)?;
    let dead_letter_table = facts_of(catalog, &dead_letters, None).await?;
    let (hold, schema_history) = match facts {
        Some(_) => {
            let state = schema_holds(catalog, c).await?;
            let history = state.applied.iter().map(decision).collect();
            (state.hold, history)
        }
        None => (None, Vec::new()),
    };
    let state = match (&live, &hold) {
        (Some(l), _) => l.state.clone(),
        (None, Some(_)) => "held".into(),
        (None, None) if asked => "not running".into(),
        (None, None) => "unknown".into(),
    };
    Ok(TablePage {
        table: c.table.name.clone(),
        team: c.owner.team.clone(),
        contact: c.owner.contact.clone(),
        state,
        live,
        facts,
        hold,
        schema_history,
        dead_letter_name: dead_letters.ident.to_string(),
        dead_letter_table,
    })
}

/// What `def`'s table records (`contract`: the table's own, to tell columns added from events).
async fn facts_of(
    catalog: &Catalog,
    def: &TableDefinition,
    contract: Option<&Contract>,
) -> anyhow::Result<Option<TableFacts>> {
    let ident = &def.ident;
    if !catalog.exists(ident).await? {
        return Ok(None);
    }
    let s: TableSummary = summarize(catalog, ident).await?;
    let added_columns = match contract {
        Some(c) => s
            .columns
            .iter()
            .filter(|n| !c.columns().iter().any(|col| &col.name == *n))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    // A status torn by a full disk must not hide the rest of the page.
    let (maintenance, maintenance_error) =
        match status::read(catalog.file_io(), catalog.storage().state_root(), &ident.to_string()).await {
            Ok(st) => (st, None),
            Err(e) => (None, Some(e.to_string())),
        };
    Ok(Some(TableFacts {
        name: ident.to_string(),
        rows: s.records,
        data_files: s.data_files,
        delete_files: s.delete_files,
        snapshots: s.snapshots,
        metadata_bytes: s.metadata_bytes,
        metadata_location: s.metadata_location,
        schema_id: s.schema_id,
        last_commit: s.last_commit_ms.map(time),
        restore_point: s.restore,
        committer: s.committer,
        writer_epoch: s.writer_epoch,
        watermark: s.event_time.watermark_us.map(format_instant),
        complete_through: s.event_time.complete_through_us.map(format_instant),
        reopened: s.event_time.reopened,
        reopened_at: s.reopened_at_ms.map(time),
        lost_records: s
            .lost_records
            .iter()
            .map(|gap| format!("{gap} (found {})", time(gap.found_ms)))
            .collect(),
        rebuild: s.rebuild.as_ref().map(|r| rebuild_line(r, &s.location)),
        added_columns,
        unknown_fields: s.unknown_fields,
        maintenance,
        maintenance_error,
    }))
}

/// `calve rebuild`'s progress as the live table records it.
fn rebuild_line(r: &calve_service::RebuildMark, location: &str) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let stage = match (r.swapping, r.pause_until_ms) {
        (true, _) => "swapping in (the table is paused until it is done)".to_string(),
        (false, Some(t)) if t > now => format!("caught up; the table is paused for the swap until {}", time(t)),
        _ => "catching up with the table".to_string(),
    };
    format!(
        "{} from {}, started {}: {stage}; staged under {}",
        r.id,
        r.from,
        time(r.started_ms),
        r.location(location)
    )
}

fn decision(a: &calve_service::Applied) -> Decision {
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
    Decision {
        at: time(d.at_ms),
        action: format!("{:?}", d.action),
        by: d.by.clone(),
        what,
        schema_id: a.schema_id,
        because: a.hold.reason.clone(),
    }
}
