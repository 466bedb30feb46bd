//! Bans: BlockAfterFails failed authentications from one client address within BlockDuration
//! ban it; the ban lifts after AutoBanTime (or at restart when AutoUnban is off). Banned
//! clients get 429 with Retry-After. The client address is the peer's, or the one a trusted
//! proxy forwards ([`client_ip`]). With Redis, failures are counted across all instances and
//! a ban made by one is taken over by the others within two seconds.
//!
//! Forwarding headers (X-Forwarded-For, X-Real-IP, Forwarded) from a peer that is not a
//! trusted proxy are ignored; each such request is counted
//! (`hmac_file_server_untrusted_forwarded_total`) and the first one logged, once per process
//! ([`note_untrusted_forwarding`]).
//!
//! One exception to banning ([`Client::may_ban`]): a loopback peer that sends forwarding
//! headers while TrustedProxies is empty is not banned. That is almost certainly a reverse
//! proxy on the same host that nobody listed (the default configuration), and every user's
//! requests arrive from its address: banning it would let one client with three bad tokens
//! lock every user out. Its failures are still counted (403, the auth-failure metric) and,
//! where a ban would start, the ban is withheld, logged and counted
//! (`hmac_file_server_bans_withheld_total`) instead. What this gives up: a local process that
//! adds a forwarding header to its requests is not banned either, which matters little, as
//! bans are a brake on noise and HMAC tokens cannot be guessed. Once TrustedProxies lists any
//! proxy, the operator has said where proxies are, and an unlisted loopback peer is banned
//! like any other client.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::units::LONGEST_DURATION;
use crate::metrics;

/// Most client addresses tracked at once; beyond it the oldest entries are dropped.
const MAX_TRACKED: usize = 100_000;
/// Retry-After for a ban that lasts until restart.
const UNTIL_RESTART_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The ban settings in force (reloadable).
#[derive(Debug, Clone, Copy)]
pub struct BanPolicy {
    /// Failures that trigger a ban; 0 = bans off.
    pub after_fails: u32,
    /// Window in which failures count.
    pub window: Duration,
    /// Whether bans lift by themselves.
    pub auto_unban: bool,
    /// How long a ban lasts.
    pub ban_time: Duration,
}

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<Instant>,
    banned_until: Option<Option<Instant>>,
}

/// The in-process ban list; with a file (embedded state) it survives restarts.
#[derive(Debug, Default)]
pub struct Bans {
    entries: Mutex<HashMap<IpAddr, Entry>>,
    file: Option<PathBuf>,
    last_saved: Mutex<HashSet<IpAddr>>,
    /// Failures of clients that may not be banned ([`Client::may_ban`]), counted apart so
    /// they never add up with the same address's bannable failures.
    unbannable: Mutex<HashMap<IpAddr, Entry>>,
}

/// The ban file: client address → end of the ban in unix seconds (`null` = until restart or
/// `unban`; such bans are not restored at start).
type BanFile = BTreeMap<String, Option<u64>>;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads a ban file (missing or unreadable: no bans).
pub fn read_ban_file(path: &Path) -> BanFile {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes a ban file atomically.
pub fn write_ban_file(path: &Path, bans: &BanFile) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(bans).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

impl Bans {
    /// A ban list kept in `path`: timed bans still running are restored now.
    pub fn persistent(path: PathBuf) -> Self {
        let now_unix = unix_now();
        let now = Instant::now();
        let mut entries = HashMap::new();
        for (ip, until) in read_ban_file(&path) {
            if let (Ok(ip), Some(until)) = (ip.parse::<IpAddr>(), until)
                && until > now_unix
            {
                // A hand-edited or garbled end time (u64::MAX) would overflow the clock.
                let left = Duration::from_secs(until - now_unix).min(LONGEST_DURATION);
                let entry = Entry {
                    failures: VecDeque::new(),
                    banned_until: Some(Some(now + left)),
                };
                entries.insert(ip, entry);
            }
        }
        if !entries.is_empty() {
            tracing::info!(bans = entries.len(), "bans restored from {}", path.display());
            metrics::bans_in_force(entries.len());
        }
        let last_saved = Mutex::new(entries.keys().copied().collect());
        Self {
            entries: Mutex::new(entries),
            file: Some(path),
            last_saved,
            unbannable: Mutex::default(),
        }
    }

    /// Writes the bans in force to the ban file, if there is one. A ban that was in the file
    /// before and is gone from it now was lifted by `unban`: it is not written back.
    fn save(&self, entries: &mut HashMap<IpAddr, Entry>) {
        let Some(path) = &self.file else { return };
        let on_disk = read_ban_file(path);
        let written = self.last_saved.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ip in written.iter().filter(|ip| !on_disk.contains_key(&ip.to_string())) {
            if let Some(entry) = entries.get_mut(ip)
                && entry.banned_until.is_some()
            {
                entry.banned_until = None;
                entry.failures.clear();
                tracing::info!(client = %ip, "ban lifted by hand");
            }
        }
        let now = Instant::now();
        let now_unix = unix_now();
        let file: BanFile = entries
            .iter()
            .filter_map(|(ip, e)| {
                let until = e.banned_until?;
                Some((
                    ip.to_string(),
                    until.map(|u| now_unix + u.saturating_duration_since(now).as_secs()),
                ))
            })
            .collect();
        match write_ban_file(path, &file) {
            Ok(()) => {
                *self.last_saved.lock().unwrap_or_else(|e| e.into_inner()) =
                    file.keys().filter_map(|ip| ip.parse().ok()).collect();
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot save the ban list"),
        }
    }

    /// Lifts every ban whose address is not in `keep` (an `unban` by hand: the ban file or
    /// Redis no longer has it).
    pub fn lift_all_except(&self, keep: &HashSet<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut lifted = Vec::new();
        for (ip, entry) in entries.iter_mut() {
            if entry.banned_until.is_some() && !keep.contains(ip) {
                entry.banned_until = None;
                entry.failures.clear();
                lifted.push(*ip);
            }
        }
        if lifted.is_empty() {
            return;
        }
        let in_force = entries.values().filter(|e| e.banned_until.is_some()).count();
        drop(entries);
        metrics::bans_in_force(in_force);
        for ip in lifted {
            tracing::info!(client = %ip, "ban lifted by hand");
        }
    }

    /// Re-reads the ban file (on SIGHUP): bans removed from it by `unban` are lifted.
    pub fn reload_file(&self) {
        let Some(path) = &self.file else { return };
        let keep: HashSet<IpAddr> = read_ban_file(path).keys().filter_map(|ip| ip.parse().ok()).collect();
        self.lift_all_except(&keep);
    }

    /// How long `ip` is still banned, if it is.
    pub fn banned_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&ip)?.banned_until? {
            None => Some(UNTIL_RESTART_RETRY_AFTER),
            Some(until) if until > now => Some(until - now),
            Some(_) => None,
        }
    }

    /// Records a failed authentication; returns true when it starts a ban.
    pub fn record_failure(&self, ip: IpAddr, policy: &BanPolicy, now: Instant) -> bool {
        if policy.after_fails == 0 {
            return false;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !count_failure(&mut entries, ip, policy, now) {
            return false;
        }
        let Some(entry) = entries.get_mut(&ip) else {
            return false;
        };
        entry.banned_until = Some(policy.auto_unban.then(|| now + policy.ban_time));
        let in_force = entries.values().filter(|e| e.banned_until.is_some()).count();
        self.save(&mut entries);
        drop(entries);
        metrics::banned(in_force);
        tracing::warn!(
            client = %ip,
            failures = policy.after_fails,
            ban_seconds = policy.auto_unban.then_some(policy.ban_time.as_secs()),
            "client banned after repeated authentication failures"
        );
        true
    }

    /// Records a failed authentication from a client that may not be banned
    /// ([`Client::may_ban`]): counted as [`Bans::record_failure`] counts, apart from the
    /// address's bannable failures and in this process only. Where a ban would start, it is
    /// withheld instead (logged and counted) and the count starts again; returns true then.
    pub fn record_failure_without_ban(&self, ip: IpAddr, policy: &BanPolicy, now: Instant) -> bool {
        if policy.after_fails == 0 {
            return false;
        }
        let mut unbannable = self.unbannable.lock().unwrap_or_else(|e| e.into_inner());
        if !count_failure(&mut unbannable, ip, policy, now) {
            return false;
        }
        drop(unbannable);
        metrics::ban_withheld();
        tracing::warn!(
            client = %ip,
            failures = policy.after_fails,
            "ban withheld: this loopback peer sends forwarding headers and TrustedProxies is empty, \
             so it is probably a reverse proxy whose address every user shares; list it in TrustedProxies"
        );
        true
    }

    /// Takes over a ban made by another instance (shared through Redis); returns true when
    /// it is new here.
    pub fn adopt(&self, ip: IpAddr, left: Option<Duration>, now: Instant) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(ip).or_default();
        if entry.banned_until.is_some() {
            return false;
        }
        entry.failures.clear();
        // The time left comes from Redis, where anyone with access can set any TTL.
        entry.banned_until = Some(left.map(|d| now + d.min(LONGEST_DURATION)));
        let in_force = entries.values().filter(|e| e.banned_until.is_some()).count();
        self.save(&mut entries);
        drop(entries);
        metrics::bans_in_force(in_force);
        tracing::warn!(client = %ip, ban_seconds = left.map(|d| d.as_secs()), "client banned (shared ban)");
        true
    }

    /// Lifts expired bans (logging each) and forgets stale failures.
    pub fn sweep(&self, now: Instant, window: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut lifted = Vec::new();
        for (ip, entry) in entries.iter_mut() {
            if let Some(Some(until)) = entry.banned_until
                && until <= now
            {
                entry.banned_until = None;
                lifted.push(*ip);
            }
        }
        prune(&mut entries, now, window);
        let in_force = entries.values().filter(|e| e.banned_until.is_some()).count();
        if !lifted.is_empty() {
            self.save(&mut entries);
        }
        drop(entries);
        prune(
            &mut self.unbannable.lock().unwrap_or_else(|e| e.into_inner()),
            now,
            window,
        );
        for ip in &lifted {
            tracing::info!(client = %ip, "ban lifted");
        }
        if !lifted.is_empty() {
            metrics::bans_in_force(in_force);
        }
    }
}

/// Adds a failure of `ip` at `now` to `entries`; returns true when it makes
/// `policy.after_fails` within the window (the failures are then forgotten, and the caller
/// bans or withholds the ban). Nothing is counted for an address banned already, nor for a
/// new one while [`MAX_TRACKED`] addresses with recent failures are tracked.
fn count_failure(entries: &mut HashMap<IpAddr, Entry>, ip: IpAddr, policy: &BanPolicy, now: Instant) -> bool {
    if entries.len() >= MAX_TRACKED && !entries.contains_key(&ip) {
        prune(entries, now, policy.window);
        if entries.len() >= MAX_TRACKED {
            return false;
        }
    }
    let entry = entries.entry(ip).or_default();
    if entry.banned_until.is_some() {
        return false;
    }
    while entry
        .failures
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.window)
    {
        entry.failures.pop_front();
    }
    entry.failures.push_back(now);
    if entry.failures.len() < policy.after_fails as usize {
        return false;
    }
    entry.failures.clear();
    true
}

fn prune(entries: &mut HashMap<IpAddr, Entry>, now: Instant, window: Duration) {
    entries
        .retain(|_, e| e.banned_until.is_some() || e.failures.back().is_some_and(|t| now.duration_since(*t) <= window));
}

/// Request headers in which a proxy names the client.
pub const FORWARDING_HEADERS: [&str; 3] = ["x-forwarded-for", "x-real-ip", "forwarded"];

/// Who sent a request, as bans and logs see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address ([`client_ip`]); `None` for a Unix-socket peer without
    /// forwarding headers.
    pub ip: Option<IpAddr>,
    /// The peer sent forwarding headers but is not a trusted proxy, so they were ignored.
    pub untrusted_forwarding: bool,
    /// Whether failed authentications may ban `ip`: not for a loopback peer that sends
    /// forwarding headers while TrustedProxies is empty (see the module documentation).
    pub may_ban: bool,
}

impl Client {
    /// The client of a request from `peer` (`None`: a Unix socket) with these headers.
    pub fn identify(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Self {
        let untrusted_forwarding = peer.is_some_and(|ip| !trusted.iter().any(|net| net.contains(&ip)))
            && FORWARDING_HEADERS.iter().any(|name| headers.contains_key(*name));
        let local_proxy = untrusted_forwarding && trusted.is_empty() && peer.is_some_and(|ip| ip.is_loopback());
        Self {
            ip: client_ip(peer, headers, trusted),
            untrusted_forwarding,
            may_ban: !local_proxy,
        }
    }
}

/// Counts a request whose forwarding headers were ignored (its peer, `peer`, is not a
/// trusted proxy); the first one in this process is also logged, at warn: behind a proxy
/// with an incomplete TrustedProxies every request is one, and the log must not fill up.
pub fn note_untrusted_forwarding(peer: IpAddr) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    metrics::untrusted_forwarded();
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "forwarding headers from a peer not in TrustedProxies are ignored; if it is a reverse proxy, \
             add its address to TrustedProxies (logged once; hmac_file_server_untrusted_forwarded_total counts them)"
        );
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy (or a Unix socket,
/// `peer = None`, which only local processes reach); then the first untrusted address from
/// the right of X-Forwarded-For, else X-Real-IP. Forwarded addresses are read as
/// [`parse_forwarded_addr`] does, so every spelling of one address is one client.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if let Some(ip) = peer
        && !is_trusted(&ip)
    {
        return Some(ip);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_forwarded_addr)
        .collect();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !is_trusted(ip)) {
        return Some(*ip);
    }
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_forwarded_addr)
    {
        return Some(ip);
    }
    forwarded.first().copied().or(peer)
}

/// One address as a proxy forwards it: `IPv4`, `IPv6`, `IPv4:port`, `[IPv6]` or
/// `[IPv6]:port`, with blanks around it. IPv4-mapped IPv6 addresses (`::ffff:9.9.9.9`) become
/// IPv4, as accepted peers' addresses do, so a ban on 9.9.9.9 holds under every spelling.
/// Anything else (`unknown`, RFC 7239 obfuscated names, a bracketed IPv4) is no address.
pub fn parse_forwarded_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else if let Ok(socket) = text.parse::<SocketAddr>() {
        socket.ip()
    } else {
        IpAddr::V6(text.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?)
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(auto_unban: bool) -> BanPolicy {
        BanPolicy {
            after_fails: 3,
            window: Duration::from_secs(10),
            auto_unban,
            ban_time: Duration::from_secs(60),
        }
    }

    #[test]
    fn bans_after_failures_in_window_and_lifts() {
        let bans = Bans::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(!bans.record_failure(ip, &policy(true), t0));
        assert!(!bans.record_failure(ip, &policy(true), t0 + Duration::from_secs(1)));
        assert!(bans.banned_for(ip, t0).is_none());
        assert!(bans.record_failure(ip, &policy(true), t0 + Duration::from_secs(2)));
        let left = bans.banned_for(ip, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(left, Duration::from_secs(60));
        assert!(
            bans.banned_for("192.0.2.2".parse().unwrap(), t0).is_none(),
            "others unaffected"
        );
        bans.sweep(t0 + Duration::from_secs(63), Duration::from_secs(10));
        assert!(bans.banned_for(ip, t0 + Duration::from_secs(63)).is_none());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let bans = Bans::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(!bans.record_failure(ip, &policy(true), t0 + Duration::from_secs(i * 6)));
        }
    }

    #[test]
    fn without_auto_unban_the_ban_stays() {
        let bans = Bans::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..3 {
            bans.record_failure(ip, &policy(false), t0 + Duration::from_millis(i));
        }
        bans.sweep(t0 + Duration::from_secs(100_000), Duration::from_secs(10));
        assert!(bans.banned_for(ip, t0 + Duration::from_secs(100_000)).is_some());
    }

    #[test]
    fn timed_bans_survive_a_restart_and_unban_lifts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let forever: IpAddr = "192.0.2.10".parse().unwrap();
        let bans = Bans::persistent(path.clone());
        let t0 = Instant::now();
        for i in 0..3 {
            bans.record_failure(ip, &policy(true), t0 + Duration::from_millis(i));
            bans.record_failure(forever, &policy(false), t0 + Duration::from_millis(i));
        }
        let restarted = Bans::persistent(path.clone());
        assert!(restarted.banned_for(ip, Instant::now()).is_some(), "timed ban restored");
        assert!(
            restarted.banned_for(forever, Instant::now()).is_none(),
            "until-restart ban not restored"
        );
        let mut file = read_ban_file(&path);
        assert!(file.remove(&ip.to_string()).is_some());
        write_ban_file(&path, &file).unwrap();
        // Another ban is saved before any reload: the unbanned address is not written back.
        let other: IpAddr = "192.0.2.11".parse().unwrap();
        for i in 0..3 {
            restarted.record_failure(other, &policy(true), Instant::now() + Duration::from_millis(i));
        }
        assert!(
            !read_ban_file(&path).contains_key(&ip.to_string()),
            "unban not undone by a save"
        );
        assert!(
            restarted.banned_for(ip, Instant::now()).is_none(),
            "and lifted here at that save"
        );
        restarted.reload_file();
        assert!(
            restarted.banned_for(ip, Instant::now()).is_none(),
            "unban by file + reload"
        );
    }

    /// Found by the `state_files` fuzz target: a ban file whose end time is far beyond what
    /// the clock holds made the start panic (`overflow when adding duration to instant`).
    #[test]
    fn a_ban_file_with_an_end_beyond_the_clock_restores_a_long_ban() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        std::fs::write(
            &path,
            br#"{"192.0.2.9": 18446744073709551615, "2001:db8::9": 11357407135578037661}"#,
        )
        .unwrap();
        let bans = Bans::persistent(path);
        let now = Instant::now();
        for ip in ["192.0.2.9", "2001:db8::9"] {
            let left = bans.banned_for(ip.parse().unwrap(), now).expect("restored");
            assert!(left > Duration::from_secs(99 * 365 * 86_400) && left <= LONGEST_DURATION);
        }
        bans.adopt("192.0.2.10".parse().unwrap(), Some(Duration::MAX), now);
        assert!(bans.banned_for("192.0.2.10".parse().unwrap(), now).is_some());
    }

    #[test]
    fn bans_off_with_zero() {
        let bans = Bans::default();
        let p = BanPolicy {
            after_fails: 0,
            ..policy(true)
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert!(!bans.record_failure(ip, &p, Instant::now()));
        }
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 10.1.1.1"));
        let proxy: IpAddr = "10.1.1.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            client_ip(Some(proxy), &h, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(stranger), &h, &trusted),
            Some(stranger),
            "spoofed header ignored"
        );
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.5"));
        assert_eq!(
            client_ip(Some(proxy), &h, &trusted),
            Some("203.0.113.5".parse().unwrap())
        );
        assert_eq!(client_ip(Some(proxy), &HeaderMap::new(), &trusted), Some(proxy));
        assert_eq!(
            client_ip(None, &h, &[]),
            Some("203.0.113.5".parse().unwrap()),
            "Unix socket peers are local"
        );
    }

    /// Issue #14: every spelling a proxy may use for one address is that address.
    #[test]
    fn forwarded_addresses_are_normalised() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: Option<IpAddr> = Some("10.1.1.2".parse().unwrap());
        let cases = [
            ("9.9.9.9", "9.9.9.9"),
            ("::ffff:9.9.9.9", "9.9.9.9"),
            ("9.9.9.9:1234", "9.9.9.9"),
            (" 9.9.9.9:1234 ", "9.9.9.9"),
            ("[::ffff:9.9.9.9]", "9.9.9.9"),
            ("[::ffff:9.9.9.9]:1234", "9.9.9.9"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
        ];
        for (value, want) in cases {
            let want: IpAddr = want.parse().unwrap();
            for name in ["x-forwarded-for", "x-real-ip"] {
                let mut h = HeaderMap::new();
                h.insert(name, HeaderValue::from_str(value).unwrap());
                assert_eq!(client_ip(proxy, &h, &trusted), Some(want), "{name}: {value:?}");
            }
        }
        // Trusted hops are recognised in any spelling and skipped.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9:5000, ::ffff:10.1.1.1, 10.2.2.2:80, [::ffff:10.3.3.3]:81"),
        );
        assert_eq!(client_ip(proxy, &h, &trusted), Some("203.0.113.9".parse().unwrap()));
        // Forms that are no address stay ignored: the proxy is the client.
        for junk in ["unknown", "[9.9.9.9]", "9.9.9.9:", "[2001:db8::7", "_hidden"] {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_str(junk).unwrap());
            assert_eq!(client_ip(proxy, &h, &trusted), proxy, "{junk:?}");
        }
    }

    /// Issue #14: forwarding headers from an untrusted peer are noticed; a loopback peer
    /// sending them while no proxy is trusted may not be banned.
    #[test]
    fn clients_that_may_not_be_banned() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let loopback6: IpAddr = "::1".parse().unwrap();
        let remote: IpAddr = "198.51.100.7".parse().unwrap();
        let elsewhere: Vec<IpNet> = vec!["192.0.2.1/32".parse().unwrap()];
        let local: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let plain = HeaderMap::new();
        for name in FORWARDING_HEADERS {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("203.0.113.9"));
            for peer in [loopback, loopback6] {
                let c = Client::identify(Some(peer), &h, &[]);
                assert_eq!(
                    c,
                    Client {
                        ip: Some(peer),
                        untrusted_forwarding: true,
                        may_ban: false
                    },
                    "{name} from {peer}, no trusted proxies"
                );
            }
            let c = Client::identify(Some(remote), &h, &[]);
            assert!(c.untrusted_forwarding && c.may_ban, "{name} from a remote peer: {c:?}");
            let c = Client::identify(Some(loopback), &h, &elsewhere);
            assert!(
                c.untrusted_forwarding && c.may_ban,
                "{name} from an unlisted loopback peer while proxies are listed: {c:?}"
            );
            let c = Client::identify(Some(loopback), &h, &local);
            assert!(
                !c.untrusted_forwarding && c.may_ban,
                "{name} from a trusted proxy: {c:?}"
            );
            let c = Client::identify(None, &h, &[]);
            assert!(!c.untrusted_forwarding && c.may_ban, "{name} on the Unix socket: {c:?}");
        }
        let mut proto = HeaderMap::new();
        proto.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        for h in [&plain, &proto] {
            let c = Client::identify(Some(loopback), h, &[]);
            assert!(!c.untrusted_forwarding && c.may_ban, "{h:?}: {c:?}");
        }
    }

    #[test]
    fn withheld_bans_count_apart_and_ban_nobody() {
        let bans = Bans::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!bans.record_failure_without_ban(ip, &policy(true), at(0)));
        assert!(!bans.record_failure_without_ban(ip, &policy(true), at(1)));
        assert!(bans.record_failure_without_ban(ip, &policy(true), at(2)), "withheld");
        assert!(bans.banned_for(ip, at(2)).is_none());
        // The count starts again, and never adds up with bannable failures.
        assert!(!bans.record_failure_without_ban(ip, &policy(true), at(3)));
        assert!(!bans.record_failure(ip, &policy(true), at(4)));
        assert!(!bans.record_failure(ip, &policy(true), at(5)));
        assert!(bans.banned_for(ip, at(5)).is_none());
        assert!(
            bans.record_failure(ip, &policy(true), at(6)),
            "three bannable failures ban"
        );
        assert!(bans.banned_for(ip, at(6)).is_some());
        let off = BanPolicy {
            after_fails: 0,
            ..policy(true)
        };
        assert!(!bans.record_failure_without_ban(ip, &off, at(7)));
    }
}
