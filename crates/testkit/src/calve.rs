//! The `calve` process under test: a config in a temp dir, start, SIGTERM, SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A catalog + warehouse + config for one test.
pub struct Setup {
    /// Holds everything.
    pub dir: tempfile::TempDir,
    /// `calve.toml`.
    pub config: PathBuf,
    /// The catalog URI when it is not the SQLite file in `dir` (a REST catalog).
    pub catalog_uri: Option<String>,
    /// The warehouse when it is in an object store ([`Setup::on_s3`]), and the storage
    /// properties that reach it.
    pub object_store: Option<(String, Vec<(String, String)>)>,
}

impl Setup {
    /// Writes `calve.toml` pointing at `bootstrap` and one contract (`contract_text`).
    pub fn new(bootstrap: &str, contract_text: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite:{}/catalog.db", dir.path().display());
        Self::write(dir, bootstrap, contract_text, uri, None)
    }

    /// Like [`Setup::new`], with the catalog at `catalog_uri` (e.g. a REST catalog) and the
    /// warehouse at `warehouse`.
    pub fn with_catalog(bootstrap: &str, contract_text: &str, dir: tempfile::TempDir, catalog_uri: &str) -> Setup {
        Self::write(
            dir,
            bootstrap,
            contract_text,
            catalog_uri.to_string(),
            Some(catalog_uri.to_string()),
        )
    }

    fn write(
        dir: tempfile::TempDir,
        bootstrap: &str,
        contract_text: &str,
        uri: String,
        catalog_uri: Option<String>,
    ) -> Setup {
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("contract.toml"), contract_text).unwrap();
        let config = dir.path().join("calve.toml");
        std::fs::write(
            &config,
            format!(
                "contracts = [\"contract.toml\"]\n\n[catalog]\nuri = \"{uri}\"\nwarehouse = \"{d}/warehouse\"\n\n\
                 [kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"calve-test\"\n\
                 properties = {{ \"fetch.wait.max.ms\" = \"50\" }}\n\n\
                 [maintenance]\ninterval = \"2s\"\n"
            ),
        )
        .unwrap();
        Setup {
            dir,
            config,
            catalog_uri,
            object_store: None,
        }
    }

    /// Moves the warehouse into `s3`'s bucket (`s3://lake/warehouse`), with its properties in
    /// `[catalog.storage]`.
    pub fn on_s3(mut self, s3: &crate::s3::S3) -> Setup {
        let warehouse = s3.url("warehouse");
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        let local = format!("warehouse = \"{}\"", self.warehouse().display());
        assert!(cfg.contains(&local), "Setup's calve.toml changed:\n{cfg}");
        let mut cfg = cfg.replace(&local, &format!("warehouse = \"{warehouse}\""));
        cfg.push_str("\n[catalog.storage]\n");
        for (k, v) in s3.properties() {
            cfg.push_str(&format!("\"{k}\" = \"{v}\"\n"));
        }
        std::fs::write(&self.config, cfg).unwrap();
        self.object_store = Some((warehouse, s3.properties()));
        self
    }

    /// Runs background maintenance every `interval` (e.g. "300ms"; the default here is 2 s).
    pub fn maintenance_interval(self, interval: &str) -> Setup {
        let text = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace("interval = \"2s\"", &format!("interval = \"{interval}\""));
        std::fs::write(&self.config, text).unwrap();
        self
    }

    /// Turns background maintenance off (`[maintenance] enabled = false`).
    pub fn without_maintenance(self) -> Setup {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace("[maintenance]\n", "[maintenance]\nenabled = false\n");
        assert!(text.contains("enabled = false"), "no [maintenance] section to turn off");
        std::fs::write(&self.config, text).unwrap();
        self
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` (`[http]`) on a leased loopback port: the
    /// lease (keep it while calve runs) and the `host:port`.
    pub fn serving_http(&self) -> (crate::ports::PortLease, String) {
        let lease = crate::ports::lease_port();
        let listen = format!("127.0.0.1:{}", lease.port());
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(&format!("\n[http]\nlisten = \"{listen}\"\n"));
        std::fs::write(&self.config, text).unwrap();
        (lease, listen)
    }

    /// The SQLite catalog file.
    pub fn catalog_db(&self) -> PathBuf {
        self.dir.path().join("catalog.db")
    }

    /// The warehouse directory.
    pub fn warehouse(&self) -> PathBuf {
        self.dir.path().join("warehouse")
    }

    /// Starts `calve <args> --config <config>`, logging to `calve-<n>.log` in the test dir.
    pub fn spawn(&self, bin: &Path, args: &[&str]) -> Child {
        self.spawn_with_env(bin, args, &[])
    }

    /// Like [`Setup::spawn`], with extra environment variables.
    pub fn spawn_with_env(&self, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
        // Numbered by the logs already there, never by the directory's entry count: SQLite's
        // journal comes and goes (a SIGKILL mid-commit leaves one, the next open removes it),
        // so that count can fall back and a new log would overwrite an older one.
        let n = self.log_files().len();
        let log = std::fs::File::options()
            .create_new(true)
            .write(true)
            .open(self.dir.path().join(format!("calve-{n}.log")))
            .expect("a fresh log file");
        Command::new(bin)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting calve")
    }

    /// All calve logs of this test, concatenated (for assertion messages).
    pub fn logs(&self) -> String {
        self.log_files()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The log file of the most recently started process.
    pub fn latest_log_path(&self) -> PathBuf {
        self.log_files().pop().expect("no process was started")
    }

    /// The log of the most recently started process.
    pub fn latest_log(&self) -> String {
        self.log_files()
            .last()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` until the target table's restore point differs from `before`
    /// (what [`Setup::restore_point`] said before the process started): the process has
    /// committed. Asks the table through `calve status` rather than reading logs; false if it
    /// did not (or the process exited first without committing). A table that was only
    /// created (`none`) has not committed.
    pub fn wait_for_commit(&self, bin: &Path, child: &mut Child, before: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let exited = child.try_wait().unwrap().is_some();
            let now = self.restore_point(bin);
            if now != before && !now.is_empty() && now != "none" {
                return true;
            }
            if exited {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Runs `calve <args> --config <config>` to its end: whether it succeeded, and what it
    /// printed on stdout (empty when it could not be started).
    pub fn cli(&self, bin: &Path, args: &[&str]) -> (bool, String) {
        match Command::new(bin)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "error")
            .output()
        {
            Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()),
            Err(_) => (false, String::new()),
        }
    }

    /// The first table's restore point as `calve status` prints it (`none` before any
    /// commit; empty when status could not be read).
    pub fn restore_point(&self, bin: &Path) -> String {
        // The target table is listed first, its dead-letter table after it.
        self.cli(bin, &["status"])
            .1
            .lines()
            .find_map(|l| l.trim().strip_prefix("restore point: ").map(String::from))
            .unwrap_or_default()
    }

    /// Starts `calve run`, waits up to 60 s for its first commit, lets it run `after` more,
    /// then SIGKILLs it: a kill that lands on work in progress however slow the machine is to
    /// start. Returns how long the first commit took. Panics, naming `context`, if no commit
    /// comes or the process exits on its own.
    pub fn kill_soon_after_first_commit(&self, bin: &Path, after: Duration, context: &str) -> Duration {
        let before = self.restore_point(bin);
        let started = Instant::now();
        let mut child = self.spawn(bin, &["run"]);
        let committed = self.wait_for_commit(bin, &mut child, &before, Duration::from_secs(60));
        assert!(
            committed,
            "calve did not commit within 60 s ({context})\n{}",
            self.latest_log()
        );
        let first_commit = started.elapsed();
        if let Some(st) = wait_for(&mut child, after) {
            panic!("calve exited on its own ({st}; {context})\n{}", self.logs());
        }
        kill9(&mut child);
        first_commit
    }

    // Log files sorted by start order (`calve-<n>.log`, n growing with the directory).
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p.file_name()?.to_string_lossy().into_owned();
                let n = name.strip_prefix("calve-")?.strip_suffix(".log")?.parse().ok()?;
                Some((n, p))
            })
            .collect();
        names.sort();
        names.into_iter().map(|(_, p)| p).collect()
    }
}

/// Sends SIGTERM and waits up to `timeout` for exit.
pub fn terminate(child: &mut Child, timeout: Duration) -> ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    wait_for(child, timeout).expect("calve did not exit after SIGTERM")
}

/// Sends SIGKILL and reaps.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `timeout` for the child to exit.
pub fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
