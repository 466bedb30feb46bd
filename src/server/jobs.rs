//! Periodic work. Retention and the sweeps of stale staged uploads and expired resumable
//! uploads run at start and every CleanupInterval, on one instance at a time: the holder of
//! the `periodic` lease in the upload state (Redis; with the embedded state the only instance
//! always holds it), renewed every [`LEASE_RENEW`], so with several instances there is one
//! store listing per interval. A leader that shuts down gives the lease up, and another takes
//! over at its next renewal; when a leader dies, another takes over within [`LEASE_TTL`]. Bans are lifted (and shared bans taken
//! over) on every instance every [`BAN_SWEEP_INTERVAL`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::AppState;
use crate::state::random_id;

/// How long a leader's lease lasts without a renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often the lease is renewed (or tried for).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The lease's name.
const LEASE: &str = "periodic";
/// How often expired bans are lifted and shared bans (Redis) are taken over.
pub const BAN_SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Whether this instance leads periodic work.
#[derive(Debug)]
pub struct Leadership {
    instance: String,
    /// Until when the last successful renewal holds.
    until: Mutex<Option<Instant>>,
    /// What was last logged: [`UNKNOWN`], [`LEADING`] or [`FOLLOWING`].
    logged: AtomicU8,
}

const UNKNOWN: u8 = 0;
const LEADING: u8 = 1;
const FOLLOWING: u8 = 2;

impl Leadership {
    /// Tries for the lease once, so the first pass at start knows who runs it.
    pub async fn new(state: &AppState) -> Arc<Self> {
        let leadership = Arc::new(Self {
            instance: random_id(),
            until: Mutex::new(None),
            logged: AtomicU8::new(UNKNOWN),
        });
        leadership.try_lead(state).await;
        leadership
    }

    /// Whether this instance leads now.
    pub fn is_leader(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Gives the lease up (at shutdown), so another instance leads from its next renewal.
    pub async fn resign(&self, state: &AppState) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = state.upload_state().release_lease(LEASE, &self.instance).await {
            tracing::debug!(error = %e, "cannot give up the lease of periodic work; it lapses by itself");
        }
    }

    async fn try_lead(&self, state: &AppState) {
        let asked = Instant::now();
        let held = match state.upload_state().lease(LEASE, &self.instance, LEASE_TTL).await {
            Ok(held) => Some(held),
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease of periodic work; it lapses by itself");
                None
            }
        };
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        match held {
            Some(true) => *until = Some(asked + LEASE_TTL - LEASE_RENEW),
            Some(false) => *until = None,
            // Unreachable: keep what the last renewal gave, until it lapses.
            None => {}
        }
        let now = if until.is_some_and(|u| Instant::now() < u) {
            LEADING
        } else {
            FOLLOWING
        };
        drop(until);
        if self.logged.swap(now, Ordering::Relaxed) != now {
            if now == LEADING {
                tracing::info!("this instance leads periodic work (retention, sweeps)");
            } else {
                tracing::info!("another instance leads periodic work (retention, sweeps)");
            }
        }
    }
}

/// Renews (or tries for) the lease every [`LEASE_RENEW`].
pub async fn lead(state: AppState, leadership: Arc<Leadership>) {
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        leadership.try_lead(&state).await;
    }
}

/// Applies retention and removes stale staged uploads and expired resumable uploads, at start
/// and every CleanupInterval, when this instance leads.
pub async fn sweep_loop(state: AppState, leadership: Arc<Leadership>) {
    loop {
        let config = state.config();
        if leadership.is_leader() {
            let started = Instant::now();
            let report = crate::ops::retention::pass(state.store(), &config).await;
            match state.engine().sweep(config.limits.upload_expiry).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "swept expired resumable uploads"),
                Err(e) => tracing::warn!(error = %e, "sweeping resumable uploads failed"),
            }
            tracing::debug!(
                files = report.files,
                bytes = report.bytes,
                deleted = report.deleted,
                ms = started.elapsed().as_millis() as u64,
                "retention pass done"
            );
            match state.store().sweep_staging(config.limits.upload_expiry).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "swept stale temporaries"),
                Err(e) => tracing::warn!(error = %e, "sweeping temporaries failed"),
            }
        } else {
            tracing::debug!("periodic work skipped: another instance leads it");
        }
        tokio::time::sleep(config.retention.cleanup_interval).await;
    }
}

/// Lifts expired bans, and takes over shared bans (Redis), every [`BAN_SWEEP_INTERVAL`].
pub async fn ban_loop(state: AppState) {
    let mut ticker = tokio::time::interval(BAN_SWEEP_INTERVAL);
    loop {
        ticker.tick().await;
        state.bans().sweep(Instant::now(), state.config().bans.block_duration);
        if let Some(redis) = state.upload_state().as_redis() {
            match redis.bans().await {
                Ok(bans) => {
                    let mut shared = HashSet::new();
                    for (client, left) in bans {
                        if let Ok(ip) = client.parse() {
                            shared.insert(ip);
                            state.bans().adopt(ip, left, Instant::now());
                        }
                    }
                    // Bans deleted in Redis (`unban`) are lifted here too.
                    state.bans().lift_all_except(&shared);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read shared bans"),
            }
        }
    }
}
