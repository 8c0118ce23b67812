//! A throwaway Prometheus server (Debian's package) scraping calve's `/metrics`, and
//! `promtool`, its own checker of the text format: the metrics are proven by the server that
//! production uses, not by a parser written here.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::installed_tool;
use crate::ports::{lease_port, PortLease};

fn bin_dir() -> PathBuf {
    installed_tool("CALVE_PROMETHEUS_BIN", "install-prometheus.sh")
}

/// A running server, stopped on drop.
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    _lease: PortLease,
    url: String,
}

impl Prometheus {
    /// Starts a server scraping `target` (`host:port`) every 250 ms; returns once it is ready.
    pub fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: calve\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let lease = lease_port();
        let addr = format!("127.0.0.1:{}", lease.port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin_dir().join("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus {
            child,
            dir,
            _lease: lease,
            url: format!("http://{addr}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if get(&format!("{}/-/ready", p.url)).is_some_and(|(status, _)| status == 200) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus did not become ready in 60 s:\n{}", p.log());
    }

    /// The server's log (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Evaluates PromQL `expr` now: each series' labels and value (empty when none matches).
    pub fn query(&self, expr: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC)
        );
        let Some((200, body)) = get(&url) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        let labels = r["metric"].as_object()?.clone();
                        let value = r["value"][1].as_str()?.parse().ok()?;
                        Some((labels, value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The single value `expr` evaluates to, once it has one.
    pub fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr).as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }

    /// Waits up to `timeout` for `expr` to have a value satisfying `ok`; the last value seen.
    pub fn wait_for(&self, expr: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> Result<f64, Option<f64>> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.value(expr);
            if let Some(v) = last.filter(|v| ok(*v)) {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last)
    }

    /// Whether the last scrape of every target succeeded (`up == 1`).
    pub fn scraping(&self) -> bool {
        let up = self.query("up");
        !up.is_empty() && up.iter().all(|(_, v)| *v == 1.0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on `text` (a `/metrics` page): its findings, empty when the
/// page is valid and follows Prometheus's naming rules.
pub fn promtool_check(text: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(bin_dir().join("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() {
        true => Ok(said),
        false => Err(said),
    }
}

/// GET `url`: status and body, or `None` when nothing answered.
pub fn get(url: &str) -> Option<(u16, String)> {
    // One client for every call: each new one starts a thread, which a test polling every
    // 20 ms on a busy machine cannot afford.
    static CLIENT: std::sync::OnceLock<Option<reqwest::blocking::Client>> = std::sync::OnceLock::new();
    let client = CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .ok()
        })
        .as_ref()?;
    let r = client.get(url).send().ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().ok()?))
}
