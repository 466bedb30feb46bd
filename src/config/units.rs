//! Parsing of the seed's duration and size notations.
//!
//! Durations: an integer is seconds (`ReadTimeout = 900`); a string is either plain seconds
//! (`"900"`) or a humantime expression (`"30d"`, `"24h"`, `"1h30m"`, `"90s"`); at most
//! [`LONGEST_DURATION`], so every deadline the server computes from one stays representable.
//!
//! Sizes: an integer is bytes; a string is a number with an optional unit. Every unit is
//! binary: `KB`/`KiB`/`K` = 1024, `MB`/`MiB`/`M` = 1024², `GB`/`GiB`/`G` = 1024³, `TB`/`TiB`/`T`
//! = 1024⁴. That is how the Go servers read `"100MB"`, so their configs keep their meaning
//! (and `"100MB"` stays above Prosody's default limit of 100 MiB). For decimal sizes give bytes.

use std::time::Duration;

/// The longest duration any key takes (`"100y"`, years of 365.25 days as humantime counts
/// them): longer ones mean "forever" in
/// effect, and `now + d` of a larger one would overflow a clock (`AutoBanTime =
/// 18446744073709551615` made the first ban panic).
pub const LONGEST_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Parses a duration string; see the module documentation for the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let duration = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("`{text}` is not a duration ({e}); use seconds or e.g. \"90s\", \"24h\", \"30d\""))?,
    };
    if duration > LONGEST_DURATION {
        return Err(format!("`{text}` is longer than 100 years"));
    }
    Ok(duration)
}

/// Parses a size string into bytes; see the module documentation for the units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let bad = || format!("`{text}` is not a size; use bytes or e.g. \"100MiB\" (MB, MiB and M all mean 2^20)");
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(bad);
    }
    let fractional: f64 = number.parse().map_err(|_| bad())?;
    let bytes = fractional * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("900").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
        assert_eq!(parse_duration("100y").unwrap(), LONGEST_DURATION);
        assert_eq!(parse_duration("3155760000").unwrap(), LONGEST_DURATION);
        assert!(parse_duration("3155760001").is_err());
        assert!(parse_duration("101y").is_err());
        assert!(
            parse_duration("18446744073709551615").is_err(),
            "would overflow a deadline"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(
            parse_size("10GB").unwrap(),
            10 << 30,
            "binary, as the Go servers read it"
        );
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("100 MiB").unwrap(), 100 << 20);
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("5kb").unwrap(), 5120);
        assert!(parse_size("").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
