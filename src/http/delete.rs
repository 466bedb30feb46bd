//! DELETE with Metronome's token: `?token=HMAC(secret, path + "\0" + delete_secret)`.

use http::StatusCode;

use super::{ApiError, AppState, Response, Target, body};
use crate::auth;

/// Removes a stored file and its metadata: 204, or 404 when there is none.
pub async fn delete(state: &AppState, target: Target) -> Result<Response, ApiError> {
    let config = &state.config;
    auth::verify_delete(
        &target.query,
        &[&config.secret],
        target.key.as_str(),
        &config.delete_secret,
    )?;
    state.store.delete(&target.key).await?;
    tracing::info!(path = %target.key, "file deleted");
    Ok(body::empty(StatusCode::NO_CONTENT))
}
