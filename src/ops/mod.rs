//! Operations: logging, bans, retention.

pub mod bans;
pub mod logging;
pub mod retention;
