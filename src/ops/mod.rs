//! Operations: logging, metrics and health, bans, retention.

pub mod bans;
pub mod logging;
pub mod metrics;
pub mod retention;
