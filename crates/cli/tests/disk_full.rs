//! A full disk under the warehouse is named for what it is — in the log from the first
//! failure, in `/readyz` and in `calve status` — and once there is room again the table goes
//! on by itself with nothing lost and nothing doubled.
//!
//! The warehouse is a 16 MiB tmpfs, filled to the last byte by a file the test then removes.
//! Mounting needs root (the CI machine runs tests as root); anywhere else the test fails with
//! that reason rather than pretend.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calve_testkit::broker::Broker;
use calve_testkit::calve::{terminate, Setup};
use calve_testkit::kafka::{create_topic, produce, Message};
use calve_testkit::prometheus::get;
use calve_testkit::workload::order_json;
use common::*;

fn orders(ids: std::ops::Range<u64>) -> Vec<Message> {
    ids.map(|i| (format!("k{i}"), Some(order_json(i)), None)).collect()
}

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs to fill it and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system has no byte left.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.flush()) {
            assert_eq!(e.raw_os_error(), Some(28), "filling {}: {e}", path.display());
            break;
        }
    }
    // Whatever is left is smaller than a chunk: take it byte-wise in smaller writes.
    for size in [4096usize, 512, 1] {
        while f.write_all(&vec![7u8; size]).is_ok() {}
    }
}

fn until(what: &str, timeout: Duration, s: &Setup, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}:\n{}", s.latest_log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_full_disk_is_reported_and_the_table_recovers_with_nothing_lost() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap(), "orders", 2);
    // Maintenance could free space under the test (a failed compaction removes its output).
    let s = Setup::new(&broker.bootstrap(), &orders_contract("orders", "1s")).without_maintenance();
    let _tmpfs = Tmpfs::mount(&s.warehouse(), "16m");
    let (_lease, listen) = s.serving_http();

    produce(&broker.bootstrap(), "orders", &orders(0..500));
    let before = s.restore_point(&calve_bin());
    let mut child = s.spawn(&calve_bin(), &["run"]);
    assert!(
        s.wait_for_commit(&calve_bin(), &mut child, &before, Duration::from_secs(60)),
        "no first commit:\n{}",
        s.latest_log()
    );
    let filler = s.warehouse().join("filler");
    fill(&filler);
    produce(&broker.bootstrap(), "orders", &orders(500..1000));

    until(
        "the full disk was not named in the log",
        Duration::from_secs(60),
        &s,
        || s.latest_log().contains("STORAGE FULL"),
    );
    let readyz = format!("http://{listen}/readyz");
    let (code, body) = get(&readyz).expect("/readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("STORAGE FULL"), "/readyz does not say why: {body}");
    let (ok, status) = s.cli(&calve_bin(), &["status"]);
    assert!(
        ok && status.contains("now (calve run): NOT READY") && status.contains("STORAGE FULL"),
        "calve status does not show the full disk:\n{status}"
    );
    let line = s
        .latest_log()
        .lines()
        .find(|l| l.contains("STORAGE FULL"))
        .map(String::from)
        .unwrap();
    assert!(line.contains("ERROR"), "not logged as an error: {line}");
    let place = format!("under the warehouse {}", s.warehouse().display());
    assert!(line.contains(&place), "the log does not say where: {line}");

    std::fs::remove_file(&filler).unwrap();
    until(
        "the table did not catch up once the disk had room",
        Duration::from_secs(120),
        &s,
        || read_orders(&s).rows("duckdb").len() >= 1000,
    );
    until("/readyz did not turn ready again", Duration::from_secs(30), &s, || {
        get(&readyz).is_some_and(|(code, _)| code == 200)
    });
    assert!(terminate(&mut child, Duration::from_secs(60)).success(), "{}", s.logs());
    assert_orders_exactly(&read_orders(&s), &(0..1000).collect::<Vec<_>>(), &s.logs());
}
