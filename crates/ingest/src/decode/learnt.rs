//! What every registry format shares: the Confluent framing (magic byte `0`, a 4-byte
//! big-endian schema id, the payload) and the writer schemas a decoder has learnt by id —
//! each one ready to use, or unreadable with the reason its records are dead-lettered.
//!
//! An id the registry did not know is believed unknown for a minute only, then asked about
//! again: a registry replica may lag behind a producer that registered it a moment ago.
//!
//! A schema that cannot be read is its records' problem (they are dead-lettered with the
//! reason) unless it is calve's: one the registry took and resolved but calve cannot use
//! ([`Unreadable::Calve`]), which must stop the table rather than dead-letter good records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::registry::{Fetched, WriterSchema};

/// How long an unreadable id is believed before it is asked about again.
const UNKNOWN_RECHECK: Duration = Duration::from_secs(60);

/// A framed value's schema id and payload, or why it is not framed.
pub fn framed(v: &[u8]) -> Result<(u32, &[u8]), String> {
    match v {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [0, ..] => Err("value is shorter than the Confluent framing (magic byte 0 and a 4-byte schema id)".into()),
        _ => Err("value lacks the Confluent framing: its first byte is not the magic byte 0".into()),
    }
}

/// Why a writer schema cannot be read, and whose problem that is.
#[derive(Debug)]
pub enum Unreadable {
    /// Its records': they go to the dead-letter table with the reason.
    Records(String),
    /// calve's: the table stops with the reason.
    Calve(String),
}

impl Unreadable {
    /// Schema `w` cannot be read for `reason`: calve's limit when it references other
    /// schemas (the registry resolved them; calve cannot make the whole), else its records'.
    pub fn of(w: &WriterSchema, reason: String) -> Unreadable {
        match w.imports.is_empty() {
            true => Unreadable::Records(reason),
            false => Unreadable::Calve(format!("{reason} (a schema with references calve cannot make whole)")),
        }
    }
}

#[derive(Debug)]
enum Known<W> {
    Writer(Arc<W>),
    Unreadable(String, Instant),
}

impl<W> Clone for Known<W> {
    fn clone(&self) -> Self {
        match self {
            Known::Writer(w) => Known::Writer(w.clone()),
            Known::Unreadable(r, at) => Known::Unreadable(r.clone(), *at),
        }
    }
}

/// Writer schemas learnt by id, each made into a `W` (what its decoder needs of it).
#[derive(Debug)]
pub struct Learnt<W> {
    known: HashMap<u32, Known<W>>,
    /// The registry's answers, kept to make them anew (a table that changed fits them anew).
    fetched: HashMap<u32, Fetched>,
}

impl<W> Clone for Learnt<W> {
    fn clone(&self) -> Self {
        Learnt {
            known: self.known.clone(),
            fetched: self.fetched.clone(),
        }
    }
}

impl<W> Default for Learnt<W> {
    fn default() -> Self {
        Learnt {
            known: HashMap::new(),
            fetched: HashMap::new(),
        }
    }
}

impl<W> Learnt<W> {
    /// Schema ids framed `values` carry that are not learnt, or are due to be asked again.
    pub fn missing(&self, values: &[&[u8]]) -> Vec<u32> {
        let mut ids: Vec<u32> = values
            .iter()
            .filter_map(|v| framed(v).ok().map(|(id, _)| id))
            .filter(|id| match self.known.get(id) {
                None => true,
                Some(Known::Unreadable(_, since)) => since.elapsed() >= UNKNOWN_RECHECK,
                Some(Known::Writer(_)) => false,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Takes the registry's answer for `id`, a found schema made into a writer by `make`.
    /// `Err` (nothing learnt) when the schema is calve's problem ([`Unreadable::Calve`]).
    pub fn learn(
        &mut self,
        id: u32,
        fetched: &Fetched,
        make: impl FnOnce(&WriterSchema) -> Result<W, Unreadable>,
    ) -> Result<(), String> {
        let known = match fetched {
            Fetched::Unknown(reason) => Known::Unreadable(reason.clone(), Instant::now()),
            Fetched::Found(w) => match make(w) {
                Ok(w) => Known::Writer(Arc::new(w)),
                Err(Unreadable::Records(reason)) => Known::Unreadable(reason, Instant::now()),
                Err(Unreadable::Calve(reason)) => return Err(reason),
            },
        };
        self.known.insert(id, known);
        self.fetched.insert(id, fetched.clone());
        Ok(())
    }

    /// The registry's answers learnt so far.
    pub fn answers(&self) -> impl Iterator<Item = (u32, &Fetched)> {
        self.fetched.iter().map(|(id, f)| (*id, f))
    }

    /// The writer of `id`, or why its records cannot be read.
    pub fn writer(&self, id: u32) -> Result<&Arc<W>, String> {
        match self.known.get(&id) {
            Some(Known::Writer(w)) => Ok(w),
            Some(Known::Unreadable(reason, _)) => Err(reason.clone()),
            None => Err(format!("schema id {id} was not looked up in the registry")),
        }
    }
}
