//! The Iceberg REST catalog protocol, client side.
//!
//! `iceberg-catalog-rest` exists, but a commit there must be a `TableCommit`, which only the
//! crate's own (fast-append-only) transactions may build. calve's commit layer produces its own
//! metadata changes, so it speaks the protocol itself: the few endpoints it needs, with the
//! request and response shapes of the REST spec (`rest-catalog-open-api.yaml`).
//!
//! A commit posts the changes the metadata builder recorded (`add-snapshot`,
//! `set-snapshot-ref`, `remove-snapshots`, `set-properties`, …) with requirements that pin
//! everything the changes were computed against. The server applies them atomically or answers
//! 409; unlike the SQL catalog's pointer swap, the server writes the metadata file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use iceberg::spec::{Schema, TableMetadata, TableMetadataBuildResult, UnboundPartitionSpec, MAIN_BRANCH};
use iceberg::{TableIdent, TableRequirement, TableUpdate};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::auth::{Auth, TokenSource};
use super::{CatalogConfig, TableDefinition, TableState};
use crate::error::{Result, TableError};

/// The unit separator the REST spec uses to join multi-level namespaces in a path segment.
const NAMESPACE_SEPARATOR: &str = "\u{1f}";

/// An open REST catalog.
#[derive(Debug, Clone)]
pub(super) struct Rest {
    client: reqwest::Client,
    /// `<uri>/v1/<prefix>`: what every resource path is appended to.
    root: Arc<url::Url>,
    auth: Arc<Auth>,
    /// What `GET /v1/config` said, for the storage settings a server hands its clients.
    server: Arc<ConfigResponse>,
}

#[derive(Default, Deserialize)]
struct ConfigResponse {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LoadTableResult {
    metadata_location: Option<String>,
    metadata: TableMetadata,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct CreateTableRequest<'a> {
    name: &'a str,
    schema: &'a Schema,
    partition_spec: &'a UnboundPartitionSpec,
    properties: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    stage_create: bool,
}

#[derive(Serialize)]
struct CommitTableRequest<'a> {
    identifier: Identifier<'a>,
    requirements: Vec<TableRequirement>,
    updates: &'a [TableUpdate],
}

#[derive(Serialize)]
struct Identifier<'a> {
    namespace: &'a [String],
    name: &'a str,
}

impl std::fmt::Debug for ConfigResponse {
    // A server may hand out storage keys in its configuration: names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |m: &HashMap<String, String>| m.keys().cloned().collect::<std::collections::BTreeSet<_>>();
        f.debug_struct("ConfigResponse")
            .field("defaults", &names(&self.defaults))
            .field("overrides", &names(&self.overrides))
            .finish()
    }
}

impl Rest {
    /// Reads the server's configuration (`GET /v1/config`) for the path prefix.
    pub(super) async fn open(cfg: &CatalogConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| TableError::Config(format!("REST client: {e}")))?;
        let base = url::Url::parse(cfg.uri.trim_end_matches('/'))
            .map_err(|e| TableError::Config(format!("catalog uri `{}`: {e}", calve_contract::redact_uri(&cfg.uri))))?;
        let mut config_url = join(&base, &["v1", "config"]);
        config_url.query_pairs_mut().append_pair("warehouse", &cfg.warehouse);
        let auth = auth_of(cfg, &client, &base)?;
        let mut rest = Rest {
            client,
            root: Arc::new(base.clone()),
            auth: Arc::new(auth),
            server: Arc::default(),
        };
        let resp = rest.send(rest.request(Method::GET, config_url)).await?;
        let config: ConfigResponse = json(expect_ok(resp, "reading catalog config").await?).await?;
        let prefix = config.overrides.get("prefix").or(config.defaults.get("prefix"));
        let mut root = join(&base, &["v1"]);
        if let Some(p) = prefix.filter(|p| !p.is_empty()) {
            root = join(&root, &p.split('/').collect::<Vec<_>>());
        }
        rest.root = Arc::new(root);
        rest.server = Arc::new(config);
        Ok(rest)
    }

    /// The storage settings in effect: the server's `defaults`, then `configured` (the
    /// client's own, `[catalog.storage]`), then the server's `overrides`, as the REST spec
    /// layers them. Only FileIO settings (`s3.*`, `client.*`) are taken from the server; the
    /// rest of its configuration (page sizes, endpoints, the warehouse name) is not storage.
    pub(super) fn storage_properties(&self, configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        layer_storage(&self.server, configured)
    }

    /// Loads a table: its metadata and where the server keeps it.
    pub(super) async fn load(&self, ident: &TableIdent) -> Result<TableState> {
        let resp = self.send(self.request(Method::GET, self.table_url(ident))).await?;
        let what = format!("loading {ident}");
        load_result(ident, json(expect_ok(resp, &what).await?).await?)
    }

    /// Whether the table exists (`HEAD`).
    pub(super) async fn exists(&self, ident: &TableIdent) -> Result<bool> {
        self.head(self.table_url(ident), &format!("checking {ident}")).await
    }

    /// Creates namespace and table unless they exist; a creation race ends in a load.
    pub(super) async fn ensure_table(&self, def: &TableDefinition) -> Result<TableState> {
        if self.exists(&def.ident).await? {
            return self.load(&def.ident).await;
        }
        let ns = def.ident.namespace().as_ref();
        let ns_url = join(&self.root, &["namespaces", &ns.join(NAMESPACE_SEPARATOR)]);
        if !self
            .head(ns_url, &format!("checking namespace {}", ns.join(".")))
            .await?
        {
            let body = serde_json::json!({ "namespace": ns, "properties": {} });
            let url = join(&self.root, &["namespaces"]);
            let resp = self.send(self.request(Method::POST, url).json(&body)).await?;
            if resp.status() != StatusCode::CONFLICT {
                expect_ok(resp, &format!("creating namespace {}", ns.join("."))).await?;
            }
        }
        let body = CreateTableRequest {
            name: def.ident.name(),
            schema: &def.schema,
            partition_spec: &def.partition_spec,
            properties: &def.properties,
            location: def.location.as_deref(),
            stage_create: false,
        };
        let url = join(&self.root, &["namespaces", &ns.join(NAMESPACE_SEPARATOR), "tables"]);
        let resp = self.send(self.request(Method::POST, url).json(&body)).await?;
        if resp.status() == StatusCode::CONFLICT {
            tracing::debug!(table = %def.ident, "lost the creation race; loading");
            return self.load(&def.ident).await;
        }
        load_result(
            &def.ident,
            json(expect_ok(resp, &format!("creating {}", def.ident)).await?).await?,
        )
    }

    /// Drops the table, keeping its files (`purgeRequested` is false).
    pub(super) async fn drop_table(&self, ident: &TableIdent) -> Result<()> {
        let resp = self.send(self.request(Method::DELETE, self.table_url(ident))).await?;
        expect_ok(resp, &format!("dropping {ident}")).await.map(|_| ())
    }

    /// Posts the changes `built` recorded against `base`. `None` when the server refused
    /// because the table moved on (409): the caller reloads and retries.
    pub(super) async fn commit(
        &self,
        base: &TableState,
        built: &TableMetadataBuildResult,
    ) -> Result<Option<TableState>> {
        let body = CommitTableRequest {
            identifier: Identifier {
                namespace: base.ident.namespace().as_ref(),
                name: base.ident.name(),
            },
            requirements: requirements(&base.metadata),
            updates: &built.changes,
        };
        let resp = self
            .send(self.request(Method::POST, self.table_url(&base.ident)).json(&body))
            .await?;
        let status = resp.status();
        if status == StatusCode::CONFLICT {
            return Ok(None);
        }
        if status.is_server_error() {
            // 500/502/503/504: the spec says the commit state is unknown. A temporary error
            // makes the committer reload and look for its commit id before trying again.
            let text = resp.text().await.unwrap_or_default();
            return Err(TableError::Catalog(format!(
                "commit to {}: HTTP {status}, outcome unknown: {text}",
                base.ident
            )));
        }
        let result = json(expect_ok(resp, &format!("committing to {}", base.ident)).await?).await?;
        load_result(&base.ident, result).map(Some)
    }

    fn table_url(&self, ident: &TableIdent) -> url::Url {
        let ns = ident.namespace().as_ref().join(NAMESPACE_SEPARATOR);
        join(&self.root, &["namespaces", &ns, "tables", ident.name()])
    }

    fn request(&self, method: Method, url: url::Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `req` with its credentials; a 401 under OAuth2 is asked again once with a new
    /// token (the old one was revoked, or expired early by the server's clock).
    async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let again = req.try_clone();
        let resp = self.auth.apply(req).await?.send().await.map_err(unreachable)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(again) = again {
                if self.auth.refused().await {
                    return self.auth.apply(again).await?.send().await.map_err(unreachable);
                }
            }
        }
        Ok(resp)
    }

    async fn head(&self, url: url::Url, what: &str) -> Result<bool> {
        let resp = self.send(self.request(Method::HEAD, url)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => expect_ok(resp, what).await.map(|_| false),
        }
    }
}

// reqwest prints the URL it failed on, user info and all.
fn unreachable(e: reqwest::Error) -> TableError {
    let url = e
        .url()
        .map(|u| calve_contract::redact_uri(u.as_str()))
        .unwrap_or_default();
    TableError::Catalog(format!("REST catalog unreachable ({url}): {}", e.without_url()))
}

/// The credentials `[catalog]` gives: a token, client credentials, or none.
fn auth_of(cfg: &CatalogConfig, client: &reqwest::Client, base: &url::Url) -> Result<Auth> {
    Ok(match (&cfg.token, &cfg.credential) {
        (Some(_), Some(_)) => {
            return Err(TableError::Config(
                "[catalog] has both `token` and `credential`: give one".into(),
            ))
        }
        (Some(t), None) => Auth::Bearer(t.clone()),
        (None, Some(c)) => {
            let url = match &cfg.oauth2_server_uri {
                Some(u) => url::Url::parse(u).map_err(|e| {
                    TableError::Config(format!("oauth2-server-uri `{}`: {e}", calve_contract::redact_uri(u)))
                })?,
                None => join(base, &["v1", "oauth", "tokens"]),
            };
            let scope = cfg.scope.as_deref().unwrap_or("catalog");
            Auth::ClientCredentials(Box::new(TokenSource::new(client.clone(), url, c, scope)?))
        }
        (None, None) => Auth::None,
    })
}

/// What a commit computed against `base` must still hold for the changes to be right: the same
/// table, the same main head (this is also what fences a stale owner, see `claim_epoch`), and
/// the same schema, spec and sort order ids the new snapshot and manifests were written with.
fn requirements(base: &TableMetadata) -> Vec<TableRequirement> {
    vec![
        TableRequirement::UuidMatch { uuid: base.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: base.snapshot_for_ref(MAIN_BRANCH).map(|s| s.snapshot_id()),
        },
        TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: base.current_schema_id(),
        },
        TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id: base.last_column_id(),
        },
        TableRequirement::DefaultSpecIdMatch {
            default_spec_id: base.default_partition_spec_id(),
        },
        TableRequirement::LastAssignedPartitionIdMatch {
            last_assigned_partition_id: base.last_partition_id(),
        },
        TableRequirement::DefaultSortOrderIdMatch {
            default_sort_order_id: base.default_sort_order_id(),
        },
    ]
}

fn load_result(ident: &TableIdent, r: LoadTableResult) -> Result<TableState> {
    let metadata_location = r
        .metadata_location
        .ok_or_else(|| TableError::Rejected(format!("REST catalog returned {ident} without a metadata location")))?;
    Ok(TableState {
        ident: ident.clone(),
        metadata: Arc::new(r.metadata),
        metadata_location,
    })
}

fn join(base: &url::Url, segments: &[&str]) -> url::Url {
    let mut u = base.clone();
    u.path_segments_mut()
        .expect("http(s) URLs have paths")
        .pop_if_empty()
        .extend(segments);
    u
}

/// Passes a 2xx response through; turns anything else into an error carrying the server's
/// message (the spec's `{"error": {"message", "type", "code"}}`).
async fn expect_ok(resp: Response, what: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    let msg = format!("{what}: HTTP {status}: {message}");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(TableError::Catalog(msg))
    } else {
        Err(TableError::Rejected(msg))
    }
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| TableError::Catalog(format!("reading REST response: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TableError::Rejected(format!("unexpected REST response: {e}")))
}

/// [`Rest::storage_properties`]: `server.defaults` < `configured` < `server.overrides`, the
/// server's side limited to FileIO settings.
fn layer_storage(server: &ConfigResponse, configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let storage = |m: &HashMap<String, String>| {
        m.iter()
            .filter(|(k, _)| k.starts_with("s3.") || k.starts_with("client."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let mut out: BTreeMap<String, String> = storage(&server.defaults).into_iter().collect();
    out.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.extend(storage(&server.overrides));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn server_storage_settings_layer_around_the_clients() {
        let server = ConfigResponse {
            defaults: map(&[
                ("s3.region", "eu-west-1"),
                ("s3.endpoint", "http://default:9000"),
                ("rest-page-size", "100"),
            ]),
            overrides: map(&[
                ("s3.path-style-access", "true"),
                ("s3.endpoint", "http://override:9000"),
                ("warehouse", "lake"),
                ("prefix", "p"),
            ]),
        };
        let configured: BTreeMap<String, String> = [
            ("s3.region".to_string(), "us-east-1".to_string()),
            ("s3.endpoint".to_string(), "http://mine:9000".to_string()),
        ]
        .into();
        let got = layer_storage(&server, &configured);
        let want: BTreeMap<String, String> = [
            ("s3.region", "us-east-1"),              // the client's beats a default
            ("s3.endpoint", "http://override:9000"), // an override beats the client's
            ("s3.path-style-access", "true"),        // the server's alone
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want, "non-storage settings stay out");
        assert_eq!(layer_storage(&ConfigResponse::default(), &configured), configured);
    }
}
