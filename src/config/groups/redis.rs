//! Redis, when the state is shared between instances.

use crate::config::Secret;
use crate::config::keys;
use crate::config::reader::Reader;

/// Redis connection settings (resumable state shared between instances).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `host:port`.
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
}
