//! hmac-file-server: the HTTP upload server for XMPP (XEP-0363) behind Prosody, ejabberd and
//! Metronome, a drop-in for prosody-filer and the Go hmac-file-server.
//!
//! The binary (`main.rs`) is a thin shell over this library. The modules form layers, each
//! using only the ones below it (`tests/architecture.rs` fails on an import against the
//! direction; docs/architecture.md has the picture):
//!
//! 1. [`clock`], [`fault`] (failpoints of test builds), [`key`] (the decoded upload path),
//!    [`metrics`]: leaves.
//! 2. [`config`]: file, environment and command line into one immutable [`config::Config`].
//! 3. [`auth`]: the slot and delete tokens, pure functions.
//! 4. [`store`] (finished files and the bytes of unfinished uploads, behind seams) and
//!    [`state`] (upload records, locks, leases, shared bans).
//! 5. [`ops`]: logging, bans, retention.
//! 6. [`resumable`]: the upload engine that tus, session and whole-file uploads share.
//! 7. [`app`]: what every request shares ([`app::AppState`]).
//! 8. [`http`]: one request pipeline (parse into an endpoint, then handle it).
//! 9. [`server`]: listeners, connections, signals and periodic jobs.

#![warn(missing_docs)]

pub mod clock;
pub mod fault;
pub mod key;
pub mod metrics;

pub mod config;

pub mod auth;

pub mod state;
pub mod store;

pub mod ops;

pub mod resumable;

pub mod app;

pub mod http;

pub mod server;
