//! SIGHUP: reopen the log file, read the configuration again, apply what can change live
//! (log level, limits, secret, retention, bans, timeouts of body reads) and name what needs a
//! restart. With ReaskSecretEnabled the secret is also re-read every ReaskSecretInterval.
//! A new secret does not cut off the old one at once: it stays valid for one more
//! ReaskSecretInterval, so slots minted just before a rotation still work. A configuration
//! that no longer loads (an unreadable SecretFile, a typo) changes nothing: the server keeps
//! running on the old one and logs why.

use std::sync::Arc;

use crate::app::AppState;
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
        tokio::time::sleep(config.reask_secret_interval).await;
        if !state.config().reask_secret {
            continue;
        }
        match Config::load(&sources) {
            Ok(fresh) => {
                if state.rotate_secret(fresh.secret.clone(), fresh.reask_secret_interval) {
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
        && merged.log_level != old.log_level
    {
        log.set_level(&merged.log_level);
    }
    if state.rotate_secret(merged.secret.clone(), merged.reask_secret_interval) {
        tracing::info!(
            "secret changed; the previous one stays valid for {}s",
            merged.reask_secret_interval.as_secs()
        );
    }
    state.set_config(Arc::new(merged));
    tracing::info!("configuration reloaded");
}

/// The fresh config with the restart-only settings of the running one, and the fresh one as
/// read (to name what changed).
fn keep_restart_only(old: &Config, fresh: Config) -> (Config, Config) {
    let mut merged = fresh.clone();
    merged.listen = old.listen.clone();
    merged.unix_socket = old.unix_socket.clone();
    merged.store_dir = old.store_dir.clone();
    merged.upload_sub_dir = old.upload_sub_dir.clone();
    merged.log_file = old.log_file.clone();
    merged.log_format = old.log_format;
    merged.num_cores = old.num_cores;
    merged.metrics_enabled = old.metrics_enabled;
    merged.metrics_listen = old.metrics_listen.clone();
    merged.redis = old.redis.clone();
    merged.buffer_bytes = old.buffer_bytes;
    merged.write_timeout = old.write_timeout;
    merged.max_retries = old.max_retries;
    merged.retry_delay = old.retry_delay;
    merged.enable_get_retries = old.enable_get_retries;
    (merged, fresh)
}

fn restart_only_changes(old: &Config, fresh: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("ListenPort", old.listen != fresh.listen);
    check("UnixSocket/UnixSocketPath", old.unix_socket != fresh.unix_socket);
    check("StoreDir", old.store_dir != fresh.store_dir);
    check("UploadSubDir", old.upload_sub_dir != fresh.upload_sub_dir);
    check("LogFile", old.log_file != fresh.log_file);
    check("LogFormat", old.log_format != fresh.log_format);
    check("NumCores", old.num_cores != fresh.num_cores);
    check("MetricsEnabled", old.metrics_enabled != fresh.metrics_enabled);
    check("MetricsPort", old.metrics_listen != fresh.metrics_listen);
    check(
        "RedisAddr/RedisPassword/RedisDB",
        old.redis.as_ref().map(|r| (&r.addr, r.db, &r.password))
            != fresh.redis.as_ref().map(|r| (&r.addr, r.db, &r.password)),
    );
    check("BufferSize", old.buffer_bytes != fresh.buffer_bytes);
    check("WriteTimeout", old.write_timeout != fresh.write_timeout);
    check(
        "MaxRetries/RetryDelay/EnableGetRetries",
        (old.max_retries, old.retry_delay, old.enable_get_retries)
            != (fresh.max_retries, fresh.retry_delay, fresh.enable_get_retries),
    );
    check(
        "ReadTimeout (for request heads)",
        old.read_timeout != fresh.read_timeout,
    );
    changed
}
