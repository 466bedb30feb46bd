//! A real Garage (the S3-compatible object store, 2.x, `cargo install garage --locked`) for
//! the tests: a single node on free loopback ports with a generated configuration in a
//! temporary folder, its layout applied, a bucket and a key made with its CLI. The binary is
//! `$GARAGE_BIN`, else `garage` on the PATH, else `~/.cargo/bin/garage`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::free_port;

/// The bucket every test Garage has.
pub const BUCKET: &str = "hfs-test";

/// A running single-node Garage.
pub struct Garage {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Its S3 API port.
    pub s3_port: u16,
    /// The access key id of the test key.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
}

/// The garage binary.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("garage"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cargo/bin/garage")
    })
}

fn run(config: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (install it: cargo install garage --locked): {e}",
                binary().display()
            )
        });
    assert!(
        out.status.success(),
        "garage {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
}

impl Garage {
    /// Starts one, with bucket [`BUCKET`] and a key allowed to use it.
    ///
    /// The ports are picked free, then bound by Garage a moment later: another test's socket
    /// may take one in between, and such a Garage never answers. So a start that fails is
    /// retried on new ports and a new folder, and the last failure names Garage's log.
    pub fn start() -> Garage {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Garage::try_start() {
                Ok(garage) => return garage,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("garage did not start in three tries:\n{}", failures.join("\n---\n"));
    }

    fn try_start() -> Result<Garage, String> {
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3_port, admin) = (free_port(), free_port(), free_port());
        let mut secret = [0u8; 32];
        getrandom(&mut secret);
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\nroot_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
                secret = hex(&secret),
            ),
        )
        .unwrap();
        let child = spawn_server(&config, dir.path());
        let mut garage = Garage {
            child: Some(child),
            dir,
            config,
            s3_port,
            key_id: String::new(),
            secret: String::new(),
        };
        let node = garage.wait_for_node()?;
        garage.wait_for_rpc()?;
        garage.wait_for_s3_port()?;
        run(&garage.config, &["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        run(&garage.config, &["layout", "apply", "--version", "1"]);
        run(&garage.config, &["bucket", "create", BUCKET]);
        let key = run(&garage.config, &["key", "create", "hfs-test-key"]);
        garage.key_id = field(&key, "Key ID:");
        garage.secret = field(&key, "Secret key:");
        run(
            &garage.config,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                BUCKET,
                "--key",
                "hfs-test-key",
            ],
        );
        garage.wait_for_key()?;
        Ok(garage)
    }

    /// Waits until the test key can write into the bucket. The CLI's changes reach the S3 API
    /// a moment after the commands return: a server started right away was once refused its
    /// start-up probe (HTTP 400).
    fn wait_for_key(&mut self) -> Result<(), String> {
        let client = self.client();
        let probe = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let put = client
                    .put_object()
                    .bucket(BUCKET)
                    .key("test-ready")
                    .body(aws_sdk_s3::primitives::ByteStream::from_static(b"ready"))
                    .send()
                    .await;
                match put {
                    Ok(_) => client
                        .delete_object()
                        .bucket(BUCKET)
                        .key("test-ready")
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string()),
                    Err(e) => Err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()),
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // A thread of its own: the tests that start a Garage run inside a runtime already.
            let probe = probe.clone();
            let last = std::thread::spawn(probe).join().unwrap();
            match last {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline || self.exited() => {
                    return Err(self.failure(&format!("the test key cannot write into the bucket: {e}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Why it is not up: the waiting that failed, whether it still runs, and its log.
    fn failure(&mut self, what: &str) -> String {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => format!("it exited ({status})"),
            _ => "it still runs".to_string(),
        };
        self.stop();
        format!(
            "{what}; {exited}; its log:\n{}",
            std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
        )
    }

    /// Whether its process has ended.
    fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
    }

    /// Waits until the node answers its CLI; returns its id.
    fn wait_for_node(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(binary())
                .arg("-c")
                .arg(&self.config)
                .args(["node", "id", "-q"])
                .output();
            if let Ok(out) = out
                && out.status.success()
            {
                let id = String::from_utf8_lossy(&out.stdout);
                if let Some((id, _)) = id.trim().split_once('@') {
                    return Ok(id.to_string());
                }
            }
            if Instant::now() >= deadline || self.exited() {
                return Err(self.failure("garage gave no node id"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node answers over RPC (its CLI's `status`), which comes a moment after
    /// its id is known.
    fn wait_for_rpc(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new(binary())
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline || self.exited() {
                return Err(self.failure("garage answers no RPC"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the S3 API takes connections. Its port may have been taken between
    /// `free_port` and Garage's bind (as the local port of another test's connection): Garage
    /// then runs and answers RPC, but nothing listens there, and every request is refused.
    fn wait_for_s3_port(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            if Instant::now() >= deadline || self.exited() {
                return Err(self.failure("garage's S3 API takes no connections"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The server settings that put its files in this Garage's bucket under `prefix`.
    pub fn toml(&self, prefix: &str) -> String {
        format!(
            "StoreBackend = \"s3\"\nS3Endpoint = \"{}\"\nS3Region = \"garage\"\nS3Bucket = \"{BUCKET}\"\nS3Prefix = \"{prefix}\"\n\
             S3AccessKeyId = \"{}\"\nS3SecretAccessKey = \"{}\"\nS3PartSize = \"5MiB\"\n",
            self.endpoint(),
            self.key_id,
            self.secret
        )
    }

    /// An S3 client of the test key, to look into the bucket.
    pub fn client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("garage"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(&self.key_id, &self.secret, None, None, "test"))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// The keys of the objects under `prefix`.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// The keys of the multipart uploads under way under `prefix`.
    pub async fn multipart_uploads(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .client()
            .list_multipart_uploads()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        listed
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect()
    }

    /// Starts it again after [`Garage::stop`], on the same ports with the same data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.child = Some(spawn_server(&self.config, self.dir.path()));
        if let Err(failure) = self.wait_for_rpc().and_then(|()| self.wait_for_s3_port()) {
            panic!("{failure}");
        }
    }

    /// Stops it (SIGKILL), for tests of an unreachable store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(config: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("garage.log"))
        .unwrap();
    Command::new(binary())
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (install it: cargo install garage --locked): {e}",
                binary().display()
            )
        })
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(buf).unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
