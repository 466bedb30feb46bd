//! Loading as a whole: precedence, every problem at once, the example configuration.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use std::io::Write;

fn load_str(toml: &str, env: &[(&str, &str)], overrides: &[&str]) -> Result<Config, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    Config::load(&Sources {
        file: Some(file.path().to_path_buf()),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
    })
}

fn keys_of(err: ConfigError) -> Vec<String> {
    err.problems.into_iter().map(|p| p.key).collect()
}

#[test]
fn defaults() {
    let c = load_str("Secret = \"0123456789abcdef\"", &[], &[]).unwrap();
    assert_eq!(c.server.listen, ListenAddr::AnyHost(8080));
    assert_eq!(c.store.upload_sub_dir, "upload");
    assert_eq!(c.limits.max_upload_bytes, 100 << 20);
    assert_eq!(c.limits.read_timeout, Duration::from_secs(900));
    assert_eq!(c.store.buffer_bytes, 65_536);
    assert_eq!(c.limits.upload_expiry, Duration::from_secs(86_400));
    assert!(c.metrics.enabled);
    assert!(c.warnings.is_empty());
    assert_eq!(c.url_prefix(), "/upload/");
}

#[test]
fn seed_config_loads() {
    let seed = r#"
ListenPort = ":8080"
UnixSocket = false
Secret = "mysecret"
StoreDir = "/data/uploads"
UploadSubDir = "uploads"
LogLevel = "info"
LogFile = "/var/log/hmac-file-server.log"
MaxRetries = 5
RetryDelay = 2
EnableGetRetries = true
BlockAfterFails = 3
BlockDuration = 300
AutoUnban = true
AutoBanTime = 600
DeleteFiles = true
DeleteFilesAfterPeriod = "30d"
NumCores = "auto"
ReaskSecretEnabled = true
ReaskSecretInterval = "24h"
MetricsEnabled = true
MetricsPort = ":9090"
ChecksumVerification = true
RetentionPolicyEnabled = true
MaxRetentionSize = 10737418240
MaxRetentionTime = "30d"
RedisAddr = "localhost:6379"
RedisPassword = ""
RedisDB = 0
ReadTimeout = 900
WriteTimeout = 900
BufferSize = 65536
"#;
    let c = load_str(seed, &[], &[]).unwrap();
    assert_eq!(c.retention.max_retention_bytes, 10 << 30);
    assert_eq!(c.retention.delete_files_after, Duration::from_secs(30 * 86_400));
    assert_eq!(c.bans.block_duration, Duration::from_secs(300));
    assert_eq!(c.store.upload_sub_dir, "uploads");
    assert_eq!(c.redis.as_ref().unwrap().addr, "localhost:6379");
    assert!(c.redis.as_ref().unwrap().password.is_none());
    assert_eq!(c.warnings.len(), 1, "short secret warns: {:?}", c.warnings);
}

#[test]
fn unknown_key_names_the_closest() {
    let err = load_str("Secret = \"0123456789abcdef\"\nMaxUploadSzie = \"1GB\"", &[], &[]).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].key, "MaxUploadSzie");
    assert!(
        err.problems[0].message.contains("MaxUploadSize"),
        "{}",
        err.problems[0].message
    );
}

#[test]
fn prosody_filer_spelling_is_accepted() {
    let c = load_str(
        "listenport = \"127.0.0.1:5050\"\nsecret = \"0123456789abcdef\"\nstoreDir = \"/srv/x\"\nuploadSubDir = \"up\"",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(c.server.listen, ListenAddr::Socket("127.0.0.1:5050".parse().unwrap()));
    assert_eq!(c.store.dir, PathBuf::from("/srv/x"));
    assert_eq!(c.store.upload_sub_dir, "up");
    let err = load_str("Secret = \"0123456789abcdef\"\nsecret = \"x\"", &[], &[]).unwrap_err();
    assert_eq!(err.problems.len(), 1);
}

#[test]
fn unknown_environment_variables_are_errors() {
    let err = load_str(
        "Secret = \"0123456789abcdef\"",
        &[("HMAC_FILE_SERVER_MAX_UPLOAD_SIZ", "1")],
        &[],
    )
    .unwrap_err();
    assert_eq!(err.problems[0].key, "HMAC_FILE_SERVER_MAX_UPLOAD_SIZ");
    assert!(
        err.problems[0].message.contains("HMAC_FILE_SERVER_MAX_UPLOAD_SIZE"),
        "{}",
        err.problems[0].message
    );
    load_str("Secret = \"0123456789abcdef\"", &[("OTHER_VAR", "1")], &[]).unwrap();
}

#[test]
fn warnings_come_with_errors() {
    let err = load_str("EnableVersioning = true\n[server]\nlisten_address = \"8080\"", &[], &[]).unwrap_err();
    assert_eq!(err.problems[0].key, "Secret");
    assert_eq!(err.warnings.len(), 2, "{:?}", err.warnings);
}

#[test]
fn a_file_that_does_not_parse_is_the_only_problem() {
    let err = load_str("Secret = \"0123456789abcdef\"\nListenPort = ", &[], &[]).unwrap_err();
    assert_eq!(keys_of(err), ["config"], "no key checks of the empty table");
    let err = load_str("ListenPort = ", &[("HMAC_FILE_SERVER_REDIS_DB", "x")], &[]).unwrap_err();
    assert_eq!(
        keys_of(err),
        ["RedisDB", "config"],
        "the environment's own problems stay"
    );
}

#[test]
fn foreign_keys_warn() {
    let c = load_str(
        "Secret = \"0123456789abcdef\"\nEnableVersioning = true\n[clamav]\nx = 1",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
}

#[test]
fn every_problem_is_reported() {
    let err = load_str(
        "ListenPort = \"nope\"\nMaxUploadSize = \"lots\"\nReadTimeout = \"soon\"\nLogFormat = \"xml\"\nBufferSize = 1",
        &[],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        keys_of(err),
        [
            "BufferSize",
            "ListenPort",
            "LogFormat",
            "MaxUploadSize",
            "ReadTimeout",
            "Secret"
        ]
    );
}

#[test]
fn precedence_file_env_cli() {
    let toml = "Secret = \"0123456789abcdef\"\nListenPort = \":1000\"\nMaxUploadSize = 10";
    let c = load_str(toml, &[("HMAC_FILE_SERVER_LISTEN_PORT", "127.0.0.1:2000")], &[]).unwrap();
    assert_eq!(c.server.listen, ListenAddr::Socket("127.0.0.1:2000".parse().unwrap()));
    let c = load_str(
        toml,
        &[
            ("HMAC_FILE_SERVER_LISTEN_PORT", "127.0.0.1:2000"),
            ("HMAC_FILE_SERVER_MAX_UPLOAD_SIZE", "2KiB"),
        ],
        &["ListenPort=[::1]:3000"],
    )
    .unwrap();
    assert_eq!(c.server.listen, ListenAddr::Socket("[::1]:3000".parse().unwrap()));
    assert_eq!(c.limits.max_upload_bytes, 2048);
    let err = load_str(toml, &[("HMAC_FILE_SERVER_UNIX_SOCKET", "maybe")], &[]).unwrap_err();
    assert_eq!(keys_of(err), ["UnixSocket"]);
}

#[test]
fn listen_forms() {
    assert_eq!(ListenAddr::parse(":8080").unwrap(), ListenAddr::AnyHost(8080));
    assert_eq!(ListenAddr::parse("8080").unwrap(), ListenAddr::AnyHost(8080));
    assert_eq!(
        ListenAddr::parse("127.0.0.1:0").unwrap(),
        ListenAddr::Socket("127.0.0.1:0".parse().unwrap())
    );
    assert_eq!(
        ListenAddr::parse("[::1]:8080").unwrap(),
        ListenAddr::Socket("[::1]:8080".parse().unwrap())
    );
    assert_eq!(
        ListenAddr::parse("localhost:80").unwrap(),
        ListenAddr::Host("localhost".into(), 80)
    );
    assert!(ListenAddr::parse("8080000").is_err());
    assert!(ListenAddr::parse("host").is_err());
}

#[test]
fn secret_file_strips_newline() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    secret.write_all(b"from-a-file-0123456789\n").unwrap();
    let toml = format!("SecretFile = \"{}\"", secret.path().display());
    let c = load_str(&toml, &[], &[]).unwrap();
    assert_eq!(c.auth.secret.expose(), b"from-a-file-0123456789");
    assert!(
        !format!("{c:?}").contains("from-a-file"),
        "Debug must not print the secret"
    );
    let both = format!("{toml}\nSecret = \"x\"");
    assert_eq!(keys_of(load_str(&both, &[], &[]).unwrap_err()), ["SecretFile"]);
}

/// ReaskSecretInterval is both how often the secret is re-read and how long the previous one
/// stays valid: 0 would re-read the configuration in a tight loop and give the previous secret
/// no grace at all.
#[test]
fn reask_secret_interval_has_a_minimum() {
    for given in ["0", "\"0s\"", "\"500ms\""] {
        let toml = format!("Secret = \"0123456789abcdef\"\nReaskSecretInterval = {given}");
        let err = load_str(&toml, &[], &[]).unwrap_err();
        assert_eq!(keys_of(err), ["ReaskSecretInterval"], "{given}");
    }
    let err = load_str(
        "Secret = \"0123456789abcdef\"",
        &[("HMAC_FILE_SERVER_REASK_SECRET_INTERVAL", "0")],
        &[],
    )
    .unwrap_err();
    assert!(
        err.problems[0].message.contains("at least 1s"),
        "{}",
        err.problems[0].message
    );
    for given in ["1", "\"2s\"", "\"24h\""] {
        let toml = format!("Secret = \"0123456789abcdef\"\nReaskSecretInterval = {given}");
        load_str(&toml, &[], &[]).unwrap_or_else(|e| panic!("{given}: {e}"));
    }
}

#[test]
fn proxy_warning_for_a_loopback_or_socket_listener_without_trusted_proxies() {
    let warning = |extra: &str| {
        load_str(&format!("Secret = \"0123456789abcdef\"\n{extra}"), &[], &[])
            .unwrap()
            .proxy_warning()
    };
    for (extra, proxy) in [
        ("ListenPort = \"127.0.0.1:8080\"", r#"["127.0.0.1/32"]"#),
        ("ListenPort = \"127.1.2.3:0\"", r#"["127.0.0.1/32"]"#),
        ("ListenPort = \"[::1]:8080\"", r#"["::1/128"]"#),
        ("ListenPort = \"[::ffff:127.0.0.1]:8080\"", r#"["127.0.0.1/32"]"#),
        ("ListenPort = \"LocalHost:8080\"", r#"["127.0.0.1/32", "::1/128"]"#),
        (
            "UnixSocket = true\nUnixSocketPath = \"/run/hfs.sock\"",
            r#"["127.0.0.1/32", "::1/128"]"#,
        ),
    ] {
        let w = warning(extra).unwrap_or_else(|| panic!("{extra}: no warning"));
        assert!(w.starts_with("TrustedProxies "), "{w}");
        assert!(w.contains(&format!("TrustedProxies = {proxy}")), "{extra}: {w}");
    }
    for extra in [
        "",
        "ListenPort = \":8080\"",
        "ListenPort = \"[::]:8080\"",
        "ListenPort = \"0.0.0.0:8080\"",
        "ListenPort = \"192.0.2.1:8080\"",
        "ListenPort = \"files.example.com:8080\"",
        "ListenPort = \"127.0.0.1:8080\"\nTrustedProxies = [\"10.0.0.0/8\"]",
        "UnixSocket = true\nUnixSocketPath = \"/run/hfs.sock\"\nTrustedProxies = \"::1\"",
    ] {
        assert_eq!(warning(extra), None, "{extra}");
    }
}

/// Keys that `config.example.toml` sets to something else than the default, on purpose.
const EXAMPLE_DIFFERS: &[(&str, &str)] = &[
    (
        "ListenPort",
        "a first try listens on loopback only, not on every interface",
    ),
    (
        "MetricsPort",
        "the metrics listener has no authentication: loopback in the example",
    ),
    ("Secret", "a placeholder the operator must replace; the default is none"),
];

#[test]
fn example_config_lists_every_key_and_loads() {
    let example = include_str!("../../config.example.toml");
    for key in keys::KEYS.iter().map(|k| k.name) {
        let listed = example.lines().any(|l| {
            let l = l.trim_start_matches("# ");
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
        });
        assert!(listed, "config.example.toml does not list {key}");
    }
    let c = load_str(example, &[], &[]).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn example_config_gives_the_defaults() {
    let example: toml::Table = include_str!("../../config.example.toml").parse().unwrap();
    for key in keys::KEYS {
        let Some(value) = example.get(key.name) else {
            continue; // commented out: the default applies
        };
        let given = reader::typed(key, value).unwrap();
        let default = reader::typed(key, &key.default_value().unwrap()).unwrap();
        let on_purpose = EXAMPLE_DIFFERS.iter().any(|(name, _)| *name == key.name);
        if on_purpose {
            assert_ne!(given, default, "{} is listed as differing but does not", key.name);
        } else {
            assert_eq!(
                given, default,
                "config.example.toml sets {} to {value}, its default is {}",
                key.name, key.default
            );
        }
    }
}

#[test]
fn state_dir_defaults_to_the_stores_own_folder() {
    let c = load_str("Secret = \"0123456789abcdef\"\nStoreDir = \"/srv/hfs\"", &[], &[]).unwrap();
    assert_eq!(c.store.state_dir, PathBuf::from("/srv/hfs/.hmac-file-server"));
    let c = load_str("Secret = \"0123456789abcdef\"\nStateDir = \"\"", &[], &[]).unwrap();
    assert_eq!(c.store.state_dir, PathBuf::from("./data/.hmac-file-server"));
}

#[test]
fn state_dir_can_be_moved() {
    let c = load_str(
        "Secret = \"0123456789abcdef\"\nStoreDir = \"/srv/hfs\"\nStateDir = \"/var/lib/hfs-state\"",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(c.store.state_dir, PathBuf::from("/var/lib/hfs-state"));
    let c = load_str(
        "Secret = \"0123456789abcdef\"",
        &[("HMAC_FILE_SERVER_STATE_DIR", "/run/hfs")],
        &[],
    )
    .unwrap();
    assert_eq!(c.store.state_dir, PathBuf::from("/run/hfs"));
    // Beside the served folder is fine; so is the store's own folder when files are served at /.
    let c = load_str(
        "Secret = \"0123456789abcdef\"\nStoreDir = \"/srv\"\nStateDir = \"/srv/state\"",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(c.store.state_dir, PathBuf::from("/srv/state"));
    let c = load_str(
        "Secret = \"0123456789abcdef\"\nStoreDir = \"/srv\"\nUploadSubDir = \"\"\nStateDir = \"/srv/.hmac-file-server/s\"",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(c.store.state_dir, PathBuf::from("/srv/.hmac-file-server/s"));
}

#[test]
fn state_dir_must_not_be_served() {
    for (store, sub, state) in [("/srv", "upload", "/srv/upload/state"), ("/srv", "", "/srv/state")] {
        let toml = format!(
            "Secret = \"0123456789abcdef\"\nStoreDir = \"{store}\"\nUploadSubDir = \"{sub}\"\nStateDir = \"{state}\""
        );
        let err = load_str(&toml, &[], &[]).unwrap_err();
        assert_eq!(keys_of(err), ["StateDir"], "{state} under {store}/{sub}");
    }
}

#[test]
fn bad_upload_sub_dir() {
    let err = load_str("Secret = \"0123456789abcdef\"\nUploadSubDir = \"../up\"", &[], &[]).unwrap_err();
    assert_eq!(keys_of(err), ["UploadSubDir"]);
    let c = load_str("Secret = \"0123456789abcdef\"\nUploadSubDir = \"\"", &[], &[]).unwrap();
    assert_eq!(c.url_prefix(), "/");
}

/// A config file that tests rewrite between load and reload.
struct Reloadable {
    file: tempfile::NamedTempFile,
}

impl Reloadable {
    fn new(toml: &str) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), toml).unwrap();
        Self { file }
    }
    fn sources(&self) -> Sources {
        Sources {
            file: Some(self.file.path().to_path_buf()),
            ..Sources::default()
        }
    }
    fn rewrite(&self, toml: &str) {
        std::fs::write(self.file.path(), toml).unwrap();
    }
}

fn names(keys: &[&keys::Key]) -> Vec<&'static str> {
    keys.iter().map(|k| k.name).collect()
}

#[test]
fn reload_keeps_and_names_restart_only_keys_and_applies_live_ones() {
    let f = Reloadable::new("Secret = \"0123456789abcdef\"\nListenPort = \":1000\"\nMaxUploadSize = 10");
    let running = Config::load(&f.sources()).unwrap();
    f.rewrite(
        "Secret = \"fedcba9876543210\"\nListenPort = \":2000\"\nMaxUploadSize = 20\nStateDir = \"/elsewhere\"\nRedisDB = 3",
    );
    let (fresh, changed) = running.reload(&f.sources()).unwrap();
    assert_eq!(names(&changed), ["ListenPort", "StateDir", "RedisDB"]);
    assert_eq!(fresh.server.listen, ListenAddr::AnyHost(1000), "restart-only: kept");
    assert_eq!(fresh.store.state_dir, running.store.state_dir, "restart-only: kept");
    assert_eq!(fresh.limits.max_upload_bytes, 20, "live: applied");
    assert_eq!(fresh.auth.secret.expose(), b"fedcba9876543210", "live: applied");

    // Reloading the reloaded configuration names the same keys: they still differ from what runs.
    let (again, changed) = fresh.reload(&f.sources()).unwrap();
    assert_eq!(names(&changed), ["ListenPort", "StateDir", "RedisDB"]);
    assert_eq!(again.server.listen, ListenAddr::AnyHost(1000));
}

#[test]
fn reload_of_the_same_values_names_nothing() {
    let f = Reloadable::new("Secret = \"0123456789abcdef\"\nBufferSize = 65536\nRetryDelay = 2");
    let running = Config::load(&f.sources()).unwrap();
    f.rewrite("Secret = \"0123456789abcdef\"\nBufferSize = \"64KiB\"\nRetryDelay = \"2s\"\nNumCores = \"AUTO\"");
    let (_, changed) = running.reload(&f.sources()).unwrap();
    assert!(changed.is_empty(), "{:?}", names(&changed));
}

#[test]
fn reload_applies_read_timeout_to_bodies_and_names_it_for_heads() {
    let f = Reloadable::new("Secret = \"0123456789abcdef\"");
    let running = Config::load(&f.sources()).unwrap();
    f.rewrite("Secret = \"0123456789abcdef\"\nReadTimeout = 30");
    let (fresh, changed) = running.reload(&f.sources()).unwrap();
    assert_eq!(names(&changed), ["ReadTimeout"]);
    assert_eq!(changed[0].reload, keys::Reload::LiveExcept("request heads"));
    assert_eq!(
        fresh.limits.read_timeout,
        Duration::from_secs(30),
        "applied to body reads"
    );
}

#[test]
fn reload_fails_on_a_mistake_in_a_restart_only_key() {
    let f = Reloadable::new("Secret = \"0123456789abcdef\"");
    let running = Config::load(&f.sources()).unwrap();
    f.rewrite("Secret = \"0123456789abcdef\"\nListenPort = \"nope\"\nMaxUploadSize = 5");
    let err = running.reload(&f.sources()).unwrap_err();
    assert_eq!(keys_of(err), ["ListenPort"], "as the next start would fail");
}

#[test]
fn reload_keeps_environment_overrides() {
    let f = Reloadable::new("Secret = \"0123456789abcdef\"\nMaxUploadSize = 10");
    let sources = Sources {
        env: vec![("HMAC_FILE_SERVER_MAX_UPLOAD_SIZE".into(), "1KiB".into())],
        ..f.sources()
    };
    let running = Config::load(&sources).unwrap();
    f.rewrite("Secret = \"0123456789abcdef\"\nMaxUploadSize = 20\nUploadSubDir = \"files\"");
    let (fresh, changed) = running.reload(&sources).unwrap();
    assert_eq!(fresh.limits.max_upload_bytes, 1024);
    assert_eq!(names(&changed), ["UploadSubDir"]);
    assert_eq!(fresh.url_prefix(), "/upload/");
}

#[test]
fn debug_never_prints_secrets() {
    let c = load_str(
        "Secret = \"inline-secret-0123456789\"\nDeleteSecret = \"delete-secret-0123\"\nRedisAddr = \"localhost:6379\"\nRedisPassword = \"redis-password-0123\"",
        &[],
        &[],
    )
    .unwrap();
    let debug = format!("{c:?}");
    for secret in ["inline-secret", "delete-secret", "redis-password"] {
        assert!(!debug.contains(secret), "Debug shows {secret}: {debug}");
    }
    assert!(debug.contains("RedisPassword"), "the pinned keys are named: {debug}");

    let c = load_str(
        "Secret = \"inline-secret-0123456789\"\nRedisAddr = \"redis://user:addr-password-0123@redis.example:6379/1\"",
        &[],
        &[],
    )
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("addr-password"),
        "Debug shows the password in RedisAddr: {debug}"
    );
    assert!(debug.contains("redis://redis.example:6379/1"), "{debug}");
}

#[cfg(feature = "s3")]
#[test]
fn s3_settings() {
    let base = "Secret = \"0123456789abcdef\"\nStoreBackend = \"s3\"\nS3Bucket = \"files\"\nS3Prefix = \"up\"\n";
    let c = load_str(
        base,
        &[("AWS_ACCESS_KEY_ID", "GK1"), ("AWS_SECRET_ACCESS_KEY", "s3cr3t")],
        &[],
    )
    .unwrap();
    let s3 = c.s3.expect("the bucket's settings");
    assert_eq!(
        (s3.bucket.as_str(), s3.prefix.as_str()),
        ("files", "up/"),
        "the prefix ends with /"
    );
    assert_eq!((s3.region.as_str(), s3.endpoint.as_deref()), ("us-east-1", None));
    assert_eq!((s3.access_key_id.as_str(), s3.part_bytes), ("GK1", 8 << 20));
    assert!(!format!("{s3:?}").contains("s3cr3t"), "Debug hides the secret key");

    let err = load_str(base, &[], &[]).unwrap_err();
    assert_eq!(keys_of(err), ["S3AccessKeyId", "S3SecretAccessKey"]);
    let creds = "S3AccessKeyId = \"GK1\"\nS3SecretAccessKey = \"x\"\n";
    let err = load_str(&format!("{base}{creds}S3PartSize = \"4MiB\"\n"), &[], &[]).unwrap_err();
    assert_eq!(keys_of(err), ["S3PartSize"], "below S3's smallest part");
    let err = load_str(&format!("{base}{creds}MaxUploadSize = \"100GiB\"\n"), &[], &[]).unwrap_err();
    assert!(
        err.problems[0].message.contains("at least \"11MiB\""),
        "{:?}",
        err.problems
    );
    load_str(
        &format!("{base}{creds}MaxUploadSize = \"100GiB\"\nS3PartSize = \"11MiB\"\n"),
        &[],
        &[],
    )
    .unwrap();
}
