//! Bans: clients are banned after repeated auth failures, the ban lifts, Retry-After, and
//! trusted proxies' forwarded addresses.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::{TestServer, client, wait_until};
use crate::helpers::{AUTH_FAILURES, header, metrics_addr, put, scrape};

const BANS: &str = "hmac_file_server_bans_total";
const BANNED_CLIENTS: &str = "hmac_file_server_banned_clients";

/// Polls an async condition every 50 ms until it holds or `within` has passed.
async fn poll<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bad_v_url(server: &TestServer, path: &str) -> String {
    format!("{}?v={}", server.url(path), "cd".repeat(32))
}

/// Log lines that announce a ban.
fn ban_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("banned") && l.contains("client="))
        .map(str::to_string)
        .collect()
}

/// The ban lines once at least one has been read from the server's stderr.
fn wait_ban_lines(server: &TestServer) -> Vec<String> {
    wait_until(Duration::from_secs(5), || !ban_lines(&server.log()).is_empty());
    ban_lines(&server.log())
}

#[tokio::test]
async fn bans_after_failures_and_lifts() {
    let server = TestServer::start("BlockAfterFails = 3\nBlockDuration = 60\nAutoUnban = true\nAutoBanTime = 2");
    let http = client();
    let maddr = metrics_addr(&server.log());
    for i in 0..3 {
        let r = put(&http, &bad_v_url(&server, &format!("b/{i}")), b"x".to_vec()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "bad token {i}");
    }
    let banned_at = Instant::now();
    let r = http.get(server.url("b/anything")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "a GET from a banned client");
    let retry: u64 = header(&r, "retry-after")
        .expect("Retry-After on 429")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry} for a 2 s ban");
    let good = server.signed_v("b/good.bin", "b/good.bin", 3);
    let r = put(&http, &good, b"abc".to_vec()).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even a good token while banned"
    );

    let m = scrape(&http, &maddr).await;
    assert_eq!(m.get(BANS, &[]), Some(1.0), "{BANS}");
    assert_eq!(m.get(BANNED_CLIENTS, &[]), Some(1.0), "{BANNED_CLIENTS}");
    assert_eq!(m.get(AUTH_FAILURES, &[]), Some(3.0), "429s are not auth failures");
    let lines = wait_ban_lines(&server);
    assert_eq!(lines.len(), 1, "one ban line: {lines:?}");
    assert!(lines[0].contains("client=127.0.0.1"), "{}", lines[0]);

    // The ban lifts by itself after AutoBanTime (2 s), not only at the next 5 s sweep.
    let lifted = poll(Duration::from_millis(4500).saturating_sub(banned_at.elapsed()), || {
        let (http, url) = (http.clone(), server.url("b/anything"));
        async move { http.get(url).send().await.unwrap().status() != StatusCode::TOO_MANY_REQUESTS }
    })
    .await;
    assert!(lifted, "the 2 s ban still held after {:?}", banned_at.elapsed());
    assert!(
        banned_at.elapsed() >= Duration::from_millis(1500),
        "the ban lasted only {:?}",
        banned_at.elapsed()
    );
    let r = http.get(server.url("b/anything")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = put(&http, &good, b"abc".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "uploads work again");

    // The 5 s sweep logs the lift and updates the gauge.
    let logged = poll(Duration::from_secs(10), || {
        let log = server.log();
        async move { log.contains("ban lifted") }
    })
    .await;
    assert!(logged, "no 'ban lifted' line:\n{}", server.log());
    let gauge = poll(Duration::from_secs(3), || {
        let (http, maddr) = (http.clone(), maddr.clone());
        async move { scrape(&http, &maddr).await.get(BANNED_CLIENTS, &[]) == Some(0.0) }
    })
    .await;
    assert!(gauge, "{BANNED_CLIENTS} back to 0");
    assert_eq!(scrape(&http, &maddr).await.get(BANS, &[]), Some(1.0));
}

/// Retry-After must not send a client back while it is still banned: the remaining time is
/// rounded up, so a fresh 60 s ban says 60, not 59.
#[tokio::test]
async fn retry_after_rounds_the_ban_up() {
    let server = TestServer::start("BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60");
    let http = client();
    let mut third_sent = Instant::now();
    for i in 0..3 {
        third_sent = Instant::now();
        let r = put(&http, &bad_v_url(&server, &format!("ra/{i}")), b"x".to_vec()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = http.get(server.url("ra/x")).send().await.unwrap();
    let since_third = third_sent.elapsed();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&r, "retry-after").expect("Retry-After").parse().unwrap();
    // The ban began after the third request was sent: more than 60 s − since_third is left.
    let left_at_least = Duration::from_secs(60).saturating_sub(since_third);
    assert!(
        Duration::from_secs(retry) >= left_at_least,
        "Retry-After {retry} s while more than {left_at_least:?} of the ban remain"
    );
    assert!(retry <= 60, "Retry-After {retry} for a 60 s ban");
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_banned() {
    let server = TestServer::start(
        "BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60\nTrustedProxies = [\"127.0.0.1/32\"]",
    );
    let http = client();
    for i in 0..3 {
        let r = http
            .put(bad_v_url(&server, &format!("p/{i}")))
            .header("x-forwarded-for", "203.0.113.7")
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let get = |xff: Option<&'static str>| {
        let mut req = http.get(server.url("p/none"));
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        get(Some("203.0.113.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the forwarded client is banned"
    );
    assert_eq!(
        get(Some("203.0.113.8")).await,
        StatusCode::NOT_FOUND,
        "another forwarded client is not"
    );
    assert_eq!(get(None).await, StatusCode::NOT_FOUND, "the proxy itself is not");
    let r = http
        .put(server.signed_v("p/ok.bin", "p/ok.bin", 2))
        .header("x-forwarded-for", "203.0.113.8")
        .body(b"ok".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "203.0.113.8 can still upload");
    let lines = wait_ban_lines(&server);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("client=203.0.113.7"), "{}", lines[0]);
    let m = scrape(&http, &metrics_addr(&server.log())).await;
    assert_eq!(m.get(BANNED_CLIENTS, &[]), Some(1.0));
}

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored() {
    // A proxy is trusted, but not 127.0.0.1: its forwarding headers are spoofs. (With no proxy
    // trusted at all, a loopback peer that sends them is not banned:
    // loopback_peer_with_forwarding_headers_and_no_trusted_proxies_is_not_banned.)
    let server = TestServer::start(
        "BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60\nTrustedProxies = [\"192.0.2.1/32\"]",
    );
    let http = client();
    for i in 0..3 {
        let r = http
            .put(bad_v_url(&server, &format!("s/{i}")))
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-real-ip", "203.0.113.7")
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    for xff in [None, Some("203.0.113.8"), Some("203.0.113.7")] {
        let mut req = http.get(server.url("s/none"));
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the peer 127.0.0.1 is banned whatever it claims ({xff:?})"
        );
    }
    let lines = wait_ban_lines(&server);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("client=127.0.0.1") && !lines[0].contains("203.0.113"),
        "{}",
        lines[0]
    );
}

const UNTRUSTED_FORWARDED: &str = "hmac_file_server_untrusted_forwarded_total";
const BANS_WITHHELD: &str = "hmac_file_server_bans_withheld_total";
/// The once-per-process warning about forwarding headers from an untrusted peer.
const UNTRUSTED_WARNING: &str = "forwarding headers from a peer not in TrustedProxies are ignored";
/// The line that says a ban was withheld.
const WITHHELD_LINE: &str = "ban withheld";

/// A GET of `path` with one extra header, if any; returns the status.
async fn get_with(http: &reqwest::Client, server: &TestServer, path: &str, header: Option<(&str, &str)>) -> StatusCode {
    let mut req = http.get(server.url(path));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    req.send().await.unwrap().status()
}

/// A PUT with a bad token and one extra header, if any; returns the status.
async fn bad_put_with(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    header: Option<(&str, &str)>,
) -> StatusCode {
    let mut req = http.put(bad_v_url(server, path)).body(b"x".to_vec());
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    req.send().await.unwrap().status()
}

/// Issue #14: forwarding headers from a peer that is not a trusted proxy are ignored, and
/// the operator is told so once (not once per request) and by a counter.
#[tokio::test]
async fn untrusted_forwarding_headers_are_warned_once_and_counted() {
    let server = TestServer::start("");
    let http = client();
    let maddr = metrics_addr(&server.log());
    let at_start = scrape(&http, &maddr).await;
    let headers = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
    ];
    for i in 0..9 {
        let status = get_with(&http, &server, &format!("w/{i}"), Some(headers[i % 3])).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{:?}", headers[i % 3]);
    }
    // Forwarding-like headers that do not name the client are not counted.
    let status = get_with(&http, &server, "w/proto", Some(("x-forwarded-proto", "https"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(get_with(&http, &server, "w/plain", None).await, StatusCode::NOT_FOUND);
    // Every line logged before the last request's access line is in the log now.
    server.wait_for_access("GET", "/upload/w/plain", Duration::from_secs(10));

    let log = server.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(UNTRUSTED_WARNING)).collect();
    assert_eq!(warnings.len(), 1, "one warning for nine requests:\n{log}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("peer=127.0.0.1"), "{}", warnings[0]);
    let access = server.wait_for_access("GET", "/upload/w/0", Duration::from_secs(10));
    assert!(
        access.contains("client=127.0.0.1"),
        "the header is not believed: {access}"
    );

    for name in [UNTRUSTED_FORWARDED, BANS_WITHHELD] {
        assert_eq!(
            at_start.get(name, &[]),
            Some(0.0),
            "{name} is exported at 0 from the start"
        );
    }
    let m = scrape(&http, &maddr).await;
    assert_eq!(m.get(UNTRUSTED_FORWARDED, &[]), Some(9.0), "{UNTRUSTED_FORWARDED}");
}

/// Issue #14: behind a local reverse proxy that nobody listed in TrustedProxies, every
/// client's requests come from 127.0.0.1; three bad tokens must not lock every user out.
/// Failures from 127.0.0.1 without forwarding headers still ban it.
#[tokio::test]
async fn loopback_peer_with_forwarding_headers_and_no_trusted_proxies_is_not_banned() {
    let server = TestServer::start("BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60");
    let http = client();
    let maddr = metrics_addr(&server.log());
    for i in 0..6 {
        let status = bad_put_with(
            &http,
            &server,
            &format!("l/{i}"),
            Some(("x-forwarded-for", "203.0.113.7")),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "bad token {i} through the proxy");
    }
    let r = http
        .put(server.signed_v("l/ok.bin", "l/ok.bin", 2))
        .header("x-forwarded-for", "203.0.113.8")
        .body(b"ok".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "another user can still upload");
    let r = http
        .get(server.url("l/ok.bin"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "and download");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"ok");
    assert_eq!(get_with(&http, &server, "l/ok.bin", None).await, StatusCode::OK);
    server.wait_for_access("GET", "/upload/l/ok.bin", Duration::from_secs(10));

    let m = scrape(&http, &maddr).await;
    assert_eq!(m.get(AUTH_FAILURES, &[]), Some(6.0), "the failures are counted");
    assert_eq!(m.get(BANS_WITHHELD, &[]), Some(2.0), "two bans withheld");
    assert_eq!(m.get(BANS, &[]), Some(0.0));
    assert_eq!(m.get(BANNED_CLIENTS, &[]), Some(0.0));
    let log = server.log();
    assert!(ban_lines(&log).is_empty(), "{:?}", ban_lines(&log));
    let withheld: Vec<&str> = log.lines().filter(|l| l.contains(WITHHELD_LINE)).collect();
    assert_eq!(withheld.len(), 2, "{log}");
    assert!(
        withheld
            .iter()
            .all(|l| l.contains("WARN") && l.contains("client=127.0.0.1")),
        "{withheld:?}"
    );

    // Without forwarding headers, 127.0.0.1 is an ordinary client: banned after three.
    for i in 0..3 {
        let status = bad_put_with(&http, &server, &format!("d/{i}"), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "direct bad token {i}");
    }
    assert_eq!(
        get_with(&http, &server, "l/ok.bin", None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let lines = wait_ban_lines(&server);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("client=127.0.0.1"), "{}", lines[0]);
}

/// Issue #14: a trusted proxy may write the client's address as IPv4-mapped IPv6, with a
/// port, or in brackets; each spelling is the same client, so a ban holds under all.
#[tokio::test]
async fn a_forwarded_ban_holds_under_every_spelling_of_the_address() {
    let server = TestServer::start(
        "BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60\nTrustedProxies = [\"127.0.0.1/32\"]",
    );
    let http = client();
    for i in 0..3 {
        let status = bad_put_with(&http, &server, &format!("n/{i}"), Some(("x-forwarded-for", "9.9.9.9"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    for spelling in [
        ("x-forwarded-for", "9.9.9.9"),
        ("x-forwarded-for", "::ffff:9.9.9.9"),
        ("x-forwarded-for", "9.9.9.9:1234"),
        ("x-forwarded-for", "[::ffff:9.9.9.9]"),
        ("x-forwarded-for", "[::ffff:9.9.9.9]:1234"),
        ("x-forwarded-for", "198.51.100.1, 9.9.9.9:1234"),
        ("x-real-ip", "9.9.9.9:1234"),
        ("x-real-ip", "::ffff:9.9.9.9"),
    ] {
        assert_eq!(
            get_with(&http, &server, "n/none", Some(spelling)).await,
            StatusCode::TOO_MANY_REQUESTS,
            "the ban on 9.9.9.9 under {spelling:?}"
        );
    }
    for other in [
        ("x-forwarded-for", "9.9.9.8:1234"),
        ("x-forwarded-for", "::ffff:9.9.9.8"),
        ("x-real-ip", "[::ffff:9.9.9.8]:80"),
    ] {
        assert_eq!(
            get_with(&http, &server, "n/none", Some(other)).await,
            StatusCode::NOT_FOUND,
            "another client, {other:?}"
        );
    }
    assert_eq!(
        get_with(&http, &server, "n/none", None).await,
        StatusCode::NOT_FOUND,
        "the proxy"
    );

    // IPv6 with a port in brackets: the ban is on the address.
    for i in 0..3 {
        let status = bad_put_with(
            &http,
            &server,
            &format!("n6/{i}"),
            Some(("x-forwarded-for", "[2001:db8::7]:443")),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    for spelling in ["2001:db8::7", "[2001:db8::7]", "[2001:db8::7]:8443"] {
        assert_eq!(
            get_with(&http, &server, "n/none", Some(("x-forwarded-for", spelling))).await,
            StatusCode::TOO_MANY_REQUESTS,
            "the ban on 2001:db8::7 under {spelling:?}"
        );
    }
    let log = server.log();
    wait_until(Duration::from_secs(5), || ban_lines(&server.log()).len() >= 2);
    let lines = ban_lines(&server.log());
    assert_eq!(lines.len(), 2, "{lines:?}\n{log}");
    assert!(lines[0].contains("client=9.9.9.9 "), "{}", lines[0]);
    assert!(lines[1].contains("client=2001:db8::7 "), "{}", lines[1]);
}
