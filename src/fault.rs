//! Failpoints at the write steps of the store and the upload state, for the crash matrix
//! (`tests/crash_matrix.rs`, docs/durability.md).
//!
//! Built only with the `failpoints` feature (never in a release): the `FAILPOINTS`
//! environment variable (the `fail` crate's syntax, e.g. `store.fsync=1*return(enospc)`)
//! makes a named step fail with `eio`, `enospc` or `edquot`, or end the process there with
//! `abort` (no unwinding, no cleanup: a crash). Without the feature [`point`] is an empty
//! inline function.

use std::io;

/// Passes failpoint `name`: `Ok(())` unless `FAILPOINTS` configures it (see the module
/// documentation).
#[cfg(feature = "failpoints")]
pub fn point(name: &str) -> io::Result<()> {
    use rustix::io::Errno;
    fail::eval(name, |arg| {
        // Straight to stderr (a log writer may not flush before an abort): the tests wait
        // for this line to know the step was reached.
        eprintln!("failpoint {name} fires: {}", arg.as_deref().unwrap_or("-"));
        let errno = match arg.as_deref() {
            Some("eio") => Errno::IO,
            Some("enospc") => Errno::NOSPC,
            Some("edquot") => Errno::DQUOT,
            Some("abort") => {
                // A crash, not a core file in the test's folder.
                let none = rustix::process::Rlimit {
                    current: Some(0),
                    maximum: Some(0),
                };
                let _ = rustix::process::setrlimit(rustix::process::Resource::Core, none);
                std::process::abort()
            }
            other => panic!("failpoint {name}: unknown action {other:?} (eio, enospc, edquot, abort)"),
        };
        Err(io::Error::from_raw_os_error(errno.raw_os_error()))
    })
    .unwrap_or(Ok(()))
}

/// Passes failpoint `name`: always `Ok(())` without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) -> io::Result<()> {
    Ok(())
}

/// Reads `FAILPOINTS` (at start); the guard keeps them configured while it lives.
#[cfg(feature = "failpoints")]
pub fn setup() -> impl Sized {
    fail::FailScenario::setup()
}

/// Nothing to set up without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
pub fn setup() -> impl Sized {}
