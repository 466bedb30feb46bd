//! RFC 9530 digest fields: `Content-Digest` / `Repr-Digest: sha-256=:<base64>:, sha-512=:…:`.
//! For a whole-file PUT both describe the same bytes. Algorithms other than sha-256 and
//! sha-512 are ignored, as the RFC allows; a malformed field is an error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

/// A digest algorithm this server checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `sha-256`.
    Sha256,
    /// `sha-512`.
    Sha512,
}

/// The digests a request asks us to verify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// SHA-256 bytes.
    pub sha256: Option<Vec<u8>>,
    /// SHA-512 bytes.
    pub sha512: Option<Vec<u8>>,
}

/// A digest field that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0} header")]
pub struct Malformed(pub &'static str);

/// Reads Content-Digest and Repr-Digest.
pub fn expected(headers: &HeaderMap) -> Result<Expected, Malformed> {
    let mut out = Expected::default();
    for name in ["content-digest", "repr-digest"] {
        for value in headers.get_all(name) {
            let text = value.to_str().map_err(|_| Malformed(field_name(name)))?;
            for member in text.split(',') {
                let (key, value) = member.trim().split_once('=').ok_or(Malformed(field_name(name)))?;
                let key = key.trim().to_ascii_lowercase();
                let value = value.trim();
                let b64 = value
                    .strip_prefix(':')
                    .and_then(|v| v.strip_suffix(':'))
                    .ok_or(Malformed(field_name(name)))?;
                let bytes = STANDARD.decode(b64).map_err(|_| Malformed(field_name(name)))?;
                let (slot, len) = match key.as_str() {
                    "sha-256" => (&mut out.sha256, 32),
                    "sha-512" => (&mut out.sha512, 64),
                    _ => continue,
                };
                if bytes.len() != len {
                    return Err(Malformed(field_name(name)));
                }
                if slot.as_ref().is_some_and(|prev| *prev != bytes) {
                    return Err(Malformed(field_name(name)));
                }
                *slot = Some(bytes);
            }
        }
    }
    Ok(out)
}

fn field_name(lower: &str) -> &'static str {
    if lower == "content-digest" {
        "Content-Digest"
    } else {
        "Repr-Digest"
    }
}

/// `sha-256=:<base64>:` for a SHA-256 given in hex.
pub fn repr_digest_from_hex(sha256_hex: &str) -> Option<String> {
    let bytes = hex::decode(sha256_hex).ok()?;
    (bytes.len() == 32).then(|| format!("sha-256=:{}:", STANDARD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use sha2::{Digest, Sha256};

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn parses_rfc_9530_fields() {
        let digest = Sha256::digest(b"hello");
        let field = format!("sha-256=:{}:", STANDARD.encode(digest));
        let e = expected(&headers("content-digest", &field)).unwrap();
        assert_eq!(e.sha256.as_deref(), Some(&digest[..]));
        let both = format!("{field}, unixsum=:AAAA:, sha-512=:{}:", STANDARD.encode([7u8; 64]));
        let e = expected(&headers("repr-digest", &both)).unwrap();
        assert!(e.sha256.is_some() && e.sha512.is_some());
        assert_eq!(expected(&HeaderMap::new()).unwrap(), Expected::default());
        assert_eq!(repr_digest_from_hex(&hex::encode(digest)).unwrap(), field);
    }

    #[test]
    fn malformed_fields() {
        for bad in [
            "sha-256",
            "sha-256=abc",
            "sha-256=:not base64!:",
            "sha-256=:AAAA:",
            &format!("sha-512=:{}:", STANDARD.encode([1u8; 32])),
        ] {
            assert!(expected(&headers("content-digest", bad)).is_err(), "{bad}");
        }
        let mut h = headers("content-digest", &format!("sha-256=:{}:", STANDARD.encode([1u8; 32])));
        h.insert(
            "repr-digest",
            HeaderValue::from_str(&format!("sha-256=:{}:", STANDARD.encode([2u8; 32]))).unwrap(),
        );
        assert!(expected(&h).is_err(), "two different sha-256 values disagree");
    }
}
