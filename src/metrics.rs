//! Prometheus metrics. The Go server's names stay as they are, so existing dashboards keep
//! working: `hmac_file_server_uploads_total`, `hmac_file_server_upload_errors_total`,
//! `hmac_file_server_upload_duration_seconds` and `hmac_file_server_goroutines` (here: live
//! tokio tasks). The rest are ours.
//!
//! Recording goes through the `metrics` facade; without an installed recorder (tests, the
//! metrics listener switched off) every call is a no-op. The metrics every request touches
//! are looked up once, by [`install`], and kept as handles: a lookup by name builds a key (two
//! label strings for the request duration), hashes it and searches the registry, which cost
//! 6-12 µs of server CPU per small PUT and about 3 µs per small GET (docs/performance.md,
//! round 9).

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Uploads stored.
pub const UPLOADS: &str = "hmac_file_server_uploads_total";
/// Upload requests answered with an error or broken off.
pub const UPLOAD_ERRORS: &str = "hmac_file_server_upload_errors_total";
/// Seconds from the first byte of an upload request to its answer.
pub const UPLOAD_DURATION: &str = "hmac_file_server_upload_duration_seconds";
/// Live tasks (the Go name is kept for dashboards).
pub const GOROUTINES: &str = "hmac_file_server_goroutines";
/// Successful GETs (200 and 206).
pub const DOWNLOADS: &str = "hmac_file_server_downloads_total";
/// Body bytes received in uploads.
pub const UPLOAD_BYTES: &str = "hmac_file_server_upload_bytes_total";
/// Body bytes announced in download answers.
pub const DOWNLOAD_BYTES: &str = "hmac_file_server_download_bytes_total";
/// Uploads in progress.
pub const ACTIVE_UPLOADS: &str = "hmac_file_server_active_uploads";
/// Refused tokens.
pub const AUTH_FAILURES: &str = "hmac_file_server_auth_failures_total";
/// Bans imposed.
pub const BANS: &str = "hmac_file_server_bans_total";
/// Bans withheld from a loopback peer that sends forwarding headers while no proxy is trusted.
pub const BANS_WITHHELD: &str = "hmac_file_server_bans_withheld_total";
/// Requests whose forwarding headers were ignored: their peer is not a trusted proxy.
pub const UNTRUSTED_FORWARDED: &str = "hmac_file_server_untrusted_forwarded_total";
/// Client addresses banned now.
pub const BANNED_CLIENTS: &str = "hmac_file_server_banned_clients";
/// Files removed by retention, by reason.
pub const RETENTION_DELETIONS: &str = "hmac_file_server_retention_deletions_total";
/// Files in the store.
pub const STORE_FILES: &str = "hmac_file_server_store_files";
/// Bytes in the store.
pub const STORE_BYTES: &str = "hmac_file_server_store_bytes";
/// Unfinished resumable uploads with bytes kept.
pub const UNFINISHED_UPLOADS: &str = "hmac_file_server_unfinished_uploads";
/// Bytes unfinished resumable uploads hold.
pub const UNFINISHED_BYTES: &str = "hmac_file_server_unfinished_bytes";
/// Requests to the S3 store, by operation and outcome (ok, refused: a 4xx answer, error).
pub const S3_REQUESTS: &str = "hmac_file_server_s3_requests_total";
/// Seconds per request to the S3 store, by operation.
pub const S3_REQUEST_DURATION: &str = "hmac_file_server_s3_request_duration_seconds";
/// Seconds per request, by method and status.
pub const REQUEST_DURATION: &str = "hmac_file_server_request_duration_seconds";

/// The reasons retention deletes a file for (labels of [`RETENTION_DELETIONS`] and words of
/// the deletion report): older than DeleteFilesAfterPeriod, older than MaxRetentionTime, the
/// store over MaxRetentionSize.
pub const RETENTION_REASONS: [&str; 3] = ["delete_files_after_period", "max_retention_time", "max_retention_size"];

/// Upload duration buckets: 10 ms to 10 min.
const UPLOAD_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Request duration buckets: 1 ms to 10 min.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// The handles of the metrics every request touches, made once the recorder is installed.
struct Hot {
    uploads: Counter,
    upload_errors: Counter,
    upload_duration: Histogram,
    upload_bytes: Counter,
    downloads: Counter,
    download_bytes: Counter,
    active_uploads: Gauge,
    store_files: Gauge,
    store_bytes: Gauge,
    /// The request duration by method ([`METHODS`]) and status (100-599), made on first use.
    requests: Box<[OnceLock<Histogram>]>,
}

static HOT: OnceLock<Hot> = OnceLock::new();

/// The methods whose request durations have handles; any other is looked up by name.
const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];
/// Statuses `FIRST_STATUS..FIRST_STATUS + STATUSES` have handles.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 500;

impl Hot {
    fn new() -> Self {
        Self {
            uploads: counter!(UPLOADS),
            upload_errors: counter!(UPLOAD_ERRORS),
            upload_duration: histogram!(UPLOAD_DURATION),
            upload_bytes: counter!(UPLOAD_BYTES),
            downloads: counter!(DOWNLOADS),
            download_bytes: counter!(DOWNLOAD_BYTES),
            active_uploads: gauge!(ACTIVE_UPLOADS),
            store_files: gauge!(STORE_FILES),
            store_bytes: gauge!(STORE_BYTES),
            requests: (0..METHODS.len() * STATUSES).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The request-duration histogram of `method` and `status`, when it has a handle.
    fn request(&self, method: &str, status: u16) -> Option<&Histogram> {
        let m = METHODS.iter().position(|&known| known == method)?;
        let s = usize::from(status.checked_sub(FIRST_STATUS)?);
        if s >= STATUSES {
            return None;
        }
        Some(self.requests[m * STATUSES + s].get_or_init(|| request_histogram(method, status)))
    }
}

fn request_histogram(method: &str, status: u16) -> Histogram {
    histogram!(REQUEST_DURATION, "method" => method.to_string(), "status" => status.to_string())
}

/// Installs the global recorder and returns the handle that renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(UPLOAD_DURATION.into()), UPLOAD_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), REQUEST_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(S3_REQUEST_DURATION.into()), REQUEST_BUCKETS))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    // Counters appear at 0 from the start, so rates work before the first event.
    for name in [
        UPLOADS,
        UPLOAD_ERRORS,
        DOWNLOADS,
        UPLOAD_BYTES,
        DOWNLOAD_BYTES,
        AUTH_FAILURES,
        BANS,
        BANS_WITHHELD,
        UNTRUSTED_FORWARDED,
    ] {
        counter!(name).absolute(0);
    }
    gauge!(ACTIVE_UPLOADS).set(0.0);
    gauge!(BANNED_CLIENTS).set(0.0);
    gauge!(UNFINISHED_UPLOADS).set(0.0);
    gauge!(UNFINISHED_BYTES).set(0.0);
    // The unlabelled histogram too (its buckets and _count at 0), so that dashboards and
    // alert rules see a series, not "no data", before the first upload.
    let _ = histogram!(UPLOAD_DURATION);
    for reason in RETENTION_REASONS {
        counter!(RETENTION_DELETIONS, "reason" => reason).absolute(0);
    }
    // Handles from the recorder just installed (made before it, they would record nothing).
    let _ = HOT.set(Hot::new());
    Ok(handle)
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(UPLOADS, "Uploads stored.");
    describe_counter!(
        UPLOAD_ERRORS,
        "Upload requests (PUT, POST, PATCH) answered with an error or broken off."
    );
    describe_histogram!(
        UPLOAD_DURATION,
        ::metrics::Unit::Seconds,
        "Duration of upload requests."
    );
    describe_gauge!(
        GOROUTINES,
        "Live tasks of the server (named after the Go server's gauge)."
    );
    describe_counter!(DOWNLOADS, "Downloads answered with 200 or 206.");
    describe_counter!(
        UPLOAD_BYTES,
        ::metrics::Unit::Bytes,
        "Body bytes received in upload requests."
    );
    describe_counter!(
        DOWNLOAD_BYTES,
        ::metrics::Unit::Bytes,
        "Body bytes sent in download answers."
    );
    describe_gauge!(ACTIVE_UPLOADS, "Uploads in progress.");
    describe_counter!(
        AUTH_FAILURES,
        "Requests refused for a missing, malformed, wrong or expired token."
    );
    describe_counter!(BANS, "Client addresses banned.");
    describe_counter!(
        BANS_WITHHELD,
        "Bans withheld from a loopback peer that sends forwarding headers while TrustedProxies is empty."
    );
    describe_counter!(
        UNTRUSTED_FORWARDED,
        "Requests whose forwarding headers (X-Forwarded-For, X-Real-IP, Forwarded) were ignored: their peer is not in TrustedProxies."
    );
    describe_gauge!(BANNED_CLIENTS, "Client addresses banned now.");
    describe_counter!(RETENTION_DELETIONS, "Files deleted by retention, by reason.");
    describe_gauge!(STORE_FILES, "Files in the store.");
    describe_gauge!(STORE_BYTES, ::metrics::Unit::Bytes, "Bytes in the store.");
    describe_gauge!(UNFINISHED_UPLOADS, "Unfinished resumable uploads with bytes kept.");
    describe_counter!(
        S3_REQUESTS,
        "Requests to the S3 store, by operation and outcome (ok, refused, error)."
    );
    describe_histogram!(
        S3_REQUEST_DURATION,
        ::metrics::Unit::Seconds,
        "Duration of requests to the S3 store, by operation."
    );
    describe_gauge!(
        UNFINISHED_BYTES,
        ::metrics::Unit::Bytes,
        "Bytes held by unfinished resumable uploads (bounded by MaxUnfinishedSize)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        ::metrics::Unit::Seconds,
        "Duration of requests by method and status."
    );
}

/// A request finished.
pub fn request_done(method: &str, status: u16, elapsed: Duration) {
    let Some(hot) = HOT.get() else { return };
    match hot.request(method, status) {
        Some(histogram) => histogram.record(elapsed.as_secs_f64()),
        None => request_histogram(method, status).record(elapsed.as_secs_f64()),
    }
}

/// An upload request (PUT, POST, PATCH) finished, successfully or not.
pub fn upload_done(ok: bool, elapsed: Duration) {
    let Some(hot) = HOT.get() else { return };
    if !ok {
        hot.upload_errors.increment(1);
    }
    hot.upload_duration.record(elapsed.as_secs_f64());
}

/// A file reached the store (a whole PUT, or the last piece of a resumable upload).
pub fn file_stored(bytes: u64) {
    if let Some(hot) = HOT.get() {
        hot.uploads.increment(1);
    }
    store_changed(1, bytes as i64);
}

/// Body bytes received.
pub fn upload_bytes(n: u64) {
    if let Some(hot) = HOT.get() {
        hot.upload_bytes.increment(n);
    }
}

/// A file was stored or removed: keep the store gauges current between full counts.
pub fn store_changed(files: i64, bytes: i64) {
    if let Some(hot) = HOT.get() {
        hot.store_files.increment(files as f64);
        hot.store_bytes.increment(bytes as f64);
    }
}

/// The store was counted in full.
pub fn store_counted(files: u64, bytes: u64) {
    gauge!(STORE_FILES).set(files as f64);
    gauge!(STORE_BYTES).set(bytes as f64);
}

/// A request to the S3 store ended.
pub fn s3_request(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(S3_REQUESTS, "operation" => operation, "outcome" => outcome).increment(1);
    histogram!(S3_REQUEST_DURATION, "operation" => operation).record(elapsed.as_secs_f64());
}

/// The unfinished uploads were counted.
pub fn unfinished_counted(uploads: u64, bytes: u64) {
    gauge!(UNFINISHED_UPLOADS).set(uploads as f64);
    gauge!(UNFINISHED_BYTES).set(bytes as f64);
}

/// A download was answered with `bytes` of body.
pub fn download(bytes: u64) {
    if let Some(hot) = HOT.get() {
        hot.downloads.increment(1);
        hot.download_bytes.increment(bytes);
    }
}

/// A token was refused.
pub fn auth_failure() {
    counter!(AUTH_FAILURES).increment(1);
}

/// A client was banned; `banned_now` is the number of bans in force.
pub fn banned(banned_now: usize) {
    counter!(BANS).increment(1);
    gauge!(BANNED_CLIENTS).set(banned_now as f64);
}

/// A ban started elsewhere in the cluster's shared count (Redis): counted once, by the
/// instance whose request tipped it.
pub fn ban_counted() {
    counter!(BANS).increment(1);
}

/// A ban was withheld (see `ops::bans`).
pub fn ban_withheld() {
    counter!(BANS_WITHHELD).increment(1);
}

/// A request's forwarding headers were ignored: its peer is not a trusted proxy.
pub fn untrusted_forwarded() {
    counter!(UNTRUSTED_FORWARDED).increment(1);
}

/// The number of bans in force changed (a ban lifted).
pub fn bans_in_force(n: usize) {
    gauge!(BANNED_CLIENTS).set(n as f64);
}

/// Retention removed a file.
pub fn retention_deleted(reason: &'static str) {
    counter!(RETENTION_DELETIONS, "reason" => reason).increment(1);
}

/// Uploads in progress: +1 at start, -1 at the end (a guard does both).
pub struct ActiveUpload(());

impl ActiveUpload {
    /// Counts an upload as running until dropped.
    pub fn start() -> Self {
        if let Some(hot) = HOT.get() {
            hot.active_uploads.increment(1.0);
        }
        ActiveUpload(())
    }
}

impl Drop for ActiveUpload {
    fn drop(&mut self) {
        if let Some(hot) = HOT.get() {
            hot.active_uploads.decrement(1.0);
        }
    }
}

/// Renders the text exposition, with the live-task gauge read now.
pub fn render(handle: &PrometheusHandle) -> String {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        gauge!(GOROUTINES).set(rt.metrics().num_alive_tasks() as f64);
    }
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_durations_have_a_handle_per_known_method_and_status_and_no_other() {
        // Without a recorder the handles record nothing; their slots are what is checked.
        let hot = Hot::new();
        for method in METHODS {
            for status in [100, 200, 201, 404, 599] {
                let first = hot.request(method, status).expect("a handle");
                let again = hot.request(method, status).expect("a handle");
                assert!(std::ptr::eq(first, again), "{method} {status}: made once, then reused");
            }
            assert!(hot.request(method, 99).is_none(), "{method} 99");
            assert!(hot.request(method, 600).is_none(), "{method} 600");
        }
        assert!(hot.request("PROPFIND", 200).is_none());
        assert!(hot.request("-", 400).is_none());
        // Neighbouring slots are distinct: the last status of one method is not the first of
        // the next.
        let last_get = hot.request("GET", 599).unwrap();
        let first_head = hot.request("HEAD", 100).unwrap();
        assert!(!std::ptr::eq(last_get, first_head));
        assert_eq!(
            hot.requests.iter().filter(|slot| slot.get().is_some()).count(),
            METHODS.len() * 5
        );
    }
}
