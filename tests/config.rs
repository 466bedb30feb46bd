//! The configuration through the real binary: `keys` prints the key table, `check-config`
//! answers as before, and StateDir moves the embedded state (records of unfinished resumable
//! uploads, the ban list) out of StoreDir, where `unban` finds it too.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TestServer, client, wait_until};
use reqwest::StatusCode;

#[tokio::test]
async fn embedded_state_lives_in_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    let server = TestServer::start(&format!(
        "StateDir = \"{}\"\nBlockAfterFails = 1\nBlockDuration = 60\n",
        state_dir.display()
    ));
    let http = client();

    let r = http
        .post(server.signed_v("s/a.bin", "s/a.bin", 10))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "tus creation");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    assert!(
        state_dir.join("uploads").join(format!("{id}.json")).is_file(),
        "the upload's record is in StateDir/uploads"
    );
    assert!(
        !server.store().join(".hmac-file-server/uploads").exists(),
        "and not under StoreDir"
    );

    let bad = format!("{}?v={}", server.url("s/b.bin"), "cd".repeat(32));
    let r = http.put(bad).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let bans = state_dir.join("bans.json");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&bans)
            .is_ok_and(|t| t.contains("127.0.0.1"))),
        "the ban is saved in StateDir/bans.json"
    );
    assert!(!server.store().join(".hmac-file-server/bans.json").exists());

    let unban = Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
        .arg("--config")
        .arg(server.dir.path().join("config.toml"))
        // The IPv4-mapped spelling names the same client.
        .args(["unban", "::ffff:127.0.0.1"])
        .output()
        .unwrap();
    assert!(unban.status.success(), "{unban:?}");
    assert!(
        String::from_utf8_lossy(&unban.stdout).contains(&bans.display().to_string()),
        "unban edits StateDir/bans.json: {unban:?}"
    );
    assert!(!std::fs::read_to_string(&bans).unwrap().contains("127.0.0.1"));
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
        .args(args)
        .env_remove("HMAC_FILE_SERVER_SECRET")
        .output()
        .unwrap()
}

#[test]
fn keys_prints_the_table_without_a_configuration() {
    let out = run(&["keys"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, hmac_file_server::config::keys::describe());
    for key in hmac_file_server::config::keys::KEYS {
        assert!(text.contains(key.name), "{} missing", key.name);
    }
    let max = text.lines().find(|l| l.starts_with("MaxUploadSize ")).unwrap();
    assert!(max.contains("\"100MiB\"") && max.contains("live"), "{max}");
}

#[test]
fn check_config_answers_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "Secret = \"0123456789abcdef\"\n").unwrap();
    let out = run(&["--config", good.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configuration OK\n");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "EnableVersioning = true\nMaxUploadSzie = 1\n").unwrap();
    let out = run(&["--config", bad.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "warning: EnableVersioning: used by other hmac-file-server versions, not by this one; ignored\n\
         config error: MaxUploadSzie: unknown key; did you mean `MaxUploadSize`?\n\
         config error: Secret: no Secret or SecretFile: refusing to run with no HMAC key\n"
    );
}

/// A configuration file that cannot be read or parsed is the one problem `check-config`
/// reports: the key checks of the empty table that follows (`Secret: no Secret or
/// SecretFile`) would only send the operator after the wrong thing.
#[test]
fn check_config_names_only_a_file_it_cannot_read_or_parse() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "Secret = \"0123456789abcdef\"\nListenPort = \n").unwrap();
    for (file, what) in [
        (missing.as_path(), "cannot read"),
        (broken.as_path(), "TOML parse error"),
        (dir.path(), "cannot read"),
    ] {
        let out = run(&["--config", file.to_str().unwrap(), "check-config"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("config error: ")).collect();
        assert_eq!(errors.len(), 1, "{}: one problem only:\n{stderr}", file.display());
        assert!(
            errors[0].starts_with("config error: config: ") && stderr.contains(what),
            "{}: the file's problem:\n{stderr}",
            file.display()
        );
        assert!(!stderr.contains("no Secret or SecretFile"), "{stderr}");
    }
}

/// Runs the binary like [`run`], but gives up after `within`: a read that never ends must
/// fail the test, not hang it.
fn run_within(args: &[&str], within: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
        .args(args)
        .env_remove("HMAC_FILE_SERVER_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let finished = wait_until(within, || child.try_wait().unwrap().is_some());
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(finished, "{args:?} did not finish within {within:?}: {out:?}");
    out
}

/// SecretFile must be a regular file of at most 64 KiB. Anything else is a problem naming the
/// key, found at once: /dev/zero used to grow without bound, a FIFO blocked forever without a
/// word, a directory gave a bare "Is a directory".
#[test]
fn check_config_refuses_a_secret_file_that_is_not_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'k'; 64 * 1024 + 1]).unwrap();
    let config = dir.path().join("config.toml");
    for (secret_file, what) in [
        (fifo.as_path(), "not a regular file"),
        (folder.as_path(), "not a regular file"),
        (big.as_path(), "64 KiB"),
        (Path::new("/dev/zero"), "not a regular file"),
    ] {
        std::fs::write(&config, format!("SecretFile = \"{}\"\n", secret_file.display())).unwrap();
        let out = run_within(
            &["--config", config.to_str().unwrap(), "check-config"],
            Duration::from_secs(5),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {out:?}", secret_file.display());
        assert!(
            stderr.contains("config error: SecretFile: ") && stderr.contains(what),
            "{}: the problem names SecretFile and says {what:?}:\n{stderr}",
            secret_file.display()
        );
    }

    // 64 KiB is still fine.
    let largest = dir.path().join("largest");
    std::fs::write(&largest, vec![b'k'; 64 * 1024]).unwrap();
    std::fs::write(&config, format!("SecretFile = \"{}\"\n", largest.display())).unwrap();
    let out = run_within(
        &["--config", config.to_str().unwrap(), "check-config"],
        Duration::from_secs(5),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// check-config finds a DeletionReportFile the server could not write (its folder missing, a
/// folder in its place, a file without write permission) instead of leaving it to a WARN per
/// deleted file; it creates nothing.
#[test]
fn check_config_refuses_an_unwritable_deletion_report_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let read_only = dir.path().join("read-only.log");
    std::fs::write(&read_only, "").unwrap();
    std::fs::set_permissions(&read_only, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    // Root may write it anyway: then that case says nothing and is left out.
    let root = std::fs::OpenOptions::new().append(true).open(&read_only).is_ok();
    let mut cases = vec![
        (dir.path().join("missing/deletions.log"), "missing"),
        (dir.path().to_path_buf(), "folder"),
    ];
    if !root {
        cases.push((read_only.clone(), "read-only"));
    }
    let check = |report: &Path| {
        std::fs::write(
            &config,
            format!(
                "Secret = \"0123456789abcdef\"\nDeletionReportFile = \"{}\"\n",
                report.display()
            ),
        )
        .unwrap();
        run(&["--config", config.to_str().unwrap(), "check-config"])
    };
    for (report, what) in &cases {
        let out = check(report);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        assert!(
            stderr.contains("config error: DeletionReportFile: "),
            "{what}: the problem names the key:\n{stderr}"
        );
    }
    assert!(!dir.path().join("missing").exists(), "nothing is created");

    // A new file in a writable folder, and an existing writable file, are fine; the new one is
    // not created by the check.
    let fresh = dir.path().join("deletions.log");
    let out = check(&fresh);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!fresh.exists(), "check-config does not create it");
    std::fs::write(&fresh, "").unwrap();
    assert_eq!(check(&fresh).status.code(), Some(0));
}

/// Behind a reverse proxy on the same host every request comes from the proxy's address: with
/// TrustedProxies empty, a few bad tokens ban the proxy and so everyone. A loopback (or Unix
/// socket) listener is the sign of a proxy in front, so check-config warns about it, naming
/// the proxy's likely address; a listener on every interface, or TrustedProxies set, does not.
#[test]
fn check_config_warns_of_a_proxy_without_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let socket = dir.path().join("hfs.sock");
    let check = |extra: &str| {
        std::fs::write(&config, format!("Secret = \"0123456789abcdef\"\n{extra}\n")).unwrap();
        let out = run(&["--config", config.to_str().unwrap(), "check-config"]);
        assert_eq!(out.status.code(), Some(0), "{extra}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "configuration OK\n");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (extra, address) in [
        ("ListenPort = \"127.0.0.1:8080\"", "127.0.0.1/32"),
        ("ListenPort = \"127.0.0.2:8080\"", "127.0.0.1/32"),
        ("ListenPort = \"[::1]:8080\"", "::1/128"),
        ("ListenPort = \"localhost:8080\"", "127.0.0.1/32"),
        (
            &format!("UnixSocket = true\nUnixSocketPath = \"{}\"", socket.display()),
            "127.0.0.1/32",
        ),
    ] {
        let stderr = check(extra);
        let warning = stderr
            .lines()
            .find(|l| l.starts_with("warning: ") && l.contains("TrustedProxies"))
            .unwrap_or_else(|| panic!("{extra}: no warning about TrustedProxies:\n{stderr}"));
        assert!(
            warning.contains("proxy") && warning.contains(address) && warning.contains("ban"),
            "{extra}: the warning says why and names {address}: {warning}"
        );
    }
    for extra in [
        "ListenPort = \":8080\"",
        "ListenPort = \"192.0.2.1:8080\"",
        "ListenPort = \"127.0.0.1:8080\"\nTrustedProxies = [\"127.0.0.1/32\"]",
        &format!(
            "UnixSocket = true\nUnixSocketPath = \"{}\"\nTrustedProxies = \"127.0.0.1\"",
            socket.display()
        ),
    ] {
        assert_eq!(check(extra), "", "{extra}: no warning");
    }
}

/// The same warning as a WARN line at start-up.
#[test]
fn start_up_warns_of_a_proxy_without_trusted_proxies() {
    let warned = |server: &TestServer| {
        server
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("TrustedProxies") && l.contains("127.0.0.1/32"))
    };
    let server = TestServer::start(""); // listens on 127.0.0.1, TrustedProxies empty
    assert!(warned(&server), "no WARN about TrustedProxies:\n{}", server.log());
    let server = TestServer::start("TrustedProxies = [\"127.0.0.1/32\", \"::1/128\"]");
    assert!(!warned(&server), "a WARN despite TrustedProxies:\n{}", server.log());
}
