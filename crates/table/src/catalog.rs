//! Catalog access: create/load tables through the `iceberg` crate's SQL catalog, and the one
//! operation it does not expose publicly: the compare-and-swap of a table's metadata pointer.
//!
//! The pointer swap is the same UPDATE the JDBC catalog and PyIceberg's SqlCatalog issue
//! (`... WHERE metadata_location = <the one we read>`), so calve interoperates with every
//! engine sharing the catalog database: whoever swaps first wins, the other re-reads.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::io::{FileIO, LocalFsStorageFactory};
use iceberg::spec::{Schema, TableMetadata, TableMetadataRef, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{Catalog as _, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use serde::Deserialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::AnyPool;

use crate::error::{Result, TableError};

/// `[catalog]` in `calve.toml`: where table pointers and files live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Catalog database URL. Embedded default: `sqlite:<path>` (created if missing);
    /// production: `postgres://user:password@host:port/database`.
    pub uri: String,
    /// Warehouse root directory; tables live at `<warehouse>/<namespace>/<table>`.
    pub warehouse: String,
    /// Catalog name stored in every catalog row; readers (PyIceberg's SqlCatalog) must use
    /// the same name to see the tables.
    #[serde(default = "default_catalog_name")]
    pub name: String,
}

fn default_catalog_name() -> String {
    "calve".to_string()
}

/// A table as last read from the catalog.
#[derive(Debug, Clone)]
pub struct TableState {
    /// Catalog identifier.
    pub ident: TableIdent,
    /// The metadata the pointer referred to when read.
    pub metadata: TableMetadataRef,
    /// Where that metadata lives (the value a swap must still find in the catalog).
    pub metadata_location: String,
}

impl TableState {
    fn from_table(t: &Table) -> Result<Self> {
        Ok(TableState {
            ident: t.identifier().clone(),
            metadata: t.metadata_ref(),
            metadata_location: t.metadata_location_result()?.to_string(),
        })
    }
}

/// What to create when a table does not exist yet.
#[derive(Debug, Clone)]
pub struct TableDefinition {
    /// Identifier.
    pub ident: TableIdent,
    /// Schema with field ids.
    pub schema: Schema,
    /// Partition spec.
    pub partition_spec: UnboundPartitionSpec,
    /// Initial table properties.
    pub properties: HashMap<String, String>,
}

/// An open catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    inner: Arc<SqlCatalog>,
    pool: AnyPool,
    name: String,
    file_io: FileIO,
    dollar_binds: bool,
}

impl Catalog {
    /// Connects, creating the SQLite database and the catalog tables if missing.
    pub async fn open(cfg: &CatalogConfig) -> Result<Self> {
        install_default_drivers();
        let (uri, dollar_binds) = normalize_uri(&cfg.uri)?;
        if !cfg.warehouse.contains("://") {
            std::fs::create_dir_all(&cfg.warehouse).map_err(|e| {
                TableError::Catalog(format!("cannot create warehouse {}: {e}", cfg.warehouse))
            })?;
        }
        let pool = AnyPoolOptions::new().max_connections(4).connect(&uri).await?;
        let style = if dollar_binds { SqlBindStyle::DollarNumeric } else { SqlBindStyle::QMark };
        let props = HashMap::from([
            ("uri".to_string(), uri.clone()),
            ("warehouse".to_string(), cfg.warehouse.clone()),
            ("sql_bind_style".to_string(), style.to_string()),
        ]);
        let inner = SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(&cfg.name, props)
            .await?;
        let file_io = iceberg::io::FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build();
        Ok(Catalog { inner: Arc::new(inner), pool, name: cfg.name.clone(), file_io, dollar_binds })
    }

    /// File access for table files.
    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// Loads the table's current state.
    pub async fn load(&self, ident: &TableIdent) -> Result<TableState> {
        TableState::from_table(&self.inner.load_table(ident).await?)
    }

    /// The `iceberg` crate's table handle (for scans).
    pub async fn iceberg_table(&self, ident: &TableIdent) -> Result<Table> {
        Ok(self.inner.load_table(ident).await?)
    }

    /// The metadata file the catalog points at now (one indexed SELECT, no file read).
    pub async fn current_location(&self, ident: &TableIdent) -> Result<Option<String>> {
        let sql = if self.dollar_binds {
            "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3"
        } else {
            "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?"
        };
        let row: Option<(Option<String>,)> = sqlx::query_as(sql)
            .bind(&self.name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// Loads the table unless `cached` is still what the catalog points at: metadata files are
    /// immutable, so a writer that made the current version need not read and parse it again.
    pub async fn load_cached(&self, ident: &TableIdent, cached: Option<TableState>) -> Result<TableState> {
        if let Some(c) = cached {
            if self.current_location(ident).await?.as_deref() == Some(c.metadata_location.as_str()) {
                return Ok(c);
            }
        }
        self.load(ident).await
    }

    /// Whether the table exists.
    pub async fn exists(&self, ident: &TableIdent) -> Result<bool> {
        Ok(self.inner.table_exists(ident).await?)
    }

    /// Loads the table, creating namespace and table first if they do not exist. Two processes
    /// racing to create it both end up loading the one that won.
    pub async fn ensure_table(&self, def: &TableDefinition) -> Result<TableState> {
        if self.inner.table_exists(&def.ident).await? {
            return self.load(&def.ident).await;
        }
        let ns = def.ident.namespace();
        if !self.inner.namespace_exists(ns).await? {
            if let Err(e) = self.inner.create_namespace(ns, HashMap::new()).await {
                if !self.inner.namespace_exists(ns).await? {
                    return Err(e.into());
                }
            }
        }
        let creation = TableCreation::builder()
            .name(def.ident.name().to_string())
            .schema(def.schema.clone())
            .partition_spec(def.partition_spec.clone())
            .properties(def.properties.clone())
            .build();
        match self.inner.create_table(ns, creation).await {
            Ok(t) => TableState::from_table(&t),
            Err(e) if self.inner.table_exists(&def.ident).await? => {
                tracing::debug!(table = %def.ident, "lost the creation race ({e}); loading");
                self.load(&def.ident).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `metadata` to `new_location` and swaps the catalog pointer from `base` to it.
    /// Returns `false` (and removes the written file) when someone else swapped first.
    pub async fn swap(
        &self,
        base: &TableState,
        metadata: &TableMetadata,
        new_location: &iceberg::MetadataLocation,
    ) -> Result<bool> {
        metadata.write_to(&self.file_io, new_location).await?;
        let new_location = new_location.to_string();
        let sql = if self.dollar_binds {
            "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 \
             WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 \
             AND metadata_location = $6"
        } else {
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
             AND metadata_location = ?"
        };
        let result = sqlx::query(sql)
            .bind(&new_location)
            .bind(&base.metadata_location)
            .bind(&self.name)
            .bind(base.ident.namespace().join("."))
            .bind(base.ident.name())
            .bind(&base.metadata_location)
            .execute(&self.pool)
            .await;
        match result {
            Ok(r) if r.rows_affected() == 1 => Ok(true),
            Ok(_) => {
                // Lost the race: the file we wrote is referenced by nothing.
                let _ = self.file_io.delete(&new_location).await;
                Ok(false)
            }
            // Unknown outcome (the swap may have landed): keep the file, let the caller
            // reload and recognise its own commit by commit id.
            Err(e) => Err(e.into()),
        }
    }

    /// A table identifier from dotted parts.
    pub fn ident(namespace: &[String], name: &str) -> Result<TableIdent> {
        Ok(TableIdent::new(NamespaceIdent::from_vec(namespace.to_vec())?, name.to_string()))
    }
}

/// Accepts `sqlite:<path>` (creating the file) and `postgres://…` (the JDBC catalog's schema in
/// an existing database); says whether the driver wants `$n` placeholders.
fn normalize_uri(uri: &str) -> Result<(String, bool)> {
    if let Some(rest) = uri.strip_prefix("sqlite:") {
        let sep = if rest.contains('?') { '&' } else { '?' };
        let uri = if rest.contains("mode=") { uri.to_string() } else { format!("{uri}{sep}mode=rwc") };
        return Ok((uri, false));
    }
    if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
        return Ok((uri.to_string(), true));
    }
    Err(TableError::Catalog(format!("`{uri}` is not a catalog URL (expected sqlite:<path> or postgres://…)")))
}
