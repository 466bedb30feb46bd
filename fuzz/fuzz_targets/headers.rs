//! Every parser of request headers: Range, If-Range and the conditional headers, Content-Range
//! of session resumes, Content-Length and the tus numbers, RFC 9530 Content-Digest /
//! Repr-Digest, the tus headers (Upload-Metadata, Upload-Checksum, Upload-Concat,
//! Upload-Defer-Length), the IETF resumable-upload draft's (Upload-Draft-Interop-Version,
//! Upload-Complete / Upload-Incomplete), X-Session-Token, Content-Type, and the forwarded
//! client address.
//!
//! Properties: no panic on any header set; every value a parser accepts is within the rules
//! the handlers rely on (a range inside the file, a resume offset below the total, digests of
//! the algorithm's length, concatenation ids that are valid ids, a session token of the allowed
//! alphabet, a forwarded address only from a trusted peer).
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use hmac_file_server::http::headers::{self, UploadConcat, conditional, digest, range};
use hmac_file_server::ops::bans;
use hmac_file_server::state::valid_id;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The headers these parsers read; the fuzzer picks names by index so it does not have to
/// guess them, plus any name it makes up.
const NAMES: &[&str] = &[
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "content-range",
    "content-length",
    "content-type",
    "content-digest",
    "repr-digest",
    "want-repr-digest",
    "upload-offset",
    "upload-length",
    "upload-metadata",
    "upload-checksum",
    "upload-concat",
    "upload-defer-length",
    "tus-resumable",
    "x-session-token",
    "x-forwarded-for",
    "x-real-ip",
    "upload-draft-interop-version",
    "upload-complete",
    "upload-incomplete",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    headers: Vec<(Name<'a>, &'a [u8])>,
    size: u64,
    etag: &'a str,
    modified_unix: u32,
    peer: Option<[u8; 4]>,
    trust_peer: bool,
}

#[derive(Arbitrary, Debug)]
enum Name<'a> {
    Known(u8),
    Other(&'a str),
}

fuzz_target!(|input: Input<'_>| {
    let mut map = HeaderMap::new();
    for (name, value) in &input.headers {
        let name = match name {
            Name::Known(i) => HeaderName::from_static(NAMES[usize::from(*i) % NAMES.len()]),
            Name::Other(text) => match HeaderName::from_bytes(text.as_bytes()) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
    }

    // Range against a file of `size` bytes.
    for value in map.get_all("range").iter().filter_map(|v| v.to_str().ok()) {
        match range::parse(value, input.size) {
            range::RangeRequest::Partial { start, end } => {
                assert!(
                    start <= end && end < input.size,
                    "{value:?} on {}: {start}-{end}",
                    input.size
                );
            }
            range::RangeRequest::Full | range::RangeRequest::Unsatisfiable => {}
        }
    }
    let modified = UNIX_EPOCH + Duration::from_secs(u64::from(input.modified_unix));
    let _ = conditional::not_modified(&map, input.etag, modified);
    let _ = conditional::if_range_holds(&map, input.etag, modified);

    if let Ok(Some((first, total))) = headers::content_range(&map) {
        assert!(first < total);
    }
    let _ = headers::content_length(&map);
    let _ = headers::number(&map, "upload-offset");
    let _ = headers::number(&map, "upload-length");
    let _ = headers::signed_content_type(&map);

    if let Ok(expected) = digest::expected(&map) {
        assert!(expected.sha256.as_ref().is_none_or(|d| d.len() == 32));
        assert!(expected.sha512.as_ref().is_none_or(|d| d.len() == 64));
    }
    // A Repr-Digest the server writes reads back as the same digest.
    let hex: String = input.etag.bytes().take(32).map(|b| format!("{b:02x}")).collect();
    if let Some(field) = digest::repr_digest_from_hex(&hex) {
        let mut written = HeaderMap::new();
        written.insert("repr-digest", HeaderValue::from_str(&field).unwrap());
        let read = digest::expected(&written).expect("our own Repr-Digest parses");
        assert_eq!(read.sha256.map(hex_of), Some(hex));
    }

    if let Some(raw) = headers::upload_metadata_raw(&map) {
        let _ = headers::parse_metadata(&raw);
    }
    let _ = headers::upload_checksum(&map);
    if let Ok(UploadConcat::Final(ids)) = headers::upload_concat(&map) {
        assert!(!ids.is_empty() && ids.iter().all(|id| valid_id(id)), "{ids:?}");
    }
    let _ = headers::upload_defer_length(&map);
    let _ = headers::require_tus(&map);
    if let Ok(Some(token)) = headers::session_token(&map) {
        assert!((16..=128).contains(&token.len()));
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }

    // The draft's headers: a version is one of those spoken; completeness reads the same in
    // both spellings of interop version 3 and the others.
    if let Ok(Some(version)) = headers::draft::interop_version(&map) {
        assert!(headers::draft::INTEROP_VERSIONS.contains(&version));
        if let Ok(complete) = headers::draft::upload_complete(&map, version) {
            let (name, value) = headers::draft::complete_header(version, complete);
            let mut answer = HeaderMap::new();
            answer.insert(name, HeaderValue::from_static(value));
            assert_eq!(headers::draft::upload_complete(&answer, version).ok(), Some(complete));
        }
    }

    // The client address: a forwarded one only from a trusted peer.
    let peer = input.peer.map(IpAddr::from);
    let trusted: Vec<ipnet::IpNet> = match (peer, input.trust_peer) {
        (Some(ip), true) => vec![ip.into()],
        _ => Vec::new(),
    };
    let client = bans::client_ip(peer, &map, &trusted);
    if let Some(ip) = peer
        && !input.trust_peer
    {
        assert_eq!(client, Some(ip), "an untrusted peer is its own client");
    }
    for value in map.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',') {
            if let Some(IpAddr::V6(v6)) = bans::parse_forwarded_addr(item) {
                assert!(
                    v6.to_ipv4_mapped().is_none(),
                    "a mapped address is read as IPv4: {item:?}"
                );
            }
        }
    }
});

fn hex_of(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
