//! Reading manifests, with a process-wide cache of their parsed entries.
//!
//! A maintenance cycle, a commit and a key-index refresh each walk the same few manifests of
//! a table, and parsing one (an Avro file that embeds its own schema) costs far more than
//! its size suggests: before this cache, manifest parsing was a quarter of a maintenance
//! cycle's CPU. Manifests are immutable and every writer names them with a fresh UUID, so an
//! entry keyed by path and length can never go stale; the cache only has to stay bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use iceberg::io::FileIO;
use iceberg::spec::{ManifestEntryRef, ManifestFile, ManifestList, Snapshot, TableMetadata};

use crate::error::Result;

/// Manifest entries kept across all tables (about 1–2 KB each with column statistics).
const MAX_ENTRIES: usize = 50_000;

type Key = (String, i64);

#[derive(Default)]
struct Cache {
    by_key: HashMap<Key, Arc<[ManifestEntryRef]>>,
    order: VecDeque<Key>,
    entries: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The manifests `snapshot`'s manifest list names (the list is small and not cached).
pub async fn manifest_list(io: &FileIO, meta: &TableMetadata, snapshot: &Snapshot) -> Result<Vec<ManifestFile>> {
    let bytes = io.new_input(snapshot.manifest_list())?.read().await?;
    Ok(ManifestList::parse_with_version(&bytes, meta.format_version())?
        .consume_entries()
        .into_iter()
        .collect())
}

/// The entries of `mf` (every status; callers filter live ones).
pub async fn entries(io: &FileIO, mf: &ManifestFile) -> Result<Arc<[ManifestEntryRef]>> {
    let key = (mf.manifest_path.clone(), mf.manifest_length);
    if let Some(hit) = lock().get_or_insert_with(Cache::default).by_key.get(&key) {
        return Ok(hit.clone());
    }
    let parsed: Arc<[ManifestEntryRef]> = mf.load_manifest(io).await?.entries().into();
    let mut guard = lock();
    let cache = guard.get_or_insert_with(Cache::default);
    if parsed.len() <= MAX_ENTRIES && !cache.by_key.contains_key(&key) {
        cache.entries += parsed.len();
        cache.by_key.insert(key.clone(), parsed.clone());
        cache.order.push_back(key);
        // Oldest first: a table's current manifests are read every cycle and come back soon.
        while cache.entries > MAX_ENTRIES {
            let Some(old) = cache.order.pop_front() else { break };
            if let Some(e) = cache.by_key.remove(&old) {
                cache.entries -= e.len();
            }
        }
    }
    Ok(parsed)
}

fn lock() -> std::sync::MutexGuard<'static, Option<Cache>> {
    // A panic while holding the lock leaves a consistent map (every update is one step).
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}
