//! A tansu broker per test: its own port, its own SQLite storage in a temp dir, killed on drop;
//! optionally secured with TLS and SASL SCRAM ([`SecuredBroker`]).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::installed_tool;
use crate::ports::{lease_port, PortLease};
use crate::python::{python, script};

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
        let child = spawn_tansu(dir.path(), port, port, &[]);
        wait_until_listening(port, "tansu");
        Broker {
            child,
            port,
            _lease: lease,
            _dir: dir,
        }
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes the broker (SIGSTOP): its connections stay open and nothing answers, as when a
    /// broker hangs or a network drops every packet. [`Broker::resume`] thaws it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this value owns and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "signalling tansu: {}", std::io::Error::last_os_error());
    }
}

fn spawn_tansu(dir: &Path, port: u16, advertised: u16, extra: &[&str]) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .unwrap();
    Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .args(extra)
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting tansu")
}

fn wait_until_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A broker as production clusters are run: TLS (a certificate from a throwaway CA) and SASL
/// SCRAM-SHA-512 with one user. tansu authenticates; TLS is terminated by
/// `python/tls_proxy.py` in front of it, because tansu 0.6's command line cannot enable its
/// own (it refuses `--cert` with `--key`). Clients see one broker on [`SecuredBroker::bootstrap`].
pub struct SecuredBroker {
    broker: Broker,
    proxy: Child,
    proxy_port: u16,
    _proxy_lease: PortLease,
    /// The SASL user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The CA certificate (PEM) that signed the broker's certificate.
    pub ca: PathBuf,
}

impl SecuredBroker {
    /// Starts tansu with one SCRAM user (`calve`, a random password) and the TLS front.
    pub fn start() -> SecuredBroker {
        let dir = tempfile::tempdir().unwrap();
        let (lease, proxy_lease) = (lease_port(), lease_port());
        let (port, proxy_port) = (lease.port(), proxy_lease.port());
        let password = format!("pw-{:016x}", rand::random::<u64>());
        // Users are created through the broker, which must not demand authentication yet: a
        // first start creates the user in tansu's storage, the second one requires it.
        let open = KillOnDrop(Some(spawn_tansu(dir.path(), port, proxy_port, &[])));
        wait_until_listening(port, "tansu");
        let broker_url = format!("tcp://127.0.0.1:{port}");
        let st = Command::new(tansu_binary())
            .args(["user", "create", "calve", &password, "--broker", &broker_url])
            .args(["--mechanism", "scram512"])
            .status()
            .expect("tansu user create");
        assert!(st.success(), "tansu user create failed: {st}");
        drop(open);
        let mut child = KillOnDrop(Some(spawn_tansu(dir.path(), port, proxy_port, &["--authentication"])));
        wait_until_listening(port, "tansu");

        let certs = dir.path().join("certs");
        let st = Command::new(python())
            .arg(script("certs.py"))
            .arg(&certs)
            .status()
            .expect("certs.py");
        assert!(st.success(), "certs.py failed: {st}");
        let mut proxy = KillOnDrop(Some(
            Command::new(python())
                .arg(script("tls_proxy.py"))
                .arg(proxy_port.to_string())
                .arg(port.to_string())
                .arg(certs.join("server.pem"))
                .arg(certs.join("server.key"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("tls_proxy.py"),
        ));
        let stdout = proxy.0.as_mut().and_then(|p| p.stdout.take()).unwrap();
        let mut ready = String::new();
        BufReader::new(stdout).read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "tls_proxy.py did not start");
        SecuredBroker {
            broker: Broker {
                child: child.0.take().unwrap(),
                port,
                _lease: lease,
                _dir: dir,
            },
            proxy: proxy.0.take().unwrap(),
            proxy_port,
            _proxy_lease: proxy_lease,
            username: "calve".into(),
            password,
            ca: certs.join("ca.pem"),
        }
    }

    /// `host:port` for clients (TLS).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }

    /// The client properties that reach it: SASL_SSL, SCRAM-SHA-512, the user, the CA.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", self.username.as_str()),
            ("sasl.password", self.password.as_str()),
            ("ssl.ca.location", &self.ca.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The plaintext broker behind the TLS front (for a test that must show it is refused).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

impl Drop for SecuredBroker {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
    }
}

/// A process killed when the test panics before it is handed to its owner.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
