//! The foreign-reader bridge: a Python venv (created on first use, cached outside the clone)
//! with PyIceberg, DuckDB + its iceberg extension, and confluent-kafka.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{cache_dir, workspace_root};

static VENV: OnceLock<PathBuf> = OnceLock::new();

/// The venv's python, creating the venv if needed (`$CALVE_VENV` overrides the location).
pub fn python() -> PathBuf {
    VENV.get_or_init(|| {
        let venv = std::env::var_os("CALVE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("venv"));
        let py = venv.join("bin/python");
        let stamp = venv.join(".calve-requirements");
        let reqs = std::fs::read_to_string(script("requirements.txt")).unwrap();
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(reqs.as_str()) {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            run(Command::new(&py)
                .args(["-m", "pip", "install", "-q", "-r"])
                .arg(script("requirements.txt")));
            std::fs::write(&stamp, reqs).unwrap();
        }
        py
    })
    .clone()
}

/// A script of the test kit's `python/` folder.
pub(crate) fn script(name: &str) -> PathBuf {
    workspace_root().join("crates/testkit/python").join(name)
}

fn run(cmd: &mut Command) {
    let st = cmd
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("spawning");
    assert!(st.success(), "{cmd:?} failed");
}

/// What the foreign readers saw.
#[derive(Debug, Clone)]
pub struct ForeignView {
    /// The whole JSON answer (see `python/foreign_read.py`).
    pub json: serde_json::Value,
}

impl ForeignView {
    /// Rows as read by `reader` (`pyiceberg` or `duckdb`), sorted.
    pub fn rows(&self, reader: &str) -> Vec<Vec<serde_json::Value>> {
        serde_json::from_value(self.json[reader]["rows"].clone()).unwrap()
    }

    /// PyIceberg's list of live files.
    pub fn files(&self) -> Vec<serde_json::Value> {
        self.json["pyiceberg"]["files"].as_array().cloned().unwrap_or_default()
    }

    /// The summary of the table's current snapshot (`Null` for an empty table).
    pub fn current_summary(&self) -> serde_json::Value {
        self.json["pyiceberg"]["current_summary"].clone()
    }

    /// PyIceberg's snapshots, in metadata order (not necessarily chronological).
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        self.json["pyiceberg"]["snapshots"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Reads `table` (`ns.name`) from the SQLite catalog at `catalog_db` with PyIceberg and DuckDB.
pub fn read_table(catalog_db: &Path, warehouse: &Path, table: &str, columns: &[&str]) -> ForeignView {
    read(
        &["--catalog-db", &catalog_db.display().to_string()],
        warehouse,
        table,
        columns,
    )
}

/// Like [`read_table`], for a catalog at a SQLAlchemy URL (PostgreSQL) or a REST catalog's
/// base URL (`http://…`).
pub fn read_table_at(catalog_uri: &str, warehouse: &Path, table: &str, columns: &[&str]) -> ForeignView {
    read(&["--catalog-uri", catalog_uri], warehouse, table, columns)
}

/// Like [`read_table`], for a warehouse in an object store (`s3://…`) reached with
/// `storage` (FileIO properties: endpoint, region, keys).
pub fn read_table_on(
    catalog_db: &Path,
    warehouse: &str,
    storage: &[(String, String)],
    table: &str,
    columns: &[&str],
) -> ForeignView {
    let catalog = ["--catalog-db".to_string(), catalog_db.display().to_string()];
    read_with(&catalog, storage, Path::new(warehouse), table, columns)
}

/// Like [`read_table_at`], with catalog properties (a REST `credential`, say).
pub fn read_table_at_with(
    catalog_uri: &str,
    properties: &[(String, String)],
    warehouse: &Path,
    table: &str,
    columns: &[&str],
) -> ForeignView {
    let catalog = ["--catalog-uri".to_string(), catalog_uri.to_string()];
    read_with(&catalog, properties, warehouse, table, columns)
}

fn read_with(
    catalog: &[String],
    properties: &[(String, String)],
    warehouse: &Path,
    table: &str,
    columns: &[&str],
) -> ForeignView {
    let mut args = catalog.to_vec();
    for (k, v) in properties {
        args.push("--prop".into());
        args.push(format!("{k}={v}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    read(&args, warehouse, table, columns)
}

fn read(catalog: &[&str], warehouse: &Path, table: &str, columns: &[&str]) -> ForeignView {
    let out = Command::new(python())
        .arg(script("foreign_read.py"))
        .args(catalog)
        .arg("--warehouse")
        .arg(warehouse)
        .args(["--table", table, "--columns", &columns.join(",")])
        .stderr(Stdio::inherit())
        .output()
        .expect("running foreign_read.py");
    assert!(out.status.success(), "foreign_read.py failed for {table}");
    ForeignView {
        json: serde_json::from_slice(&out.stdout).expect("foreign_read.py printed JSON"),
    }
}

/// Appends rows `ids` to `table` with PyIceberg (a foreign writer committing to our table).
pub fn append_with_pyiceberg(catalog_db: &Path, warehouse: &Path, table: &str, ids: &[i64]) {
    append_with_pyiceberg_at(&format!("sqlite:///{}", catalog_db.display()), warehouse, table, ids)
}

/// Like [`append_with_pyiceberg`], for a catalog at a SQLAlchemy or REST URL.
pub fn append_with_pyiceberg_at(catalog_uri: &str, warehouse: &Path, table: &str, ids: &[i64]) {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let st = Command::new(python())
        .arg(script("foreign_write.py"))
        .args(["--catalog-uri", catalog_uri])
        .arg("--warehouse")
        .arg(warehouse)
        .args(["--table", table, "--ids", &ids.join(",")])
        .status()
        .expect("running foreign_write.py");
    assert!(st.success(), "foreign_write.py failed");
}

/// Produces `key\tvalue` lines with confluent-kafka; returns how many were delivered.
pub fn produce_with_confluent(bootstrap: &str, topic: &str, lines: &[(String, String)]) -> usize {
    produce_compressed(bootstrap, topic, lines, "none")
}

/// Like [`produce_with_confluent`], the producer compressing its batches with `codec`
/// (`gzip`, `snappy`, `lz4`, `zstd`).
pub fn produce_compressed(bootstrap: &str, topic: &str, lines: &[(String, String)], codec: &str) -> usize {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(script("produce.py"))
        .args([bootstrap, topic, codec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for (k, v) in lines {
            writeln!(stdin, "{k}\t{v}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "produce.py failed");
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

/// Runs `sql` (statements split at `;`) in DuckDB with its iceberg extension, `$name`
/// placeholders replaced by `values`; the rows of the last statement, values as text.
pub fn duckdb_sql(sql: &str, values: &[(&str, &str)]) -> Vec<Vec<Option<String>>> {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(script("duckdb_sql.py"))
        .args(values.iter().map(|(k, v)| format!("{k}={v}")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "duckdb_sql.py failed on:\n{sql}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `query_bench.py` with `spec` (see the script) and returns its JSON answer.
pub fn query_bench(spec: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(script("query_bench.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running query_bench.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "query_bench.py failed");
    serde_json::from_slice(&out.stdout).expect("query_bench.py printed JSON")
}

/// A PyIceberg reader polling a table (see `python/watch_table.py`): started by
/// [`watch_table`], stopped and read by [`TableWatch::finish`].
pub struct TableWatch {
    child: std::process::Child,
    stop: PathBuf,
}

/// What a [`TableWatch`] saw: each new current snapshot with its rows, and the namespace's
/// tables at the end.
#[derive(Debug, Clone)]
pub struct Watched {
    /// One JSON object per snapshot seen: `snapshot_id`, `summary`, `rows`.
    pub snapshots: Vec<serde_json::Value>,
    /// The namespace's tables when the watch stopped.
    pub tables: Vec<String>,
}

/// Starts watching `table` (`ns.name`) of the SQLite catalog at `catalog_db`, reading
/// `columns` of every snapshot that becomes current.
pub fn watch_table(catalog_db: &Path, warehouse: &Path, table: &str, columns: &[&str], dir: &Path) -> TableWatch {
    let stop = dir.join("watch.stop");
    let out = std::fs::File::create(dir.join("watch.jsonl")).expect("the watch's output file");
    let child = Command::new(python())
        .arg(script("watch_table.py"))
        .args(["--catalog-db", &catalog_db.display().to_string()])
        .arg("--warehouse")
        .arg(warehouse)
        .args(["--table", table, "--columns", &columns.join(",")])
        .arg("--stop")
        .arg(&stop)
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting watch_table.py");
    TableWatch { child, stop }
}

impl TableWatch {
    /// Stops the watch and returns what it saw.
    pub fn finish(mut self) -> Watched {
        std::fs::write(&self.stop, "").unwrap();
        let st = self.child.wait().expect("waiting for watch_table.py");
        assert!(st.success(), "watch_table.py failed");
        let text = std::fs::read_to_string(self.stop.with_file_name("watch.jsonl")).unwrap();
        let mut watched = Watched {
            snapshots: Vec::new(),
            tables: Vec::new(),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            if let Some(t) = v.get("tables") {
                watched.tables = serde_json::from_value(t.clone()).unwrap();
            } else if v.get("snapshot_id").is_some() {
                watched.snapshots.push(v);
            }
        }
        watched
    }
}
