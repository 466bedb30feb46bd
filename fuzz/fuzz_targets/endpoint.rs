//! The first step of every request: method, target and head into an endpoint.
//!
//! Properties: no panic; a target over the limits is refused before anything else; a slot's
//! key comes from the path after the prefix, decoded once, and its full path (what a v3 token
//! signs) is the prefix and that key.
#![no_main]

use arbitrary::Arbitrary;
use hmac_file_server::http::{Endpoint, MAX_URI_BYTES};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a [u8],
    target: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
    root_prefix: bool,
}

fuzz_target!(|input: Input<'_>| {
    let Ok(method) = Method::from_bytes(input.method) else {
        return;
    };
    let Ok(uri) = input.target.parse::<Uri>() else { return };
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let prefix = if input.root_prefix { "/" } else { "/upload/" };
    let Ok(endpoint) = Endpoint::parse(&method, &uri, &headers, prefix) else {
        return;
    };
    assert!(uri.path_and_query().map_or(0, |pq| pq.as_str().len()) <= MAX_URI_BYTES);
    let slot = match endpoint {
        Endpoint::Options => {
            assert_eq!(method, Method::OPTIONS);
            return;
        }
        Endpoint::TusUpload { .. } | Endpoint::DraftUpload { .. } => {
            assert!(uri.path().starts_with(prefix));
            return;
        }
        Endpoint::DraftCreate { slot, interop } => {
            assert!(method == Method::PUT || method == Method::POST);
            assert!((3..=8).contains(&interop));
            slot
        }
        Endpoint::Put(slot) => {
            assert_eq!(method, Method::PUT);
            slot
        }
        Endpoint::TusCreate(slot) => {
            assert_eq!(method, Method::POST);
            slot
        }
        Endpoint::SessionHead(slot) | Endpoint::Download(slot) | Endpoint::Delete(slot) => slot,
    };
    let rest = uri.path().strip_prefix(prefix).expect("a slot is under the prefix");
    let again = hmac_file_server::key::FileKey::from_url_path(rest).expect("the key parses again");
    assert_eq!(again, slot.key);
    assert_eq!(slot.full_path, format!("{prefix}{}", slot.key));
    assert_eq!(slot.query, uri.query().unwrap_or(""));
});
