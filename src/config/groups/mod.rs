//! The settings, one group per concern; each group's file holds its struct and the builder
//! that reads it from the merged table.

mod auth;
mod bans;
mod limits;
mod logging;
mod metrics;
mod redis;
mod retention;
mod s3;
mod server;
mod store;

pub use auth::AuthSettings;
pub use bans::BanSettings;
pub use limits::Limits;
pub use logging::{LogFormat, LogSettings};
pub use metrics::MetricsSettings;
pub use redis::{RedactedAddr, RedisSettings};
pub use retention::RetentionSettings;
pub use s3::S3Settings;
pub use server::ServerSettings;
pub use store::{StoreBackend, StoreSettings};
