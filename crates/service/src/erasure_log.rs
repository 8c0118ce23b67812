//! The erasure log: one JSON object per `calve erase` request under
//! `<warehouse>/_calve/erasure-log/` — when, which table, who asked, what was removed, whether
//! it verified, and an HMAC-SHA256 of each erased key (never the key, nor a plain hash, which a
//! dictionary over a small key space such as customer ids reverses).
//!
//! One object per request rather than one appended file, because an object store cannot
//! append and two erasures must never overwrite each other's record. The log is opened —
//! its HMAC key found or created — before anything is erased, so an erasure that cannot be
//! recorded does not happen.

use calve_contract::Secret;
use calve_table::storage::local_path;
use calve_table::Catalog;
use hmac::{Hmac, Mac};
use iceberg::io::FileIO;
use serde::Deserialize;
use sha2::Sha256;

use crate::erase::ErasureOutcome;
use crate::error::ServiceError;

/// `[erasure]` in `calve.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErasureConfig {
    /// The key of the HMAC-SHA256 that the erasure log records instead of each erased key
    /// (write `"${env:NAME}"` or `"${file:/path}"`). Kept away from the warehouse, it makes the
    /// log useless for guessing keys: whoever holds it can still check that a given key was
    /// erased. Unset: a random key is created once beside the log
    /// (`_calve/erasure-log.key`; mode 0600 on a local disk), which defeats precomputed tables
    /// but not someone who can read both.
    #[serde(default)]
    pub hmac_key: Option<Secret>,
}

/// An open erasure log: where records go and the key that hides the erased keys.
pub struct ErasureLog {
    io: FileIO,
    dir: String,
    hmac_key: Secret,
    key_source: &'static str,
}

impl ErasureLog {
    /// Opens the log under `catalog`'s state root (`[catalog] state`, else the warehouse),
    /// finding or creating its HMAC key.
    pub async fn open(catalog: &Catalog, cfg: &ErasureConfig) -> Result<Self, ServiceError> {
        let storage = catalog.storage();
        let io = storage.file_io();
        let root = format!("{}/_calve", storage.state_root());
        let (hmac_key, key_source) = match &cfg.hmac_key {
            Some(k) => (k.clone(), "config"),
            None => {
                let path = format!("{root}/erasure-log.key");
                let key = if storage.is_object_store() {
                    object_store_key(&io, &path).await?
                } else {
                    local_key(&path).map_err(|e| ServiceError::Io(format!("the erasure log's key {path}: {e}")))?
                };
                (Secret::new(key), "warehouse")
            }
        };
        if hmac_key.expose().trim().is_empty() {
            return Err(ServiceError::Config(format!(
                "the erasure log's HMAC key ({key_source}) is empty: erased keys would be as good as unhidden"
            )));
        }
        let dir = format!("{root}/erasure-log");
        // FileIO's local writer does not make parent directories; made here, so that a log
        // that cannot be written is found before anything is erased.
        if !storage.is_object_store() {
            let local = local_path(&dir);
            std::fs::create_dir_all(local).map_err(|e| ServiceError::Io(format!("creating {local}: {e}")))?;
        }
        Ok(ErasureLog {
            io,
            dir,
            hmac_key,
            key_source,
        })
    }

    /// Records one request; returns where.
    pub async fn record(
        &self,
        table: &str,
        keys: &[String],
        requested_by: &str,
        outcome: &ErasureOutcome,
    ) -> Result<String, ServiceError> {
        let (r, dead) = (&outcome.table, &outcome.dead_letters);
        let now = chrono::Utc::now();
        let hashes: Vec<String> = keys
            .iter()
            .map(|k| key_hmac(self.hmac_key.expose().as_bytes(), k))
            .collect();
        let entry = serde_json::json!({
            "at": now.to_rfc3339(),
            "table": table,
            "requested_by": requested_by,
            "key_hmac_sha256": hashes,
            "hmac_key": self.key_source,
            "files_rewritten": r.files_with_key.len(),
            "rows_removed": r.rows_removed,
            "snapshots_expired": r.snapshots_expired,
            "dead_letters_removed": dead.rows_removed,
            "orphans_deleted": r.orphans_deleted.len() + dead.orphans_deleted.len(),
            "young_unreferenced": r.young_unreferenced.len() + dead.young_unreferenced.len(),
            "verified": outcome.verified(),
            "caveats": outcome.caveats,
        });
        // Sorts by time; the random tail keeps two requests of one microsecond apart.
        let path = format!(
            "{}/{}-{table}-{:08x}.json",
            self.dir,
            now.format("%Y%m%dT%H%M%S%.6fZ"),
            rand::random::<u32>()
        );
        let fail = |e: iceberg::Error| ServiceError::Io(format!("writing the erasure log entry {path}: {e}"));
        self.io
            .new_output(&path)
            .map_err(fail)?
            .write(entry.to_string().into_bytes().into())
            .await
            .map_err(fail)?;
        Ok(path)
    }
}

/// HMAC-SHA256 of an erased key as the log records it (hex): how a holder of the HMAC key
/// checks that the log covers a given key.
pub fn key_hmac(hmac_key: &[u8], key: &str) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(hmac_key).expect("HMAC accepts any key length");
    mac.update(key.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn new_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The warehouse's own key on a local disk: created once, readable by the owner only.
fn local_key(path: &str) -> std::io::Result<String> {
    use std::io::Write;
    let path = std::path::Path::new(local_path(path));
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap_or(path))?;
        // Written whole under another name and linked into place, which fails if a concurrent
        // erasure got there first: nobody ever reads a half-written key.
        let tmp = path.with_extension(format!("key.{:016x}", rand::random::<u64>()));
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let written = open.open(&tmp).and_then(|mut f| {
            f.write_all(new_key().as_bytes())?;
            f.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// The warehouse's own key in an object store: read, else written and read back (when two
/// first erasures race, both use whichever write landed last; set `[erasure] hmac_key` to
/// avoid depending on that).
async fn object_store_key(io: &FileIO, path: &str) -> Result<String, ServiceError> {
    let fail = |e: iceberg::Error| ServiceError::Io(format!("the erasure log's key {path}: {e}"));
    if !io.exists(path).await.map_err(fail)? {
        io.new_output(path)
            .map_err(fail)?
            .write(new_key().into_bytes().into())
            .await
            .map_err(fail)?;
    }
    let bytes = io.new_input(path).map_err(fail)?.read().await.map_err(fail)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_entries(dir: &std::path::Path) -> Vec<serde_json::Value> {
        let mut entries: Vec<_> = std::fs::read_dir(dir.join("_calve/erasure-log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        entries
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// An in-memory catalog whose warehouse is a new temporary directory.
    async fn catalog_in_temp_warehouse() -> (tempfile::TempDir, Catalog) {
        let warehouse = tempfile::tempdir().unwrap();
        let cfg = calve_table::CatalogConfig::new("sqlite::memory:", warehouse.path().display().to_string());
        (warehouse, Catalog::open(&cfg).await.unwrap())
    }

    #[tokio::test]
    async fn the_log_records_an_hmac_under_the_configured_key() {
        // RFC 4231, test case 2: this is HMAC-SHA256 and not some other keyed hash.
        assert_eq!(
            key_hmac(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let (warehouse, catalog) = catalog_in_temp_warehouse().await;
        let cfg = ErasureConfig {
            hmac_key: Some(Secret::new("from-the-vault")),
        };
        let log = ErasureLog::open(&catalog, &cfg).await.unwrap();
        let keys = ["99".to_string(), "100".to_string()];
        for _ in 0..2 {
            log.record("crm.customers", &keys, "dpo", &ErasureOutcome::default())
                .await
                .unwrap();
        }
        let entries = read_entries(warehouse.path());
        assert_eq!(entries.len(), 2, "one object per request, none overwritten");
        assert_eq!(entries[0]["hmac_key"], "config");
        assert_eq!(
            entries[0]["key_hmac_sha256"],
            serde_json::json!([key_hmac(b"from-the-vault", "99"), key_hmac(b"from-the-vault", "100")])
        );
        let text = serde_json::to_string(&entries).unwrap();
        assert!(!text.contains("from-the-vault") && !text.contains("\"99\""));
        assert!(
            !warehouse.path().join("_calve/erasure-log.key").exists(),
            "no key of its own when one is configured"
        );
    }

    #[tokio::test]
    async fn an_empty_key_is_refused_before_anything_is_erased() {
        let (_warehouse, catalog) = catalog_in_temp_warehouse().await;
        let cfg = ErasureConfig {
            hmac_key: Some(Secret::new(" ")),
        };
        assert!(ErasureLog::open(&catalog, &cfg).await.is_err());
    }
}
