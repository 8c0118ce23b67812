//! An S3 API server per test: moto's server (`python -m moto.server`, from the test venv) on a
//! leased loopback port, with one bucket, killed on drop. Tests reach it the way production
//! reaches S3: `s3.endpoint` and path-style access, with moto's fixed test credentials.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{lease_port, PortLease};
use crate::python::{python, script};

/// A running moto server with a bucket.
pub struct S3 {
    child: Child,
    port: u16,
    _lease: PortLease,
    /// The bucket every test object goes in.
    pub bucket: String,
}

impl S3 {
    /// Starts moto and creates the bucket `lake`.
    pub fn start() -> S3 {
        let lease = lease_port();
        let port = lease.port();
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto");
        let s3 = S3 {
            child,
            port,
            _lease: lease,
            bucket: "lake".into(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on {port} within 60s");
            std::thread::sleep(Duration::from_millis(50));
        }
        s3.client(&["mkbucket"], &[]);
        s3
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The storage properties that reach it, by Iceberg's names (calve's `[catalog.storage]`,
    /// PyIceberg's catalog properties).
    pub fn properties(&self) -> Vec<(String, String)> {
        [
            ("s3.endpoint", self.endpoint()),
            ("s3.region", "us-east-1".into()),
            ("s3.path-style-access", "true".into()),
            ("s3.access-key-id", "testing".into()),
            ("s3.secret-access-key", "testing".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The keys of every object under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        sorted_lines(self.client(&["keys", prefix], &[]))
    }

    /// The bytes of the object at `key`.
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.client(&["get", key], &[])
    }

    /// Writes `bytes` at `key` (an object nobody committed, say).
    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        self.client(&["put", key], &bytes);
    }

    /// The keys under `prefix` of the objects whose bytes contain `needle`, sorted.
    pub fn grep(&self, prefix: &str, needle: &[u8]) -> Vec<String> {
        sorted_lines(self.client(&["grep", prefix, &hex::encode(needle)], &[]))
    }

    /// Runs `python/s3.py` (boto3, a signed client like production's) with `args`.
    fn client(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new(python())
            .arg(script("s3.py"))
            .args([&self.endpoint(), &self.bucket])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("running s3.py");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "s3.py {args:?} failed");
        out.stdout
    }
}

/// The lines of a key listing, sorted.
fn sorted_lines(out: Vec<u8>) -> Vec<String> {
    let mut keys: Vec<String> = String::from_utf8(out).unwrap().lines().map(String::from).collect();
    keys.sort();
    keys
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
