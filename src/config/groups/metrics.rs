//! The second listener, with `/metrics` and `/health`.

use crate::config::ListenAddr;
use crate::config::keys;
use crate::config::reader::Reader;

/// Metrics listener.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Second listener with `/metrics` and `/health`.
    pub enabled: bool,
    /// Its address.
    pub listen: ListenAddr,
}

impl MetricsSettings {
    /// Reads and checks the group's keys; problems go to the reader.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let metrics_enabled = r.boolean(&keys::METRICS_ENABLED);
        let metrics_listen = ListenAddr::parse(&r.text(&keys::METRICS_PORT))
            .unwrap_or_else(|e| r.fail(&keys::METRICS_PORT, e, ListenAddr::AnyHost(9090)));
        Self {
            enabled: metrics_enabled,
            listen: metrics_listen,
        }
    }
}
