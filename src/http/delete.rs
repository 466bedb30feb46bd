//! DELETE with Metronome's token: `?token=HMAC(secret, path + "\0" + delete_secret)`.

use std::time::SystemTime;

use http::StatusCode;

use super::{ApiError, AppState, Response, Target, body};
use crate::auth;
use crate::config::Config;

/// Removes a stored file and its metadata: 204, or 404 when there is none.
pub async fn delete(state: &AppState, config: &Config, target: Target) -> Result<Response, ApiError> {
    let keys = state.keys();
    let secrets = keys.valid_at(SystemTime::now());
    auth::verify_delete(
        &target.query,
        &secrets,
        target.key.as_str(),
        config.auth.delete_secret.as_ref(),
    )?;
    let size = state.store().delete(&target.key).await?;
    crate::ops::metrics::store_changed(-1, -(size as i64));
    tracing::info!(path = %target.key, "file deleted");
    Ok(body::empty(StatusCode::NO_CONTENT))
}
