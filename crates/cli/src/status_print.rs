//! `calve status` as text: the state and the SLA first (what an on-call person came for), then
//! what the table holds, its holds and schema history, and its maintenance.

use calve_service::{human_bytes, SlaReport};

use crate::schema::print_hold;
use crate::status::{TableFacts, TablePage};

/// Prints one contract's table and its dead-letter table.
pub fn print_table(page: &TablePage) {
    match &page.facts {
        Some(facts) => print_main(page, facts),
        None => {
            println!("{}: not created yet", page.table);
            print_state(page);
        }
    }
    match &page.dead_letter_table {
        Some(dlq) => {
            print_facts(dlq);
            print_maintenance(dlq);
        }
        None => println!("{}: not created yet", page.dead_letter_name),
    }
}

fn print_main(page: &TablePage, facts: &TableFacts) {
    print_facts(facts);
    print_state(page);
    if let Some(live) = &page.live {
        print_sla(&live.sla);
        let verdict = if live.ready { "READY" } else { "NOT READY" };
        println!(
            "  now (calve run): {verdict}: {} (for {}s)",
            live.detail, live.for_seconds
        );
    }
    print_event_time(facts);
    print_rebuild(facts);
    print_records(facts);
    if let Some(hold) = &page.hold {
        print_hold(&page.table, hold);
    }
    for d in &page.schema_history {
        println!(
            "  schema history: {} {} by {}: {} (schema {}; because: {})",
            d.at, d.action, d.by, d.what, d.schema_id, d.because
        );
    }
    print_maintenance(facts);
}

fn print_facts(f: &TableFacts) {
    println!(
        "{}: {} rows in {} data files, {} delete files, {} snapshots (metadata.json {})",
        f.name,
        f.rows,
        f.data_files,
        f.delete_files,
        f.snapshots,
        human_bytes(f.metadata_bytes)
    );
    println!("  metadata: {}", f.metadata_location);
    println!(
        "  schema version {}; last commit {}",
        f.schema_id,
        f.last_commit.as_deref().unwrap_or("none")
    );
    if let Some(committer) = &f.committer {
        println!("  committer: {committer} (writer epoch {})", f.writer_epoch);
    }
    println!(
        "  restore point: {}",
        f.restore_point
            .as_ref()
            .map(|o| format!("{o:?}"))
            .unwrap_or_else(|| "none".into())
    );
}

/// The headline: the state, and who to call.
fn print_state(page: &TablePage) {
    let since = page
        .live
        .as_ref()
        .map(|l| format!(" for {}s", l.for_seconds))
        .unwrap_or_default();
    println!(
        "  state: {}{since}; owner {} ({})",
        page.state.to_uppercase(),
        page.team,
        page.contact
    );
}

fn print_sla(sla: &SlaReport) {
    let f = &sla.freshness;
    let verdict = match (&f.breached_since, f.breached) {
        (Some(since), _) => format!("BREACHED since {since}"),
        (None, true) => "BREACHED".into(),
        (None, false) => "ok".into(),
    };
    let why = f.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
    println!(
        "  freshness: {:.0} s behind (fresh as of {}), SLA {} s: {verdict}{why}",
        f.lag_seconds, f.fresh_as_of, f.sla_seconds
    );
    let age = |s: Option<f64>| s.map_or_else(|| "-".into(), |s| format!("{s:.0} s"));
    println!(
        "  oldest record read, not committed: {}; newest committed record's Kafka timestamp: {} old",
        age(f.oldest_uncommitted_seconds),
        age(f.newest_committed_seconds)
    );
    if let Some(c) = &sla.completeness {
        let verdict = match c.breached {
            true => "BREACHED",
            false => "ok",
        };
        println!(
            "  completeness: through {} (on-time events would make it {}): {verdict}",
            c.complete_through.as_deref().unwrap_or("nothing yet"),
            c.expected_through
        );
    }
    let lag: Vec<String> = sla.lag_records.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    println!("  lag (records per partition): {}", lag.join(", "));
    let d = &sla.dead_letters;
    let c = &sla.commits;
    let seconds = |s: Option<f64>| s.map_or_else(|| "-".into(), |s| format!("{s:.2} s"));
    println!(
        "  dead letters: {} of {} records ({:.2}%, {:.1}/min) in the last {:.0} s; commits: {}, last took {}, slowest {}",
        d.dead_letters,
        d.records,
        d.share * 100.0,
        d.per_minute,
        d.window_seconds,
        c.commits,
        seconds(c.last_seconds),
        seconds(c.max_seconds)
    );
}

/// The table's event-time watermark, what it has declared complete, and the last reopening.
fn print_event_time(f: &TableFacts) {
    let Some(w) = &f.watermark else { return };
    let through = match &f.complete_through {
        Some(c) => format!(", complete through {c}"),
        None => String::new(),
    };
    println!("  event time: watermark {w}{through}");
    if let Some(at) = &f.reopened_at {
        println!("  reopened by late events (latest, {at}): {}", f.reopened.join(", "));
    }
}

/// A rebuild under way (`calve rebuild`).
fn print_rebuild(f: &TableFacts) {
    if let Some(r) = &f.rebuild {
        println!("  rebuild: {r}");
    }
}

/// Columns and fields that differ from the contract, and records Kafka lost.
fn print_records(f: &TableFacts) {
    if !f.added_columns.is_empty() {
        println!(
            "  in the table, not in the contract (added from events; adopt them in the contract): {}",
            f.added_columns.join(", ")
        );
    }
    if !f.unknown_fields.is_empty() {
        let fields: Vec<String> = f
            .unknown_fields
            .iter()
            .map(|(f, n)| format!("{f} ({n} records)"))
            .collect();
        println!("  in records, not in the table (not stored): {}", fields.join(", "));
    }
    for gap in &f.lost_records {
        println!("  RECORDS LOST (Kafka deleted them before calve read them): {gap}");
    }
}

/// The last maintenance cycle's view, and the falls-behind signal if it is up.
fn print_maintenance(f: &TableFacts) {
    if let Some(e) = &f.maintenance_error {
        println!("  maintenance: its last status cannot be read ({e})");
        return;
    }
    let Some(st) = &f.maintenance else {
        println!("  maintenance: no cycle yet");
        return;
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
}
