//! The SQL catalog (SQLite embedded, PostgreSQL in production): create/load through the
//! `iceberg` crate's `SqlCatalog`, plus the one operation it does not expose publicly, the
//! compare-and-swap of a table's metadata pointer.
//!
//! The swap is the same UPDATE the JDBC catalog and PyIceberg's SqlCatalog issue
//! (`... WHERE metadata_location = <the one we read>`), so calve interoperates with every
//! engine sharing the catalog database: whoever swaps first wins, the other re-reads.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::io::FileIO;
use iceberg::spec::TableMetadataBuildResult;
use iceberg::{CatalogBuilder, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::AnyPool;

use super::{CatalogConfig, TableState};
use crate::error::{Result, TableError};
use crate::storage::Storage;

/// An open SQL catalog.
#[derive(Debug, Clone)]
pub(super) struct Sql {
    pub(super) inner: Arc<SqlCatalog>,
    pool: AnyPool,
    name: String,
    file_io: FileIO,
    dollar_binds: bool,
}

impl Sql {
    /// Connects, creating the SQLite database and the catalog tables if missing.
    pub(super) async fn open(cfg: &CatalogConfig, storage: &Storage, file_io: FileIO) -> Result<Self> {
        install_default_drivers();
        let (uri, dollar_binds) = normalize_uri(&cfg.uri)?;
        let pool = AnyPoolOptions::new().max_connections(4).connect(&uri).await?;
        let style = if dollar_binds {
            SqlBindStyle::DollarNumeric
        } else {
            SqlBindStyle::QMark
        };
        // The catalog writes metadata files through a FileIO of its own: the same store.
        let mut props: HashMap<String, String> = storage.properties().map(|(k, v)| (k.clone(), v.clone())).collect();
        props.extend([
            ("uri".to_string(), uri.clone()),
            ("warehouse".to_string(), storage.root().to_string()),
            ("sql_bind_style".to_string(), style.to_string()),
        ]);
        let inner = SqlCatalogBuilder::default()
            .with_storage_factory(storage.factory())
            .load(&cfg.name, props)
            .await?;
        Ok(Sql {
            inner: Arc::new(inner),
            pool,
            name: cfg.name.clone(),
            file_io,
            dollar_binds,
        })
    }

    /// The metadata file the catalog points at now (one indexed SELECT, no file read).
    pub(super) async fn current_location(&self, ident: &TableIdent) -> Result<Option<String>> {
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

    /// Writes the new metadata file and swaps the pointer from `base` to it. `None` (and the
    /// written file removed) when someone else swapped first.
    pub(super) async fn commit(
        &self,
        base: &TableState,
        built: &TableMetadataBuildResult,
    ) -> Result<Option<TableState>> {
        let loc: iceberg::MetadataLocation = base.metadata_location.parse()?;
        let new_location = loc.with_next_version().with_new_metadata(&built.metadata);
        built.metadata.write_to(&self.file_io, &new_location).await?;
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
            Ok(r) if r.rows_affected() == 1 => Ok(Some(TableState {
                ident: base.ident.clone(),
                metadata: Arc::new(built.metadata.clone()),
                metadata_location: new_location,
            })),
            Ok(_) => {
                // Lost the race: the file we wrote is referenced by nothing.
                let _ = self.file_io.delete(&new_location).await;
                Ok(None)
            }
            // Unknown outcome (the swap may have landed): keep the file, let the caller
            // reload and recognise its own commit by commit id.
            Err(e) => Err(e.into()),
        }
    }
}

/// Accepts `sqlite:<path>` (creating the file) and `postgres://…` (the JDBC catalog's schema in
/// an existing database); says whether the driver wants `$n` placeholders.
fn normalize_uri(uri: &str) -> Result<(String, bool)> {
    if let Some(rest) = uri.strip_prefix("sqlite:") {
        let sep = if rest.contains('?') { '&' } else { '?' };
        let uri = if rest.contains("mode=") {
            uri.to_string()
        } else {
            format!("{uri}{sep}mode=rwc")
        };
        return Ok((uri, false));
    }
    if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
        return Ok((uri.to_string(), true));
    }
    Err(TableError::Config(format!(
        "`{}` is not a catalog URL (expected sqlite:<path>, postgres://… or http(s)://… for REST)",
        calve_contract::redact_uri(uri)
    )))
}
