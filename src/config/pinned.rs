//! What a reload must not change. A running [`Config`](super::Config) remembers the values its
//! restart-only keys (and partly live keys) were read with, as given in the merged table; a
//! reload compares the fresh table with them, key by key as the table says, and puts the
//! restart-only ones back before building.

use std::fmt;

use toml::{Table, Value};

use super::keys::{KEYS, Key, Reload};
use super::reader::typed;

/// The values of the keys that SIGHUP does not (fully) apply; `None` = not set, the default.
#[derive(Clone, Default)]
pub(super) struct Pinned(Vec<(&'static Key, Option<Value>)>);

impl Pinned {
    /// Pins the values `table` gives the keys that are not [`Reload::Live`].
    pub fn from_table(table: &Table) -> Self {
        Self(
            KEYS.iter()
                .filter(|key| key.reload != Reload::Live)
                .map(|key| (*key, table.get(key.name).cloned()))
                .collect(),
        )
    }

    /// The pinned keys whose value in `table` means something else (a new spelling of the
    /// same value, `"64KiB"` for `65536`, is no change).
    pub fn changed(&self, table: &Table) -> Vec<&'static Key> {
        self.0
            .iter()
            .filter(|(key, pinned)| !same(key, pinned.as_ref(), table.get(key.name)))
            .map(|(key, _)| *key)
            .collect()
    }

    /// Puts the pinned values of the restart-only keys back into `table`.
    pub fn restore(&self, table: &mut Table) {
        for (key, pinned) in self.0.iter().filter(|(key, _)| key.reload == Reload::Restart) {
            match pinned {
                Some(value) => table.insert(key.name.to_string(), value.clone()),
                None => table.remove(key.name),
            };
        }
    }
}

/// Whether two values of `key` (`None` = the default) mean the same.
fn same(key: &Key, a: Option<&Value>, b: Option<&Value>) -> bool {
    let default = key.default_value().ok();
    let resolve = |v: Option<&Value>| v.cloned().or_else(|| default.clone());
    let (a, b) = (resolve(a), resolve(b));
    match (&a, &b) {
        (Some(x), Some(y)) => match (typed(key, x), typed(key, y)) {
            (Ok(x), Ok(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

/// Names only: the values may be secrets (RedisPassword, a password in RedisAddr).
impl fmt::Debug for Pinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(key, _)| key.name)).finish()
    }
}
