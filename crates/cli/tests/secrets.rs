//! Secrets never leak: passwords, tokens and keys given to calve through `${env:…}` and
//! `${file:…}` references reach the drivers that need them and never a log line, an error
//! message or a `Debug` dump — checked on runs that fail in every way a secret-bearing
//! setting can make them fail, with debug logging on.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use calve_testkit::calve::terminate;
use calve_testkit::ports::lease_port;
use common::*;

/// A secret nobody could print by accident: random per run.
fn secret(what: &str) -> String {
    format!("{what}-{:016x}", rand::random::<u64>())
}

struct Secrets {
    dir: tempfile::TempDir,
    values: Vec<String>,
    env: Vec<(String, String)>,
}

impl Secrets {
    /// Five secrets: the catalog password (in a file), the REST token, the SASL password, the
    /// erasure HMAC key and the S3 secret key (in the environment).
    fn new() -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        let pg = secret("pg");
        std::fs::write(dir.path().join("pg-password"), format!("{pg}\n")).unwrap();
        std::fs::write(dir.path().join("contract.toml"), orders_contract("orders", "1s")).unwrap();
        let env: Vec<(String, String)> = [
            ("CALVE_LEAK_TOKEN", secret("token")),
            ("CALVE_LEAK_SASL", secret("sasl")),
            ("CALVE_LEAK_HMAC", secret("hmac")),
            ("CALVE_LEAK_S3", secret("s3")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut values = vec![pg];
        values.extend(env.iter().map(|(_, v)| v.clone()));
        Secrets { dir, values, env }
    }

    /// Writes `calve.toml` with this `[catalog]` uri, SASL_SSL Kafka at `brokers`, and `extra`.
    fn config(&self, catalog_uri: &str, brokers: &str, extra: &str) -> std::path::PathBuf {
        let d = self.dir.path().display();
        let path = self.dir.path().join("calve.toml");
        std::fs::write(
            &path,
            format!(
                "contracts = [\"contract.toml\"]\n\n[catalog]\nuri = \"{catalog_uri}\"\nwarehouse = \"{d}/warehouse\"\n\
                 token = \"${{env:CALVE_LEAK_TOKEN}}\"\n\n\
                 [kafka]\nbrokers = \"{brokers}\"\n\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
                 \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"calve\"\n\
                 \"sasl.password\" = \"${{env:CALVE_LEAK_SASL}}\"\n\"debug\" = \"security,broker,conf\"\n\n\
                 [erasure]\nhmac_key = \"${{env:CALVE_LEAK_HMAC}}\"\n\n\
                 [catalog.storage]\n\"s3.secret-access-key\" = \"${{env:CALVE_LEAK_S3}}\"\n\n{extra}"
            ),
        )
        .unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(calve_bin());
        c.args(args)
            .arg("--config")
            .arg(self.dir.path().join("calve.toml"))
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// Runs `calve <args>` to its end: whether it succeeded, and all it printed.
    fn output(&self, args: &[&str]) -> (bool, String) {
        let out = self.command(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn assert_clean(&self, what: &str, output: &str) {
        for v in &self.values {
            assert!(!output.contains(v.as_str()), "{what} printed a secret:\n{output}");
        }
    }

    /// The file path and the password inside the Postgres URI, as written in calve.toml.
    fn pg_uri(&self, scheme: &str, port: u16) -> String {
        format!(
            "{scheme}://calve:${{file:{}}}@127.0.0.1:{port}/lake",
            self.dir.path().join("pg-password").display()
        )
    }
}

#[test]
fn secrets_stay_out_of_every_log_line_and_error() {
    let s = Secrets::new();
    let closed = lease_port();

    // The catalog cannot be reached: the error names the failure, not the password.
    s.config(&s.pg_uri("postgres", closed.port()), "127.0.0.1:1", "");
    // The driver gives up on a refused connection only after its acquire timeout: the three
    // commands wait for it side by side.
    let commands: [&[&str]; 3] = [
        &["run"],
        &["status"],
        &["erase", "--table", "shop.orders", "--key", "7", "--requested-by", "dpo"],
    ];
    let outputs: Vec<(bool, String)> = std::thread::scope(|scope| {
        let running: Vec<_> = commands.iter().map(|args| scope.spawn(|| s.output(args))).collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (args, (ok, out)) in commands.iter().zip(&outputs) {
        assert!(!ok, "calve {args:?} cannot succeed without its catalog:\n{out}");
        assert!(out.contains("rror"), "calve {args:?} says why it failed:\n{out}");
        s.assert_clean(&format!("calve {args:?} against an unreachable catalog"), out);
    }
    assert!(
        outputs[0].1.contains("configuration loaded") && outputs[0].1.contains("<redacted>"),
        "the debug dump of the configuration is there, redacted:\n{}",
        outputs[0].1
    );

    // A mistyped scheme is echoed back so the person can see the typo, minus the password.
    s.config(&s.pg_uri("postgre", closed.port()), "127.0.0.1:1", "");
    let (ok, out) = s.output(&["run"]);
    assert!(!ok && out.contains("postgre://calve:<redacted>@127.0.0.1"), "{out}");
    s.assert_clean("a mistyped catalog URL", &out);

    // A secret referenced where a boolean belongs: serde's message would quote it.
    s.config(
        &s.pg_uri("postgres", closed.port()),
        "127.0.0.1:1",
        "[maintenance]\nenabled = \"${env:CALVE_LEAK_SASL}\"\n",
    );
    let (ok, out) = s.output(&["run"]);
    assert!(!ok && out.contains("invalid type: string \"<redacted>\""), "{out}");
    s.assert_clean("a secret in the wrong place", &out);

    // A REST catalog URL with user info, unreachable: reqwest would print the URL whole.
    s.config(
        &format!(
            "http://calve:${{file:{}}}@127.0.0.1:{}/catalog",
            s.dir.path().join("pg-password").display(),
            closed.port()
        ),
        "127.0.0.1:1",
        "",
    );
    let (ok, out) = s.output(&["run"]);
    assert!(!ok && out.contains("REST catalog unreachable (http://"), "{out}");
    s.assert_clean("an unreachable REST catalog", &out);

    // The catalog works (SQLite) and Kafka, over SASL_SSL with SCRAM, refuses: librdkafka
    // logs its connection attempts with security debugging on, and the table keeps retrying.
    let kafka = lease_port();
    let catalog = format!("sqlite:{}/catalog.db", s.dir.path().display());
    s.config(&catalog, &format!("127.0.0.1:{}", kafka.port()), "");
    let log = s.dir.path().join("run.log");
    let mut child = s
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // librdkafka names the broker by protocol in its own lines, never in calve's config dump.
    let tried = format!("sasl_ssl://127.0.0.1:{}/", kafka.port());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap().contains(&tried) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(&mut child, Duration::from_secs(30));
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(
        out.contains(&tried),
        "librdkafka tried the broker over SASL_SSL:\n{out}"
    );
    assert!(
        !out.contains("not available at build time"),
        "built with TLS and SASL:\n{out}"
    );
    s.assert_clean("a run against a broker that is not there", &out);

    // A misspelled secret property: librdkafka refuses it, and its message would quote the value.
    s.config(&catalog, &format!("127.0.0.1:{}", kafka.port()), "");
    let cfg = std::fs::read_to_string(s.dir.path().join("calve.toml")).unwrap();
    std::fs::write(
        s.dir.path().join("calve.toml"),
        cfg.replace("\"sasl.password\"", "\"sasl.pasword\""),
    )
    .unwrap();
    let (ok, out) = s.output(&["run"]);
    assert!(!ok && out.contains("property `sasl.pasword`"), "{out}");
    s.assert_clean("a misspelled secret property", &out);
}
