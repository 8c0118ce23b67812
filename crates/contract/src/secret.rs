//! Secrets in configuration: values that must reach a driver and never a log line.
//!
//! Passwords, tokens and keys are written into `calve.toml` (usually as `${env:…}` or
//! `${file:…}` references that the loader resolves) and then travel inside config structs that
//! derive `Debug`, get formatted into error messages and end up in logs. [`Secret`] makes the
//! safe thing the default: its `Debug` and `Display` print `<redacted>`, and the only way to the
//! text is [`Secret::expose`], which reads as what it is at the call site. A secret embedded in
//! a URL (`postgres://user:password@host/db`) cannot be a separate type, so every place that
//! prints such a URL prints [`redact_uri`] of it instead.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret string: deserialises from a TOML string, prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from somewhere safe (a file, the environment).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one call that hands it to a driver or a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Whether a property of a driver (librdkafka, a FileIO) holds a secret, by its name:
/// passwords and passphrases, secrets and tokens, private keys (PEM or S3 SSE keys), and the
/// free-form OAUTHBEARER / JAAS settings that carry credentials inline.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passphrase",
        "secret",
        "token",
        "private.key",
        "ssl.key.pem",
        "ssl_key",
        "sse.key",
        "sasl.oauthbearer.config",
        "jaas",
    ]
    .iter()
    .any(|s| name.contains(s))
}

/// `properties` for `Debug`: the values of secret ones ([`is_secret_name`]) as `<redacted>`.
pub fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(k, v)| (k.as_str(), if is_secret_name(k) { REDACTED } else { v.as_str() }))
        .collect()
}

/// `uri` with the password of its user info, and any `password=` query parameter, replaced by
/// `<redacted>` (`postgres://calve:<redacted>@db:5432/lake`); anything else is returned as
/// written. Works on strings that are not valid URLs too, because a mistyped URL is exactly
/// what an error message echoes.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return redact_query(uri);
    };
    let start = scheme_end + 3;
    let rest = &uri[start..];
    // A password may hold an unencoded `/` (base64 does) or `@`: the user info ends at the last
    // `@` before the query, not at the first `/`. A URL with an `@` in its path and a port is
    // over-redacted, which is the safe side.
    let before_query = rest.find(['?', '#']).unwrap_or(rest.len());
    let redacted = match rest[..before_query].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:{REDACTED}{}", &uri[..start], &rest[..colon], &rest[at..]),
            None => uri.to_string(),
        },
        None => uri.to_string(),
    };
    redact_query(&redacted)
}

/// `password=` / `sslpassword=` query parameters (which Postgres URLs accept) redacted.
fn redact_query(uri: &str) -> String {
    let Some(q) = uri.find('?') else {
        return uri.to_string();
    };
    let (head, query) = uri.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}={REDACTED}"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s: Secret = toml::from_str::<toml::Table>("v = \"hunter2\"").unwrap()["v"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
    }

    #[test]
    fn secret_properties_are_known_by_name() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "s3.secret-access-key",
            "s3.session-token",
            "s3.sse.key",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["sasl.username", "security.protocol", "s3.endpoint", "s3.access-key-id"] {
            assert!(!is_secret_name(name), "{name}");
        }
        let props = BTreeMap::from([
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("sasl.username".to_string(), "calve".to_string()),
        ]);
        assert_eq!(
            redacted(&props),
            BTreeMap::from([("sasl.password", REDACTED), ("sasl.username", "calve")])
        );
    }

    #[test]
    fn passwords_leave_urls() {
        for (uri, shown) in [
            (
                "postgres://calve:hunter2@db:5432/lake",
                "postgres://calve:<redacted>@db:5432/lake",
            ),
            (
                "postgresql://u:p%40ss@h/d?sslmode=require",
                "postgresql://u:<redacted>@h/d?sslmode=require",
            ),
            // An unencoded `@` in the password: everything up to the last one goes.
            ("postgres://u:a@b@h/d", "postgres://u:<redacted>@h/d"),
            ("postgre://u:hunter2@h", "postgre://u:<redacted>@h"),
            ("postgres://u:pa/ss+w==@h/d", "postgres://u:<redacted>@h/d"),
            (
                "postgres://h/d?user=u&password=hunter2&sslmode=require",
                "postgres://h/d?user=u&password=<redacted>&sslmode=require",
            ),
            ("postgres://u@h/d", "postgres://u@h/d"),
            ("http://h:8181/catalog", "http://h:8181/catalog"),
            ("http://h/p?x=a:b@c", "http://h/p?x=a:b@c"),
            ("sqlite:/tmp/c.db", "sqlite:/tmp/c.db"),
        ] {
            assert_eq!(redact_uri(uri), shown, "{uri}");
        }
    }
}
