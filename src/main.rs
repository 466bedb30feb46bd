//! The `hmac-file-server` command: parse arguments, load the configuration, start logging,
//! run the server (or `check-config`, `keys`, `sign`, `unban`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use hmac_file_server::auth::{self, DEFAULT_CONTENT_TYPE};
use hmac_file_server::config::cli::{Cli, Command, SignProtocol, normalize_args};
use hmac_file_server::config::{Config, ConfigError, Sources, keys};
use hmac_file_server::{metrics, ops, server};

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    // FAILPOINTS, in test builds with the `failpoints` feature only.
    let _failpoints = hmac_file_server::fault::setup();
    if let Some(Command::Keys) = cli.command {
        print!("{}", keys::describe());
        return ExitCode::SUCCESS;
    }
    let sources = Sources {
        file: cli.config.clone(),
        env: std::env::vars().collect(),
        overrides: cli.overrides.clone(),
    };
    let loaded = Config::load(&sources);
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(loaded),
        Command::Keys => ExitCode::SUCCESS, // answered above, without loading
        Command::Unban { address } => match loaded {
            Ok(config) => unban(&config, address),
            Err(e) => report(&e),
        },
        Command::MigrateToS3 => match loaded {
            Ok(config) => migrate_to_s3(&config),
            Err(e) => report(&e),
        },
        Command::Sign {
            protocol,
            expires_in,
            path,
            size,
            content_type,
        } => match loaded {
            Ok(config) => sign(&config, protocol, expires_in, &path, size, content_type.as_deref()),
            Err(e) => report(&e),
        },
        Command::Run => match loaded {
            Ok(config) => run(config, sources),
            Err(e) => report(&e),
        },
    }
}

fn report(e: &ConfigError) -> ExitCode {
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    for p in &e.problems {
        eprintln!("config error: {p}");
    }
    ExitCode::from(2)
}

fn check_config(loaded: Result<Config, ConfigError>) -> ExitCode {
    match loaded {
        Ok(config) => {
            for w in config.warnings.iter().chain(&config.proxy_warning()) {
                eprintln!("warning: {w}");
            }
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

fn migrate_to_s3(config: &Config) -> ExitCode {
    use hmac_file_server::server::migrate;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ops::logging::init_stderr(&config.logging.level);
    let started = std::time::Instant::now();
    match runtime.block_on(migrate::to_s3(config, |line| println!("{line}"))) {
        Ok(done) => {
            println!(
                "{} files copied ({} bytes), {} already in the bucket, {} conflicts, {} failed, in {:.1} s",
                done.copied,
                done.copied_bytes,
                done.present,
                done.conflicts.len(),
                done.failed.len(),
                started.elapsed().as_secs_f64()
            );
            if done.complete() {
                println!("every file of the local store is in the bucket; the local files are still there");
                ExitCode::SUCCESS
            } else {
                println!(
                    "not every file is in the bucket: see the CONFLICT and FAILED lines above; run again after fixing them"
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("migrate-to-s3: {e}");
            ExitCode::from(2)
        }
    }
}

fn unban(config: &Config, address: std::net::IpAddr) -> ExitCode {
    use hmac_file_server::ops::bans::{read_ban_file, write_ban_file};
    // Bans are kept under the canonical address: `::ffff:9.9.9.9` is 9.9.9.9.
    let address = address.to_canonical();
    if let Some(redis) = &config.redis {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(async {
                    let state =
                        hmac_file_server::state::redis::RedisState::connect(redis).map_err(|e| e.to_string())?;
                    state.unban(&address.to_string()).await.map_err(|e| e.to_string())
                })
            });
        return match result {
            Ok(true) => {
                println!("ban of {address} lifted in Redis; every instance follows within 2 s");
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("{address} was not banned");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot reach Redis: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let path = hmac_file_server::app::ban_file(config);
    let mut bans = read_ban_file(&path);
    if bans.remove(&address.to_string()).is_none() {
        println!("{address} is not in {}", path.display());
        return ExitCode::SUCCESS;
    }
    match write_ban_file(&path, &bans) {
        Ok(()) => {
            println!(
                "{address} removed from {}; reload the server (SIGHUP, systemctl reload) to lift it",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn sign(
    config: &Config,
    protocol: Option<SignProtocol>,
    expires_in: u64,
    path: &str,
    size: u64,
    content_type: Option<&str>,
) -> ExitCode {
    let secret = &config.auth.secret;
    let ct = content_type.unwrap_or(DEFAULT_CONTENT_TYPE);
    let expires = hmac_file_server::clock::now_unix() + expires_in;
    let full_path = format!("{}{path}", config.url_prefix());
    let line = |p: SignProtocol| match p {
        SignProtocol::V => format!("v={}", auth::sign_v(secret, path, size)),
        SignProtocol::V2 => format!("v2={}", auth::sign_v2(secret, path, size, ct)),
        SignProtocol::Token => format!("token={}", auth::sign_v2(secret, path, size, ct)),
        SignProtocol::V3 => format!(
            "v3={}&expires={expires}",
            auth::sign_v3(secret, "PUT", expires, &full_path)
        ),
    };
    match protocol {
        Some(p) => println!("{}", line(p)),
        None => {
            for p in [SignProtocol::V, SignProtocol::V2, SignProtocol::V3] {
                println!("{}", line(p));
            }
        }
    }
    ExitCode::SUCCESS
}

fn run(config: Config, sources: Sources) -> ExitCode {
    let log = match ops::logging::init(&config) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    for w in config.warnings.iter().chain(&config.proxy_warning()) {
        tracing::warn!("{w}");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = config.server.num_cores {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = if config.metrics.enabled {
        match metrics::install() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let launch = server::Launch {
        config: Arc::new(config),
        sources,
        log: Some(log),
        metrics,
    };
    let result = runtime.block_on(async {
        let shutdown = server::shutdown_signal().map_err(|e| format!("cannot listen for SIGTERM/SIGINT: {e}"))?;
        server::run(launch, shutdown).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
