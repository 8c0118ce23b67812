//! The one HTTP endpoint of `calve run` (`[http]` in `calve.toml`): `/metrics` for Prometheus,
//! `/healthz` (the process answers), `/readyz` (every table is doing its job) and `/status`
//! (each table's state and SLA measurements as JSON, see [`crate::status_page`]), so an
//! operator sees calve without reading its log and an orchestrator can probe it.
//!
//! The series are recorded through the `metrics` facade where things happen (see
//! [`crate::stats`]) and rendered in Prometheus's text format by `metrics-exporter-prometheus`;
//! this module only installs the exporter and answers requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioTimer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::error::ServiceError;
use crate::stats::{describe, Observed, COMMIT_SECONDS_BUCKETS};
use crate::status_page::{live_tables, LiveTable};

/// How often histograms are folded even when nobody scrapes, so their samples never pile up.
const UPKEEP: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once (the file descriptors belong to Kafka
/// and the catalog first).
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `/readyz` line per table: error texts can be long.
const MAX_REASON: usize = 300;

/// `[http]` in `calve.toml`: where `/metrics`, `/healthz` and `/readyz` are served. Without
/// the section nothing listens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:9464`: this machine only; use `0.0.0.0:9464`
    /// for a scraper elsewhere).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// Installs the process-wide Prometheus recorder; series recorded before it are lost, so call
/// it before the tables start. Fails if a recorder is installed already.
pub fn install_exporter() -> Result<PrometheusHandle, ServiceError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("calve_commit_duration_seconds".into()),
            COMMIT_SECONDS_BUCKETS,
        )
        .and_then(|b| b.install_recorder())
        .map_err(|e| ServiceError::Config(format!("metrics: {e}")))?;
    describe();
    Ok(handle)
}

/// How long `calve status` waits for a running `calve run` to say how its tables are.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the `calve run` serving `cfg` for its `/status` page (`calve status` shows it beside
/// what the tables hold: a failing table's reason and the SLA measurements live only in the
/// running process). `Err` says why no answer came.
pub async fn ask_status(cfg: &HttpConfig) -> Result<Vec<LiveTable>, String> {
    let mut at = cfg.listen;
    if at.ip().is_unspecified() {
        at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder()
        .timeout(ASK_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let answer = client
        .get(format!("http://{at}/status"))
        .send()
        .await
        .map_err(|e| format!("no calve run answers at {at}: {e}"))?;
    answer
        .error_for_status()
        .map_err(|e| format!("the calve run at {at} refused /status: {e}"))?
        .json()
        .await
        .map_err(|e| format!("the calve run at {at} answered /status with something else: {e}"))
}

/// Binds `cfg.listen` (so a taken port fails `calve run` at once, before any table starts).
pub async fn bind(cfg: &HttpConfig) -> Result<TcpListener, ServiceError> {
    TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServiceError::Config(format!("[http] listen = \"{}\": {e}", cfg.listen)))
}

/// Answers requests on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tables: Observed,
    metrics: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz and /status");
    }
    let mut upkeep = tokio::time::interval(UPKEEP);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = upkeep.tick() => {
                metrics.run_upkeep();
                continue;
            }
            _ = shutdown.changed() => return,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: the next accept may work; the tables go on.
                tracing::warn!("http: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("http: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let (tables, metrics) = (tables.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let reply = answer(&req, &tables, &metrics);
                async move { Ok::<_, Infallible>(reply) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!("http: connection ended: {e}");
            }
        });
    }
}

fn answer(req: &Request<Incoming>, tables: &Observed, metrics: &PrometheusHandle) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let now = chrono::Utc::now().timestamp_millis();
            for (_, t) in tables.iter() {
                t.refresh(now);
            }
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/status" => {
            let page = live_tables(tables, chrono::Utc::now().timestamp_millis());
            match serde_json::to_string_pretty(&page) {
                Ok(json) => reply(StatusCode::OK, "application/json", json),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    e.to_string(),
                ),
            }
        }
        "/readyz" => {
            let (ready, body) = readiness(tables);
            let status = match ready {
                true => StatusCode::OK,
                false => StatusCode::SERVICE_UNAVAILABLE,
            };
            reply(status, "text/plain; charset=utf-8", body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "calve serves /metrics, /healthz, /readyz and /status\n".into(),
        ),
    }
}

/// Whether every table is ready, and one line per table saying how it is.
pub fn readiness(tables: &Observed) -> (bool, String) {
    let mut ready = true;
    let mut body = String::new();
    for (name, t) in tables.iter() {
        let (state, for_) = t.state();
        let ok = state.ready(for_, t.freshness());
        ready &= ok;
        let verdict = if ok { "ready" } else { "NOT READY" };
        let mut state = state.to_string();
        if let Some((cut, _)) = state.char_indices().nth(MAX_REASON) {
            state.truncate(cut);
            state.push('…');
        }
        body.push_str(&format!("{name}: {verdict}: {state} (for {}s)\n", for_.as_secs()));
    }
    (ready, body)
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
