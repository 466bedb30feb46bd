//! [`Slot`]: an upload slot URL as the XMPP server signed it, and [`authorize`], the one check
//! of its token that whole-file PUTs, session resumes and tus creations share.

use std::time::SystemTime;

use super::ApiError;
use crate::app::AppState;
use crate::auth::{AuthError, Claims, Token};
use crate::clock::now_unix;
use crate::key::FileKey;

/// A request on a slot URL, `/<prefix>/<path>?<token>`.
#[derive(Debug)]
pub struct Slot {
    /// The key of the file the request is about.
    pub key: FileKey,
    /// The decoded full path, for v3 tokens.
    pub full_path: String,
    /// The raw query string (tokens: never logged).
    pub query: String,
}

impl Slot {
    /// The highest-version token of the query.
    pub fn token(&self) -> Result<Token, ApiError> {
        Ok(Token::from_query(&self.query)?)
    }
}

/// Checks `token` as the slot's token for an upload of `size` bytes of `content_type`,
/// against every secret valid now. A v3 token signs a method: the first of `methods` it was
/// signed for passes (tus creations accept a slot minted for POST or for PUT).
pub fn authorize(
    state: &AppState,
    slot: &Slot,
    token: &Token,
    size: u64,
    content_type: &str,
    methods: &[&str],
) -> Result<(), ApiError> {
    let keys = state.keys();
    let secrets = keys.valid_at(SystemTime::now());
    let now = now_unix();
    let mut result = Err(AuthError::Mismatch);
    for method in methods {
        let claims = Claims {
            path: slot.key.as_str(),
            full_path: &slot.full_path,
            method,
            size,
            content_type,
            now_unix: now,
        };
        result = token.verify(&secrets, &claims);
        if !matches!(result, Err(AuthError::Mismatch)) {
            break;
        }
    }
    Ok(result?)
}
