//! Text and numbers as producers write them → the values Iceberg stores: dates, times and
//! timestamps from ISO-8601 text or epoch numbers in a declared unit, exact decimals from
//! JSON numbers, numeric strings or Kafka Connect's base64 bytes, UUIDs from their text,
//! bytes from base64. Each function says why a value does not fit instead of guessing.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use calve_contract::TimeUnit;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

const MICROS_PER_SECOND: i64 = 1_000_000;
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Days since 1970-01-01 of `YYYY-MM-DD`.
pub fn date_from_str(s: &str) -> Result<i32, String> {
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))?;
    Ok(d.num_days_from_ce() - EPOCH_DAYS_FROM_CE)
}

/// Microseconds since midnight of `HH:MM[:SS[.fraction]]`.
pub fn time_from_str(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let parsed = NaiveTime::parse_from_str(t, "%H:%M:%S%.f").or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"));
    let t = parsed.map_err(|_| format!("`{s}` is not a time of day (HH:MM:SS[.ffffff])"))?;
    Ok(t.num_seconds_from_midnight() as i64 * MICROS_PER_SECOND + (t.nanosecond() % 1_000_000_000) as i64 / 1_000)
}

/// Microseconds since the epoch of an ISO-8601 / RFC 3339 timestamp. With a zone or offset
/// the instant is exact; without one the text is taken as UTC wall-clock time (for a
/// `timestamp` column: the wall-clock time itself). A date alone is its midnight.
pub fn timestamp_from_str(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, f) {
            return Ok(dt.timestamp_micros());
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    match NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        Ok(d) => Ok(d.and_time(NaiveTime::MIN).and_utc().timestamp_micros()),
        Err(_) => Err(format!("`{s}` is not an ISO-8601 timestamp")),
    }
}

/// Microseconds of an epoch number in `unit`, to the nearest microsecond; fractions count for
/// seconds and milliseconds.
pub fn micros_from_number(n: f64, unit: Option<TimeUnit>) -> Result<i64, String> {
    let unit = unit.ok_or_else(|| {
        format!(
            "{n} is an epoch number but the contract declares no unit for it (unit = \"s\" | \"ms\" | \"us\" | \"ns\")"
        )
    })?;
    let per = match unit {
        TimeUnit::Seconds => 1e6,
        TimeUnit::Millis => 1e3,
        TimeUnit::Micros => 1.0,
        TimeUnit::Nanos => 1e-3,
    };
    // Rounded, not floored: a fraction like 16940.543873 s is 16940543872.999998 µs as a
    // double, and the writer meant …873.
    let us = (n * per).round();
    match us.is_finite() && us.abs() < 9.2e18 {
        true => Ok(us as i64),
        false => Err(format!("{n} {unit} is out of range")),
    }
}

/// Microseconds of an integral epoch number in `unit`.
pub fn micros_from_int(n: i64, unit: Option<TimeUnit>) -> Result<i64, String> {
    let u = unit.ok_or_else(|| {
        format!(
            "{n} is an epoch number but the contract declares no unit for it (unit = \"s\" | \"ms\" | \"us\" | \"ns\")"
        )
    })?;
    u.to_micros(n).ok_or_else(|| format!("{n} {u} is out of range"))
}

/// Standard or URL-safe base64, padded or not.
pub fn base64_bytes(s: &str) -> Result<Vec<u8>, String> {
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, cfg);
    let url = GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg);
    standard
        .decode(s.trim())
        .or_else(|_| url.decode(s.trim()))
        .map_err(|_| format!("`{}` is not base64", abbreviate(s)))
}

/// The 16 bytes of a UUID written as text (dashed, plain hex, braced or `urn:uuid:`).
pub fn uuid_bytes(s: &str) -> Result<[u8; 16], String> {
    uuid::Uuid::parse_str(s.trim())
        .map(|u| *u.as_bytes())
        .map_err(|_| format!("`{}` is not a UUID", abbreviate(s)))
}

/// The unscaled value of decimal text (`-12.50`, `1e3`) at `scale`, within `precision`
/// digits. Digits past the scale are refused unless they are zeros: a contract's decimal is
/// exact, so calve never rounds.
pub fn decimal_from_text(s: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let t = s.trim();
    let bad = || format!("`{}` is not a decimal number", abbreviate(s));
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // value = digits × 10^(exp − frac digits); unscaled = value × 10^scale.
    let digits = int_part.bytes().chain(frac_part.bytes()).skip_while(|b| *b == b'0');
    let mut kept: Vec<u8> = digits.collect();
    if kept.is_empty() {
        return Ok(0);
    }
    let too_big = || format!("`{}` does not fit decimal({precision},{scale})", abbreviate(s));
    let shift = i64::from(scale) + i64::from(exp) - frac_part.len() as i64;
    // An i128 holds 38 digits: a non-zero value shifted further left cannot fit.
    if shift > 38 {
        return Err(too_big());
    }
    if shift < 0 {
        let drop = usize::try_from(-shift).unwrap_or(usize::MAX);
        let cut = kept.len().saturating_sub(drop);
        if kept[cut..].iter().any(|d| *d != b'0') {
            return Err(format!(
                "`{}` has more than {scale} digits after the point",
                abbreviate(s)
            ));
        }
        kept.truncate(cut);
    }
    let mut v: i128 = 0;
    for d in kept {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add((d - b'0') as i128))
            .ok_or_else(too_big)?;
    }
    for _ in 0..shift.max(0) {
        v = v.checked_mul(10).ok_or_else(too_big)?;
    }
    check_precision(if negative { -v } else { v }, precision, scale, s)
}

/// The unscaled value of Kafka Connect's decimal bytes (big-endian two's complement, base64
/// in JSON), taken at the column's scale.
pub fn decimal_from_bytes(b: &[u8], precision: u8, scale: i8, s: &str) -> Result<i128, String> {
    if b.is_empty() || b.len() > 16 {
        return Err(format!(
            "`{}` is not a decimal (neither a number nor 1..16 bytes of base64)",
            abbreviate(s)
        ));
    }
    let fill = if b[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut be = [fill; 16];
    be[16 - b.len()..].copy_from_slice(b);
    check_precision(i128::from_be_bytes(be), precision, scale, s)
}

fn check_precision(v: i128, precision: u8, scale: i8, s: &str) -> Result<i128, String> {
    let limit = 10i128.checked_pow(precision as u32).unwrap_or(i128::MAX);
    match v.unsigned_abs() < limit as u128 {
        true => Ok(v),
        false => Err(format!("`{}` does not fit decimal({precision},{scale})", abbreviate(s))),
    }
}

/// At most 40 characters of a value, for messages (a dead letter keeps the whole record).
pub fn abbreviate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_encoding() {
        let want = 1_700_000_000_123_456i64;
        for s in [
            "2023-11-14T22:13:20.123456Z",
            "2023-11-14T23:13:20.123456+01:00",
            "2023-11-14 22:13:20.123456",
            "2023-11-14T22:13:20.123456",
            "2023-11-14T23:13:20.123456+0100",
        ] {
            assert_eq!(timestamp_from_str(s), Ok(want), "{s}");
        }
        assert_eq!(timestamp_from_str("2023-11-14"), Ok(1_699_920_000_000_000));
        assert!(timestamp_from_str("yesterday").is_err());
        assert_eq!(
            micros_from_int(1_700_000_000_123, Some(TimeUnit::Millis)),
            Ok(1_700_000_000_123_000)
        );
        assert_eq!(
            micros_from_number(1_700_000_000.5, Some(TimeUnit::Seconds)),
            Ok(1_700_000_000_500_000)
        );
        assert_eq!(
            micros_from_number(16940.543873, Some(TimeUnit::Seconds)),
            Ok(16_940_543_873)
        );
        assert_eq!(
            micros_from_number(-279369547.829226, Some(TimeUnit::Seconds)),
            Ok(-279_369_547_829_226)
        );
        assert!(micros_from_int(1, None).unwrap_err().contains("unit"));
        assert_eq!(date_from_str("1970-01-02"), Ok(1));
        assert_eq!(time_from_str("01:00:00.5"), Ok(3_600_500_000));
    }

    #[test]
    fn decimals_are_exact_or_refused() {
        assert_eq!(decimal_from_text("12.5", 10, 2), Ok(1250));
        assert_eq!(decimal_from_text("-0.01", 10, 2), Ok(-1));
        assert_eq!(decimal_from_text("1e3", 10, 2), Ok(100_000));
        assert_eq!(decimal_from_text("1.500", 10, 2), Ok(150));
        assert!(decimal_from_text("1.005", 10, 2).unwrap_err().contains("digits after"));
        assert!(decimal_from_text("123456789.1", 10, 2)
            .unwrap_err()
            .contains("does not fit"));
        assert!(decimal_from_text("1.2.3", 10, 2).is_err());
        assert!(decimal_from_text("", 10, 2).is_err());
        assert!(decimal_from_text("1e999999", 38, 0).is_err());
        assert!(decimal_from_text("1e2147483647", 10, 2).is_err());
        assert_eq!(decimal_from_text("1.5e-2147483648", 10, 0).map_err(|_| ()), Err(()));
        assert_eq!(decimal_from_text("0e2147483647", 10, 2), Ok(0));
        assert_eq!(decimal_from_text("-0.00", 10, 2), Ok(0));
        // Connect: 0x04d2 = 1234 unscaled.
        assert_eq!(decimal_from_bytes(&[0x04, 0xd2], 10, 2, "BNI="), Ok(1234));
        assert_eq!(decimal_from_bytes(&[0xff], 10, 2, "/w=="), Ok(-1));
    }

    #[test]
    fn bytes_and_uuids() {
        assert_eq!(base64_bytes("AQID"), Ok(vec![1, 2, 3]));
        assert_eq!(base64_bytes("AQI"), Ok(vec![1, 2]));
        assert_eq!(base64_bytes("-_8"), Ok(vec![0xfb, 0xff]));
        assert!(base64_bytes("!!").is_err());
        let u = uuid_bytes("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b").unwrap();
        assert_eq!(u[0], 0x6f);
        assert!(uuid_bytes("6f1c").is_err());
    }
}
