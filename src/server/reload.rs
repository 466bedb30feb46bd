//! SIGHUP: reopen the log file, read the configuration again, apply what can change live
//! (log level, limits, secret, retention, bans, timeouts of body reads) and name what needs a
//! restart. With ReaskSecretEnabled the secret is also re-read every ReaskSecretInterval.
//! A new secret does not cut off the old one at once: it stays valid for one more
//! ReaskSecretInterval, so slots minted just before a rotation still work. A configuration
//! that no longer loads (an unreadable SecretFile, a typo) changes nothing: the server keeps
//! running on the old one and logs why.

use std::sync::Arc;

use crate::config::{Config, Sources};
use crate::http::AppState;
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

/// Reads the configuration again and applies it.
pub fn reload(state: &AppState, sources: &Sources, log: Option<&LogHandle>) {
    let fresh = match Config::load(sources) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
            return;
        }
    };
    let old = state.config();
    let merged = keep_restart_only(&old, fresh);
    for key in restart_only_changes(&old, &merged.1) {
        tracing::warn!("{key} changed; it takes effect after a restart");
    }
    let merged = merged.0;
    if let Some(log) = log
        && merged.logging.log_level != old.logging.log_level
    {
        log.set_level(&merged.logging.log_level);
    }
    if state.rotate_secret(merged.auth.secret.clone(), merged.auth.reask_secret_interval) {
        tracing::info!(
            "secret changed; the previous one stays valid for {}s",
            merged.auth.reask_secret_interval.as_secs()
        );
    }
    state.set_config(Arc::new(merged));
    tracing::info!("configuration reloaded");
}

/// The fresh config with the restart-only settings of the running one, and the fresh one as
/// read (to name what changed).
fn keep_restart_only(old: &Config, fresh: Config) -> (Config, Config) {
    let mut merged = fresh.clone();
    merged.server.listen = old.server.listen.clone();
    merged.server.unix_socket = old.server.unix_socket.clone();
    merged.store.store_dir = old.store.store_dir.clone();
    merged.store.upload_sub_dir = old.store.upload_sub_dir.clone();
    merged.logging.log_file = old.logging.log_file.clone();
    merged.logging.log_format = old.logging.log_format;
    merged.server.num_cores = old.server.num_cores;
    merged.metrics.metrics_enabled = old.metrics.metrics_enabled;
    merged.metrics.metrics_listen = old.metrics.metrics_listen.clone();
    merged.redis = old.redis.clone();
    merged.store.buffer_bytes = old.store.buffer_bytes;
    merged.limits.write_timeout = old.limits.write_timeout;
    merged.store.max_retries = old.store.max_retries;
    merged.store.retry_delay = old.store.retry_delay;
    merged.store.enable_get_retries = old.store.enable_get_retries;
    (merged, fresh)
}

fn restart_only_changes(old: &Config, fresh: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("ListenPort", old.server.listen != fresh.server.listen);
    check(
        "UnixSocket/UnixSocketPath",
        old.server.unix_socket != fresh.server.unix_socket,
    );
    check("StoreDir", old.store.store_dir != fresh.store.store_dir);
    check("UploadSubDir", old.store.upload_sub_dir != fresh.store.upload_sub_dir);
    check("LogFile", old.logging.log_file != fresh.logging.log_file);
    check("LogFormat", old.logging.log_format != fresh.logging.log_format);
    check("NumCores", old.server.num_cores != fresh.server.num_cores);
    check(
        "MetricsEnabled",
        old.metrics.metrics_enabled != fresh.metrics.metrics_enabled,
    );
    check(
        "MetricsPort",
        old.metrics.metrics_listen != fresh.metrics.metrics_listen,
    );
    check(
        "RedisAddr/RedisPassword/RedisDB",
        old.redis.as_ref().map(|r| (&r.addr, r.db, &r.password))
            != fresh.redis.as_ref().map(|r| (&r.addr, r.db, &r.password)),
    );
    check("BufferSize", old.store.buffer_bytes != fresh.store.buffer_bytes);
    check("WriteTimeout", old.limits.write_timeout != fresh.limits.write_timeout);
    check(
        "MaxRetries/RetryDelay/EnableGetRetries",
        (
            old.store.max_retries,
            old.store.retry_delay,
            old.store.enable_get_retries,
        ) != (
            fresh.store.max_retries,
            fresh.store.retry_delay,
            fresh.store.enable_get_retries,
        ),
    );
    check(
        "ReadTimeout (for request heads)",
        old.limits.read_timeout != fresh.limits.read_timeout,
    );
    changed
}
