//! References in `calve.toml` values, resolved at load time so secrets are never written into
//! the file: `${env:NAME}` (or `${NAME}`) is replaced by the environment variable, and
//! `${file:/path}` by the file's contents without a trailing newline (Kubernetes and Docker
//! secrets, systemd credentials). `$${` writes a literal `${`.
//!
//! References are resolved inside string values only, after TOML parsing, so a secret with
//! quotes or backslashes in it cannot break the file's syntax, and a comment mentioning
//! `${…}` is left alone. A reference that cannot be resolved (unset variable, unreadable file)
//! is a configuration error naming the reference, never an empty string: an empty password
//! that authenticates nowhere is much harder to diagnose.
//!
//! `file:` is only a reference inside `${…}`: `warehouse = "file:///lake"` stays a URL.

use std::path::Path;

use toml::Value;

/// A configuration with its references resolved, and the values they resolved to (so that an
/// error message quoting one can be scrubbed before it is shown).
pub struct Resolved {
    /// The configuration, every reference replaced.
    pub value: Value,
    /// Every value a reference resolved to.
    pub secrets: Vec<String>,
}

/// Resolves every reference in every string of `value`; `base` is where relative
/// `${file:…}` paths start (the config file's directory).
pub fn resolve(value: Value, base: &Path) -> Result<Resolved, String> {
    let mut secrets = Vec::new();
    let value = resolve_value(value, base, &mut secrets, "")?;
    Ok(Resolved { value, secrets })
}

/// `text` with resolved values replaced by `<redacted>`: wherever one is quoted whole (as serde
/// quotes a value it refuses), and anywhere at all when it is long enough not to be a common
/// word (a user name `calve` must not garble the rest of a message).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    const ANYWHERE: usize = 8;
    let redacted = calve_contract::REDACTED;
    let mut text = text.to_string();
    // Longest first, so a secret that contains another is not left half shown.
    let mut by_len: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    by_len.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in by_len {
        if s.len() >= ANYWHERE {
            text = text.replace(s.as_str(), redacted);
        } else {
            for q in ['"', '`', '\''] {
                text = text.replace(&format!("{q}{s}{q}"), &format!("{q}{redacted}{q}"));
            }
        }
    }
    text
}

fn resolve_value(value: Value, base: &Path, secrets: &mut Vec<String>, at: &str) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(resolve_str(&s, base, secrets).map_err(|e| format!("{at}: {e}"))?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| resolve_value(v, base, secrets, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Table(t) => Value::Table(
            t.into_iter()
                .map(|(k, v)| {
                    let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                    resolve_value(v, base, secrets, &path).map(|v| (k, v))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

fn resolve_str(s: &str, base: &Path, secrets: &mut Vec<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in `{}`", scrub(s, secrets)))?;
            let value = lookup(&after[..end], base)?;
            out.push_str(&value);
            secrets.push(value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(reference: &str, base: &Path) -> Result<String, String> {
    if let Some(path) = reference.strip_prefix("file:") {
        let path = base.join(path.trim());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("`${{{reference}}}`: cannot read {}: {e}", path.display()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        return Ok(text.strip_suffix('\r').unwrap_or(text).to_string());
    }
    let name = reference.strip_prefix("env:").unwrap_or(reference).trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`${{{reference}}}` is not a reference (write ${{env:NAME}}, ${{NAME}} or ${{file:/path}}; $${{ for a literal ${{)"
        ));
    }
    std::env::var(name).map_err(|_| format!("`${{{reference}}}`: environment variable {name} is not set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(toml: &str) -> Result<Resolved, String> {
        resolve(toml::from_str(toml).unwrap(), Path::new("/nonexistent"))
    }

    #[test]
    fn env_and_file_references_resolve_in_strings_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cr\"et\\\n").unwrap();
        std::env::set_var("CALVE_INTERPOLATE_TEST_USER", "calve");
        let text = format!(
            "[catalog]\nuri = \"postgres://${{CALVE_INTERPOLATE_TEST_USER}}:${{file:{}}}@db/lake\"\n\
             warehouse = \"file:///lake\"\n[kafka.properties]\n\"sasl.password\" = \"${{env:CALVE_INTERPOLATE_TEST_USER}}-x\"\n\
             list = [\"a$b\", \"$${{literal}}\"]\nport = 5\n",
            dir.path().join("pw").display()
        );
        let r = resolve(toml::from_str(&text).unwrap(), dir.path()).unwrap();
        assert_eq!(
            r.value["catalog"]["uri"].as_str(),
            Some("postgres://calve:s3cr\"et\\@db/lake")
        );
        assert_eq!(r.value["catalog"]["warehouse"].as_str(), Some("file:///lake"));
        let props = &r.value["kafka"]["properties"];
        assert_eq!(props["sasl.password"].as_str(), Some("calve-x"));
        assert_eq!(props["list"][0].as_str(), Some("a$b"));
        assert_eq!(props["list"][1].as_str(), Some("${literal}"));
        assert_eq!(props["port"].as_integer(), Some(5));
        assert_eq!(
            r.secrets,
            vec!["calve".to_string(), "s3cr\"et\\".into(), "calve".into()]
        );
        assert_eq!(
            scrub(
                "invalid type: string \"calve\", login calve:s3cr\"et\\ failed",
                &r.secrets
            ),
            "invalid type: string \"<redacted>\", login calve:<redacted> failed",
            "short values only where quoted whole, long ones anywhere"
        );
        let long = vec!["hunter2-hunter2".to_string()];
        assert_eq!(
            scrub("auth hunter2-hunter2@db failed", &long),
            "auth <redacted>@db failed"
        );
    }

    #[test]
    fn an_unresolvable_reference_is_an_error_naming_it() {
        let e = resolved("[kafka]\nx = \"${CALVE_SURELY_UNSET_VARIABLE}\"\n")
            .err()
            .unwrap();
        assert_eq!(
            e,
            "kafka.x: `${CALVE_SURELY_UNSET_VARIABLE}`: environment variable CALVE_SURELY_UNSET_VARIABLE is not set"
        );
        let e = resolved("a = [\"${file:missing}\"]\n").err().unwrap();
        assert!(
            e.starts_with("a[0]: `${file:missing}`: cannot read /nonexistent/missing:"),
            "{e}"
        );
        assert!(resolved("a = \"${not a name}\"\n")
            .err()
            .unwrap()
            .contains("is not a reference"));
        assert!(resolved("a = \"${open\"\n")
            .err()
            .unwrap()
            .contains("without a closing"));
    }
}
