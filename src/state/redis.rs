//! Redis upload state: records as JSON under `hmac-file-server:upload:<id>` with the upload's
//! expiry as TTL, locks as `hmac-file-server:lock:<id>` (SET NX PX, renewed by the holder
//! while it works, so a crashed instance cannot hold an upload for longer than the lock's
//! TTL), stop requests as `hmac-file-server:stop:<id>`, leases (the leader of periodic work)
//! as `hmac-file-server:lease:<name>`, and shared bans.
//!
//! The connection is made lazily and re-made after every failure by redis-rs' connection
//! manager: with Redis down, calls fail fast with [`StateError::Unavailable`] (the HTTP
//! layer answers 503 with Retry-After) and the server carries on serving plain uploads and
//! downloads; once Redis is back the next call reconnects.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{LockToken, StateError, UploadRecord, random_id, valid_id};
use crate::config::RedisSettings;

/// Key prefix of everything this server writes.
pub const PREFIX: &str = "hmac-file-server";
/// How long a lock lives without a renewal, by default.
pub const LOCK_TTL: Duration = Duration::from_secs(10);
/// How long a stop request waits for the holder.
const STOP_TTL: Duration = Duration::from_secs(10);

/// See the module documentation.
#[derive(Clone)]
pub struct RedisState {
    manager: ConnectionManager,
    /// The address without credentials, for `Debug`.
    addr: String,
    lock_ttl: Duration,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState").field("addr", &self.addr).finish()
    }
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}:{kind}:{id}")
}

/// The key of a slot (a path of any characters): `hmac-file-server:slot:<sha256 of the path>`.
fn slot_key(slot: &str) -> String {
    use sha2::Digest;
    key("slot", &hex::encode(sha2::Sha256::digest(slot.as_bytes())))
}

impl RedisState {
    /// Prepares the connection (made on first use: a Redis that is down at start does not
    /// stop the server).
    pub fn connect(settings: &RedisSettings) -> Result<Self, StateError> {
        let url = redis_url(settings);
        let client = redis::Client::open(url).map_err(|e| StateError::Unavailable(format!("bad RedisAddr: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self {
            manager,
            addr: settings.addr_for_logs().to_string(),
            lock_ttl: LOCK_TTL,
        })
    }

    /// The same connection with locks that live `ttl` without a renewal (holders renew every
    /// third of it); for tests that watch a renewal happen.
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How long a lock lives without a renewal.
    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    fn check(id: &str) -> Result<(), StateError> {
        if valid_id(id) {
            Ok(())
        } else {
            Err(StateError::Corrupt("invalid upload id".into()))
        }
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<UploadRecord>, StateError> {
        Self::check(id)?;
        let text: Option<String> = self.manager.clone().get(key("upload", id)).await.map_err(unavailable)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StateError::Corrupt(e.to_string())))
            .transpose()
    }

    pub(super) async fn put(&self, record: &UploadRecord, ttl: Duration) -> Result<(), StateError> {
        Self::check(&record.id)?;
        let text = serde_json::to_string(record).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let ms = ttl.as_millis().max(1) as u64;
        let _: () = self
            .manager
            .clone()
            .pset_ex(key("upload", &record.id), text, ms)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn delete(&self, id: &str) -> Result<(), StateError> {
        Self::check(id)?;
        let _: () = self.manager.clone().del(key("upload", id)).await.map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn expired(&self, _now_unix: u64) -> Result<Vec<String>, StateError> {
        // Records carry their expiry as a Redis TTL; only their bytes need sweeping.
        Ok(Vec::new())
    }

    pub(super) async fn claim_slot(&self, slot: &str, id: &str, ttl: Duration) -> Result<Option<String>, StateError> {
        redis::cmd("SET")
            .arg(slot_key(slot))
            .arg(id)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .arg("GET")
            .query_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)
    }

    pub(super) async fn touch_slot(&self, slot: &str, id: &str, ttl: Duration) -> Result<(), StateError> {
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1",
        );
        let _: i64 = script
            .key(slot_key(slot))
            .arg(id)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn release_slot(&self, slot: &str, id: &str) -> Result<(), StateError> {
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
        );
        let _: i64 = script
            .key(slot_key(slot))
            .arg(id)
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn try_lock(&self, id: &str) -> Result<Option<LockToken>, StateError> {
        Self::check(id)?;
        let token = random_id();
        let set: Option<String> = redis::cmd("SET")
            .arg(key("lock", id))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.lock_ttl.as_millis() as u64)
            .query_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        if set.is_none() {
            return Ok(None);
        }
        let _: () = self.manager.clone().del(key("stop", id)).await.map_err(unavailable)?;
        Ok(Some(LockToken(token)))
    }

    pub(super) async fn unlock(&self, id: &str, token: &LockToken) -> Result<(), StateError> {
        Self::check(id)?;
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); redis.call('DEL', KEYS[2]) end return 1",
        );
        let _: i64 = script
            .key(key("lock", id))
            .key(key("stop", id))
            .arg(&token.0)
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn request_stop(&self, id: &str) -> Result<(), StateError> {
        Self::check(id)?;
        let _: () = self
            .manager
            .clone()
            .pset_ex(key("stop", id), 1, STOP_TTL.as_millis() as u64)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Also refreshes the lock: a holder polls this while it writes.
    pub(super) async fn stop_requested(&self, id: &str, token: &LockToken) -> Result<bool, StateError> {
        Self::check(id)?;
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 1 end
              redis.call('PEXPIRE', KEYS[1], ARGV[2])
              return redis.call('EXISTS', KEYS[2])",
        );
        let stop: i64 = script
            .key(key("lock", id))
            .key(key("stop", id))
            .arg(&token.0)
            .arg(self.lock_ttl.as_millis() as u64)
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(stop != 0)
    }

    pub(super) async fn renew_lock(&self, id: &str, token: &LockToken) -> Result<bool, StateError> {
        Self::check(id)?;
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
              redis.call('PEXPIRE', KEYS[1], ARGV[2])
              return 1",
        );
        let held: i64 = script
            .key(key("lock", id))
            .arg(&token.0)
            .arg(self.lock_ttl.as_millis() as u64)
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    /// Takes the lease `name` for `holder` when it is free, or extends it when `holder` has
    /// it; true when `holder` has it now.
    pub(super) async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StateError> {
        let script = redis::Script::new(
            r"local current = redis.call('GET', KEYS[1])
              if current == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
              if current then return 0 end
              redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
              return 1",
        );
        let held: i64 = script
            .key(key("lease", name))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    /// Gives up the lease `name` if `holder` has it.
    pub(super) async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StateError> {
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
        );
        let _: i64 = script
            .key(key("lease", name))
            .arg(holder)
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Counts a failed authentication of `client` across all instances; returns true when it
    /// reaches `threshold` within `window` and a shared ban starts (for `ban_time`, or until
    /// lifted by hand when `None`).
    pub async fn record_auth_failure(
        &self,
        client: &str,
        window: Duration,
        threshold: u32,
        ban_time: Option<Duration>,
    ) -> Result<bool, StateError> {
        let script = redis::Script::new(
            r"local n = redis.call('INCR', KEYS[1])
              if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
              if n >= tonumber(ARGV[2]) then
                redis.call('DEL', KEYS[1])
                if ARGV[3] == '0' then redis.call('SET', KEYS[2], 1) else redis.call('SET', KEYS[2], 1, 'PX', ARGV[3]) end
                return 1
              end
              return 0",
        );
        let banned: i64 = script
            .key(key("fail", client))
            .key(key("ban", client))
            .arg(window.as_millis().max(1) as u64)
            .arg(threshold)
            .arg(ban_time.map_or(0, |d| d.as_millis().max(1) as u64))
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        Ok(banned == 1)
    }

    /// Lifts the shared ban of `client` (and forgets its failures); returns whether there was
    /// one.
    pub async fn unban(&self, client: &str) -> Result<bool, StateError> {
        let removed: i64 = self
            .manager
            .clone()
            .del(&[key("ban", client), key("fail", client)])
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    /// Every shared ban: client address and time left (`None` = until lifted by hand).
    pub async fn bans(&self) -> Result<Vec<(String, Option<Duration>)>, StateError> {
        let mut conn = self.manager.clone();
        let pattern = format!("{PREFIX}:ban:*");
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() > 100_000 {
                break;
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let ttl: i64 = conn.pttl(&k).await.map_err(unavailable)?;
            // IPv6 addresses have colons of their own: cut the prefix, not at the last colon.
            let Some(client) = k.strip_prefix(&format!("{PREFIX}:ban:")).map(str::to_string) else {
                continue;
            };
            match ttl {
                -2 => {}
                -1 => out.push((client, None)),
                ms => out.push((client, Some(Duration::from_millis(ms.max(0) as u64)))),
            }
        }
        Ok(out)
    }

    pub(super) async fn ping(&self) -> Result<(), StateError> {
        let pong: String = redis::cmd("PING")
            .query_async(&mut self.manager.clone())
            .await
            .map_err(unavailable)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StateError::Unavailable(format!("PING answered {pong}")))
        }
    }
}

/// `redis://[:password@]host:port/db`, or `redis+unix:///path?db=N` for a socket path.
fn redis_url(settings: &RedisSettings) -> String {
    let password = settings
        .password
        .as_ref()
        .map(|p| percent_encoding::percent_encode(p.expose(), percent_encoding::NON_ALPHANUMERIC).to_string());
    let addr = settings.addr.trim_start_matches("redis://");
    if let Some(path) = addr.strip_prefix("unix:").or(addr.starts_with('/').then_some(addr)) {
        let pass = password.map(|p| format!("&pass={p}")).unwrap_or_default();
        return format!("redis+unix://{path}?db={}{pass}", settings.db);
    }
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    format!("redis://{auth}{addr}/{}", settings.db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn urls() {
        let s = |addr: &str, pw: Option<&str>, db| RedisSettings {
            addr: addr.into(),
            password: pw.map(Secret::new),
            db,
        };
        assert_eq!(redis_url(&s("localhost:6379", None, 0)), "redis://localhost:6379/0");
        assert_eq!(
            redis_url(&s("127.0.0.1:7000", Some("p@ss:w"), 3)),
            "redis://:p%40ss%3Aw@127.0.0.1:7000/3"
        );
        assert_eq!(
            redis_url(&s("unix:/tmp/r.sock", None, 1)),
            "redis+unix:///tmp/r.sock?db=1"
        );
        assert_eq!(
            redis_url(&s("/tmp/r.sock", Some("x"), 0)),
            "redis+unix:///tmp/r.sock?db=0&pass=x"
        );
        let _ = random_id();
    }

    #[tokio::test]
    async fn debug_shows_the_address_without_credentials() {
        let settings = RedisSettings {
            addr: "redis://user:addr-pass-0123@127.0.0.1:1".into(),
            password: Some(Secret::new("other-pass-4567")),
            db: 0,
        };
        let state = RedisState::connect(&settings).unwrap();
        let debug = format!("{state:?}");
        assert_eq!(debug, r#"RedisState { addr: "redis://127.0.0.1:1" }"#);
    }
}
