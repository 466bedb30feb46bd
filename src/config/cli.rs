//! The command line: `hmac-file-server [-config FILE] [--set Key=Value]… [COMMAND]`.
//!
//! The Go servers take `-config FILE` with a single dash, and operators' systemd units say
//! so; [`normalize_args`] rewrites that spelling before clap sees it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// XEP-0363 HTTP upload server for Prosody, ejabberd and Metronome.
#[derive(Debug, Parser)]
#[command(name = "hmac-file-server", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML, the Go server's flat PascalCase keys).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Override one key, e.g. `--set ListenPort=127.0.0.1:9000`; beats file and environment.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub overrides: Vec<String>,

    /// What to do; without a command the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Run,
    /// Parse and validate the configuration; print every problem and exit 2, or exit 0.
    CheckConfig,
    /// Print every configuration key: kind, default, whether SIGHUP applies a change, its
    /// environment variable and what it does. Reads no configuration.
    Keys,
    /// Lift the ban of a client address (in the ban file, or in Redis when RedisAddr is set);
    /// then reload the running server (SIGHUP) if it uses the embedded state.
    Unban {
        /// The client address.
        address: std::net::IpAddr,
    },
    /// Copy the finished files of the local store (StoreDir/UploadSubDir) into the bucket
    /// that this configuration names (StoreBackend = "s3"), with their content types and
    /// digests; files already there at the same size are skipped, so it can run again. The
    /// local files stay. Exit 0 when every file is in the bucket, 1 otherwise.
    MigrateToS3,
    /// Print the query string that signs an upload slot, for tests and operators.
    Sign {
        /// Only this protocol (default: one line each for v, v2 and v3).
        #[arg(long, value_enum)]
        protocol: Option<SignProtocol>,
        /// For v3: seconds from now until the slot expires.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
        /// The path after the upload prefix, e.g. `abc123/photo.jpg`.
        path: String,
        /// The file's size in bytes (the PUT's Content-Length).
        size: u64,
        /// The PUT's Content-Type, for v2 and token (default application/octet-stream).
        content_type: Option<String>,
    },
}

/// Token protocols that `sign` can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignProtocol {
    /// Prosody's default and ejabberd: `v`.
    V,
    /// Prosody `protocol = "v2"`.
    V2,
    /// Metronome: `token`, signed like v2.
    Token,
    /// Go hmac-file-server 3.x: `v3` with `expires`.
    V3,
}

/// Rewrites the Go spelling `-config FILE` / `-config=FILE` (and `-version`, `-help`) to the
/// double-dash form.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|arg| {
            for long in ["config", "version", "help", "set"] {
                let single = format!("-{long}");
                if arg == single || arg.starts_with(&format!("{single}=")) {
                    return format!("-{arg}");
                }
            }
            arg
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_args(args.iter().map(|s| s.to_string()))).unwrap()
    }

    #[test]
    fn go_style_single_dash() {
        let cli = parse(&["hmac-file-server", "-config", "/etc/x.toml"]);
        assert_eq!(cli.config.unwrap(), PathBuf::from("/etc/x.toml"));
        let cli = parse(&["hmac-file-server", "-config=/etc/y.toml"]);
        assert_eq!(cli.config.unwrap(), PathBuf::from("/etc/y.toml"));
        let cli = parse(&["hmac-file-server", "--config", "/etc/z.toml", "check-config"]);
        assert!(matches!(cli.command, Some(Command::CheckConfig)));
    }

    #[test]
    fn sign_arguments() {
        let cli = parse(&[
            "hmac-file-server",
            "sign",
            "--protocol",
            "v2",
            "a/b.jpg",
            "12",
            "image/jpeg",
        ]);
        match cli.command {
            Some(Command::Sign {
                protocol,
                path,
                size,
                content_type,
                ..
            }) => {
                assert_eq!(protocol, Some(SignProtocol::V2));
                assert_eq!(path, "a/b.jpg");
                assert_eq!(size, 12);
                assert_eq!(content_type.as_deref(), Some("image/jpeg"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
