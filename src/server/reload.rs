//! SIGHUP: reopen the log file, read the configuration again, apply what can change live
//! (log level, limits, secret, retention, bans, timeouts of body reads) and name what needs a
//! restart. With ReaskSecretEnabled the secret is also re-read every ReaskSecretInterval.
//! A new secret does not cut off the old one at once: it stays valid for one more
//! ReaskSecretInterval, so slots minted just before a rotation still work. A configuration
//! that no longer loads (an unreadable SecretFile, a typo) changes nothing: the server keeps
//! running on the old one and logs why.

use std::sync::Arc;

use crate::app::AppState;
use crate::config::keys::Reload;
use crate::config::{Config, Sources};
use crate::ops::logging::LogHandle;

/// Waits for SIGHUP and reloads, until aborted.
pub async fn signal_loop(
    mut hup: tokio::signal::unix::Signal,
    state: AppState,
    sources: Sources,
    log: Option<LogHandle>,
) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading");
        if let Some(log) = &log {
            log.reopen();
        }
        state.bans().reload_file();
        reload(&state, &sources, log.as_ref());
    }
}

/// Re-reads the secret every ReaskSecretInterval while ReaskSecretEnabled.
pub async fn reask_loop(state: AppState, sources: Sources) {
    loop {
        let config = state.config();
        tokio::time::sleep(config.auth.reask_secret_interval).await;
        if !state.config().auth.reask_secret {
            continue;
        }
        match Config::load(&sources) {
            Ok(fresh) => {
                if state.rotate_secret(fresh.auth.secret.clone(), fresh.auth.reask_secret_interval) {
                    tracing::info!(
                        "secret re-read: a new secret is in force; the previous one stays valid for one more interval"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot re-read the secret; keeping the current one"),
        }
    }
}

/// Reads the configuration again and applies it; restart-only keys keep their running
/// values ([`Config::reload`] follows the key table), and each that changed is named.
pub fn reload(state: &AppState, sources: &Sources, log: Option<&LogHandle>) {
    let old = state.config();
    let (fresh, restart) = match old.reload(sources) {
        Ok(reloaded) => reloaded,
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
            return;
        }
    };
    for key in restart {
        match key.reload {
            Reload::LiveExcept(part) => {
                tracing::warn!("{} (for {part}) changed; it takes effect after a restart", key.name)
            }
            Reload::Live | Reload::Restart => tracing::warn!("{} changed; it takes effect after a restart", key.name),
        }
    }
    if let Some(log) = log
        && fresh.logging.level != old.logging.level
    {
        log.set_level(&fresh.logging.level);
    }
    if state.rotate_secret(fresh.auth.secret.clone(), fresh.auth.reask_secret_interval) {
        tracing::info!(
            "secret changed; the previous one stays valid for {}s",
            fresh.auth.reask_secret_interval.as_secs()
        );
    }
    if let Some(warning) = fresh.proxy_warning()
        && old.proxy_warning().is_none()
    {
        tracing::warn!("{warning}");
    }
    state.set_config(Arc::new(fresh));
    tracing::info!("configuration reloaded");
}
