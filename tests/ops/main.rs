//! Operations through the real binary (SPEC §5, §6, §8): metrics, health, bans, trusted
//! proxies, secret rotation, log hygiene, digests, the Unix socket, log files and their
//! reopening on SIGHUP, JSON logs and retention. One module per feature, one test binary
//! (each integration-test binary costs link time).

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod bans;
mod checksum;
mod health;
mod log_file;
mod log_hygiene;
mod metrics;
mod retention;
mod secret_rotation;
mod unix_socket;
