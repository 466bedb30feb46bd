//! DELETE with Metronome's token: `?token=HMAC(secret, path + "\0" + delete_secret)`.

use std::time::SystemTime;

use http::StatusCode;

use super::slot::Slot;
use super::{ApiError, Response, body};
use crate::app::AppState;
use crate::auth;
use crate::config::Config;

/// Removes a stored file and its metadata: 204, or 404 when there is none.
pub async fn delete(state: &AppState, config: &Config, slot: Slot) -> Result<Response, ApiError> {
    let keys = state.keys();
    let secrets = keys.valid_at(SystemTime::now());
    auth::verify_delete(
        &slot.query,
        &secrets,
        slot.key.as_str(),
        config.auth.delete_secret.as_ref(),
    )?;
    let size = state.store().delete(&slot.key).await?;
    crate::metrics::store_changed(-1, -(size as i64));
    tracing::info!(path = %slot.key, "file deleted");
    Ok(body::empty(StatusCode::NO_CONTENT))
}
