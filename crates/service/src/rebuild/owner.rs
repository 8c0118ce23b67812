//! The live owner's side of a rebuild: it pauses when asked (its answer in the table means it
//! is paused, and it withdraws the answer before it resumes), it does not open a table a
//! rebuild asks to stay paused, and a fence that came from a rebuild's swap reopens the table
//! rather than stopping it.

use std::time::{Duration, Instant};

use calve_table::commit::restore::{ancestry, WRITER_EPOCH_KEY};
use calve_table::commit::swap::{paused_for, RebuildMark, Resume, SetPaused, SWAPPED_KEY};
use calve_table::{Catalog, TableError};
use iceberg::TableIdent;
use tokio::sync::watch;

use crate::error::ServiceError;
use crate::hold::update_unclaimed;

/// How often a paused owner looks whether the swap is done.
const SWAP_POLL: Duration = Duration::from_millis(500);
/// How often a paused owner says it still waits.
const SWAP_TELL: Duration = Duration::from_secs(60);

/// Before a table is opened: the rebuild that asks it to stay paused, if one does (a process
/// started during a swap must not commit). Otherwise an answer left by an owner that died
/// while paused is withdrawn, so that it is not taken for this one's.
pub(crate) async fn pause_at_open(catalog: &Catalog, ident: &TableIdent) -> Result<Option<String>, ServiceError> {
    if !catalog.exists(ident).await? {
        return Ok(None);
    }
    let meta = catalog.load(ident).await?.metadata;
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(mark) = RebuildMark::of(&meta)?.filter(|m| m.asks_pause(now)) {
        return Ok(Some(mark.id));
    }
    if paused_for(&meta).is_some() && !withdraw(catalog, ident).await? {
        // A rebuild asked for the pause between the two reads.
        return Ok(RebuildMark::of(&catalog.load(ident).await?.metadata)?.map(|m| m.id));
    }
    Ok(None)
}

/// Waits while a rebuild asks the table `ident` to stay paused (its lease runs, or its swap
/// has begun), answering that it is paused; withdraws the answer before it returns `true`.
/// `false` when shutdown came first.
pub(crate) async fn wait_for_swap(
    catalog: &Catalog,
    ident: &TableIdent,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, ServiceError> {
    let mut told = Instant::now();
    loop {
        let meta = catalog.load(ident).await?.metadata;
        let now = chrono::Utc::now().timestamp_millis();
        match RebuildMark::of(&meta)?.filter(|m| m.asks_pause(now)) {
            None => {
                if paused_for(&meta).is_some() && !withdraw(catalog, ident).await? {
                    continue;
                }
                tracing::info!(table = %ident, "the rebuild no longer asks the table to pause; resuming");
                return Ok(true);
            }
            Some(mark) => {
                if paused_for(&meta) != Some(mark.id.as_str()) {
                    answer(catalog, ident, &mark.id).await?;
                }
                if told.elapsed() >= SWAP_TELL {
                    tracing::warn!(
                        table = %ident, rebuild = %mark.id, swapping = mark.swapping,
                        "still paused for the rebuild's swap (if no calve rebuild is running, run `calve rebuild --table \
                         …` to finish it{})",
                        if mark.swapping { "" } else { ", or wait for its lease to end" }
                    );
                    told = Instant::now();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SWAP_POLL) => {}
            _ = shutdown.changed() => return Ok(false),
        }
    }
}

/// Answers rebuild `id` that the table is paused (nothing to answer when it no longer asks).
pub(crate) async fn answer(catalog: &Catalog, ident: &TableIdent, id: &str) -> Result<(), ServiceError> {
    let paused = SetPaused {
        id: id.to_string(),
        now_ms: chrono::Utc::now().timestamp_millis(),
    };
    match update_unclaimed(catalog, ident, &paused).await {
        Err(ServiceError::Table(TableError::RebuildChanged { .. })) => Ok(()),
        other => other,
    }
}

/// Withdraws the owner's answer; `false` when a rebuild asks for the pause again meanwhile.
async fn withdraw(catalog: &Catalog, ident: &TableIdent) -> Result<bool, ServiceError> {
    let resume = Resume {
        now_ms: chrono::Utc::now().timestamp_millis(),
    };
    match update_unclaimed(catalog, ident, &resume).await {
        Ok(()) => Ok(true),
        Err(ServiceError::Table(TableError::RebuildChanged { .. })) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the fence `e` a pipeline met came from a rebuild: the rebuild of one of `idents`
/// (the table and its dead-letter table) asks for the pause, or a swap commit was made with
/// the epoch that fenced it. Such a table reopens on the swapped-in table rather than
/// stopping; any other fence (a newer `calve run`) still stops it.
pub(crate) async fn fenced_by_rebuild(catalog: &Catalog, idents: [&TableIdent; 2], e: &ServiceError) -> bool {
    let ServiceError::Table(TableError::Fenced { current, .. }) = e else {
        return false;
    };
    let epoch = current.to_string();
    let now = chrono::Utc::now().timestamp_millis();
    for ident in idents {
        let Ok(state) = catalog.load(ident).await else {
            continue;
        };
        let meta = &state.metadata;
        if RebuildMark::of(meta).ok().flatten().is_some_and(|m| m.asks_pause(now)) {
            return true;
        }
        let swapped_by_it = ancestry(meta).any(|s| {
            let summary = &s.summary().additional_properties;
            summary.contains_key(SWAPPED_KEY) && summary.get(WRITER_EPOCH_KEY) == Some(&epoch)
        });
        if swapped_by_it {
            return true;
        }
    }
    false
}
