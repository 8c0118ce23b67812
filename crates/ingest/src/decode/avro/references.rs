//! Avro schema references, as the Confluent registry has them: a writer schema names a type
//! (`"com.acme.Address"`) that another subject's version defines. arrow-avro reads one
//! self-contained schema, so each referenced type is written in where the schema first uses
//! it — exactly where Avro would have it defined had the producer written it out — and later
//! uses stay names. The bytes of a record do not change: Avro encodes no type names.
//!
//! A referenced schema is found by the full name of the type it defines (its reference name
//! too, which Confluent sets to that full name). Not handled — the table stops with the
//! schema named, rather than dead-letter its records: a writer schema that is not a record
//! (a union of referenced records; arrow-avro reads records only), and a type defined inside
//! a referenced schema but used before (or without) the type that holds it.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::registry::Import;

/// Avro's primitive type names: never a reference.
const PRIMITIVES: &[&str] = &["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// How deep the walk goes before it gives up on a schema (arrow-avro takes 128 levels).
const MAX_DEPTH: usize = 256;

/// Writer schema `text` with the types of `imports` written in at their first use.
pub fn inline(text: &str, imports: &[Import]) -> Result<String, String> {
    let mut root: Value = serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
    let mut named = HashMap::new();
    let mut aliases = HashMap::new();
    for i in imports {
        let mut schema: Value =
            serde_json::from_str(&i.text).map_err(|e| format!("referenced schema {} is not JSON: {e}", i.name))?;
        // Written in elsewhere, the type keeps its own namespace, not the one around it (said
        // as a `namespace`, even an empty one: arrow-avro does not take a dotted `name` whole).
        let mut full = None;
        if let Some(o) = schema.as_object_mut() {
            if let Some(f) = full_name(o, "") {
                let (ns, name) = f.rsplit_once('.').unwrap_or(("", &f));
                let (ns, name) = (ns.to_string(), name.to_string());
                o.insert("name".into(), Value::String(name));
                o.insert("namespace".into(), Value::String(ns));
                full = Some(f);
            }
        }
        let key = full.clone().unwrap_or_else(|| i.name.clone());
        if i.name != key {
            aliases.insert(i.name.clone(), key.clone());
        }
        named.insert(key, schema);
    }
    let mut walk = Walk {
        named,
        aliases,
        defined: HashSet::new(),
        depth: 0,
    };
    walk.schema(&mut root, "")?;
    Ok(root.to_string())
}

/// Where the inlining is: the referenced types not written in yet (by full name, and the
/// reference names that differ from it), the names defined so far, how deep it is.
struct Walk {
    named: HashMap<String, Value>,
    aliases: HashMap<String, String>,
    defined: HashSet<String>,
    depth: usize,
}

/// What a type name in the schema becomes.
enum Use {
    /// The referenced type's definition (its first use).
    Inline(Value),
    /// Another spelling of the name (a null-namespace type used inside a namespace).
    Rename(String),
    /// The name as it is.
    Keep,
}

impl Walk {
    fn schema(&mut self, v: &mut Value, namespace: &str) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("the schema nests deeper than {MAX_DEPTH} levels"));
        }
        let done = match v {
            Value::String(name) => {
                match self.first_use(name, namespace)? {
                    Use::Inline(schema) => *v = schema,
                    Use::Rename(to) => *v = Value::String(to),
                    Use::Keep => {}
                }
                Ok(())
            }
            Value::Array(branches) => branches.iter_mut().try_for_each(|b| self.schema(b, namespace)),
            // `{"type": "com.acme.Addr", ...}`: the object is the name; at its first use it
            // becomes the definition (a `type` holding a whole schema is no Avro).
            Value::Object(o) if o.len() <= 2 && o.get("type").is_some_and(Value::is_string) => {
                let name = o.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
                match self.first_use(&name, namespace)? {
                    Use::Inline(schema) => *v = schema,
                    Use::Rename(to) => {
                        o.insert("type".into(), Value::String(to));
                    }
                    Use::Keep => self.object(o, namespace)?,
                }
                Ok(())
            }
            Value::Object(o) => self.object(o, namespace),
            _ => Ok(()),
        };
        self.depth -= 1;
        done
    }

    fn object(&mut self, o: &mut Map<String, Value>, namespace: &str) -> Result<(), String> {
        let kind = o.get("type").and_then(Value::as_str).map(str::to_string);
        match kind.as_deref() {
            Some("record" | "error") => {
                let Some(full) = full_name(o, namespace) else {
                    return Ok(());
                };
                let inner = full.rsplit_once('.').map_or(String::new(), |(ns, _)| ns.to_string());
                self.defined.insert(full);
                if let Some(Value::Array(fields)) = o.get_mut("fields") {
                    for f in fields {
                        if let Some(t) = f.get_mut("type") {
                            self.schema(t, &inner)?;
                        }
                    }
                }
                Ok(())
            }
            Some("enum" | "fixed") => {
                if let Some(full) = full_name(o, namespace) {
                    self.defined.insert(full);
                }
                Ok(())
            }
            Some("array") => o.get_mut("items").map_or(Ok(()), |items| self.schema(items, namespace)),
            Some("map") => o
                .get_mut("values")
                .map_or(Ok(()), |values| self.schema(values, namespace)),
            Some(_) => Ok(()),
            // `{"type": {…}, "logicalType": …}` and the like.
            None => o.get_mut("type").map_or(Ok(()), |t| self.schema(t, namespace)),
        }
    }

    /// What name `name` (in `namespace`) becomes.
    fn first_use(&mut self, name: &str, namespace: &str) -> Result<Use, String> {
        if PRIMITIVES.contains(&name) || matches!(name, "record" | "enum" | "fixed" | "array" | "map" | "error") {
            return Ok(Use::Keep);
        }
        let full = match (name.contains('.'), namespace.is_empty()) {
            (false, false) => format!("{namespace}.{name}"),
            _ => name.to_string(),
        };
        // Avro's order: the name in the enclosing namespace first, then the null namespace.
        if self.defined.contains(&full) {
            return Ok(Use::Keep);
        }
        if let Some(schema) = self.take(&full)? {
            return Ok(Use::Inline(schema));
        }
        if full != name && self.defined.contains(name) {
            // arrow-avro would look `name` up in the enclosing namespace only.
            return Ok(Use::Rename(format!(".{name}")));
        }
        if full != name {
            if let Some(schema) = self.take(name)? {
                return Ok(Use::Inline(schema));
            }
        }
        Ok(Use::Keep)
    }

    /// The referenced schema of full (or reference) name `name`, walked, if not written in yet.
    fn take(&mut self, name: &str) -> Result<Option<Value>, String> {
        let key = self.aliases.get(name).cloned().unwrap_or_else(|| name.to_string());
        let Some(mut schema) = self.named.remove(&key) else {
            return Ok(None);
        };
        self.schema(&mut schema, "")?;
        Ok(Some(schema))
    }
}

/// A named type's full name: its `name` when dotted, else `namespace.name` with its own
/// `namespace` or the enclosing one.
fn full_name(o: &Map<String, Value>, enclosing: &str) -> Option<String> {
    let name = o.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_string());
    }
    let ns = o.get("namespace").and_then(Value::as_str).unwrap_or(enclosing);
    Some(match ns.is_empty() {
        true => name.to_string(),
        false => format!("{ns}.{name}"),
    })
}
