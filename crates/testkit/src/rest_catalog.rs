//! An Iceberg REST catalog server for tests, in process.
//!
//! No REST catalog server can be installed on the test machines (the reference ones ship as
//! JVM images or binaries outside crates.io/PyPI/Debian), so this is the server side of the
//! protocol, built on the `iceberg` crate's own requirement checks (`TableRequirement::check`)
//! and update application (`TableUpdate::apply`) — the same code iceberg-rust's catalogs use to
//! apply a commit. PyIceberg's `RestCatalog` talks to it too, which keeps it honest.
//!
//! It records every request (method, path, JSON body) so tests can assert the exact protocol
//! calve speaks, and it can inject faults: refuse the next commit, or apply it and then answer
//! 503 (an unknown outcome, which the client must resolve by reloading).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use iceberg::io::{FileIO, FileIOBuilder, LocalFsStorageFactory};
use iceberg::spec::{Schema, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec};
use iceberg::{MetadataLocation, TableCreation, TableRequirement, TableUpdate};
use serde_json::{json, Value};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Decoded path below `/v1/`, e.g. `namespaces/shop/tables/orders`.
    pub path: String,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

/// A fault to inject into the next commit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 409 without applying anything.
    Conflict,
    /// Apply the commit, then answer 503 as if the gateway lost the response.
    ApplyThenUnavailable,
}

#[derive(Default)]
struct State {
    namespaces: BTreeSet<Vec<String>>,
    tables: HashMap<(Vec<String>, String), (String, TableMetadata)>,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    tokens: HashMap<String, std::time::Instant>,
    oauth: OAuthLog,
}

/// A running server; stops when dropped (its thread ends with the process).
pub struct RestCatalogServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// OAuth2 client credentials the server demands (the REST spec's `/v1/oauth/tokens`): every
/// other request needs a bearer token it issued that has not expired.
#[derive(Debug, Clone)]
pub struct OAuth {
    /// The one client id it accepts.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// How long an issued token lives (`expires_in`).
    pub ttl: std::time::Duration,
}

/// What the token endpoint did.
#[derive(Debug, Clone, Default)]
pub struct OAuthLog {
    /// Tokens issued.
    pub issued: usize,
    /// Token requests refused (wrong client or secret).
    pub refused_clients: usize,
    /// Catalog requests refused for a missing, unknown or expired token.
    pub refused_requests: usize,
}

struct Shared {
    state: Arc<Mutex<State>>,
    warehouse: PathBuf,
    file_io: FileIO,
    commit_lock: tokio::sync::Mutex<()>,
    oauth: Option<OAuth>,
}

impl RestCatalogServer {
    /// Starts a server on 127.0.0.1 (free port) keeping tables under `warehouse`.
    pub fn start(warehouse: &Path) -> Self {
        Self::start_with(warehouse, None)
    }

    /// Like [`RestCatalogServer::start`], demanding OAuth2 client credentials.
    pub fn start_with_oauth(warehouse: &Path, oauth: OAuth) -> Self {
        Self::start_with(warehouse, Some(oauth))
    }

    fn start_with(warehouse: &Path, oauth: Option<OAuth>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::new(Shared {
            state: state.clone(),
            warehouse: warehouse.to_path_buf(),
            file_io: FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build(),
            commit_lock: tokio::sync::Mutex::new(()),
            oauth,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        // Its own thread and runtime: tests block their own thread on PyIceberg subprocesses
        // that talk to this server.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(listener, shared));
        });
        RestCatalogServer { addr, state }
    }

    /// The base URL to configure clients with.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the OAuth2 token endpoint and the token checks did so far.
    pub fn oauth_log(&self) -> OAuthLog {
        self.state.lock().unwrap().oauth.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Commit requests (POST to a table) so far.
    pub fn commits(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.contains("/tables/"))
            .collect()
    }

    /// Queues a fault for the next commit.
    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    /// Where the server points `ns.name` now.
    pub fn metadata_location(&self, ns: &str, name: &str) -> Option<String> {
        let key = (vec![ns.to_string()], name.to_string());
        self.state.lock().unwrap().tables.get(&key).map(|(l, _)| l.clone())
    }
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(oauth) = &shared.oauth {
        if let Some((status, out)) = check_oauth(&shared, oauth, &method, &raw_path, bearer.as_deref(), &bytes) {
            return Ok(reply(&method, status, out));
        }
    }
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let segments: Vec<String> = raw_path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let path = segments.iter().skip(1).cloned().collect::<Vec<_>>().join("/");
    shared.state.lock().unwrap().requests.push(Recorded {
        method: method.to_string(),
        path,
        body: body.clone(),
    });
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (status, out) = match (&method, seg.as_slice()) {
        (&Method::GET, ["v1", "config"]) => (StatusCode::OK, json!({"defaults": {}, "overrides": {}})),
        (&Method::POST, ["v1", "namespaces"]) => create_namespace(&shared, &body),
        (&Method::GET | &Method::HEAD, ["v1", "namespaces", ns]) => get_namespace(&shared, ns),
        (&Method::POST, ["v1", "namespaces", ns, "tables"]) => create_table(&shared, ns, &body).await,
        (&Method::GET | &Method::HEAD, ["v1", "namespaces", ns, "tables", t]) => load_table(&shared, ns, t),
        (&Method::POST, ["v1", "namespaces", ns, "tables", t]) => commit(&shared, ns, t, body).await,
        _ => error(StatusCode::NOT_FOUND, "NoSuchResource", format!("{method} {raw_path}")),
    };
    Ok(reply(&method, status, out))
}

fn reply(method: &Method, status: StatusCode, out: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(out.to_string())
    }));
    *resp.status_mut() = if method == Method::HEAD && status == StatusCode::OK {
        StatusCode::NO_CONTENT
    } else {
        status
    };
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

/// The token endpoint, or the token check in front of every other endpoint: `Some` answers
/// the request here, `None` lets it through.
fn check_oauth(
    shared: &Shared,
    oauth: &OAuth,
    method: &Method,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Option<(StatusCode, Value)> {
    let mut st = shared.state.lock().unwrap();
    if method == Method::POST && path == "/v1/oauth/tokens" {
        let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if get("grant_type") != "client_credentials"
            || get("client_id") != oauth.client_id
            || get("client_secret") != oauth.client_secret
        {
            st.oauth.refused_clients += 1;
            return Some((
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "error_description": "unknown client or wrong secret"}),
            ));
        }
        st.oauth.issued += 1;
        let token = format!("t{}-{:016x}", st.oauth.issued, rand::random::<u64>());
        st.tokens.insert(token.clone(), std::time::Instant::now() + oauth.ttl);
        return Some((
            StatusCode::OK,
            json!({"access_token": token, "token_type": "bearer", "expires_in": oauth.ttl.as_secs(),
                   "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}),
        ));
    }
    let valid = bearer
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|expires| std::time::Instant::now() < *expires);
    if valid {
        return None;
    }
    st.oauth.refused_requests += 1;
    Some(error(
        StatusCode::UNAUTHORIZED,
        "NotAuthorizedException",
        "missing, unknown or expired bearer token".into(),
    ))
}

fn ns_parts(ns: &str) -> Vec<String> {
    ns.split('\u{1f}').map(str::to_string).collect()
}

fn error(status: StatusCode, kind: &str, message: String) -> (StatusCode, Value) {
    (
        status,
        json!({"error": {"message": message, "type": kind, "code": status.as_u16()}}),
    )
}

fn create_namespace(shared: &Shared, body: &Value) -> (StatusCode, Value) {
    let ns: Vec<String> = serde_json::from_value(body["namespace"].clone()).unwrap_or_default();
    if !shared.state.lock().unwrap().namespaces.insert(ns.clone()) {
        return error(
            StatusCode::CONFLICT,
            "AlreadyExistsException",
            format!("namespace {ns:?} exists"),
        );
    }
    (StatusCode::OK, json!({"namespace": ns, "properties": {}}))
}

fn get_namespace(shared: &Shared, ns: &str) -> (StatusCode, Value) {
    let parts = ns_parts(ns);
    if shared.state.lock().unwrap().namespaces.contains(&parts) {
        (StatusCode::OK, json!({"namespace": parts, "properties": {}}))
    } else {
        error(
            StatusCode::NOT_FOUND,
            "NoSuchNamespaceException",
            format!("namespace {ns} does not exist"),
        )
    }
}

async fn create_table(shared: &Shared, ns: &str, body: &Value) -> (StatusCode, Value) {
    let parts = ns_parts(ns);
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let key = (parts.clone(), name.clone());
    {
        let st = shared.state.lock().unwrap();
        if !st.namespaces.contains(&parts) {
            return error(
                StatusCode::NOT_FOUND,
                "NoSuchNamespaceException",
                format!("namespace {ns} does not exist"),
            );
        }
        if st.tables.contains_key(&key) {
            return error(
                StatusCode::CONFLICT,
                "AlreadyExistsException",
                format!("table {name} exists"),
            );
        }
    }
    let metadata = match creation_metadata(shared, &parts, &name, body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequestException", e),
    };
    let location = MetadataLocation::new_with_metadata(metadata.location(), &metadata);
    if let Err(e) = metadata.write_to(&shared.file_io, &location).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceFailureException",
            e.to_string(),
        );
    }
    let location = location.to_string();
    shared
        .state
        .lock()
        .unwrap()
        .tables
        .insert(key, (location.clone(), metadata.clone()));
    (
        StatusCode::OK,
        json!({"metadata-location": location, "metadata": metadata, "config": {}}),
    )
}

fn creation_metadata(shared: &Shared, ns: &[String], name: &str, body: &Value) -> Result<TableMetadata, String> {
    let schema: Schema = serde_json::from_value(body["schema"].clone()).map_err(|e| e.to_string())?;
    let spec: Option<UnboundPartitionSpec> = match &body["partition-spec"] {
        Value::Null => None,
        v => Some(serde_json::from_value(v.clone()).map_err(|e| e.to_string())?),
    };
    let sort_order: Option<SortOrder> = match &body["write-order"] {
        Value::Null => None,
        v => Some(serde_json::from_value(v.clone()).map_err(|e| e.to_string())?),
    };
    let properties: HashMap<String, String> = serde_json::from_value(body["properties"].clone()).unwrap_or_default();
    let location = body["location"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}/{}/{}", shared.warehouse.display(), ns.join("/"), name));
    let creation = TableCreation::builder()
        .name(name.to_string())
        .location(location)
        .schema(schema)
        .partition_spec_opt(spec)
        .sort_order_opt(sort_order)
        .properties(properties)
        .build();
    let built = TableMetadataBuilder::from_table_creation(creation)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    Ok(built.metadata)
}

fn load_table(shared: &Shared, ns: &str, t: &str) -> (StatusCode, Value) {
    let key = (ns_parts(ns), t.to_string());
    match shared.state.lock().unwrap().tables.get(&key) {
        Some((loc, m)) => (
            StatusCode::OK,
            json!({"metadata-location": loc, "metadata": m, "config": {}}),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("table {ns}.{t} does not exist"),
        ),
    }
}

async fn commit(shared: &Shared, ns: &str, t: &str, body: Value) -> (StatusCode, Value) {
    let key = (ns_parts(ns), t.to_string());
    let fault = shared.state.lock().unwrap().faults.pop_front();
    if fault == Some(Fault::Conflict) {
        return error(
            StatusCode::CONFLICT,
            "CommitFailedException",
            "injected conflict".into(),
        );
    }
    let requirements: Vec<TableRequirement> = match serde_json::from_value(body["requirements"].clone()) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                format!("requirements: {e}"),
            )
        }
    };
    let updates: Vec<TableUpdate> = match serde_json::from_value(body["updates"].clone()) {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequestException", format!("updates: {e}")),
    };
    // Check, write and pointer move happen under one lock: that is the atomicity the protocol
    // promises. Serialising all commits is fine at test scale.
    let _serial = shared.commit_lock.lock().await;
    let current = shared.state.lock().unwrap().tables.get(&key).cloned();
    let Some((loc, base)) = current else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("table {ns}.{t} does not exist"),
        );
    };
    for r in &requirements {
        if let Err(e) = r.check(Some(&base)) {
            return error(StatusCode::CONFLICT, "CommitFailedException", e.to_string());
        }
    }
    let mut builder = TableMetadataBuilder::new_from_metadata(base, Some(loc.clone()));
    for u in updates {
        builder = match u.apply(builder) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequestException", e.to_string()),
        };
    }
    let built = match builder.build() {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequestException", e.to_string()),
    };
    let new_loc = match loc.parse::<MetadataLocation>() {
        Ok(l) => l.with_next_version().with_new_metadata(&built.metadata),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceFailureException",
                e.to_string(),
            )
        }
    };
    if let Err(e) = built.metadata.write_to(&shared.file_io, &new_loc).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceFailureException",
            e.to_string(),
        );
    }
    if built
        .metadata
        .properties()
        .get("write.metadata.delete-after-commit.enabled")
        .is_some_and(|v| v == "true")
    {
        for old in &built.expired_metadata_logs {
            let _ = std::fs::remove_file(old.metadata_file.trim_start_matches("file://"));
        }
    }
    let new_loc = new_loc.to_string();
    shared
        .state
        .lock()
        .unwrap()
        .tables
        .insert(key, (new_loc.clone(), built.metadata.clone()));
    if fault == Some(Fault::ApplyThenUnavailable) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "injected: applied, answer lost".into(),
        );
    }
    (
        StatusCode::OK,
        json!({"metadata-location": new_loc, "metadata": built.metadata}),
    )
}
