//! The swap of a rebuild, table by table. Both live tables are claimed first (an owner still
//! running is fenced, so nothing can move them any more), the target table is checked to
//! still hold the restore point the shadows reached, then the dead-letter table is swapped and
//! the target table last — its swap commit also ends the rebuild (it removes the mark). Each
//! swap is one commit: every file out, the shadow's in, under that restore point. A crash in
//! between leaves the mark at `swapping`, so the owner stays paused until the rebuild is run
//! again and finishes.

use calve_table::commit::event_time::EventTimeMarks;
use calve_table::commit::lost::{lost_records, LostRange};
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

/// Claims both live tables and swaps the dead-letter table, then the target table, to
/// `target`; `gaps` are the offsets the rebuilt table never read (besides the shadow's own
/// recorded gaps). Returns the target table's rows. Refused with
/// [`TableError::RebuildOvertaken`] before anything is swapped when the target table moved.
pub async fn swap_pair(
    catalog: &Catalog,
    main: &Pair,
    dead_letters: &Pair,
    mark: &RebuildMark,
    target: &Offsets,
    gaps: Vec<LostRange>,
) -> Result<u64, ServiceError> {
    let dlq_epoch = claim_epoch(catalog, &dead_letters.live).await?;
    let main_epoch = claim_epoch(catalog, &main.live).await?;
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
    swap_one(catalog, dead_letters, dlq_epoch, mark, None, target, Vec::new()).await?;
    crash_point(CrashPoint::BetweenSwaps);
    swap_one(catalog, main, main_epoch, mark, Some(target), target, gaps).await
}

/// Swaps `pair.shadow` in for `pair.live` as writer `epoch`. The live table must hold
/// `expect` (the dead-letter table: whatever it holds now, its owner being fenced) and will
/// hold `to`.
async fn swap_one(
    catalog: &Catalog,
    pair: &Pair,
    epoch: u64,
    mark: &RebuildMark,
    expect: Option<&Offsets>,
    to: &Offsets,
    gaps: Vec<LostRange>,
) -> Result<u64, ServiceError> {
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
    let expect = match expect {
        Some(e) => e.clone(),
        None => restore::restore_point(&live)?.unwrap_or_default(),
    };
    let mut lost = lost_records(&shadow)?;
    calve_table::commit::lost::add_lost_records(&mut lost, &gaps);
    let swap = SwapIn {
        id: mark.id.clone(),
        expect,
        to: to.clone(),
        schema: shadow.current_schema().clone(),
        unknown_fields: unknown_fields(&shadow)?,
        lost_records: lost,
        event_time: EventTimeMarks::carried(&shadow),
    };
    Committer::new(catalog.clone(), pair.live.clone(), epoch)
        .swap_in(&ReplaceTable { files }, &swap)
        .await?;
    tracing::info!(table = %pair.live, rebuild = %mark.id, rows, files = count, "swapped the rebuilt table in");
    Ok(rows)
}
