//! `calve.toml`: the process configuration (where the catalog and Kafka are, which contracts
//! to run). Table behaviour lives in the contracts, not here.

use std::fmt;
use std::path::{Path, PathBuf};

use calve_contract::{ByteSize, Contract, HumanDuration};
use calve_ingest::registry::RegistryConfig;
use calve_ingest::KafkaConfig;
use calve_table::keyed::index::IndexSettings;
use calve_table::CatalogConfig;
use serde::Deserialize;

use crate::duty::GroupConfig;
use crate::erasure_log::ErasureConfig;
use crate::error::ServiceError;
use crate::http::HttpConfig;
use crate::interpolate;
use crate::memory::{MemoryConfig, MIN_BUDGET};

/// The whole `calve.toml`. `Debug` redacts what each part knows to be secret, and on top of
/// that every value a `${…}` reference resolved to, wherever it was put (a misspelled
/// property name cannot make a password printable).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Catalog and warehouse.
    pub catalog: CatalogConfig,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Contract files, relative to this file's directory; each entry may be a glob
    /// (`contracts/*.toml`) or a directory (every `*.toml` in it).
    pub contracts: Vec<PathBuf>,
    /// The background maintenance of every table (what it may spend is in each contract).
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// Memory and spill space of keyed tables' key indexes.
    #[serde(default)]
    pub key_index: KeyIndexConfig,
    /// The schema registry writer schemas come from (needed by contracts whose format is
    /// `avro`).
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (nothing listens without it).
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// `[erasure]`: how the erasure log hides the keys it records.
    #[serde(default)]
    pub erasure: ErasureConfig,
    /// `[memory]`: one budget for all tables' buffers, key indexes and Kafka prefetch (absent:
    /// each table's own limits apply, whatever their number).
    #[serde(default)]
    pub memory: Option<MemoryConfig>,
    /// `[group]`: share the tables' commit duty with the other processes of the Kafka group
    /// (absent: this process commits every table).
    #[serde(default)]
    pub group: Option<GroupConfig>,
    /// The values `${…}` references resolved to (never printed; scrubbed from `Debug`).
    #[serde(skip)]
    resolved: Vec<String>,
}

impl fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = format!(
            "RunConfig {{ catalog: {:?}, kafka: {:?}, contracts: {:?}, maintenance: {:?}, key_index: {:?}, \
             registry: {:?}, http: {:?}, erasure: {:?}, memory: {:?}, group: {:?} }}",
            self.catalog,
            self.kafka,
            self.contracts,
            self.maintenance,
            self.key_index,
            self.registry,
            self.http,
            self.erasure,
            self.memory,
            self.group
        );
        f.write_str(&interpolate::scrub(&shown, &self.resolved))
    }
}

/// `[key_index]` in `calve.toml`: how much memory each keyed table's index may hold before it
/// spills to local disk, and where. Size it to the machine, not to the table: a table with
/// more keys than fit spills and keeps running, at the cost of disk lookups.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeyIndexConfig {
    /// Memory of one table's index (default "1GiB"): three quarters for recent entries, the
    /// rest as page cache of the spilled part.
    pub memory: ByteSize,
    /// Directory for spill files (default: the system's temporary directory). Each index
    /// spills into a private subdirectory removed when it closes; use a local disk.
    pub spill_dir: Option<PathBuf>,
}

impl Default for KeyIndexConfig {
    fn default() -> Self {
        let d = IndexSettings::default();
        KeyIndexConfig {
            memory: ByteSize(d.memory_limit),
            spill_dir: None,
        }
    }
}

impl KeyIndexConfig {
    /// The index settings this section describes.
    pub fn settings(&self) -> IndexSettings {
        IndexSettings {
            memory_limit: self.memory.0,
            spill_dir: self
                .spill_dir
                .clone()
                .unwrap_or_else(|| IndexSettings::default().spill_dir),
        }
    }
}

/// `[maintenance]` in `calve.toml`: whether and how often `calve run` maintains its tables.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run maintenance inside `calve run` (default true; `calve maintain` works either way).
    pub enabled: bool,
    /// Time between two cycles of one table (default "1m").
    pub interval: HumanDuration,
    /// Worker threads maintenance runs on, apart from ingestion and at a lower CPU priority
    /// (default: a quarter of the cores, at least one). At most this many cycles (of all
    /// tables) run at once, which also bounds the memory compactions hold together.
    pub threads: usize,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            interval: HumanDuration(std::time::Duration::from_secs(60)),
            threads: std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)),
        }
    }
}

/// The contract files `entries` name, relative to `dir`: a file as it is, a directory as every
/// `*.toml` in it, a glob as its matches (in name order). A directory or glob that names
/// nothing is an error: a typo must not start a process with fewer tables than meant.
fn contract_files(entries: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for entry in entries {
        let path = match entry.is_relative() {
            true => dir.join(entry),
            false => entry.clone(),
        };
        let text = path.to_string_lossy();
        let pattern = match (path.is_dir(), text.contains(['*', '?', '['])) {
            (true, _) => format!("{}/*.toml", glob::Pattern::escape(&text)),
            (false, true) => text.to_string(),
            (false, false) => {
                files.push(path);
                continue;
            }
        };
        let mut found = glob::glob(&pattern)
            .map_err(|e| format!("contracts: `{}`: {e}", entry.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("contracts: `{}`: {e}", entry.display()))?;
        if found.is_empty() {
            return Err(format!("contracts: `{}` names no contract file", entry.display()));
        }
        found.sort();
        files.extend(found);
    }
    // A file both listed and matched by a glob is one contract, not two.
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|f| seen.insert(f.clone()));
    Ok(files)
}

impl RunConfig {
    /// Reads `path`, resolving `${env:…}` / `${file:…}` references in its values (see
    /// [`crate::interpolate`]) and contract paths against its directory.
    pub fn load(path: &Path) -> Result<Self, ServiceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServiceError::Config(format!("cannot read {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fail = |e: &str| ServiceError::Config(format!("{}: {e}", path.display()));
        // A syntax error names its line, never quotes it: the line may hold a secret.
        let raw: toml::Value = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            fail(&format!("line {}: {}", line.unwrap_or(0), e.message()))
        })?;
        let resolved = interpolate::resolve(raw, dir).map_err(|e| fail(&e))?;
        // A type error may quote the value it refused; a resolved secret must not be shown.
        let mut cfg = RunConfig::deserialize(resolved.value)
            .map_err(|e| fail(&interpolate::scrub(e.message(), &resolved.secrets)))?;
        cfg.resolved = resolved.secrets;
        cfg.contracts = contract_files(&cfg.contracts, dir).map_err(|e| fail(&e))?;
        if cfg.memory.as_ref().is_some_and(|m| m.budget.0 < MIN_BUDGET) {
            return Err(fail("`[memory] budget` must be at least 8MiB"));
        }
        if cfg.maintenance.threads == 0 {
            return Err(fail("`[maintenance] threads` must be at least 1"));
        }
        if cfg.contracts.is_empty() {
            return Err(ServiceError::Config(format!(
                "{}: `contracts` lists no contract",
                path.display()
            )));
        }
        Ok(cfg)
    }

    /// Loads and validates every contract, reporting all invalid ones together.
    pub fn contracts(&self) -> Result<Vec<Contract>, ServiceError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for p in &self.contracts {
            match Contract::from_file(p) {
                Ok(c) => ok.push(c),
                Err(e) => bad.push(e),
            }
        }
        if !bad.is_empty() {
            return Err(ServiceError::Contracts(bad));
        }
        let mut names: Vec<&str> = ok.iter().map(|c| c.table.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ServiceError::Config(format!("two contracts define table {}", w[0])));
        }
        if let Some(c) = ok
            .iter()
            .find(|c| c.table.format.uses_registry() && self.registry.is_none())
        {
            return Err(ServiceError::Config(format!(
                "table {} reads values with registry schemas, and calve.toml has no [registry] to take them from",
                c.table.name
            )));
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "contracts = [\"c.toml\"]\n[catalog]\nuri = \"sqlite:/tmp/c.db\"\nwarehouse = \"/tmp/w\"\n[kafka]\nbrokers = \"localhost:9092\"\n";

    #[test]
    fn key_index_defaults_and_settings() {
        let cfg: RunConfig = toml::from_str(BASE).unwrap();
        assert_eq!(cfg.key_index.settings(), IndexSettings::default());
        let cfg: RunConfig = toml::from_str(&format!(
            "{BASE}[key_index]\nmemory = \"64MB\"\nspill_dir = \"/var/tmp/idx\"\n"
        ))
        .unwrap();
        let s = cfg.key_index.settings();
        assert_eq!(
            (s.memory_limit, s.spill_dir),
            (64_000_000, PathBuf::from("/var/tmp/idx"))
        );
    }

    #[test]
    fn contracts_may_be_files_globs_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("contracts")).unwrap();
        for f in ["contracts/b.toml", "contracts/a.toml", "contracts/notes.md", "one.toml"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let files = |entries: &[&str]| contract_files(&entries.iter().map(PathBuf::from).collect::<Vec<_>>(), d);
        let sorted = vec![d.join("contracts/a.toml"), d.join("contracts/b.toml")];
        assert_eq!(files(&["contracts/*.toml"]).unwrap(), sorted);
        assert_eq!(files(&["contracts"]).unwrap(), sorted);
        // A file named and matched is one contract; a named file is taken as it is.
        assert_eq!(
            files(&["contracts/b.toml", "contracts", "one.toml"]).unwrap(),
            vec![
                d.join("contracts/b.toml"),
                d.join("contracts/a.toml"),
                d.join("one.toml")
            ]
        );
        let e = files(&["contract/*.toml"]).unwrap_err();
        assert!(e.contains("names no contract file"), "{e}");
    }

    #[test]
    fn group_section_defaults() {
        let cfg: RunConfig = toml::from_str(BASE).unwrap();
        assert_eq!(cfg.group, None);
        let cfg: RunConfig = toml::from_str(&format!(
            "{BASE}[group]
"
        ))
        .unwrap();
        let g = cfg.group.unwrap();
        assert_eq!(
            (g.topic, g.session_timeout.0),
            (None, std::time::Duration::from_secs(10))
        );
        assert!(toml::from_str::<RunConfig>(&format!(
            "{BASE}[group]
members = 3
"
        ))
        .is_err());
    }

    #[test]
    fn http_section_listens_on_localhost_by_default() {
        let cfg: RunConfig = toml::from_str(BASE).unwrap();
        assert_eq!(cfg.http, None);
        let cfg: RunConfig = toml::from_str(&format!("{BASE}[http]\n")).unwrap();
        assert_eq!(cfg.http.unwrap().listen.to_string(), "127.0.0.1:9464");
        let cfg: RunConfig = toml::from_str(&format!("{BASE}[http]\nlisten = \"0.0.0.0:9100\"\n")).unwrap();
        assert_eq!(cfg.http.unwrap().listen.to_string(), "0.0.0.0:9100");
        assert!(toml::from_str::<RunConfig>(&format!("{BASE}[http]\nport = 9100\n")).is_err());
    }

    /// The deployment example README's "Deploying" walks through loads, its secrets resolved
    /// from the credential files systemd would hand over, and none of them printable.
    #[test]
    fn the_deployment_example_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("deploy/calve.toml")).unwrap();
        let creds = "/run/credentials/calve.service/";
        assert!(text.contains(creds), "the example reads systemd credentials");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("catalog-credential"),
            "calve-client:s3cr3t-Client-Secret\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("kafka-password"), "k4fka-Password-Secret").unwrap();
        let config = dir.path().join("calve.toml");
        std::fs::write(&config, text.replace(creds, &format!("{}/", dir.path().display()))).unwrap();

        let cfg = RunConfig::load(&config).unwrap();
        assert!(cfg.catalog.is_rest());
        // Its warehouse is a name: calve's own files need the `state` location it gives.
        let storage = calve_table::storage::Storage::of(&cfg.catalog).unwrap();
        assert_eq!(storage.state_root(), "s3://lake-bucket/calve");
        assert_eq!(
            cfg.catalog.credential.as_ref().map(|c| c.expose().to_string()),
            Some("calve-client:s3cr3t-Client-Secret".to_string())
        );
        assert_eq!(cfg.contracts, vec![dir.path().join("contracts/orders.toml")]);
        let shown = format!("{cfg:?}");
        for secret in ["s3cr3t-Client-Secret", "k4fka-Password-Secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn maintenance_needs_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calve.toml");
        std::fs::write(&path, format!("{BASE}[maintenance]\nthreads = 0\n")).unwrap();
        let e = RunConfig::load(&path).unwrap_err();
        assert!(
            e.to_string().contains("`[maintenance] threads` must be at least 1"),
            "{e}"
        );
        std::fs::write(&path, format!("{BASE}[maintenance]\nthreads = 3\n")).unwrap();
        assert_eq!(RunConfig::load(&path).unwrap().maintenance.threads, 3);
        assert!(MaintenanceConfig::default().threads >= 1);
    }

    #[test]
    fn unknown_key_index_fields_are_refused() {
        let e = toml::from_str::<RunConfig>(&format!("{BASE}[key_index]\nmemroy = \"64MB\"\n")).unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
    }
}
