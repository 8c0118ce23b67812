//! The schema registry, as calve reads it: writer schemas by id, over the Confluent REST API
//! (`GET /schemas/ids/{id}`), which Confluent, Redpanda, Apicurio (in its Confluent mode) and
//! Karapace all serve.
//!
//! A schema id is immutable, so a schema is fetched once per process and kept. What a fetch
//! can end in is split the way the table needs it split: a registry that does not know the id
//! ([`Fetched::Unknown`]) is a problem of the records that carry it (they go to the
//! dead-letter table with the id), while a registry that is down, slow, refuses calve's
//! credentials or answers nonsense is a problem of the infrastructure
//! ([`RegistryError`], temporary): the table waits for it and never sends a good record to
//! the dead-letter table because the registry blinked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calve_contract::{HumanDuration, Secret};
use calve_retry::{Classify, RetryClass};
use serde::Deserialize;

/// `[registry]` in `calve.toml`: where writer schemas come from. Credentials are named, never
/// written here: they are read from the environment or a file when calve starts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://schema-registry:8081` (a path prefix is kept).
    pub url: String,
    /// Basic auth user name (its password from `password_env` or `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the basic auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the basic auth password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding a bearer token (instead of basic auth).
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding a bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Longest wait for one answer (default "10s"); a slower registry counts as unavailable.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    None,
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

/// What kind of schema an id names (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// Apache Avro.
    Avro,
    /// Protocol Buffers.
    Protobuf,
    /// JSON Schema.
    Json,
}

/// A writer schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterSchema {
    /// Its id (what records carry after the magic byte).
    pub id: u32,
    /// Its kind.
    pub kind: SchemaKind,
    /// The schema text.
    pub text: String,
    /// Subjects of schemas it references directly.
    pub references: Vec<String>,
    /// The schemas it references, directly or through others, each once: what a Protobuf
    /// schema's `import`s name, the types an Avro schema takes from other subjects.
    pub imports: Vec<Import>,
}

/// A schema another one references, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The name it is referenced by (a Protobuf import path such as `common/money.proto`, an
    /// Avro type's full name such as `com.acme.Address`).
    pub name: String,
    /// The subject and version it was read from.
    pub subject: String,
    /// Its version under the subject.
    pub version: i64,
    /// The schema text.
    pub text: String,
}

/// At most this many schemas are followed through references from one schema.
const MAX_IMPORTS: usize = 256;

/// The outcome of asking for a schema id that the registry answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The schema.
    Found(Arc<WriterSchema>),
    /// The registry does not know the id: the records carrying it cannot be read.
    Unknown(String),
}

/// The registry could not answer; ask again later.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// Not reachable, timed out, or answered 5xx/429.
    #[error("schema registry {url} unavailable: {reason}")]
    Unavailable {
        /// The registry's base URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// Answered 401/403: calve's credentials are missing or refused.
    #[error("schema registry {url} refused calve's credentials ({status}): {body}")]
    Unauthorized {
        /// The registry's base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's error body, verbatim.
        body: String,
    },
    /// An answer calve cannot read (not the registry API, or another version of it).
    #[error("schema registry {url} answered {status} with something calve cannot read: {body}")]
    Unreadable {
        /// The registry's base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The body, verbatim (cut to 500 bytes).
        body: String,
    },
    /// The configuration cannot work (a missing credential file or variable, a bad URL).
    #[error("schema registry configuration: {0}")]
    Config(String),
}

impl Classify for RegistryError {
    fn class(&self) -> RetryClass {
        match self {
            // A refused credential or an odd answer is fixed by a person, but the table
            // must wait for that, not stop: the records are fine.
            RegistryError::Unavailable { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::Unreadable { .. } => RetryClass::Temporary,
            RegistryError::Config(_) => RetryClass::Permanent,
        }
    }
}

/// A registry client with its cache of schemas by id; shared by every table of a process.
#[derive(Debug)]
pub struct Registry {
    base: String,
    auth: Auth,
    http: reqwest::Client,
    cache: Mutex<HashMap<u32, Fetched>>,
}

#[derive(Deserialize)]
struct SchemaBody {
    /// Given when a subject's version is asked for.
    #[serde(default)]
    id: Option<u32>,
    #[serde(default)]
    version: Option<i64>,
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

/// What one GET of a schema ended in, when the registry answered.
enum Answer {
    Schema(SchemaBody),
    /// The registry's own "not found" (error codes 40401 subject, 40402 version, 40403
    /// schema), with its body.
    NotFound(String),
}

impl Registry {
    /// A client for `cfg`; reads its credentials now, so a missing one fails at start-up.
    pub fn new(cfg: &RegistryConfig) -> Result<Self, RegistryError> {
        let base = cfg.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RegistryError::Config(format!(
                "url `{base}` must start with http:// or https://"
            )));
        }
        // The URL is in every log line and error about the registry: it must hold no secret.
        let host = base.split("://").nth(1).and_then(|rest| rest.split('/').next());
        if host.is_some_and(|h| h.contains('@')) {
            return Err(RegistryError::Config(
                "url must not carry credentials (user:password@); use username and password_env or password_file"
                    .into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout.0)
            .connect_timeout(cfg.timeout.0)
            .build()
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        Ok(Registry {
            base,
            auth: auth_of(cfg)?,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The schema with `id`, from the cache or the registry.
    pub async fn schema(&self, id: u32) -> Result<Fetched, RegistryError> {
        if let Some(known) = self.cache.lock().expect("registry cache").get(&id) {
            return Ok(known.clone());
        }
        let fetched = self.fetch(id).await?;
        // An unknown id is not cached here: the caller decides how long to believe it.
        if let Fetched::Found(_) = &fetched {
            self.cache.lock().expect("registry cache").insert(id, fetched.clone());
        }
        Ok(fetched)
    }

    /// The latest version of `subject`: its version number and its schema (`None`: the
    /// registry has no such subject). Not cached: a subject moves on.
    pub async fn latest(&self, subject: &str) -> Result<Option<(i64, u32, Fetched)>, RegistryError> {
        let url = self.url_of(&["subjects", subject, "versions", "latest"])?;
        let body = match self.get(&url).await? {
            Answer::Schema(body) => body,
            Answer::NotFound(_) => return Ok(None),
        };
        let (Some(id), Some(version)) = (body.id, body.version) else {
            return Err(RegistryError::Unreadable {
                url: self.base.clone(),
                status: 200,
                body: format!("the latest version of {subject} came without its id and version"),
            });
        };
        Ok(Some((version, id, self.writer(id, body).await?)))
    }

    /// The base URL with `segments` appended (each escaped).
    fn url_of(&self, segments: &[&str]) -> Result<String, RegistryError> {
        let mut url =
            reqwest::Url::parse(&self.base).map_err(|e| RegistryError::Config(format!("url `{}`: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|_| RegistryError::Config(format!("url `{}` cannot have a path", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url.to_string())
    }

    async fn fetch(&self, id: u32) -> Result<Fetched, RegistryError> {
        let body = match self.get(&format!("{}/schemas/ids/{id}", self.base)).await? {
            Answer::Schema(body) => body,
            Answer::NotFound(body) => {
                return Ok(Fetched::Unknown(format!(
                    "schema id {id} is not in the registry {}: {body}",
                    self.base
                )))
            }
        };
        self.writer(id, body).await
    }

    /// Schema `id` as the registry answered it, with what it imports.
    async fn writer(&self, id: u32, body: SchemaBody) -> Result<Fetched, RegistryError> {
        let kind = match body.schema_type.as_deref().unwrap_or("AVRO") {
            "AVRO" => SchemaKind::Avro,
            "PROTOBUF" => SchemaKind::Protobuf,
            "JSON" => SchemaKind::Json,
            other => {
                return Ok(Fetched::Unknown(format!(
                    "schema id {id} is of type {other}, which calve does not read"
                )))
            }
        };
        let imports = match self.imports(&body.references).await? {
            Ok(imports) => imports,
            Err(reason) => return Ok(Fetched::Unknown(format!("schema id {id} {reason}"))),
        };
        Ok(Fetched::Found(Arc::new(WriterSchema {
            id,
            kind,
            text: body.schema,
            references: body.references.into_iter().map(|r| r.subject).collect(),
            imports,
        })))
    }

    /// The schemas `references` name, and those they reference in turn, each once (by name);
    /// `Err` says which one the registry lacks.
    async fn imports(&self, references: &[Reference]) -> Result<Result<Vec<Import>, String>, RegistryError> {
        // Depth first in the order listed, as Confluent resolves them: when two references
        // name the same schema in different versions, the first one reached wins.
        let mut todo: Vec<(String, String, i64)> = references
            .iter()
            .rev()
            .map(|r| (r.name.clone(), r.subject.clone(), r.version))
            .collect();
        let mut out: Vec<Import> = Vec::new();
        while let Some((name, subject, version)) = todo.pop() {
            if out.iter().any(|i| i.name == name) {
                continue;
            }
            if out.len() >= MAX_IMPORTS {
                return Ok(Err(format!("references more than {MAX_IMPORTS} schemas")));
            }
            let url = self.url_of(&["subjects", &subject, "versions", &version.to_string()])?;
            let body = match self.get(&url).await? {
                Answer::Schema(body) => body,
                Answer::NotFound(body) => {
                    return Ok(Err(format!(
                        "references {name} (subject {subject} version {version}), which the registry {} does not have: {body}",
                        self.base
                    )))
                }
            };
            todo.extend(
                body.references
                    .iter()
                    .rev()
                    .map(|r| (r.name.clone(), r.subject.clone(), r.version)),
            );
            out.push(Import {
                name,
                subject,
                version,
                text: body.schema,
            });
        }
        Ok(Ok(out))
    }

    /// GETs a schema (by id, or a subject's version).
    async fn get(&self, url: &str) -> Result<Answer, RegistryError> {
        let mut req = self.http.get(url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
        };
        let unavailable = |reason: String| RegistryError::Unavailable {
            url: self.base.clone(),
            reason,
        };
        let resp = req.send().await.map_err(|e| unavailable(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| unavailable(error_chain(&e)))?;
        let cut = || cut(&body, 500);
        match status {
            200 => serde_json::from_str(&body)
                .map(Answer::Schema)
                .map_err(|_| RegistryError::Unreadable {
                    url: self.base.clone(),
                    status,
                    body: cut(),
                }),
            // Only the registry's own "not found" says the schema is unknown; any other 404 is
            // a wrong URL or a proxy, which the table must wait out.
            404 if matches!(error_code(&body), Some(40401..=40403)) => Ok(Answer::NotFound(cut())),
            401 | 403 => Err(RegistryError::Unauthorized {
                url: self.base.clone(),
                status,
                body: cut(),
            }),
            408 | 429 | 500..=599 => Err(unavailable(format!("answered {status}: {}", cut()))),
            _ => Err(RegistryError::Unreadable {
                url: self.base.clone(),
                status,
                body: cut(),
            }),
        }
    }
}

fn auth_of(cfg: &RegistryConfig) -> Result<Auth, RegistryError> {
    let secret = |env: &Option<String>, file: &Option<PathBuf>, what: &str| -> Result<Option<Secret>, RegistryError> {
        match (env, file) {
            (Some(_), Some(_)) => Err(RegistryError::Config(format!(
                "give the {what} by environment variable or by file, not both"
            ))),
            (Some(var), None) => std::env::var(var)
                .map(|v| Some(Secret::new(v)))
                .map_err(|_| RegistryError::Config(format!("the {what} variable {var} is not set"))),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|v| Some(Secret::new(v.trim_end_matches(['\n', '\r']).to_string())))
                .map_err(|e| RegistryError::Config(format!("the {what} file {}: {e}", path.display()))),
            (None, None) => Ok(None),
        }
    };
    let password = secret(&cfg.password_env, &cfg.password_file, "password")?;
    let token = secret(&cfg.token_env, &cfg.token_file, "token")?;
    match (&cfg.username, password, token) {
        (None, None, None) => Ok(Auth::None),
        (Some(user), Some(password), None) => Ok(Auth::Basic {
            user: user.clone(),
            password,
        }),
        (None, None, Some(token)) => Ok(Auth::Bearer(token)),
        (Some(_), None, _) => Err(RegistryError::Config(
            "username needs password_env or password_file".into(),
        )),
        (None, Some(_), _) => Err(RegistryError::Config("a password needs a username".into())),
        (Some(_), Some(_), Some(_)) => Err(RegistryError::Config(
            "give basic auth (username + password) or a token, not both".into(),
        )),
    }
}

/// The `error_code` of a registry error body.
fn error_code(body: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("error_code")?
        .as_i64()
}

/// An HTTP error with its causes (reqwest's own message says only "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> RegistryConfig {
        toml::from_str(toml_text).expect("config")
    }

    #[test]
    fn credentials_come_from_the_environment_or_a_file_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let c = cfg(&format!(
            "url = \"http://r:8081/\"\nusername = \"calve\"\npassword_file = \"{}\"",
            file.display()
        ));
        let r = Registry::new(&c).unwrap();
        assert_eq!(r.url(), "http://r:8081");
        assert_eq!(
            r.auth,
            Auth::Basic {
                user: "calve".into(),
                password: Secret::new("s3cret")
            }
        );
        assert!(!format!("{r:?}").contains("s3cret"), "{r:?}");
        let missing = cfg("url = \"http://r\"\ntoken_env = \"CALVE_TEST_NO_SUCH_VARIABLE\"");
        let e = Registry::new(&missing).unwrap_err();
        assert!(e.to_string().contains("CALVE_TEST_NO_SUCH_VARIABLE"), "{e}");
        assert_eq!(e.class(), RetryClass::Permanent);
        let half = cfg("url = \"http://r\"\nusername = \"calve\"");
        assert!(Registry::new(&half).is_err());
        assert!(Registry::new(&cfg("url = \"r:8081\"")).is_err(), "a URL without scheme");
    }

    #[tokio::test]
    async fn a_registry_that_does_not_answer_is_temporary_not_a_record_problem() {
        // Bound and never accepted: connections queue and no answer comes, with no port race.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let r = Registry::new(&cfg(&format!("url = \"http://127.0.0.1:{port}\"\ntimeout = \"1s\""))).unwrap();
        let e = r.schema(1).await.unwrap_err();
        assert!(matches!(e, RegistryError::Unavailable { .. }), "{e}");
        assert!(e.is_temporary());
        let with_secret = cfg("url = \"https://calve:s3cret@registry:8081\"");
        let refused = Registry::new(&with_secret).unwrap_err().to_string();
        assert!(
            refused.contains("must not carry credentials") && !refused.contains("s3cret"),
            "{refused}"
        );
    }

    #[test]
    fn only_the_registrys_own_not_found_makes_an_id_unknown() {
        assert_eq!(
            error_code(r#"{"error_code":40403,"message":"Schema 7 not found"}"#),
            Some(40403)
        );
        assert_eq!(error_code("<html>404 Not Found</html>"), None);
    }
}
