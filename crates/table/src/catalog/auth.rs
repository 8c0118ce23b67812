//! How calve proves itself to a REST catalog: nothing, a fixed bearer token, or OAuth2's
//! client-credentials flow (the Iceberg REST spec's `/v1/oauth/tokens`, or an identity
//! provider's token endpoint given as `oauth2_server_uri`).
//!
//! A fetched token is kept and replaced before it expires (at 80% of its `expires_in`), so a
//! long-running table never presents a dead one; a token the server refuses anyway (401: it was
//! revoked, or the server's clock disagrees) is dropped and fetched again once per request. The
//! token endpoint's error body (`invalid_client`, `invalid_scope`, …) is reported verbatim,
//! because it is what a person fixing the credentials needs.

use std::time::{Duration, Instant};

use calve_contract::Secret;
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;

use crate::error::{Result, TableError};

/// Replace a token after this share of its lifetime.
const REFRESH_AT: f64 = 0.8;

/// The credentials requests carry.
#[derive(Debug)]
pub(super) enum Auth {
    /// No `Authorization` header.
    None,
    /// A fixed bearer token.
    Bearer(Secret),
    /// Tokens from OAuth2 client credentials (boxed: it is large, and there is one per catalog).
    ClientCredentials(Box<TokenSource>),
}

/// Fetches and keeps client-credentials tokens.
#[derive(Debug)]
pub(super) struct TokenSource {
    client: reqwest::Client,
    url: url::Url,
    client_id: String,
    client_secret: Secret,
    scope: String,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    /// When to fetch a new one; `None`: the server gave no lifetime, keep it until refused.
    refresh_at: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    /// `credential` is `client_id:client_secret` (the form Iceberg catalogs and PyIceberg use).
    pub(super) fn new(client: reqwest::Client, url: url::Url, credential: &Secret, scope: &str) -> Result<Self> {
        let (id, secret) = credential
            .expose()
            .split_once(':')
            .ok_or_else(|| TableError::Config("catalog credential must be `client_id:client_secret`".into()))?;
        Ok(TokenSource {
            client,
            url,
            client_id: id.to_string(),
            client_secret: Secret::new(secret),
            scope: scope.to_string(),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// A token that is not about to expire.
    async fn token(&self) -> Result<Secret> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the kept token (the server refused it).
    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<Cached> {
        let what = format!("OAuth2 token request to {}", self.url);
        let resp = self
            .client
            .post(self.url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| TableError::Catalog(format!("{what}: {}", e.without_url())))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let msg = format!("{what}: HTTP {status}: {}", body.trim());
            return Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                TableError::Catalog(msg)
            } else {
                TableError::Rejected(msg)
            });
        }
        let t: TokenResponse = serde_json::from_str(&body)
            .map_err(|e| TableError::Rejected(format!("{what}: not a token response: {e}")))?;
        let started = Instant::now();
        Ok(Cached {
            token: Secret::new(t.access_token),
            refresh_at: t
                .expires_in
                .map(|s| started + Duration::from_secs_f64(s as f64 * REFRESH_AT)),
        })
    }
}

impl Auth {
    /// `req` with the credentials it must carry.
    pub(super) async fn apply(&self, req: RequestBuilder) -> Result<RequestBuilder> {
        Ok(match self {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
            Auth::ClientCredentials(source) => req.bearer_auth(source.token().await?.expose()),
        })
    }

    /// After a 401: whether asking again with a new token may help (and the old one is gone).
    pub(super) async fn refused(&self) -> bool {
        match self {
            Auth::ClientCredentials(source) => {
                source.invalidate().await;
                true
            }
            _ => false,
        }
    }
}
