//! `calve.toml`: the process configuration (where the catalog and Kafka are, which contracts
//! to run). Table behaviour lives in the contracts, not here.

use std::path::{Path, PathBuf};

use calve_contract::{Contract, HumanDuration};
use calve_ingest::KafkaConfig;
use calve_table::CatalogConfig;
use serde::Deserialize;

use crate::error::ServiceError;

/// The whole `calve.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Catalog and warehouse.
    pub catalog: CatalogConfig,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Contract files, relative to this file's directory.
    pub contracts: Vec<PathBuf>,
    /// The background maintenance of every table (what it may spend is in each contract).
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
}

/// `[maintenance]` in `calve.toml`: whether and how often `calve run` maintains its tables.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run maintenance inside `calve run` (default true; `calve maintain` works either way).
    pub enabled: bool,
    /// Time between two cycles of one table (default "1m").
    pub interval: HumanDuration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig { enabled: true, interval: HumanDuration(std::time::Duration::from_secs(60)) }
    }
}

impl RunConfig {
    /// Reads `path`, resolving contract paths against its directory.
    pub fn load(path: &Path) -> Result<Self, ServiceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServiceError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut cfg: RunConfig = toml::from_str(&text)
            .map_err(|e| ServiceError::Config(format!("{}: {}", path.display(), e.message())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for c in &mut cfg.contracts {
            if c.is_relative() {
                *c = dir.join(&*c);
            }
        }
        if cfg.contracts.is_empty() {
            return Err(ServiceError::Config(format!("{}: `contracts` lists no contract", path.display())));
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
        Ok(ok)
    }
}
