//! Upload tokens: `v`, `v2`, `token` (Metronome) and `v3` (Go hmac-file-server 3.x), and
//! Metronome's delete token. Pure functions: no I/O, no HTTP types.
//!
//! Every token is the lowercase hex HMAC-SHA256 of a message, keyed with the shared secret,
//! and is compared in constant time. When a query carries several, the highest version wins.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The content type signed by v2/token when the PUT has no Content-Type header.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Why a token is refused. None of them carries the token or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `v`, `v2`, `token` or `v3` parameter.
    #[error("no token in the query")]
    Missing,
    /// Not 64 hex digits, or a v3 token without a numeric `expires`.
    #[error("malformed token")]
    Malformed,
    /// The HMAC does not match.
    #[error("token does not match")]
    Mismatch,
    /// A v3 token whose `expires` has passed.
    #[error("token expired")]
    Expired,
}

/// Which protocol a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// `v`: `path + " " + size`.
    V,
    /// `token` (Metronome): like v2.
    Token,
    /// `v2`: `path + "\0" + size + "\0" + content_type`.
    V2,
    /// `v3` + `expires`: `METHOD + "\n" + expires + "\n" + full request path`.
    V3,
}

impl Protocol {
    /// The query parameter name.
    pub fn param(self) -> &'static str {
        match self {
            Protocol::V => "v",
            Protocol::Token => "token",
            Protocol::V2 => "v2",
            Protocol::V3 => "v3",
        }
    }

    /// Whether the token signs the upload's size (and so needs a Content-Length).
    pub fn signs_size(self) -> bool {
        self != Protocol::V3
    }
}

/// A token found in a request's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its protocol.
    pub protocol: Protocol,
    mac: [u8; 32],
    expires: Option<u64>,
}

/// What a request claims, to be checked against its token.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The decoded path after the upload prefix (`abc123/photo.jpg`).
    pub path: &'a str,
    /// The decoded full request path (`/upload/abc123/photo.jpg`), for v3.
    pub full_path: &'a str,
    /// The request method, for v3.
    pub method: &'a str,
    /// The size the upload claims (Content-Length, or the total of a Content-Range).
    pub size: u64,
    /// The Content-Type header as sent, or [`DEFAULT_CONTENT_TYPE`] when absent.
    pub content_type: &'a str,
    /// Now, in unix seconds, for v3 expiry.
    pub now_unix: u64,
}

impl Token {
    /// Finds the highest-version token in a raw query string.
    pub fn from_query(query: &str) -> Result<Token, AuthError> {
        let mut best: Option<(Protocol, String)> = None;
        let mut expires = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let protocol = match name.as_ref() {
                "v" => Protocol::V,
                "token" => Protocol::Token,
                "v2" => Protocol::V2,
                "v3" => Protocol::V3,
                "expires" => {
                    expires = Some(value.into_owned());
                    continue;
                }
                _ => continue,
            };
            if best.as_ref().is_none_or(|(p, _)| protocol > *p) {
                best = Some((protocol, value.into_owned()));
            }
        }
        let (protocol, hex_mac) = best.ok_or(AuthError::Missing)?;
        let mut mac = [0u8; 32];
        hex::decode_to_slice(hex_mac.as_bytes(), &mut mac).map_err(|_| AuthError::Malformed)?;
        let expires = if protocol == Protocol::V3 {
            let text = expires.ok_or(AuthError::Malformed)?;
            Some(text.parse::<u64>().map_err(|_| AuthError::Malformed)?)
        } else {
            None
        };
        Ok(Token { protocol, mac, expires })
    }

    /// Checks the token against the claims with any of `secrets` (current first), in
    /// constant time per comparison.
    pub fn verify(&self, secrets: &[&Secret], claims: &Claims<'_>) -> Result<(), AuthError> {
        if let Some(expires) = self.expires
            && claims.now_unix > expires
        {
            return Err(AuthError::Expired);
        }
        let message = self.message(claims);
        for secret in secrets {
            let mut mac = new_mac(secret);
            mac.update(&message);
            if mac.verify_slice(&self.mac).is_ok() {
                return Ok(());
            }
        }
        Err(AuthError::Mismatch)
    }

    fn message(&self, c: &Claims<'_>) -> Vec<u8> {
        match self.protocol {
            Protocol::V => format!("{} {}", c.path, c.size).into_bytes(),
            Protocol::V2 | Protocol::Token => format!("{}\0{}\0{}", c.path, c.size, c.content_type).into_bytes(),
            Protocol::V3 => format!("{}\n{}\n{}", c.method, self.expires.unwrap_or_default(), c.full_path).into_bytes(),
        }
    }
}

/// The secrets that tokens may be signed with: the current one and, for a while after a
/// rotation, the previous one, so slots minted just before the rotation still work.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Secret,
    previous: Option<(Secret, std::time::SystemTime)>,
}

impl KeyRing {
    /// A ring with one secret.
    pub fn new(current: Secret) -> Self {
        Self {
            current,
            previous: None,
        }
    }

    /// The ring after a rotation to `next`: the current secret stays valid until `grace_until`.
    /// Rotating to the same secret changes nothing.
    pub fn rotated(&self, next: Secret, grace_until: std::time::SystemTime) -> Self {
        if next == self.current {
            return self.clone();
        }
        Self {
            current: next,
            previous: Some((self.current.clone(), grace_until)),
        }
    }

    /// The current secret.
    pub fn current(&self) -> &Secret {
        &self.current
    }

    /// The secrets valid at `now`, current first.
    pub fn valid_at(&self, now: std::time::SystemTime) -> Vec<&Secret> {
        let mut out = vec![&self.current];
        if let Some((previous, until)) = &self.previous
            && now <= *until
        {
            out.push(previous);
        }
        out
    }
}

fn new_mac(secret: &Secret) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret.expose()).expect("HMAC accepts any key length")
}

fn hex_hmac(secret: &Secret, message: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The `v` token for a path and size.
pub fn sign_v(secret: &Secret, path: &str, size: u64) -> String {
    hex_hmac(secret, format!("{path} {size}").as_bytes())
}

/// The `v2` (and Metronome `token`) token for a path, size and content type.
pub fn sign_v2(secret: &Secret, path: &str, size: u64, content_type: &str) -> String {
    hex_hmac(secret, format!("{path}\0{size}\0{content_type}").as_bytes())
}

/// The `v3` token for a method, expiry and full request path.
pub fn sign_v3(secret: &Secret, method: &str, expires: u64, full_path: &str) -> String {
    hex_hmac(secret, format!("{method}\n{expires}\n{full_path}").as_bytes())
}

/// Metronome's delete token: `HMAC(secret, path + "\0" + delete_secret)`.
pub fn sign_delete(secret: &Secret, path: &str, delete_secret: &Secret) -> String {
    let mut message = format!("{path}\0").into_bytes();
    message.extend_from_slice(delete_secret.expose());
    hex_hmac(secret, &message)
}

/// Checks a Metronome delete token (the `token` query parameter) in constant time against
/// each valid secret; `delete_secret` is Metronome's `http_file_delete_secret` (`None`: the
/// same as the secret).
pub fn verify_delete(
    query: &str,
    secrets: &[&Secret],
    path: &str,
    delete_secret: Option<&Secret>,
) -> Result<(), AuthError> {
    let value = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or(AuthError::Missing)?;
    let mut given = [0u8; 32];
    hex::decode_to_slice(value.as_bytes(), &mut given).map_err(|_| AuthError::Malformed)?;
    for secret in secrets {
        // Without a DeleteSecret of its own, each secret is its own delete secret, so tokens
        // minted before a rotation keep working through the grace period.
        let mut message = format!("{path}\0").into_bytes();
        message.extend_from_slice(delete_secret.unwrap_or(secret).expose());
        let mut mac = new_mac(secret);
        mac.update(&message);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(AuthError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "abc123/photo.jpg";
    const SIZE: u64 = 1_048_576;

    fn secret() -> Secret {
        Secret::new("secret")
    }

    fn claims(content_type: &'static str) -> Claims<'static> {
        Claims {
            path: PATH,
            full_path: "/upload/abc123/photo.jpg",
            method: "PUT",
            size: SIZE,
            content_type,
            now_unix: 1_600_000_000,
        }
    }

    #[test]
    fn spec_vectors() {
        let s = secret();
        assert_eq!(
            sign_v(&s, PATH, SIZE),
            "4b0508f1cc001e22b49db4d5f800445f6444a8ade3263172f73efebc288fc30a"
        );
        assert_eq!(
            sign_v2(&s, PATH, SIZE, "image/jpeg"),
            "6e1d1808f1652db5687c3d84593a25c9b29bf3cad635ad2b5750d06d6ee65e5f"
        );
        assert_eq!(
            sign_v2(&s, PATH, SIZE, DEFAULT_CONTENT_TYPE),
            "9be80ed95aba6cc2661b4bd7e254512967007d614d98e0583eefadf1bb55b3d7"
        );
        assert_eq!(
            sign_v2(&s, PATH, SIZE, ""),
            "3e49b6a2dfbee40461f49029cb0858aa806c08d17f6f76609d4bb3f5d9e735ef"
        );
        assert_eq!(
            sign_v3(&s, "PUT", 1_700_000_000, "/upload/abc123/photo.jpg"),
            "a0969507e448a423efa87ead46ce9e89dca183d1497ce43393720ca1dd0efaae"
        );
    }

    #[test]
    fn verifies_each_protocol() {
        let s = secret();
        let q = format!("v={}", sign_v(&s, PATH, SIZE));
        Token::from_query(&q)
            .unwrap()
            .verify(&[&s], &claims("image/png"))
            .unwrap();
        let q = format!("v2={}", sign_v2(&s, PATH, SIZE, "image/jpeg"));
        Token::from_query(&q)
            .unwrap()
            .verify(&[&s], &claims("image/jpeg"))
            .unwrap();
        assert_eq!(
            Token::from_query(&q).unwrap().verify(&[&s], &claims("image/png")),
            Err(AuthError::Mismatch),
            "v2 signs the content type"
        );
        let q = format!("token={}", sign_v2(&s, PATH, SIZE, ""));
        Token::from_query(&q).unwrap().verify(&[&s], &claims("")).unwrap();
        let q = format!(
            "v3={}&expires=1700000000",
            sign_v3(&s, "PUT", 1_700_000_000, "/upload/abc123/photo.jpg")
        );
        Token::from_query(&q).unwrap().verify(&[&s], &claims("")).unwrap();
    }

    #[test]
    fn wrong_size_path_or_secret_fails() {
        let s = secret();
        let t = Token::from_query(&format!("v={}", sign_v(&s, PATH, SIZE))).unwrap();
        let mut c = claims("");
        c.size = SIZE + 1;
        assert_eq!(t.verify(&[&s], &c), Err(AuthError::Mismatch));
        let mut c = claims("");
        c.path = "abc123/other.jpg";
        assert_eq!(t.verify(&[&s], &c), Err(AuthError::Mismatch));
        assert_eq!(
            t.verify(&[&Secret::new("other")], &claims("")),
            Err(AuthError::Mismatch)
        );
        t.verify(&[&Secret::new("other"), &s], &claims("")).unwrap();
    }

    #[test]
    fn v3_expiry_has_no_grace() {
        let s = secret();
        let q = format!(
            "v3={}&expires=1700000000",
            sign_v3(&s, "PUT", 1_700_000_000, "/upload/abc123/photo.jpg")
        );
        let t = Token::from_query(&q).unwrap();
        let mut c = claims("");
        c.now_unix = 1_700_000_000;
        t.verify(&[&s], &c).unwrap();
        c.now_unix = 1_700_000_001;
        assert_eq!(t.verify(&[&s], &c), Err(AuthError::Expired));
        let mut c = claims("");
        c.method = "GET";
        assert_eq!(t.verify(&[&s], &c), Err(AuthError::Mismatch), "v3 signs the method");
    }

    #[test]
    fn highest_version_wins() {
        let s = secret();
        let good_v2 = sign_v2(&s, PATH, SIZE, "image/jpeg");
        let q = format!("v=deadbeef&v2={good_v2}");
        let t = Token::from_query(&q).unwrap();
        assert_eq!(t.protocol, Protocol::V2);
        t.verify(&[&s], &claims("image/jpeg")).unwrap();
        let q = format!("v2={good_v2}&v3={}&expires=1", "00".repeat(32));
        assert_eq!(Token::from_query(&q).unwrap().protocol, Protocol::V3);
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(Token::from_query(""), Err(AuthError::Missing));
        assert_eq!(Token::from_query("x=1&y=2"), Err(AuthError::Missing));
        assert_eq!(Token::from_query("v="), Err(AuthError::Malformed));
        assert_eq!(Token::from_query("v=xyz"), Err(AuthError::Malformed));
        assert_eq!(
            Token::from_query(&format!("v={}", "a".repeat(63))),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            Token::from_query(&format!("v={}", "a".repeat(66))),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            Token::from_query(&format!("v3={}", "a".repeat(64))),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            Token::from_query(&format!("v3={}&expires=soon", "a".repeat(64))),
            Err(AuthError::Malformed)
        );
        // Upper-case hex is still the same MAC.
        let s = secret();
        let upper = sign_v(&s, PATH, SIZE).to_uppercase();
        Token::from_query(&format!("v={upper}"))
            .unwrap()
            .verify(&[&s], &claims(""))
            .unwrap();
    }

    #[test]
    fn key_ring_rotation() {
        use std::time::{Duration, SystemTime};
        let now = SystemTime::now();
        let ring = KeyRing::new(Secret::new("old"));
        assert_eq!(ring.valid_at(now).len(), 1);
        let ring = ring.rotated(Secret::new("new"), now + Duration::from_secs(10));
        assert_eq!(ring.current(), &Secret::new("new"));
        assert_eq!(ring.valid_at(now), vec![&Secret::new("new"), &Secret::new("old")]);
        assert_eq!(ring.valid_at(now + Duration::from_secs(11)), vec![&Secret::new("new")]);
        let same = ring.rotated(Secret::new("new"), now + Duration::from_secs(99));
        assert_eq!(
            same.valid_at(now).len(),
            2,
            "re-reading an unchanged secret keeps the grace"
        );
    }

    #[test]
    fn delete_token() {
        let s = secret();
        let d = Secret::new("delete-secret");
        let t = sign_delete(&s, PATH, &d);
        verify_delete(&format!("token={t}"), &[&s], PATH, Some(&d)).unwrap();
        assert_eq!(
            verify_delete(&format!("token={t}"), &[&s], "abc123/x", Some(&d)),
            Err(AuthError::Mismatch)
        );
        assert_eq!(verify_delete("", &[&s], PATH, Some(&d)), Err(AuthError::Missing));
        let old = Secret::new("old");
        let old_token = sign_delete(&old, PATH, &old);
        verify_delete(&format!("token={old_token}"), &[&s, &old], PATH, None).unwrap();
        assert_eq!(
            verify_delete(&format!("token={old_token}"), &[&s], PATH, None),
            Err(AuthError::Mismatch)
        );
    }
}
