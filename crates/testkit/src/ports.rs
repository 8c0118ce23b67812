//! Loopback ports for test servers that run in another process (the broker, PostgreSQL).
//!
//! Binding port 0, dropping the socket and passing the number on races: until the server
//! binds, the kernel may hand the same port to another test's probe or to an outgoing
//! connection. So a port is leased instead: taken from a range below Linux's ephemeral range
//! (which outgoing connections use), confirmed free by a bind, and held under an exclusive
//! `flock` on a file named after it until the lease drops. Every test process on the machine
//! (parallel test threads and parallel `cargo test` runs alike) skips leased ports; the lock
//! goes with the process that held it, so a crashed test leaks nothing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Leases are taken from here: below the default ephemeral range (32768–60999) and above the
/// ports well-known services use.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A port reserved for one test server while this value lives.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    _lock: File,
}

impl PortLease {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Leases a free loopback port (see the module docs).
pub fn lease_port() -> PortLease {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let span = (RANGE.end - RANGE.start) as u32;
    // Start at a different place per process so parallel runs rarely probe the same ports.
    let start = ((std::process::id() as u64 * 7919 + rand::random::<u32>() as u64) % span as u64) as u32;
    for i in 0..span {
        let port = RANGE.start + ((start + i) % span) as u16;
        let lock = File::create(dir.join(format!("{port}.lock")))
            .unwrap_or_else(|e| panic!("creating a port lock in {}: {e}", dir.display()));
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return PortLease { port, _lock: lock };
        }
    }
    panic!("no free loopback port in {RANGE:?}");
}

/// Per user, so another user's lock files (which this one could not open) are never in the way.
fn lock_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    std::env::temp_dir().join(format!("calve-test-ports-{}", unsafe { libc::geteuid() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_while_held() {
        let leases: Vec<PortLease> = (0..50).map(|_| lease_port()).collect();
        let mut ports: Vec<u16> = leases.iter().map(PortLease::port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 50, "a held port was leased twice");
        assert!(ports.iter().all(|p| RANGE.contains(p)));
    }
}
