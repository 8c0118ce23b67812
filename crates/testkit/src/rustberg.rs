//! A foreign Iceberg REST catalog per test: `rustberg` (crates.io; installed once into the
//! test cache by `scripts/install-rustberg.sh`, like tansu) on a leased loopback port, its
//! catalog in a redb file of its own temp dir, its warehouse where the test says (a local
//! directory or an S3 bucket reached with the test's storage properties), killed on drop.
//!
//! Nobody here wrote it, so it is the check that calve speaks the REST protocol as the spec
//! says rather than as our own test server (`rest_catalog`) reads it. It runs without
//! authentication (`--no-auth --dev`) and without rate limiting: the tests exercise commits,
//! not its policy engine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::installed_tool;
use crate::ports::{lease_port, PortLease};

/// The rustberg binary: `$CALVE_RUSTBERG`, else installed (once, cached) by
/// `scripts/install-rustberg.sh`.
pub fn rustberg_binary() -> PathBuf {
    installed_tool("CALVE_RUSTBERG", "install-rustberg.sh")
}

/// A running rustberg server.
pub struct Rustberg {
    child: Child,
    port: u16,
    _lease: PortLease,
    dir: tempfile::TempDir,
    /// The warehouse location it assigns tables under.
    pub warehouse: String,
}

impl Rustberg {
    /// Starts rustberg with its warehouse at `warehouse` (`file:///…` or `s3://bucket/prefix`)
    /// and `storage` (Iceberg FileIO properties: the S3 endpoint, region, keys) for reaching
    /// it, and waits until it answers `/health`.
    pub fn start(warehouse: &str, storage: &[(String, String)]) -> Rustberg {
        let dir = tempfile::tempdir().unwrap();
        let lease = lease_port();
        let port = lease.port();
        let config = dir.path().join("rustberg.toml");
        std::fs::write(&config, config_text(dir.path(), warehouse, storage)).unwrap();
        let child = spawn(dir.path(), &config, port);
        let server = Rustberg {
            child,
            port,
            _lease: lease,
            dir,
            warehouse: warehouse.to_string(),
        };
        server.wait_until_healthy();
        server
    }

    /// The base URL calve and PyIceberg are given (`http://127.0.0.1:PORT`).
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What rustberg logged so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rustberg.log")).unwrap_or_default()
    }

    fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/health", self.uri());
        // On a thread of its own: the blocking client must not run inside a test's runtime.
        let healthy = || {
            std::thread::scope(|s| {
                s.spawn(|| reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success()))
                    .join()
                    .unwrap_or(false)
            })
        };
        loop {
            if healthy() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rustberg did not answer {url} within 60s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn config_text(dir: &Path, warehouse: &str, storage: &[(String, String)]) -> String {
    let mut text = format!(
        "[storage]\ncatalog_url = \"file://{}/catalog\"\nwarehouse_location = \"{warehouse}\"\n\n\
         [rate_limit]\nenabled = false\n",
        dir.display()
    );
    if !storage.is_empty() {
        text.push_str("\n[storage.properties]\n");
        for (k, v) in storage {
            text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
        }
    }
    text
}

fn spawn(dir: &Path, config: &Path, port: u16) -> Child {
    std::fs::create_dir_all(dir.join("catalog")).unwrap();
    let log = std::fs::File::create(dir.join("rustberg.log")).unwrap();
    Command::new(rustberg_binary())
        .arg("--config")
        .arg(config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--no-auth", "--dev", "--insecure-http", "--log-level", "info"])
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting rustberg")
}

impl Drop for Rustberg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
