//! Single byte ranges (RFC 9110 §14): `bytes=N-`, `bytes=N-M`, `bytes=-N`.
//!
//! Several ranges in one header are answered with the whole file (a server may ignore
//! Range), which no XMPP client asks for anyway.

/// What a Range header asks of a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range: send the whole file with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// Nothing of the file matches: 416.
    Unsatisfiable,
}

/// Interprets a Range header value against a file of `size` bytes.
pub fn parse(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().or(Some(u64::MAX))
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => {
            let Some(suffix) = number(last) else {
                return RangeRequest::Full;
            };
            if suffix == 0 || size == 0 {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial {
                start: size.saturating_sub(suffix),
                end: size - 1,
            }
        }
        (false, _) => {
            let Some(start) = number(first) else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeRequest::Full,
                }
            };
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial {
                start,
                end: end.min(size - 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-", 10), Partial { start: 0, end: 9 });
        assert_eq!(parse("bytes=3-", 10), Partial { start: 3, end: 9 });
        assert_eq!(parse("bytes=3-5", 10), Partial { start: 3, end: 5 });
        assert_eq!(parse("bytes=3-500", 10), Partial { start: 3, end: 9 });
        assert_eq!(parse("bytes=-4", 10), Partial { start: 6, end: 9 });
        assert_eq!(parse("bytes=-40", 10), Partial { start: 0, end: 9 });
        assert_eq!(parse("bytes=9-9", 10), Partial { start: 9, end: 9 });
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(parse("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse("bytes=-5", 0), Unsatisfiable);
        assert_eq!(parse("bytes=99999999999999999999999-", 10), Unsatisfiable);
    }

    #[test]
    fn ignored() {
        assert_eq!(parse("items=0-5", 10), Full);
        assert_eq!(parse("bytes=5-3", 10), Full);
        assert_eq!(parse("bytes=0-1,3-4", 10), Full);
        assert_eq!(parse("bytes=a-b", 10), Full);
        assert_eq!(parse("bytes=-", 10), Full);
        assert_eq!(parse("bytes=+1-2", 10), Full);
    }
}
