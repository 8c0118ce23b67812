//! Where the key index keeps its entries: in memory up to a limit, then on local disk.
//!
//! A keyed table can hold more keys than the machine has memory for (65 bytes a key in a hash
//! map makes a billion keys 65 GB). So the store is a small log-structured pair: recent
//! changes live in an in-memory map (the *memtable*), and when it outgrows its share of the
//! memory limit it is written, sorted, into an on-disk B-tree (`redb`) and emptied. A lookup
//! asks the memtable first, then the disk. A key deleted while older entries are on disk is
//! shadowed by a tombstone until the next spill removes it there.
//!
//! Nothing here is durable on purpose: the index is rebuilt from the table when a pipeline
//! opens, so the spill file lives in a private temporary directory that goes with the store.
//! What is bounded is memory: the memtable's share plus redb's page cache.

use std::path::{Path, PathBuf};

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

use redb::{ReadableDatabase, TableDefinition};

use crate::error::{Result, TableError};

/// A row's place: the id of its file in the index's file table, and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// File id (never reused within one index).
    pub file: u32,
    /// Row position in the file.
    pub pos: u32,
}

/// How much memory the index may use, and where it spills beyond that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSettings {
    /// Bytes of memory for one table's index: the memtable gets three quarters, the on-disk
    /// tier's page cache the rest.
    pub memory_limit: u64,
    /// Directory for spill files (a private subdirectory per index, removed with it).
    pub spill_dir: PathBuf,
}

impl Default for IndexSettings {
    /// 1 GiB, spilling under the system's temporary directory.
    fn default() -> Self {
        IndexSettings {
            memory_limit: 1 << 30,
            spill_dir: std::env::temp_dir(),
        }
    }
}

/// Memtable value meaning "deleted after it was spilled" (a tombstone). File ids never reach
/// it; a plain `Loc` keeps the memtable slot at 24 bytes where an enum would take 32.
const DELETED: Loc = Loc {
    file: u32::MAX,
    pos: u32::MAX,
};

/// The on-disk tier: one redb B-tree of key bytes → (file id, position).
struct Spill {
    _dir: tempfile::TempDir,
    path: PathBuf,
    db: redb::Database,
    spills: u64,
}

const KEYS: TableDefinition<&[u8], (u32, u32)> = TableDefinition::new("keys");

/// Bytes of one memtable slot: the boxed slice's pointer and length, the value, and hashbrown's
/// control byte. Slots are counted by capacity, so spare room after growth counts too.
const SLOT: usize = std::mem::size_of::<(Box<[u8]>, Loc)>() + 1;

/// Heap bytes of one boxed key: the allocator rounds up to 8 and keeps a header.
fn key_heap(key: &[u8]) -> usize {
    key.len().div_ceil(8) * 8 + 8
}

/// Keys → places, in memory up to a limit and on disk beyond it.
pub struct KeyStore {
    mem: HashMap<Box<[u8]>, Loc>,
    /// Heap bytes of the memtable's keys.
    key_bytes: usize,
    mem_limit: usize,
    cache_bytes: usize,
    spill_dir: PathBuf,
    spill: Option<Spill>,
}

impl KeyStore {
    /// An empty store within `settings`.
    pub fn new(settings: &IndexSettings) -> Self {
        let limit = settings.memory_limit.max(1 << 20) as usize;
        KeyStore {
            mem: HashMap::new(),
            key_bytes: 0,
            mem_limit: limit / 4 * 3,
            cache_bytes: (limit / 4).max(1 << 20),
            spill_dir: settings.spill_dir.clone(),
            spill: None,
        }
    }

    /// A reader for many lookups (one disk transaction for all of them).
    pub fn reader(&self) -> Result<Reader<'_>> {
        let disk = match &self.spill {
            None => None,
            Some(s) => {
                let tx = s.db.begin_read().map_err(|e| spill_error(&s.path, e))?;
                Some(tx.open_table(KEYS).map_err(|e| spill_error(&s.path, e))?)
            }
        };
        Ok(Reader {
            store: self,
            disk,
            path: self.spill.as_ref().map(|s| s.path.as_path()),
        })
    }

    /// Points `key` at `loc`; returns the place it had in memory (entries on disk are not
    /// consulted: callers that need the old place look it up first).
    pub fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        match self.mem.entry_ref(key) {
            EntryRef::Occupied(mut e) => Some(e.insert(loc)).filter(|old| *old != DELETED),
            EntryRef::Vacant(e) => {
                e.insert(loc);
                self.key_bytes += key_heap(key);
                None
            }
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &[u8]) {
        if self.spill.is_none() {
            if self.mem.remove(key).is_some() {
                self.key_bytes -= key_heap(key);
            }
            return;
        }
        // The key may be on disk too: shadow it until the next spill deletes it there.
        match self.mem.entry_ref(key) {
            EntryRef::Occupied(mut e) => {
                e.insert(DELETED);
            }
            EntryRef::Vacant(e) => {
                e.insert(DELETED);
                self.key_bytes += key_heap(key);
            }
        }
    }

    /// Drops memtable entries that point at files `keep` refuses (files gone from the table).
    /// Entries on disk are filtered at lookup instead: rewriting the disk tier is not worth it.
    pub fn retain_files(&mut self, keep: impl Fn(u32) -> bool) {
        let before = self.mem.len();
        self.mem.retain(|_, l| *l == DELETED || keep(l.file));
        if self.mem.len() != before {
            self.key_bytes = self.mem.keys().map(|k| key_heap(k)).sum();
        }
    }

    /// Writes the memtable to disk when it is over its share of the memory limit.
    pub fn spill_if_full(&mut self) -> Result<()> {
        if self.memory_bytes() <= self.mem_limit {
            return Ok(());
        }
        self.spill()
    }

    /// Writes the memtable to disk, sorted, and empties it.
    pub fn spill(&mut self) -> Result<()> {
        if self.mem.is_empty() {
            return Ok(());
        }
        let mem = std::mem::take(&mut self.mem);
        self.key_bytes = 0;
        let mut entries: Vec<(Box<[u8]>, Loc)> = mem.into_iter().collect();
        // Sorted inserts touch each B-tree page once per spill instead of once per key.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let spill = self.open_spill()?;
        let fail = |e: &dyn std::fmt::Display| spill_error(&spill.path, e);
        let tx = spill.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut t = tx.open_table(KEYS).map_err(|e| fail(&e))?;
            for (k, l) in &entries {
                if *l == DELETED {
                    t.remove(k.as_ref()).map_err(|e| fail(&e))?;
                } else {
                    t.insert(k.as_ref(), (l.file, l.pos)).map_err(|e| fail(&e))?;
                }
            }
        }
        // Immediate durability is not for safety (the file dies with the process) but because
        // redb reuses freed pages only after durable commits; spills are rare enough to afford it.
        tx.commit().map_err(|e| fail(&e))?;
        spill.spills += 1;
        Ok(())
    }

    fn open_spill(&mut self) -> Result<&mut Spill> {
        if self.spill.is_none() {
            std::fs::create_dir_all(&self.spill_dir).map_err(|e| spill_error(&self.spill_dir, e))?;
            let dir = tempfile::Builder::new()
                .prefix("calve-key-index-")
                .tempdir_in(&self.spill_dir)
                .map_err(|e| spill_error(&self.spill_dir, e))?;
            let path = dir.path().join("keys.redb");
            let db = redb::Database::builder()
                .set_cache_size(self.cache_bytes)
                .create(&path)
                .map_err(|e| spill_error(&path, e))?;
            tracing::info!(path = %path.display(), "key index outgrew its memory limit; spilling to disk");
            self.spill = Some(Spill {
                _dir: dir,
                path,
                db,
                spills: 0,
            });
        }
        Ok(self.spill.as_mut().expect("just opened"))
    }

    /// Entries in the memtable (tombstones included).
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the memtable is empty.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Approximate bytes of memory held (the memtable; the disk tier's cache is bounded apart).
    pub fn memory_bytes(&self) -> usize {
        self.mem.capacity() * SLOT + self.key_bytes
    }

    /// The memory the store may use in all: memtable share plus the disk tier's page cache.
    pub fn memory_limit(&self) -> usize {
        self.mem_limit + self.cache_bytes
    }

    /// Bytes of the spill file on disk (0 when nothing spilled).
    pub fn disk_bytes(&self) -> u64 {
        self.spill
            .as_ref()
            .and_then(|s| std::fs::metadata(&s.path).ok())
            .map_or(0, |m| m.len())
    }

    /// How many times the memtable was written to disk.
    pub fn spills(&self) -> u64 {
        self.spill.as_ref().map_or(0, |s| s.spills)
    }
}

/// Lookups against one state of the store.
pub struct Reader<'a> {
    store: &'a KeyStore,
    disk: Option<redb::ReadOnlyTable<&'static [u8], (u32, u32)>>,
    path: Option<&'a Path>,
}

impl Reader<'_> {
    /// Where `key` lives, as far as the store knows (the caller checks the file still exists).
    pub fn get(&self, key: &[u8]) -> Result<Option<Loc>> {
        if let Some(l) = self.store.mem.get(key) {
            return Ok(Some(*l).filter(|l| *l != DELETED));
        }
        let Some(t) = &self.disk else { return Ok(None) };
        let found = t
            .get(key)
            .map_err(|e| spill_error(self.path.unwrap_or(Path::new("?")), e))?;
        Ok(found.map(|g| {
            let (file, pos) = g.value();
            Loc { file, pos }
        }))
    }
}

fn spill_error(path: &Path, e: impl std::fmt::Display) -> TableError {
    TableError::KeyIndexSpill(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(dir: &Path) -> IndexSettings {
        IndexSettings {
            memory_limit: 1 << 20,
            spill_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn lookups_see_memory_then_disk_and_tombstones_shadow_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = KeyStore::new(&tiny(dir.path()));
        for i in 0..1000u32 {
            s.insert(&i.to_be_bytes(), Loc { file: 1, pos: i });
        }
        s.spill().unwrap();
        assert_eq!(s.memory_bytes(), 0);
        assert!(s.disk_bytes() > 0);
        s.insert(&5u32.to_be_bytes(), Loc { file: 2, pos: 0 });
        s.remove(&6u32.to_be_bytes());
        let r = s.reader().unwrap();
        assert_eq!(
            r.get(&4u32.to_be_bytes()).unwrap(),
            Some(Loc { file: 1, pos: 4 }),
            "from disk"
        );
        assert_eq!(
            r.get(&5u32.to_be_bytes()).unwrap(),
            Some(Loc { file: 2, pos: 0 }),
            "memory wins"
        );
        assert_eq!(r.get(&6u32.to_be_bytes()).unwrap(), None, "tombstone shadows disk");
        assert_eq!(r.get(&5000u32.to_be_bytes()).unwrap(), None);
        drop(r);
        s.spill().unwrap();
        let r = s.reader().unwrap();
        assert_eq!(r.get(&5u32.to_be_bytes()).unwrap(), Some(Loc { file: 2, pos: 0 }));
        assert_eq!(
            r.get(&6u32.to_be_bytes()).unwrap(),
            None,
            "deleted on disk by the spill"
        );
    }

    #[test]
    fn the_memtable_spills_when_over_its_share_and_the_directory_goes_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = KeyStore::new(&tiny(dir.path()));
        let mut spilled = false;
        for i in 0..100_000u64 {
            s.insert(&i.to_be_bytes(), Loc { file: 0, pos: i as u32 });
            s.spill_if_full().unwrap();
            spilled |= s.spills() > 0;
            assert!(s.memory_bytes() <= s.memory_limit(), "bounded at {i}");
        }
        assert!(spilled);
        let r = s.reader().unwrap();
        for i in (0..100_000u64).step_by(997) {
            assert_eq!(r.get(&i.to_be_bytes()).unwrap(), Some(Loc { file: 0, pos: i as u32 }));
        }
        drop(r);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(s);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spill directory removed"
        );
    }
}
