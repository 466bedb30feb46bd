//! hmac-file-server: the HTTP upload server for XMPP (XEP-0363) behind Prosody, ejabberd and
//! Metronome, a drop-in for prosody-filer and the Go hmac-file-server.
//!
//! The binary (`main.rs`) is a thin shell over this library: [`config`] turns file,
//! environment and command line into one immutable [`config::Config`]; [`auth`] checks the
//! tokens; [`store`] keeps files atomically; [`http`] answers requests; [`server`] runs the
//! listener.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod http;
pub mod ops;
pub mod resumable;
pub mod server;
pub mod state;
pub mod store;
