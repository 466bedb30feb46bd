//! Hashing bytes as they are written: SHA-256 and SHA-512 for whole-file integrity (RFC 9530),
//! SHA-1, SHA-256 and MD5 for tus `Upload-Checksum`. The sha2 crate picks the CPU's SHA
//! extensions at run time where they exist.

use sha2::Digest;

/// Which digests to compute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hashing {
    /// SHA-256.
    pub sha256: bool,
    /// SHA-512.
    pub sha512: bool,
    /// SHA-1 (tus checksum).
    pub sha1: bool,
    /// MD5 (tus checksum).
    pub md5: bool,
}

impl Hashing {
    /// Nothing.
    pub const NONE: Hashing = Hashing {
        sha256: false,
        sha512: false,
        sha1: false,
        md5: false,
    };

    /// SHA-256 only.
    pub fn sha256() -> Hashing {
        Hashing {
            sha256: true,
            ..Hashing::NONE
        }
    }

    /// Whether anything is computed.
    pub fn any(self) -> bool {
        self.sha256 || self.sha512 || self.sha1 || self.md5
    }
}

/// The digests of some bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256.
    pub sha256: Option<Vec<u8>>,
    /// SHA-512.
    pub sha512: Option<Vec<u8>>,
    /// SHA-1.
    pub sha1: Option<Vec<u8>>,
    /// MD5.
    pub md5: Option<Vec<u8>>,
}

/// Running hashers.
#[derive(Debug, Clone, Default)]
pub struct Hashers {
    sha256: Option<sha2::Sha256>,
    sha512: Option<sha2::Sha512>,
    sha1: Option<sha1::Sha1>,
    md5: Option<md5::Md5>,
}

impl Hashers {
    /// Hashers for `hashing`; `None` when nothing is asked for.
    pub fn new(hashing: Hashing) -> Option<Box<Self>> {
        hashing.any().then(|| {
            Box::new(Self {
                sha256: hashing.sha256.then(sha2::Sha256::new),
                sha512: hashing.sha512.then(sha2::Sha512::new),
                sha1: hashing.sha1.then(sha1::Sha1::new),
                md5: hashing.md5.then(md5::Md5::new),
            })
        })
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
    }

    /// The digests so far.
    pub fn digests(&self) -> Digests {
        Digests {
            sha256: self.sha256.clone().map(|h| h.finalize().to_vec()),
            sha512: self.sha512.clone().map(|h| h.finalize().to_vec()),
            sha1: self.sha1.clone().map(|h| h.finalize().to_vec()),
            md5: self.md5.clone().map(|h| h.finalize().to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let mut h = Hashers::new(Hashing {
            sha256: true,
            sha512: false,
            sha1: true,
            md5: true,
        })
        .unwrap();
        h.update(b"ab");
        h.update(b"c");
        let d = h.digests();
        assert_eq!(
            hex::encode(d.sha256.unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex::encode(d.sha1.unwrap()), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex::encode(d.md5.unwrap()), "900150983cd24fb0d6963f7d28e17f72");
        assert!(d.sha512.is_none());
        assert!(Hashers::new(Hashing::NONE).is_none());
    }
}
