//! A throwaway PostgreSQL server per test: its own data directory and loopback port, trust
//! authentication, stopped on drop. Started as the `postgres` user when tests run as root,
//! since the server refuses to run as root.

use std::path::PathBuf;
use std::process::Command;

use crate::installed_tool;
use crate::ports::{lease_port, PortLease};

/// A running server.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    _lease: PortLease,
}

fn bin_dir() -> PathBuf {
    installed_tool("CALVE_PG_BIN", "install-postgres.sh")
}

fn as_server_user(cmd: &str, args: &[&str]) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]).args(args);
        c
    } else {
        let mut c = Command::new(cmd);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// Initialises and starts a server; returns once it accepts connections.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(dir.path());
            run(chown, "chown");
        }
        let data = dir.path().display().to_string();
        let initdb = bin.join("initdb").display().to_string();
        run(
            as_server_user(&initdb, &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]),
            "initdb",
        );
        let lease = lease_port();
        let port = lease.port();
        let opts = format!("-p {port} -c listen_addresses=127.0.0.1 -k {data} -F");
        let pg_ctl = bin.join("pg_ctl").display().to_string();
        let log = format!("{data}/server.log");
        run(
            as_server_user(&pg_ctl, &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"]),
            "pg_ctl start",
        );
        Postgres {
            bin,
            dir,
            port,
            _lease: lease,
        }
    }

    /// URL for calve (sqlx).
    pub fn uri(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// URL for PyIceberg (SQLAlchemy + psycopg2).
    pub fn sqlalchemy_uri(&self) -> String {
        format!("postgresql+psycopg2://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.path().display().to_string();
        let _ = as_server_user(&pg_ctl, &["-D", &data, "-m", "immediate", "stop"]).output();
    }
}
