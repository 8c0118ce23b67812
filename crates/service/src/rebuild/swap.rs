//! The swap of a rebuild, table by table. Both live tables are claimed first (an owner still
//! running is fenced, so nothing can move them any more) and the target table is checked to
//! still hold the restore point the shadows reached; then the dead-letter table is swapped and
//! the target table last — its swap commit also ends the rebuild (it removes the mark). Each
//! swap is one commit: every file out, the shadow's in, under that restore point. A crash in
//! between leaves the mark at `swapping`, so the owner stays paused until the rebuild is run
//! again and finishes.

use calve_table::commit::event_time::EventTimeMarks;
use calve_table::commit::lost::{add_lost_records, lost_records, LostRange};
use calve_table::commit::restore::{self, format_offsets, unknown_fields, Offsets};
use calve_table::commit::swap::{incompatibility, RebuildMark, ReplaceTable, SwapIn};
use calve_table::commit::{claim_epoch, Committer};
use calve_table::read::live::live_files;
use calve_table::{Catalog, TableError};
use iceberg::TableIdent;

use crate::error::ServiceError;
use crate::faults::{crash_point, CrashPoint};

/// A live table and the shadow that replaces it.
pub struct Pair {
    /// The live table.
    pub live: TableIdent,
    /// Its shadow.
    pub shadow: TableIdent,
}

/// Why the shadows cannot replace the live tables, checked before the swap begins (once it
/// has, the owner stays paused until it ends, so it must not be able to fail this way).
pub async fn preflight(catalog: &Catalog, pairs: [&Pair; 2]) -> Result<(), ServiceError> {
    for pair in pairs {
        let live = catalog.load(&pair.live).await?.metadata;
        let shadow = catalog.load(&pair.shadow).await?.metadata;
        if let Some(why) = incompatibility(&live, &shadow) {
            return Err(ServiceError::Config(format!(
                "{}: the rebuild cannot be swapped in: {why}; abandon it (calve rebuild --abandon) and start again",
                pair.live
            )));
        }
    }
    Ok(())
}

/// The writer epochs the rebuild claimed the live tables with.
pub struct Claims {
    main: u64,
    dead_letters: u64,
}

/// Claims both live tables (an owner still running is fenced: nothing else commits to them
/// from here) and checks that the target table still holds `target`; refused with
/// [`TableError::RebuildOvertaken`] when it moved on.
pub async fn claim_pair(
    catalog: &Catalog,
    main: &Pair,
    dead_letters: &Pair,
    target: &Offsets,
) -> Result<Claims, ServiceError> {
    let claims = Claims {
        dead_letters: claim_epoch(catalog, &dead_letters.live).await?,
        main: claim_epoch(catalog, &main.live).await?,
    };
    let now = restore::restore_point(&catalog.load(&main.live).await?.metadata)?.unwrap_or_default();
    if &now != target {
        return Err(TableError::RebuildOvertaken {
            table: main.live.to_string(),
            reason: format!(
                "it holds {}, the rebuild reached {}",
                format_offsets(&now),
                format_offsets(target)
            ),
        }
        .into());
    }
    Ok(claims)
}

/// Swaps the dead-letter table, then the target table, to `target` under `claims`; `gaps`
/// are the offsets the rebuilt table never read (besides the shadow's own recorded gaps).
/// Returns the target table's rows.
pub async fn swap_pair(
    catalog: &Catalog,
    main: &Pair,
    dead_letters: &Pair,
    mark: &RebuildMark,
    claims: Claims,
    target: &Offsets,
    gaps: Vec<LostRange>,
) -> Result<u64, ServiceError> {
    let dlq = Swap {
        pair: dead_letters,
        epoch: claims.dead_letters,
        expect: None,
        ends_rebuild: false,
    };
    swap_one(catalog, dlq, mark, target, Vec::new()).await?;
    crash_point(CrashPoint::BetweenSwaps);
    let table = Swap {
        pair: main,
        epoch: claims.main,
        expect: Some(target),
        ends_rebuild: true,
    };
    swap_one(catalog, table, mark, target, gaps).await
}

/// One table's swap: the pair, the epoch it was claimed with, the restore point it must hold
/// (`None`: whatever it holds now — a dead-letter table, its owner fenced), and whether its
/// commit ends the rebuild (removes the mark).
struct Swap<'a> {
    pair: &'a Pair,
    epoch: u64,
    expect: Option<&'a Offsets>,
    ends_rebuild: bool,
}

/// Swaps `swap.pair`'s shadow in for its live table, which will hold `to`.
async fn swap_one(
    catalog: &Catalog,
    swap: Swap<'_>,
    mark: &RebuildMark,
    to: &Offsets,
    gaps: Vec<LostRange>,
) -> Result<u64, ServiceError> {
    let pair = swap.pair;
    let shadow = catalog.load(&pair.shadow).await?.metadata;
    let live = catalog.load(&pair.live).await?.metadata;
    let files = live_files(catalog.file_io(), &shadow).await?;
    let rows: u64 = files.data.iter().map(|f| f.file.record_count()).sum();
    let files: Vec<_> = files
        .data
        .into_iter()
        .chain(files.position_deletes)
        .map(|f| f.file)
        .collect();
    let count = files.len();
    let expect = match swap.expect {
        Some(e) => e.clone(),
        None => restore::restore_point(&live)?.unwrap_or_default(),
    };
    let mut lost = lost_records(&shadow)?;
    add_lost_records(&mut lost, &gaps);
    let swap_in = SwapIn {
        id: mark.id.clone(),
        ends_rebuild: swap.ends_rebuild,
        expect,
        to: to.clone(),
        schema: shadow.current_schema().clone(),
        unknown_fields: unknown_fields(&shadow)?,
        lost_records: lost,
        event_time: EventTimeMarks::carried(&shadow),
    };
    Committer::new(catalog.clone(), pair.live.clone(), swap.epoch)
        .swap_in(&ReplaceTable { files }, &swap_in)
        .await?;
    tracing::info!(table = %pair.live, rebuild = %mark.id, rows, files = count, "swapped the rebuilt table in");
    Ok(rows)
}
