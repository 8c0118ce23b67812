//! Where a warehouse's files live: a local directory (the embedded default) or an S3 bucket
//! (`s3://bucket/prefix`, on AWS or any S3-compatible server).
//!
//! Every file calve reads or writes goes through the Iceberg `FileIO` made here, so the
//! writers, the commit layer, maintenance and erasure need not know which it is. Listing a
//! prefix, which orphan cleanup needs and `FileIO` cannot do, goes through OpenDAL — the layer
//! under that `FileIO` — with the same settings. Settings use Iceberg's own property names
//! (`s3.endpoint`, `s3.region`, `s3.path-style-access`, `s3.access-key-id`,
//! `s3.secret-access-key`, `s3.session-token`), which PyIceberg, Spark and REST catalogs share;
//! without keys, credentials come from the standard AWS chain (environment, profile, web
//! identity, instance metadata).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use iceberg::io::{FileIO, FileIOBuilder, LocalFsStorageFactory, StorageFactory};
use iceberg_storage_opendal::OpenDalStorageFactory;

use crate::catalog::CatalogConfig;
use crate::error::{Result, TableError};

/// A warehouse root and the settings of the store it is on.
#[derive(Clone)]
pub struct Storage {
    root: String,
    /// Where calve's own files go (trimmed like `root`).
    state: String,
    properties: Arc<BTreeMap<String, String>>,
    /// A REST catalog's warehouse is often a name, not a location: with S3 settings given,
    /// its tables are in S3 all the same.
    s3_by_settings: bool,
}

impl std::fmt::Debug for Storage {
    // The properties may hold keys: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("root", &self.root)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A file found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its location as table metadata writes it (a path, or `s3://bucket/key`).
    pub location: String,
    /// When it was last written (objects: as the store reports it).
    pub modified: SystemTime,
}

/// `root` (a warehouse or state location) without a trailing `/`, if it is one calve can use.
fn checked_root(root: &str) -> Result<String> {
    if root.contains("://") && !root.starts_with("file:") && !is_object_store(root) {
        return Err(TableError::Config(format!(
            "warehouse {root}: a local directory or s3://bucket/prefix (gs://, abfss:// are not built in)"
        )));
    }
    if bucket_and_key(root).is_some_and(|(bucket, _)| bucket.is_empty()) {
        return Err(TableError::Config(format!("warehouse {root} names no bucket")));
    }
    Ok(trimmed_root(root).to_string())
}

/// Whether `location` is in an object store rather than a local directory.
fn is_object_store(location: &str) -> bool {
    bucket_and_key(location).is_some()
}

/// `(bucket, key)` of an `s3://`, `s3a://` or `s3n://` location.
fn bucket_and_key(location: &str) -> Option<(&str, &str)> {
    let rest = ["s3://", "s3a://", "s3n://"]
        .iter()
        .find_map(|scheme| location.strip_prefix(scheme))?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

impl Storage {
    /// The store `root` (the warehouse) is on, with `properties` (`[catalog.storage]`).
    pub fn new(root: &str, properties: &BTreeMap<String, String>) -> Result<Self> {
        let root = checked_root(root)?;
        Ok(Storage {
            s3_by_settings: false,
            state: root.clone(),
            root,
            properties: Arc::new(properties.clone()),
        })
    }

    /// The store of `[catalog]`: for a REST catalog (whose warehouse may be a name), S3 when
    /// `[catalog.storage]` has S3 settings, whatever the warehouse says. Its state root must
    /// then be a location.
    pub fn of(cfg: &CatalogConfig) -> Result<Self> {
        let mut storage = Storage::new(&cfg.warehouse, &cfg.storage)?;
        storage.state = checked_root(cfg.state_root())?;
        storage.s3_by_settings = cfg.is_rest() && cfg.storage.keys().any(|k| k.starts_with("s3."));
        if storage.s3_by_settings && !is_object_store(&storage.state) {
            return Err(TableError::Config(format!(
                "the warehouse `{}` is a name, not a location, and the tables' files are in S3: give \
                 `state = \"s3://bucket/prefix\"` in [catalog] for calve's own files (maintenance status, \
                 erasure log)",
                cfg.warehouse
            )));
        }
        Ok(storage)
    }

    /// The same store with `properties` instead of `[catalog.storage]` (a REST catalog's
    /// configuration layered with it); which store it is does not change.
    pub fn with_properties(mut self, properties: BTreeMap<String, String>) -> Self {
        self.properties = Arc::new(properties);
        self
    }

    /// Whether the warehouse is in an object store.
    pub fn is_object_store(&self) -> bool {
        is_object_store(&self.root) || self.s3_by_settings
    }

    /// The warehouse root without a trailing `/` (tables are made at `<root>/<namespace>/…`,
    /// and a doubled `/` is a different path to metadata but the same object to the store).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Where calve keeps its own files (`<state_root>/_calve/…`: maintenance status, erasure
    /// log): `[catalog] state`, else the warehouse root.
    pub fn state_root(&self) -> &str {
        &self.state
    }

    /// Makes sure a local warehouse exists (an object store needs nothing made).
    pub fn prepare(&self) -> Result<()> {
        if self.is_object_store() {
            return Ok(());
        }
        let dir = local_path(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| TableError::Config(format!("cannot create warehouse {dir}: {e}")))
    }

    /// The `FileIO` every table file goes through.
    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(self.factory()).with_props(self.properties()).build()
    }

    /// The factory of that `FileIO` (for a catalog that builds its own from properties).
    pub fn factory(&self) -> Arc<dyn StorageFactory> {
        if self.is_object_store() {
            Arc::new(OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            })
        } else {
            Arc::new(LocalFsStorageFactory)
        }
    }

    /// The store's properties (`[catalog.storage]`).
    pub fn properties(&self) -> impl Iterator<Item = (&String, &String)> {
        self.properties.iter()
    }

    /// Every file under `prefix` (a table's location), recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        match bucket_and_key(prefix) {
            Some((bucket, key)) => self.list_objects(prefix, bucket, key).await,
            None if prefix.contains("://") && !prefix.starts_with("file:") => Err(TableError::Unsupported(format!(
                "listing {prefix}: only local directories and s3:// are built in"
            ))),
            None => {
                let dir = local_path(prefix).to_string();
                tokio::task::spawn_blocking(move || list_dir(&dir))
                    .await
                    .map_err(|e| TableError::Catalog(format!("listing {prefix}: {e}")))?
            }
        }
    }

    async fn list_objects(&self, prefix: &str, bucket: &str, key: &str) -> Result<Vec<Listed>> {
        let fail = |e: opendal::Error| TableError::Catalog(format!("listing {prefix}: {e}"));
        let op = opendal::Operator::new(self.s3_builder(bucket))
            .map_err(fail)?
            .layer(opendal::layers::TimeoutLayer::new())
            .layer(opendal::layers::RetryLayer::new())
            .finish();
        let dir = format!("{}/", key.trim_end_matches('/'));
        let scheme = &prefix[..prefix.find("://").unwrap_or(0) + 3];
        let entries = op.list_with(&dir).recursive(true).await.map_err(fail)?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| Listed {
                location: format!("{scheme}{bucket}/{}", e.path()),
                modified: e
                    .metadata()
                    .last_modified()
                    .map(SystemTime::from)
                    .unwrap_or_else(SystemTime::now),
            })
            .collect())
    }

    /// OpenDAL's S3 service with the warehouse's properties, read the way Iceberg's FileIO
    /// reads them.
    fn s3_builder(&self, bucket: &str) -> opendal::services::S3 {
        let p: HashMap<&str, &str> = self.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut b = opendal::services::S3::default().bucket(bucket);
        if let Some(v) = p.get("s3.endpoint") {
            b = b.endpoint(v);
        }
        if let Some(v) = p.get("client.region").or(p.get("s3.region")) {
            b = b.region(v);
        }
        if let Some(v) = p.get("s3.access-key-id") {
            b = b.access_key_id(v);
        }
        if let Some(v) = p.get("s3.secret-access-key") {
            b = b.secret_access_key(v);
        }
        if let Some(v) = p.get("s3.session-token") {
            b = b.session_token(v);
        }
        // Iceberg's default is virtual-host style unless path style is asked for; OpenDAL's is
        // the other way round.
        if !p.get("s3.path-style-access").is_some_and(|v| truthy(v)) {
            b = b.enable_virtual_host_style();
        }
        if let Some(v) = p.get("s3.assume-role-arn") {
            b = b.role_arn(v);
        }
        if let Some(v) = p.get("s3.assume-role-external-id") {
            b = b.external_id(v);
        }
        if let Some(v) = p.get("s3.assume-role-session-name") {
            b = b.role_session_name(v);
        }
        let flag = |k: &str| p.get(k).is_some_and(|v| truthy(v));
        if flag("s3.allow-anonymous") {
            b = b.skip_signature();
        }
        if flag("s3.disable-ec2-metadata") {
            b = b.disable_ec2_metadata();
        }
        if flag("s3.disable-config-load") {
            b = b.disable_config_load();
        }
        b
    }
}

/// What Iceberg's FileIO takes for true.
fn truthy(v: &str) -> bool {
    ["true", "t", "1", "on"].contains(&v.trim().to_ascii_lowercase().as_str())
}

/// `root` without trailing `/`s, but never emptier than `scheme://` or `/`.
fn trimmed_root(root: &str) -> &str {
    let trimmed = root.trim_end_matches('/');
    if trimmed.is_empty() || trimmed.ends_with(':') {
        root
    } else {
        trimmed
    }
}

/// The path of a local location (`/w`, `file:/w`, `file:///w`).
pub fn local_path(location: &str) -> &str {
    location
        .strip_prefix("file://")
        .or_else(|| location.strip_prefix("file:"))
        .unwrap_or(location)
}

fn list_dir(root: &str) -> Result<Vec<Listed>> {
    let fail = |e: std::io::Error| TableError::Catalog(format!("listing {root}: {e}"));
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A table that never wrote a file has no directory of its own yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.as_os_str() == root => return Ok(out),
            Err(e) => return Err(fail(e)),
        };
        for entry in entries {
            let entry = entry.map_err(fail)?;
            let md = entry.metadata().map_err(fail)?;
            if md.is_dir() {
                dirs.push(entry.path());
            } else {
                out.push(Listed {
                    location: entry.path().display().to_string(),
                    modified: md.modified().map_err(fail)?,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warehouses_are_local_or_s3() {
        assert!(is_object_store("s3://lake/prefix") && is_object_store("s3a://lake"));
        assert!(!is_object_store("/var/lib/calve") && !is_object_store("file:///var/lib/calve"));
        assert_eq!(bucket_and_key("s3://lake/a/b"), Some(("lake", "a/b")));
        assert_eq!(bucket_and_key("s3://lake"), Some(("lake", "")));
        let none = BTreeMap::new();
        assert!(Storage::new("gs://lake/x", &none).is_err());
        assert!(Storage::new("s3:///x", &none).is_err());
        assert!(Storage::new("s3://lake/x", &none).is_ok() && Storage::new("/tmp/w", &none).is_ok());
        assert_eq!(Storage::new("s3://lake/x/", &none).unwrap().root(), "s3://lake/x");
        assert_eq!(Storage::new("/", &none).unwrap().root(), "/");
        assert!(truthy("1") && truthy("On") && truthy("true") && !truthy("false") && !truthy(""));
        let mut rest = CatalogConfig::new("https://polaris:8181/api/catalog", "lakehouse");
        rest.storage = BTreeMap::from([("s3.region".to_string(), "eu-west-1".to_string())]);
        let err = Storage::of(&rest).unwrap_err().to_string();
        assert!(
            err.contains("`lakehouse` is a name") && err.contains("state"),
            "calve's own files need a location: {err}"
        );
        rest.state = Some("s3://lake/calve/".into());
        let storage = Storage::of(&rest).unwrap();
        assert!(storage.is_object_store(), "a REST warehouse name with S3 settings");
        assert_eq!(
            storage.state_root(),
            "s3://lake/calve",
            "calve's own files under `state`"
        );
        let mut local = CatalogConfig::new("sqlite:/tmp/c.db", "/tmp/w");
        local.storage = rest.storage.clone();
        assert!(
            !Storage::of(&local).unwrap().is_object_store(),
            "a local path stays local"
        );
    }
}
