//! The slot token verifiers (v, v2, token, v3) and Metronome's delete token.
//!
//! Properties: no panic on any query; a token is accepted only when the query carries the
//! very HMAC that the secret makes for these claims (so nothing the fuzzer invents without the
//! secret passes), and a v3 token only before it expires; a token made with the secret is
//! accepted for its own claims and refused for any other size, path, content type or method.
#![no_main]

use arbitrary::Arbitrary;
use hmac_file_server::auth::{self, AuthError, Claims, Protocol, Token};
use hmac_file_server::config::Secret;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-0123456789";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    query: &'a str,
    path: &'a str,
    method: &'a str,
    size: u64,
    content_type: &'a str,
    now_unix: u64,
    /// Sign these claims with the secret instead of using `query` alone.
    signed: Option<Signed<'a>>,
}

#[derive(Arbitrary, Debug)]
struct Signed<'a> {
    protocol: u8,
    expires: u64,
    /// Then claim something else than what was signed.
    change: Option<Change<'a>>,
    /// Upper-case the hex of the MAC.
    upper: bool,
}

#[derive(Arbitrary, Debug)]
enum Change<'a> {
    Size(u64),
    Path(&'a str),
    ContentType(&'a str),
    Method(&'a str),
}

fn protocol(n: u8) -> Protocol {
    [Protocol::V, Protocol::Token, Protocol::V2, Protocol::V3][usize::from(n % 4)]
}

fn sign(secret: &Secret, protocol: Protocol, c: &Claims<'_>, expires: u64) -> String {
    match protocol {
        Protocol::V => auth::sign_v(secret, c.path, c.size),
        Protocol::V2 | Protocol::Token => auth::sign_v2(secret, c.path, c.size, c.content_type),
        Protocol::V3 => auth::sign_v3(secret, c.method, expires, c.full_path),
    }
}

fuzz_target!(|input: Input<'_>| {
    let secret = Secret::new(SECRET);
    let other = Secret::new(b"another-secret".to_vec());
    let full_path = format!("/upload/{}", input.path);
    let claims = Claims {
        path: input.path,
        full_path: &full_path,
        method: input.method,
        size: input.size,
        content_type: input.content_type,
        now_unix: input.now_unix,
    };

    let Some(signed) = input.signed else {
        // Whatever the fuzzer writes: accepted only with the real HMAC in the query.
        if let Ok(token) = Token::from_query(input.query)
            && token.verify(&[&other, &secret], &claims).is_ok()
        {
            let expires = form(input.query, "expires").and_then(|e| e.parse::<u64>().ok());
            let expected = sign(&secret, token.protocol, &claims, expires.unwrap_or(0));
            let given = form(input.query, token.protocol.param()).unwrap_or_default();
            assert!(given.eq_ignore_ascii_case(&expected), "accepted {given} for {claims:?}");
            if token.protocol == Protocol::V3 {
                assert!(expires.is_some_and(|e| e >= input.now_unix));
            }
        }
        if auth::verify_delete(input.query, &[&secret], input.path, None).is_ok() {
            let given = form(input.query, "token").unwrap_or_default();
            assert!(given.eq_ignore_ascii_case(&auth::sign_delete(&secret, input.path, &secret)));
        }
        return;
    };

    let protocol = protocol(signed.protocol);
    let mut mac = sign(&secret, protocol, &claims, signed.expires);
    if signed.upper {
        mac = mac.to_ascii_uppercase();
    }
    let mut query = format!("{}={mac}", protocol.param());
    if protocol == Protocol::V3 {
        query.push_str(&format!("&expires={}", signed.expires));
    }
    let token = Token::from_query(&query).expect("a token the server made parses");
    assert_eq!(token.protocol, protocol);

    let (changed_path, changed_full);
    let mut claimed = claims;
    let mut differs = false;
    match signed.change {
        None => {}
        Some(Change::Size(size)) => {
            differs = protocol.signs_size() && size != claims.size;
            claimed.size = size;
        }
        Some(Change::Path(path)) => {
            changed_path = path.to_string();
            changed_full = format!("/upload/{path}");
            differs = path != claims.path;
            claimed.path = &changed_path;
            claimed.full_path = &changed_full;
        }
        Some(Change::ContentType(ct)) => {
            differs = matches!(protocol, Protocol::V2 | Protocol::Token) && ct != claims.content_type;
            claimed.content_type = ct;
        }
        Some(Change::Method(m)) => {
            differs = protocol == Protocol::V3 && m != claims.method;
            claimed.method = m;
        }
    }
    let result = token.verify(&[&other, &secret], &claimed);
    if protocol == Protocol::V3 && input.now_unix > signed.expires {
        assert_eq!(result, Err(AuthError::Expired));
    } else if differs {
        assert_eq!(
            result,
            Err(AuthError::Mismatch),
            "{claims:?} signed, {claimed:?} claimed"
        );
    } else {
        assert_eq!(result, Ok(()), "{claims:?}");
    }
    assert!(
        token.verify(&[&other], &claims).is_err(),
        "another secret accepts nothing"
    );
});

/// The value of `name` in a query string as the verifier reads it (`form_urlencoded`): the
/// first one for a token parameter, the last one for `expires`.
fn form(query: &str, name: &str) -> Option<String> {
    let mut values = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    if name == "expires" {
        values.last()
    } else {
        values.next()
    }
}
