//! Catalog access: where table pointers live, and the atomic step that makes a new table
//! version current.
//!
//! Two protocols, one interface: the SQL catalog (SQLite embedded, PostgreSQL; a
//! compare-and-swap of the metadata pointer, see [`sql`]) and the REST catalog (requirements
//! plus updates posted to the server, see [`rest`]). The commit layer builds new metadata the
//! same way for both and hands it to [`Catalog::commit`].

mod auth;
mod rest;
pub mod schema;
mod sql;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use calve_contract::{redact_uri, redacted, Secret};
use iceberg::io::FileIO;
use iceberg::spec::{Schema, TableMetadataBuildResult, TableMetadataRef, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{Catalog as _, NamespaceIdent, TableCreation, TableIdent};
use serde::Deserialize;

use crate::error::Result;
use crate::storage::Storage;

/// `[catalog]` in `calve.toml`: where table pointers and files live. `Debug` shows the URI
/// without its password and the token as `<redacted>`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Catalog URL. Embedded default: `sqlite:<path>` (created if missing); production:
    /// `postgres://user:password@host:port/database` (the JDBC catalog's tables) or the base
    /// URL of an Iceberg REST catalog, `http(s)://host:port[/path]`.
    pub uri: String,
    /// Warehouse root directory; tables live at `<warehouse>/<namespace>/<table>`. For REST,
    /// also sent as the `warehouse` parameter of `GET /v1/config`.
    pub warehouse: String,
    /// Catalog name stored in every catalog row; readers (PyIceberg's SqlCatalog) must use
    /// the same name to see the tables. Unused by REST.
    #[serde(default = "default_catalog_name")]
    pub name: String,
    /// REST only: a bearer token sent with every request (write `"${env:NAME}"` or
    /// `"${file:/path}"` rather than the token). Unset: no `Authorization` header.
    #[serde(default)]
    pub token: Option<Secret>,
    /// REST only: OAuth2 client credentials, `client_id:client_secret` (write `"${env:NAME}"`);
    /// calve fetches bearer tokens with them and replaces each before it expires.
    #[serde(default)]
    pub credential: Option<Secret>,
    /// REST only: the OAuth2 token endpoint (default `<uri>/v1/oauth/tokens`, the REST spec's;
    /// an identity provider's for Polaris, Unity, Lakekeeper behind Keycloak …).
    #[serde(default, rename = "oauth2-server-uri", alias = "oauth2_server_uri")]
    pub oauth2_server_uri: Option<String>,
    /// REST only: the OAuth2 scope asked for (default `catalog`, as Iceberg clients ask).
    #[serde(default)]
    pub scope: Option<String>,
    /// Where calve keeps its own files (the maintenance status, the erasure log and its key),
    /// as a location: a directory or `s3://bucket/prefix`. Default: the warehouse. Needed when
    /// the warehouse is a name a REST catalog knows it by (Polaris, Lakekeeper) rather than a
    /// location.
    #[serde(default)]
    pub state: Option<String>,
    /// `[catalog.storage]`: settings of the store the warehouse is on, by Iceberg's property
    /// names (`s3.endpoint`, `s3.region`, `s3.path-style-access`, `s3.access-key-id`,
    /// `s3.secret-access-key`, `s3.session-token`); see [`crate::storage`]. `Debug` redacts
    /// secret keys and tokens.
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
}

impl fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("warehouse", &redact_uri(&self.warehouse))
            .field("name", &self.name)
            .field("token", &self.token)
            .field("credential", &self.credential)
            .field("oauth2_server_uri", &self.oauth2_server_uri.as_deref().map(redact_uri))
            .field("scope", &self.scope)
            .field("state", &self.state.as_deref().map(redact_uri))
            .field("storage", &redacted(&self.storage))
            .finish()
    }
}

impl CatalogConfig {
    /// Whether the catalog is an Iceberg REST server (its URI is `http(s)://…`).
    pub fn is_rest(&self) -> bool {
        self.uri.starts_with("http://") || self.uri.starts_with("https://")
    }

    /// A configuration with defaults for everything but `uri` and `warehouse`.
    pub fn new(uri: impl Into<String>, warehouse: impl Into<String>) -> Self {
        CatalogConfig {
            uri: uri.into(),
            warehouse: warehouse.into(),
            name: default_catalog_name(),
            token: None,
            credential: None,
            oauth2_server_uri: None,
            scope: None,
            state: None,
            storage: BTreeMap::new(),
        }
    }

    /// Where calve's own files go: [`CatalogConfig::state`], else the warehouse.
    pub fn state_root(&self) -> &str {
        self.state.as_deref().unwrap_or(&self.warehouse)
    }
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
    /// Where the table lives; `None`: where the catalog puts it (the warehouse's
    /// `<namespace>/<table>`).
    pub location: Option<String>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sql(sql::Sql),
    Rest(rest::Rest),
}

/// An open catalog. `Debug` names the backend and the warehouse only: the FileIO inside holds
/// the store's keys, and its own `Debug` prints them.
#[derive(Clone)]
pub struct Catalog {
    backend: Backend,
    file_io: FileIO,
    storage: Storage,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.backend {
            Backend::Sql(_) => "sql",
            Backend::Rest(_) => "rest",
        };
        f.debug_struct("Catalog")
            .field("backend", &backend)
            .field("storage", &self.storage)
            .finish()
    }
}

impl Catalog {
    /// Connects. SQL: creates the SQLite database and the catalog tables if missing. REST:
    /// reads the server's configuration.
    pub async fn open(cfg: &CatalogConfig) -> Result<Self> {
        let (backend, storage, file_io) = if cfg.is_rest() {
            let rest = rest::Rest::open(cfg).await?;
            // The server may say where the store is (an endpoint, a region): its defaults
            // and overrides are layered with [catalog.storage] before any file is touched.
            // Which store it is stays the client's decision.
            let storage = Storage::of(cfg)?.with_properties(rest.storage_properties(&cfg.storage));
            storage.prepare()?;
            let file_io = storage.file_io();
            (Backend::Rest(rest), storage, file_io)
        } else {
            let storage = Storage::of(cfg)?;
            storage.prepare()?;
            let file_io = storage.file_io();
            let sql = sql::Sql::open(cfg, &storage, file_io.clone()).await?;
            (Backend::Sql(sql), storage, file_io)
        };
        Ok(Catalog {
            backend,
            file_io,
            storage,
        })
    }

    /// File access for table files.
    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// The store the warehouse is on (for listing, which `FileIO` cannot do).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether a stale owner is fenced by the main branch moving rather than by the metadata
    /// pointer: a REST server checks requirements, and none can assert a table property, so an
    /// epoch claim must also move `main` (see [`crate::commit::claim_epoch`]).
    pub fn fences_by_ref(&self) -> bool {
        matches!(self.backend, Backend::Rest(_))
    }

    /// Whether the catalog server writes metadata files itself (and removes old ones per the
    /// table's properties), rather than calve.
    pub fn server_writes_metadata(&self) -> bool {
        matches!(self.backend, Backend::Rest(_))
    }

    /// Loads the table's current state.
    pub async fn load(&self, ident: &TableIdent) -> Result<TableState> {
        match &self.backend {
            Backend::Sql(s) => TableState::from_table(&s.inner.load_table(ident).await?),
            Backend::Rest(r) => r.load(ident).await,
        }
    }

    /// The `iceberg` crate's table handle (for scans).
    pub async fn iceberg_table(&self, ident: &TableIdent) -> Result<Table> {
        let state = self.load(ident).await?;
        Ok(Table::builder()
            .identifier(state.ident)
            .metadata(state.metadata)
            .metadata_location(state.metadata_location)
            .file_io(self.file_io.clone())
            .readonly(true)
            .runtime(iceberg::Runtime::current())
            .build()?)
    }

    /// Loads the table unless `cached` is still current: metadata files are immutable, so a
    /// writer that made the current version need not read and parse it again. (SQL: one
    /// indexed SELECT. REST has no cheaper question than loading, so it always loads.)
    pub async fn load_cached(&self, ident: &TableIdent, cached: Option<TableState>) -> Result<TableState> {
        if let (Backend::Sql(s), Some(c)) = (&self.backend, cached) {
            if s.current_location(ident).await?.as_deref() == Some(c.metadata_location.as_str()) {
                return Ok(c);
            }
        }
        self.load(ident).await
    }

    /// Whether the table exists.
    pub async fn exists(&self, ident: &TableIdent) -> Result<bool> {
        match &self.backend {
            Backend::Sql(s) => Ok(s.inner.table_exists(ident).await?),
            Backend::Rest(r) => r.exists(ident).await,
        }
    }

    /// Loads the table, creating namespace and table first if they do not exist. Two processes
    /// racing to create it both end up loading the one that won.
    pub async fn ensure_table(&self, def: &TableDefinition) -> Result<TableState> {
        let s = match &self.backend {
            Backend::Sql(s) => s,
            Backend::Rest(r) => return r.ensure_table(def).await,
        };
        if s.inner.table_exists(&def.ident).await? {
            return self.load(&def.ident).await;
        }
        let ns = def.ident.namespace();
        if !s.inner.namespace_exists(ns).await? {
            if let Err(e) = s.inner.create_namespace(ns, HashMap::new()).await {
                if !s.inner.namespace_exists(ns).await? {
                    return Err(e.into());
                }
            }
        }
        let creation = TableCreation::builder()
            .name(def.ident.name().to_string())
            .schema(def.schema.clone())
            .partition_spec(def.partition_spec.clone())
            .properties(def.properties.clone())
            .location_opt(def.location.clone())
            .build();
        match s.inner.create_table(ns, creation).await {
            Ok(t) => TableState::from_table(&t),
            Err(e) if s.inner.table_exists(&def.ident).await? => {
                tracing::debug!(table = %def.ident, "lost the creation race ({e}); loading");
                self.load(&def.ident).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the table from the catalog; its files stay (they may be another table's now,
    /// or orphans that cleanup removes).
    pub async fn drop_table(&self, ident: &TableIdent) -> Result<()> {
        match &self.backend {
            Backend::Sql(s) => Ok(s.inner.drop_table(ident).await?),
            Backend::Rest(r) => r.drop_table(ident).await,
        }
    }

    /// Makes `built` (metadata derived from `base`) the table's current version, atomically.
    /// `Ok(None)`: someone else changed the table first; nothing of ours is current. An error
    /// of class temporary may mean the outcome is unknown: reload and look for the commit id.
    pub async fn commit(&self, base: &TableState, built: &TableMetadataBuildResult) -> Result<Option<TableState>> {
        match &self.backend {
            Backend::Sql(s) => s.commit(base, built).await,
            Backend::Rest(r) => r.commit(base, built).await,
        }
    }

    /// A table identifier from dotted parts.
    pub fn ident(namespace: &[String], name: &str) -> Result<TableIdent> {
        Ok(TableIdent::new(
            NamespaceIdent::from_vec(namespace.to_vec())?,
            name.to_string(),
        ))
    }
}
