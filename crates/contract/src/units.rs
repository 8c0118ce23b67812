//! Human-written quantities in contracts ("1m", "256MB", "20GB/h").
//!
//! Contracts are written by people, so sizes and durations are strings a person can read; these
//! newtypes parse them once, at load time, so that a typo is a contract error and not a runtime
//! surprise.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as `"30s"`, `"5m"`, `"1h"`, `"3d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration like \"30s\", \"5m\", \"24h\": {e}"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A byte size written as `"256MB"`, `"1 GiB"`, `"512KB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|e| format!("`{s}` is not a size like \"256MB\" or \"1GiB\": {e}"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0))
    }
}

/// A byte rate written as `"20GB/h"`: how much maintenance may rewrite per unit of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRate {
    /// Bytes allowed per `per`.
    pub bytes: u64,
    /// The period the bytes are allowed in.
    pub per: Duration,
}

impl ByteRate {
    /// Bytes per second, for comparing budgets with measured write rates.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.per.as_secs_f64()
    }
}

impl FromStr for ByteRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a rate like \"20GB/h\" (per s, m, h or d)");
        let (size, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        let bytes = size.parse::<ByteSize>().map_err(|_| bad())?.0;
        Ok(ByteRate { bytes, per })
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            86_400 => "d",
            _ => return write!(f, "{} per {}", ByteSize(self.bytes), HumanDuration(self.per)),
        };
        write!(f, "{}/{unit}", ByteSize(self.bytes))
    }
}

macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(HumanDuration, ByteSize, ByteRate);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_quantities() {
        assert_eq!("1m".parse::<HumanDuration>().unwrap().0, Duration::from_secs(60));
        assert_eq!("3d".parse::<HumanDuration>().unwrap().0, Duration::from_secs(259_200));
        assert_eq!("256MB".parse::<ByteSize>().unwrap().0, 256_000_000);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        let r: ByteRate = "20GB/h".parse().unwrap();
        assert_eq!(r.bytes, 20_000_000_000);
        assert_eq!(r.per, Duration::from_secs(3600));
    }

    #[test]
    fn rejects_garbage_with_the_input_in_the_message() {
        let e = "soon".parse::<HumanDuration>().unwrap_err();
        assert!(e.contains("`soon`"), "{e}");
        assert!("20GB".parse::<ByteRate>().is_err());
        assert!("20GB/week".parse::<ByteRate>().is_err());
        assert!("lots".parse::<ByteSize>().is_err());
    }
}
