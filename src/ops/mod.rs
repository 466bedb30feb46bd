//! Operations: logging now; metrics, retention and bans follow.

pub mod logging;
