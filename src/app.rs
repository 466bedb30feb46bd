//! [`AppState`]: what every request shares. The live settings (swapped on reload), the
//! secrets (rotated with a grace period), the store, the upload engine, the upload state
//! (for shared bans) and the ban list.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::auth::KeyRing;
use crate::config::{Config, Secret};
use crate::metrics;
use crate::ops::bans::{BanPolicy, Bans, Client};
use crate::resumable::Engine;
use crate::state::UploadState;
use crate::store::Store;

/// See the module documentation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    config: ArcSwap<Config>,
    keys: ArcSwap<KeyRing>,
    store: Store,
    upload_state: UploadState,
    engine: Engine,
    bans: Bans,
}

impl AppState {
    /// State for a freshly started server.
    pub fn new(config: Arc<Config>, store: Store, upload_state: UploadState, engine: Engine) -> Self {
        let keys = KeyRing::new(config.auth.secret.clone());
        // Embedded state keeps its bans in a file beside it; with Redis they live there.
        let bans = match upload_state {
            UploadState::Embedded(_) => Bans::persistent(ban_file(&config)),
            UploadState::Redis(_) => Bans::default(),
        };
        Self(Arc::new(Shared {
            config: ArcSwap::new(config),
            keys: ArcSwap::from_pointee(keys),
            store,
            upload_state,
            engine,
            bans,
        }))
    }

    /// The upload engine.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// The upload state (records, locks, leases, shared bans).
    pub fn upload_state(&self) -> &UploadState {
        &self.0.upload_state
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<Config> {
        self.0.config.load_full()
    }

    /// Replaces the live settings (reload).
    pub fn set_config(&self, config: Arc<Config>) {
        self.0.config.store(config);
    }

    /// The secrets tokens may be signed with now.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.0.keys.load_full()
    }

    /// Makes `next` the current secret; the previous one stays valid for `grace`. Returns
    /// whether the secret changed.
    pub fn rotate_secret(&self, next: Secret, grace: Duration) -> bool {
        let keys = self.keys();
        if keys.current() == &next {
            return false;
        }
        self.0
            .keys
            .store(Arc::new(keys.rotated(next, SystemTime::now() + grace)));
        true
    }

    /// The store of finished files.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The ban list.
    pub fn bans(&self) -> &Bans {
        &self.0.bans
    }

    /// Counts a failed authentication: across all instances through Redis when it is set
    /// (falling back to this instance's count when Redis does not answer), else here. A
    /// client that may not be banned ([`Client::may_ban`]) is counted here only, and a ban
    /// it earns is withheld.
    pub async fn record_auth_failure(&self, client: &Client) {
        let Some(ip) = client.ip else { return };
        let policy = self.ban_policy();
        if policy.after_fails == 0 {
            return;
        }
        if !client.may_ban {
            // Not through Redis: that would ban the address on every instance.
            self.bans().record_failure_without_ban(ip, &policy, Instant::now());
            return;
        }
        if let Some(redis) = self.upload_state().as_redis() {
            let ban_time = policy.auto_unban.then_some(policy.ban_time);
            match redis
                .record_auth_failure(&ip.to_string(), policy.window, policy.after_fails, ban_time)
                .await
            {
                Ok(true) => {
                    metrics::ban_counted();
                    self.bans().adopt(ip, ban_time, Instant::now());
                    return;
                }
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "cannot share a failed authentication; counting it here"),
            }
        }
        self.bans().record_failure(ip, &policy, Instant::now());
    }

    /// The ban policy of the live settings.
    pub fn ban_policy(&self) -> BanPolicy {
        let c = self.config();
        BanPolicy {
            after_fails: c.bans.block_after_fails,
            window: c.bans.block_duration,
            auto_unban: c.bans.auto_unban,
            ban_time: c.bans.auto_ban_time,
        }
    }
}

/// Where the embedded state keeps the ban list: in StateDir.
pub fn ban_file(config: &Config) -> PathBuf {
    config.store.state_dir.join("bans.json")
}
