//! The S3-compatible bucket, when `StoreBackend = "s3"`.

use crate::config::keys;
use crate::config::reader::Reader;
use crate::config::{Secret, StoreBackend};

/// Smallest part of a multipart upload that S3 accepts (but for the last).
const MIN_PART_BYTES: u64 = 5 << 20;
/// Most parts of one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Largest part S3 accepts.
const MAX_PART_BYTES: u64 = 5 << 30;

/// Where and how the bucket is reached. Debug never prints the secret key.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The API address; `None` = AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// Prefix of every object key: empty, or ending with `/`.
    pub prefix: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Path-style addresses.
    pub path_style: bool,
    /// Part size of multipart uploads.
    pub part_bytes: u64,
}

impl S3Settings {
    /// `None` unless the backend is S3 (the keys are still read, so a bad one is reported).
    /// The largest upload must fit in S3's 10,000 parts of a multipart upload.
    pub(in crate::config) fn check_fits(&self, r: &mut Reader<'_>, max_upload_bytes: u64) {
        let most = MAX_PARTS * self.part_bytes;
        if max_upload_bytes > most {
            let needed = max_upload_bytes.div_ceil(MAX_PARTS).div_ceil(1 << 20);
            r.fail(
                &keys::S3_PART_SIZE,
                format!(
                    "{} parts of {} bytes hold at most {most} bytes, less than MaxUploadSize ({max_upload_bytes}): \
                     S3 takes at most {MAX_PARTS} parts; set S3PartSize to at least \"{needed}MiB\"",
                    MAX_PARTS, self.part_bytes
                ),
                (),
            );
        }
    }

    pub(in crate::config) fn read(r: &mut Reader<'_>, backend: StoreBackend) -> Option<Self> {
        let endpoint = r.text(&keys::S3_ENDPOINT);
        let region = r.text(&keys::S3_REGION);
        let bucket = r.text(&keys::S3_BUCKET);
        let prefix = r.text(&keys::S3_PREFIX).trim_matches('/').to_string();
        let access_key_id = r.text(&keys::S3_ACCESS_KEY_ID);
        let inline = r.text(&keys::S3_SECRET_ACCESS_KEY);
        let secret_file = r.path(&keys::S3_SECRET_ACCESS_KEY_FILE);
        let path_style = r.boolean(&keys::S3_PATH_STYLE);
        let part_bytes = r.size(&keys::S3_PART_SIZE);
        if !(MIN_PART_BYTES..=MAX_PART_BYTES).contains(&part_bytes) {
            r.fail(
                &keys::S3_PART_SIZE,
                format!("{part_bytes} is outside 5 MiB ..= 5 GiB, what S3 takes for a part"),
                (),
            );
        }
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            r.fail(
                &keys::S3_ENDPOINT,
                format!("`{endpoint}` is not an http:// or https:// address"),
                (),
            );
        }
        if !prefix.is_empty()
            && let Err(e) = crate::key::FileKey::parse_decoded(&prefix)
        {
            r.fail(&keys::S3_PREFIX, format!("`{prefix}` is not a usable prefix: {e}"), ());
        }
        if backend != StoreBackend::S3 {
            return None;
        }
        if bucket.is_empty() {
            r.fail(&keys::S3_BUCKET, "StoreBackend = \"s3\" needs S3Bucket", ());
        }
        if access_key_id.is_empty() {
            r.fail(
                &keys::S3_ACCESS_KEY_ID,
                "StoreBackend = \"s3\" needs S3AccessKeyId (or AWS_ACCESS_KEY_ID)",
                (),
            );
        }
        let secret_access_key = match (&inline[..], &secret_file) {
            ("", None) => r.fail(
                &keys::S3_SECRET_ACCESS_KEY,
                "StoreBackend = \"s3\" needs S3SecretAccessKey, S3SecretAccessKeyFile or AWS_SECRET_ACCESS_KEY",
                None,
            ),
            (s, None) => Some(Secret::new(s.as_bytes())),
            ("", Some(path)) => match super::auth::read_secret_file(path) {
                Ok(s) => Some(s),
                Err(e) => r.fail(&keys::S3_SECRET_ACCESS_KEY_FILE, e, None),
            },
            (_, Some(_)) => r.fail(
                &keys::S3_SECRET_ACCESS_KEY_FILE,
                "set S3SecretAccessKey or S3SecretAccessKeyFile, not both",
                None,
            ),
        }?;
        Some(Self {
            endpoint: (!endpoint.is_empty()).then_some(endpoint),
            region,
            bucket,
            prefix: if prefix.is_empty() {
                prefix
            } else {
                format!("{prefix}/")
            },
            access_key_id,
            secret_access_key,
            path_style,
            part_bytes,
        })
    }
}
