//! A tansu broker per test: its own port, its own SQLite storage in a temp dir, killed on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::installed_tool;
use crate::ports::{lease_port, PortLease};

/// A running broker.
pub struct Broker {
    child: Child,
    port: u16,
    _lease: PortLease,
    _dir: tempfile::TempDir,
}

/// The tansu binary: `$CALVE_TANSU`, else installed (once, cached) by `scripts/install-tansu.sh`.
pub fn tansu_binary() -> PathBuf {
    installed_tool("CALVE_TANSU", "install-tansu.sh")
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let lease = lease_port();
        let port = lease.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting tansu");
        let b = Broker {
            child,
            port,
            _lease: lease,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port} within 30s");
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
