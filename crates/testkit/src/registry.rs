//! A fake Confluent Schema Registry per test, and a producer that writes through it.
//!
//! The real registry is a JVM service the test machines cannot install, so
//! `python/registry.py` speaks the subset of its REST API that serializers and calve use, with
//! its semantics (global immutable ids, compatibility checks with Apache Avro's checker, the
//! registry's error codes), plus test controls: injected faults (status, delay, dropped
//! connections) and a log of the requests it answered. [`produce_avro`] writes through
//! confluent-kafka's own `AvroSerializer` (`python/produce_avro.py`), so the bytes on the wire
//! are exactly what real producers send.
//!
//! The server runs as a child process on a leased port and is killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::ports::{lease_port, PortLease};
use crate::python::{python, script};

/// A running fake registry (see the module docs and `python/registry.py`).
pub struct RegistryServer {
    child: Child,
    port: u16,
    auth: Option<(String, String)>,
    _lease: PortLease,
    dir: tempfile::TempDir,
}

impl RegistryServer {
    /// Starts a registry without authentication and waits until it listens.
    pub fn start() -> RegistryServer {
        Self::launch(None)
    }

    /// Starts a registry that requires HTTP basic auth with `user`/`password` on every API
    /// request (401 otherwise). The test controls need none.
    pub fn start_with_auth(user: &str, password: &str) -> RegistryServer {
        Self::launch(Some((user.to_string(), password.to_string())))
    }

    fn launch(auth: Option<(String, String)>) -> RegistryServer {
        let py = python(); // may create the venv: outside the start timeout below
        let dir = tempfile::tempdir().unwrap();
        let lease = lease_port();
        let port = lease.port();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut cmd = Command::new(py);
        cmd.arg(script("registry.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        if let Some((user, password)) = &auth {
            cmd.args(["--user", user, "--password", password]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting registry.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {} // drain until the server exits
        });
        let server = RegistryServer {
            child,
            port,
            auth,
            _lease: lease,
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(line)) if line.trim() == format!("READY {port}") => server,
            other => panic!("registry.py did not start ({other:?}); its log:\n{}", server.log()),
        }
    }

    /// The base URL to configure clients with (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The basic-auth credentials it requires, if any.
    pub fn auth(&self) -> Option<(String, String)> {
        self.auth.clone()
    }

    /// What the server logged so far (one line per request, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Injects faults as `python/registry.py` documents for `POST /_fault`, e.g.
    /// `{"status": 503, "count": 2, "path_prefix": "/schemas/ids"}`.
    pub fn fault(&self, spec: Value) {
        self.control("POST", "/_fault", Some(&spec));
    }

    /// Every API request answers `status` for the next `for_secs` seconds.
    pub fn fault_status(&self, status: u16, for_secs: f64) {
        self.fault(json!({"status": status, "for_seconds": for_secs}));
    }

    /// Every API request waits `secs` before it is answered, for the next `for_secs` seconds.
    pub fn fault_delay(&self, secs: f64, for_secs: f64) {
        self.fault(json!({"delay_seconds": secs, "for_seconds": for_secs}));
    }

    /// Removes all injected faults.
    pub fn clear_faults(&self) {
        self.control("POST", "/_fault/clear", None);
    }

    /// The API requests answered so far, oldest first: objects with `method`, `path` (as sent, not
    /// percent-decoded, without the query), `query` (the raw query string), `status` (`null` when
    /// the connection was dropped), `fault` (`"status"`, `"delay"`, `"drop"` or `null`) and
    /// `t` (Unix seconds).
    pub fn requests(&self) -> Vec<Value> {
        let log = self.control("GET", "/_requests", None);
        log["requests"].as_array().cloned().unwrap_or_default()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        self.control("POST", "/_requests/clear", None);
    }

    /// Registers the Avro schema `schema_json` under `subject`: its id, or `"<status>: <error
    /// body>"` (409 incompatible, 422 invalid, an injected fault, …).
    pub fn register(&self, subject: &str, schema_json: &str) -> Result<u32, String> {
        let body = json!({ "schema": schema_json });
        let (status, answer) = self.call("POST", &format!("/subjects/{}/versions", encode(subject)), Some(&body))?;
        match (status, answer["id"].as_u64()) {
            (200, Some(id)) => Ok(id as u32),
            _ => Err(format!("{status}: {answer}")),
        }
    }

    /// One API request (with the server's credentials, if any): the status and JSON answer
    /// (`Null` if the body was not JSON), or why no answer came (e.g. an injected drop).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        http(self.port, method, path, body, self.auth.as_ref())
    }

    fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        match http(self.port, method, path, body, None) {
            Ok((200, answer)) => answer,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    /// Options for [`produce_avro`] that carry this server's credentials.
    pub fn produce_opts(&self) -> AvroProduceOpts {
        AvroProduceOpts {
            auth: self.auth.clone(),
            ..AvroProduceOpts::default()
        }
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path segment, percent-encoded.
fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

/// One request, with basic auth when `auth` is given: the status and the JSON answer (`Null`
/// when the body is not JSON), or why no answer came.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    auth: Option<&(String, String)>,
) -> Result<(u16, Value), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .header("Accept", "application/vnd.schemaregistry.v1+json");
    if let Some(body) = body {
        req = req
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
    }
    if let Some((user, password)) = auth {
        req = req.basic_auth(user, Some(password));
    }
    let resp = req.send().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// How [`produce_avro`] serialises (the flags of `python/produce_avro.py`).
#[derive(Debug, Clone)]
pub struct AvroProduceOpts {
    /// Subject name strategy: `topic` (`<topic>-value`, the default), `record` or
    /// `topic_record`.
    pub subject_strategy: String,
    /// Register schemas as needed (`auto.register.schemas`, default true); when false the
    /// serializer only looks them up (`POST /subjects/<subject>`).
    pub auto_register: bool,
    /// Serialise with the subject's latest version (`use.latest.version`; needs
    /// `auto_register: false`).
    pub use_latest: bool,
    /// Basic-auth credentials for the registry.
    pub auth: Option<(String, String)>,
    /// How values are serialised.
    pub serializer: Serializer,
}

/// The confluent-kafka serializer [`produce_avro`] uses for values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Serializer {
    /// `AvroSerializer`: each line's `schema` is an Avro schema.
    #[default]
    Avro,
    /// `JSONSerializer`: each line's `schema` is a JSON Schema.
    Json,
    /// `ProtobufSerializer`: each line's `schema` is `.proto` text, with `message` (and
    /// optionally `proto_file` and `imports`); values are proto3 JSON.
    Protobuf,
}

impl Default for AvroProduceOpts {
    fn default() -> Self {
        AvroProduceOpts {
            subject_strategy: "topic".to_string(),
            auto_register: true,
            use_latest: false,
            auth: None,
            serializer: Serializer::Avro,
        }
    }
}

/// What [`produce_avro`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroProduced {
    /// Messages the broker acknowledged.
    pub delivered: usize,
    /// Per input line, the schema id framed into the value (`None` for a tombstone).
    pub value_ids: Vec<Option<u32>>,
    /// Per input line, the schema id framed into the key (`None` unless the key was Avro).
    pub key_ids: Vec<Option<u32>>,
}

/// Produces `lines` (JSON objects as `python/produce_avro.py` documents: `schema`, `key`,
/// optional `key_schema`, `value` with `{"$decimal": "1.5"}`-style conversions for logical
/// types, optional `partition` and `headers`) in order to `topic`, serialised by
/// confluent-kafka's `AvroSerializer` against the registry at `registry_url`. Panics on
/// failure (a schema the registry refuses, a delivery that fails), with the script's stderr.
pub fn produce_avro(
    bootstrap: &str,
    topic: &str,
    registry_url: &str,
    lines: &[Value],
    opts: &AvroProduceOpts,
) -> AvroProduced {
    produced(bootstrap, topic, registry_url, lines, opts).unwrap_or_else(|e| panic!("{e}"))
}

fn produced(
    bootstrap: &str,
    topic: &str,
    registry_url: &str,
    lines: &[Value],
    opts: &AvroProduceOpts,
) -> Result<AvroProduced, String> {
    let mut cmd = Command::new(python());
    cmd.arg(script("produce_avro.py"))
        .args([bootstrap, topic, registry_url, "--print-ids"])
        .args(["--subject-strategy", &opts.subject_strategy])
        .args(["--auto-register", if opts.auto_register { "true" } else { "false" }]);
    if opts.use_latest {
        cmd.arg("--use-latest");
    }
    match opts.serializer {
        Serializer::Avro => {}
        Serializer::Json => {
            cmd.args(["--serializer", "json"]);
        }
        Serializer::Protobuf => {
            cmd.args(["--serializer", "protobuf"]);
        }
    }
    if let Some((user, password)) = &opts.auth {
        cmd.args(["--user", user, "--password", password]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running produce_avro.py");
    // Fed from a thread: the script prints a line per input line, so writing all input before
    // reading its output could fill both pipes.
    let mut stdin = child.stdin.take().unwrap();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes()); // fails only if the script exited early
    });
    let out = child.wait_with_output().expect("waiting for produce_avro.py");
    feeder.join().unwrap();
    if !out.status.success() {
        return Err(format!(
            "produce_avro.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8(out.stdout).expect("produce_avro.py printed UTF-8");
    let mut printed: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let delivered = printed
        .pop()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("produce_avro.py printed no count: {stdout}"))?;
    let mut produced = AvroProduced {
        delivered,
        value_ids: Vec::new(),
        key_ids: Vec::new(),
    };
    for line in printed {
        let ids: Value = serde_json::from_str(line).map_err(|e| format!("produce_avro.py printed {line:?}: {e}"))?;
        produced
            .value_ids
            .push(ids["value_schema_id"].as_u64().map(|v| v as u32));
        produced.key_ids.push(ids["key_schema_id"].as_u64().map(|v| v as u32));
    }
    Ok(produced)
}
