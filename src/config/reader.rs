//! Typed access to the merged table. Every read takes a [`Key`], so a key's name and default
//! are written only in the table; a key that is not set reads as its default, parsed the same
//! way as a value from the file. Every failure is recorded with its key (and the read goes on
//! with the default), so one pass finds every problem.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use super::keys::{Key, Kind};
use super::{Problem, units};

/// Reads typed values out of the merged table, collecting problems and warnings.
pub struct Reader<'a> {
    table: &'a Table,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl<'a> Reader<'a> {
    /// A reader over `table` (canonical key names, as the sources merged them).
    pub fn new(table: &'a Table) -> Self {
        Self {
            table,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The problems and warnings found, in the order they were found.
    pub fn finish(self) -> (Vec<Problem>, Vec<String>) {
        (self.problems, self.warnings)
    }

    /// Records a problem with `key` and returns `fallback`, so reading can go on.
    pub fn fail<T>(&mut self, key: &Key, message: impl Into<String>, fallback: T) -> T {
        self.problems.push(Problem::new(key.name, message));
        fallback
    }

    /// Records a warning (the configuration still loads).
    pub fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    /// The value as given, `None` when the key is not set (then its default applies).
    pub fn raw(&self, key: &Key) -> Option<&'a Value> {
        self.table.get(key.name)
    }

    /// Text; an integer is taken as its digits.
    pub fn text(&mut self, key: &Key) -> String {
        self.read(key, as_text)
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, key: &Key) -> bool {
        self.read(key, as_bool)
    }

    /// A whole number within `range`.
    pub fn integer(&mut self, key: &Key, range: RangeInclusive<i64>) -> i64 {
        let value = self.read(key, as_integer);
        if range.contains(&value) {
            return value;
        }
        let fallback = self.default(key, as_integer);
        self.fail(
            key,
            format!("{value} is out of range {}..={}", range.start(), range.end()),
            fallback,
        )
    }

    /// Seconds as an integer, or a duration string.
    pub fn duration(&mut self, key: &Key) -> Duration {
        self.read(key, as_duration)
    }

    /// Bytes as an integer, or a size string.
    pub fn size(&mut self, key: &Key) -> u64 {
        self.read(key, as_size)
    }

    /// A list of strings, or one comma-separated string. Each item that is not a string is a
    /// problem of its own; the others are kept.
    pub fn list(&mut self, key: &Key) -> Vec<String> {
        let default;
        let value = match self.raw(key) {
            Some(value) => value,
            None => {
                default = key.default_value().unwrap_or(Value::Array(Vec::new()));
                &default
            }
        };
        match value {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.fail(key, format!("expected strings, found {other}"), ()),
                    }
                }
                out
            }
            Value::String(s) => split_list(s),
            other => self.fail(
                key,
                format!("expected a list of strings, found {}", other.type_str()),
                Vec::new(),
            ),
        }
    }

    /// A path, taken as written (relative to the working directory, as the Go server does);
    /// empty = `None`.
    pub fn path(&mut self, key: &Key) -> Option<PathBuf> {
        let text = self.text(key);
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    /// The key's value through `parse`; on failure a problem, and the default.
    fn read<T: Default>(&mut self, key: &Key, parse: fn(&Value) -> Result<T, String>) -> T {
        match self.raw(key) {
            None => self.default(key, parse),
            Some(value) => match parse(value) {
                Ok(v) => v,
                Err(e) => {
                    // The default, not a zero: a zero would trip the builders' own checks
                    // ("must be more than 0") and report one mistake twice.
                    let fallback = self.default(key, parse);
                    self.fail(key, e, fallback)
                }
            },
        }
    }

    /// The key's default through `parse`. The table's test proves every default parses; should
    /// one not, that is reported rather than hidden.
    fn default<T: Default>(&mut self, key: &Key, parse: fn(&Value) -> Result<T, String>) -> T {
        match key.default_value().and_then(|v| parse(&v)) {
            Ok(v) => v,
            Err(e) => self.fail(key, format!("bad default `{}`: {e}", key.default), T::default()),
        }
    }
}

/// A value read as its key's kind: two spellings of one setting (`"64KiB"` and `65536`,
/// `"2"` and `2`) compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// Text (and `"auto"`-or-number, lower-cased).
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Integer(i64),
    /// A duration.
    Duration(Duration),
    /// Bytes.
    Size(u64),
    /// A list of strings.
    List(Vec<String>),
}

/// Reads `value` as `key`'s kind, with the reader's error messages.
pub fn typed(key: &Key, value: &Value) -> Result<Typed, String> {
    Ok(match key.kind {
        Kind::Text => Typed::Text(as_text(value)?),
        Kind::Bool => Typed::Bool(as_bool(value)?),
        Kind::Integer => Typed::Integer(as_integer(value)?),
        Kind::Duration => Typed::Duration(as_duration(value)?),
        Kind::Size => Typed::Size(as_size(value)?),
        Kind::List => Typed::List(match value {
            Value::String(s) => split_list(s),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!("expected strings, found {other}")),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(format!("expected a list of strings, found {}", other.type_str())),
        }),
        Kind::TextOrInteger => Typed::Text(as_text(value)?.trim().to_ascii_lowercase()),
    })
}

fn as_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(format!("expected a string, found {}", other.type_str())),
    }
}

fn as_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        other => Err(format!("expected true or false, found {}", other.type_str())),
    }
}

fn as_integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Integer(i) => Ok(*i),
        Value::String(s) => s.trim().parse().map_err(|_| format!("`{s}` is not a whole number")),
        other => Err(format!("expected a number, found {}", other.type_str())),
    }
}

fn as_duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        Value::String(s) => units::parse_duration(s),
        other => Err(format!("expected seconds or a duration string, found {other}")),
    }
}

fn as_size(value: &Value) -> Result<u64, String> {
    match value {
        Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        Value::String(s) => units::parse_size(s),
        other => Err(format!("expected bytes or a size string, found {other}")),
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys;

    fn table(toml: &str) -> Table {
        toml.parse().unwrap()
    }

    #[test]
    fn unset_keys_read_as_their_defaults() {
        let t = Table::new();
        let mut r = Reader::new(&t);
        assert_eq!(r.text(&keys::LISTEN_PORT), ":8080");
        assert_eq!(r.size(&keys::MAX_UPLOAD_SIZE), 100 << 20);
        assert_eq!(r.duration(&keys::READ_TIMEOUT), Duration::from_secs(900));
        assert_eq!(
            r.duration(&keys::DELETE_FILES_AFTER_PERIOD),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(r.integer(&keys::MAX_RETRIES, 0..=100), 5);
        assert!(r.boolean(&keys::ENABLE_GET_RETRIES));
        assert!(r.list(&keys::TRUSTED_PROXIES).is_empty());
        assert_eq!(r.path(&keys::LOG_FILE), None);
        assert_eq!(r.finish(), (Vec::new(), Vec::new()));
    }

    #[test]
    fn values_are_read_by_kind() {
        let t = table(
            "ListenPort = 8081\nMaxUploadSize = \"1KiB\"\nReadTimeout = \"2m\"\nMaxRetries = \"7\"\nTrustedProxies = \"10.0.0.0/8, ::1\"\nLogFile = \"/tmp/x.log\"",
        );
        let mut r = Reader::new(&t);
        assert_eq!(r.text(&keys::LISTEN_PORT), "8081");
        assert_eq!(r.size(&keys::MAX_UPLOAD_SIZE), 1024);
        assert_eq!(r.duration(&keys::READ_TIMEOUT), Duration::from_secs(120));
        assert_eq!(r.integer(&keys::MAX_RETRIES, 0..=100), 7);
        assert_eq!(r.list(&keys::TRUSTED_PROXIES), ["10.0.0.0/8", "::1"]);
        assert_eq!(r.path(&keys::LOG_FILE), Some(PathBuf::from("/tmp/x.log")));
        assert!(r.finish().0.is_empty());
    }

    #[test]
    fn failures_name_their_key_and_fall_back_to_the_default() {
        let t = table(
            "MaxUploadSize = \"lots\"\nUnixSocket = \"yes\"\nMaxRetries = 101\nReadTimeout = -1\nTrustedProxies = [\"a\", 1, 2]",
        );
        let mut r = Reader::new(&t);
        assert_eq!(r.size(&keys::MAX_UPLOAD_SIZE), 100 << 20);
        assert!(!r.boolean(&keys::UNIX_SOCKET));
        assert_eq!(r.integer(&keys::MAX_RETRIES, 0..=100), 5);
        assert_eq!(r.duration(&keys::READ_TIMEOUT), Duration::from_secs(900));
        assert_eq!(r.list(&keys::TRUSTED_PROXIES), ["a"]);
        let (problems, warnings) = r.finish();
        assert!(warnings.is_empty());
        let got: Vec<(&str, &str)> = problems.iter().map(|p| (&p.key[..], &p.message[..])).collect();
        assert_eq!(
            got,
            [
                (
                    "MaxUploadSize",
                    "`lots` is not a size; use bytes or e.g. \"100MiB\" (MB, MiB and M all mean 2^20)"
                ),
                ("UnixSocket", "expected true or false, found string"),
                ("MaxRetries", "101 is out of range 0..=100"),
                ("ReadTimeout", "expected seconds or a duration string, found -1"),
                ("TrustedProxies", "expected strings, found 1"),
                ("TrustedProxies", "expected strings, found 2"),
            ]
        );
    }

    #[test]
    fn typed_values_compare_across_spellings() {
        let v = |toml: &str| table(&format!("v = {toml}"))["v"].clone();
        assert_eq!(
            typed(&keys::BUFFER_SIZE, &v("\"64KiB\"")),
            typed(&keys::BUFFER_SIZE, &v("65536"))
        );
        assert_eq!(
            typed(&keys::RETRY_DELAY, &v("\"2\"")),
            typed(&keys::RETRY_DELAY, &v("2"))
        );
        assert_eq!(
            typed(&keys::NUM_CORES, &v("\"AUTO\"")),
            typed(&keys::NUM_CORES, &v("\"auto\""))
        );
        assert_eq!(typed(&keys::REDIS_DB, &v("\"3\"")), typed(&keys::REDIS_DB, &v("3")));
        assert_ne!(
            typed(&keys::STORE_DIR, &v("\"a\"")),
            typed(&keys::STORE_DIR, &v("\"b\""))
        );
        assert!(typed(&keys::UNIX_SOCKET, &v("3")).is_err());
    }
}
