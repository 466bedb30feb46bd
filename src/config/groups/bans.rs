//! Bans after failed authentications, and the proxies whose forwarding headers are believed.

use std::time::Duration;

use ipnet::IpNet;

use crate::config::keys;
use crate::config::reader::Reader;

/// Ban policy.
#[derive(Debug, Clone)]
pub struct BanSettings {
    /// Failed authentications before a ban.
    pub block_after_fails: u32,
    /// Window in which failures are counted.
    pub block_duration: Duration,
    /// Lift bans by themselves.
    pub auto_unban: bool,
    /// How long a ban lasts.
    pub auto_ban_time: Duration,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl BanSettings {
    /// Reads and checks the group's keys; problems go to the reader.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let block_after_fails = r.integer(&keys::BLOCK_AFTER_FAILS, 0..=1_000_000) as u32;
        let block_duration = r.duration(&keys::BLOCK_DURATION);
        let auto_unban = r.boolean(&keys::AUTO_UNBAN);
        let auto_ban_time = r.duration(&keys::AUTO_BAN_TIME);
        let mut trusted_proxies = Vec::new();
        for text in r.list(&keys::TRUSTED_PROXIES) {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => r.fail(
                    &keys::TRUSTED_PROXIES,
                    format!("`{text}` is not an address or CIDR"),
                    (),
                ),
            }
        }
        Self {
            block_after_fails,
            block_duration,
            auto_unban,
            auto_ban_time,
            trusted_proxies,
        }
    }
}
