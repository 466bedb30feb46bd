//! Redis, when the state is shared between instances.

use std::fmt;

use crate::config::Secret;
use crate::config::keys;
use crate::config::reader::Reader;

/// Redis connection settings (resumable state shared between instances). Its `Debug` shows
/// neither the password nor credentials written inside the address.
#[derive(Clone)]
pub struct RedisSettings {
    /// As written: `host:port`, `redis://[user:password@]host:port[/db]`, `unix:/path` or
    /// `/path`. May hold a password: show it as [`RedisSettings::addr_for_logs`].
    pub addr: String,
    /// Password, if any.
    pub password: Option<Secret>,
    /// Database number.
    pub db: i64,
}

impl RedisSettings {
    /// `None` when RedisAddr is empty: the state is embedded.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Option<Self> {
        let addr = r.text(&keys::REDIS_ADDR);
        let password = r.text(&keys::REDIS_PASSWORD);
        let db = r.integer(&keys::REDIS_DB, 0..=1_000_000);
        (!addr.is_empty()).then(|| Self {
            addr,
            password: (!password.is_empty()).then(|| Secret::new(password.as_bytes())),
            db,
        })
    }

    /// The address for log lines and messages: without credentials.
    pub fn addr_for_logs(&self) -> RedactedAddr<'_> {
        RedactedAddr(&self.addr)
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("addr", &self.addr_for_logs().to_string())
            .field("password", &self.password)
            .field("db", &self.db)
            .finish()
    }
}

/// A Redis address shown without credentials: the userinfo of a URL
/// (`redis://user:password@host:6379/2` → `redis://host:6379/2`) and the query of a socket
/// address (`unix:/run/redis.sock?pass=…` → `unix:/run/redis.sock`, where redis-rs takes
/// `user` and `pass`). A password written raw may hold `@`, `/` or `?`: the host is what
/// follows the last `@`, so no part of such a password is shown.
#[derive(Clone, Copy)]
pub struct RedactedAddr<'a>(&'a str);

impl fmt::Display for RedactedAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = match self.0.find("://") {
            Some(i) => self.0.split_at(i + 3),
            None => ("", self.0),
        };
        let socket = scheme.contains("unix") || rest.starts_with('/') || rest.starts_with("unix:");
        let place = if socket {
            // A path has no userinfo; credentials go in the query.
            rest
        } else {
            rest.rsplit_once('@').map_or(rest, |(_, host)| host)
        };
        let place = place.split_once('?').map_or(place, |(before, _)| before);
        write!(f, "{scheme}{place}")
    }
}

impl fmt::Debug for RedactedAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_shown() {
        for (written, shown) in [
            ("127.0.0.1:6379", "127.0.0.1:6379"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:hunter2@127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://user:hunter2@127.0.0.1:6379/2", "redis://127.0.0.1:6379/2"),
            ("redis://user@127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("rediss://:hunter2@redis.example:6380", "rediss://redis.example:6380"),
            (":hunter2@localhost:6379", "localhost:6379"),
            ("redis://:hu@n/t?er@2@[::1]:6379", "redis://[::1]:6379"),
            (
                "redis://:hunter2@127.0.0.1:6379/?protocol=resp3",
                "redis://127.0.0.1:6379/",
            ),
            ("unix:/run/redis.sock", "unix:/run/redis.sock"),
            ("unix:/run/redis.sock?db=1&pass=hunter2", "unix:/run/redis.sock"),
            ("/run/redis.sock?user=u&pass=hun@ter2", "/run/redis.sock"),
            (
                "redis+unix:///run/redis.sock?pass=hunter2",
                "redis+unix:///run/redis.sock",
            ),
        ] {
            let settings = RedisSettings {
                addr: written.into(),
                password: Some(Secret::new("pw-0123")),
                db: 0,
            };
            assert_eq!(settings.addr_for_logs().to_string(), shown, "{written}");
            let debug = format!("{settings:?}");
            assert!(debug.contains(shown), "{debug}");
            for secret in ["hu", "ter", "er@2", "pw-0123"] {
                assert!(!debug.contains(secret), "{written}: Debug shows {secret}: {debug}");
            }
        }
    }
}
