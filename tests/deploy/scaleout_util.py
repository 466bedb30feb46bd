"""The pieces of the scale-out deployment in deploy/s3, run for real on loopback: a Garage
cluster (deploy/s3/garage-node.toml, or one node from garage-single.toml), a private
redis-server, hmac-file-server instances (deploy/s3/config.toml) and nginx (deploy/nginx with
deploy/s3/nginx-upstream.conf). The shipped files are rewritten only for ports, paths, secrets
and the part size (with `rewrite`, which fails when a shipped line it expects is gone).

Used by test_deploy_scaleout.py; pytest puts this folder on sys.path.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deploy_util import (
    DEPLOY, STARTUP_TIMEOUT, ManagedProcess, free_ports, missing, poll, port_open, require_tool, rewrite,
)

S3_KIT = DEPLOY / "s3"
GARAGE_NODE_TOML = S3_KIT / "garage-node.toml"
GARAGE_SINGLE_TOML = S3_KIT / "garage-single.toml"
INSTANCE_TOML = S3_KIT / "config.toml"
UPSTREAM_CONF = S3_KIT / "nginx-upstream.conf"
LIFECYCLE_JSON = S3_KIT / "lifecycle.json"
NGINX_SITE = DEPLOY / "nginx" / "hmac-file-server.conf"
NGINX_PROXY_INC = DEPLOY / "nginx" / "hmac-file-server-proxy.inc"

# As in deploy/s3/README.md.
BUCKET = "hmac-file-server"
KEY_NAME = "hmac-file-server"
GARAGE_REGION = "garage"
CLI_TIMEOUT = 30.0


# ---------------------------------------------------------------- Garage

def garage_binary() -> str:
    """$GARAGE_BIN, else garage on the PATH, else ~/.cargo/bin/garage (as tests/common/garage.rs)."""
    candidates = [os.environ.get("GARAGE_BIN"), shutil.which("garage"),
                  str(Path.home() / ".cargo" / "bin" / "garage")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    missing("garage not found ($GARAGE_BIN, PATH, ~/.cargo/bin)",
            "cargo install garage --locked --version 2.5.0 (.ci/run does it)")
    raise AssertionError("unreachable")


@dataclass
class GarageNode:
    binary: str
    index: int
    work: Path
    rpc_port: int
    s3_port: int
    proc: ManagedProcess | None = None
    node_id: str = ""  # full id (public key), without @addr

    @property
    def config(self) -> Path:
        return self.work / "garage.toml"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.binary, "-c", str(self.config), *args], capture_output=True, text=True,
                           timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, f"garage {' '.join(args)} (node {self.index}) failed rc={p.returncode}:\n" \
                                      f"{p.stdout}{p.stderr}"
        return p

    def start(self) -> None:
        assert self.proc is None or self.proc.exited()
        # warn: Garage's info lines about every RPC would fill the log.
        env = dict(os.environ, RUST_LOG="garage=warn,netapp=warn")
        self.proc = ManagedProcess(f"garage-{self.index}", [self.binary, "-c", str(self.config), "server"],
                                   self.work / "garage.log", env=env)

    def wait_for_id(self) -> str:
        def node_id():
            p = self.cli("node", "id", "-q", check=False)
            return p.stdout.strip().split("@")[0] if p.returncode == 0 and "@" in p.stdout else None
        self.node_id = poll(f"garage node {self.index} to answer `node id`", node_id, STARTUP_TIMEOUT, proc=self.proc)
        return self.node_id

    def healthy_ids(self) -> set[str]:
        """Short ids (16 hex digits) this node lists as healthy in `garage status`."""
        p = self.cli("status", check=False)
        if p.returncode != 0:
            return set()
        section = p.stdout.split("==== FAILED NODES ====")[0]
        return set(re.findall(r"^([0-9a-f]{16})\s", section, flags=re.MULTILINE))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.stop(sig, timeout=15)


def garage_node_toml(template: Path, node_dir: Path, rpc_port: int, s3_port: int, rpc_secret: str) -> str:
    """A shipped Garage config with only the paths, ports and RPC secret changed."""
    text = template.read_text()
    return rewrite(text, [
        (r'^metadata_dir = "/var/lib/garage/meta"$', f'metadata_dir = "{node_dir}/meta"', 1),
        (r'^data_dir = "/var/lib/garage/data"$', f'data_dir = "{node_dir}/data"', 1),
        (r'^rpc_bind_addr = "[^"]+"$', f'rpc_bind_addr = "127.0.0.1:{rpc_port}"', 1),
        (r'^rpc_public_addr = "[^"]+"$', f'rpc_public_addr = "127.0.0.1:{rpc_port}"', 1),
        (r'^rpc_secret = "[^"]+"$', f'rpc_secret = "{rpc_secret}"', 1),
        (r'^api_bind_addr = "[^"]+"$', f'api_bind_addr = "127.0.0.1:{s3_port}"', 1),
    ], str(template))


@dataclass
class GarageCluster:
    """n Garage nodes from one shipped config, joined (`node connect`), each in its own zone
    with the same capacity, layout applied, the bucket and a key allowed on it: the steps of
    deploy/s3/README.md."""

    binary: str
    work: Path
    template: Path
    n: int
    nodes: list[GarageNode] = field(default_factory=list)
    key_id: str = ""
    key_secret: str = ""

    def start(self) -> None:
        rpc_secret = secrets.token_hex(32)
        ports = free_ports(2 * self.n)
        for i in range(self.n):
            node_dir = self.work / f"garage{i + 1}"
            node_dir.mkdir()
            node = GarageNode(self.binary, i + 1, node_dir, ports[2 * i], ports[2 * i + 1])
            node.config.write_text(garage_node_toml(self.template, node_dir, node.rpc_port, node.s3_port,
                                                    rpc_secret))
            os.chmod(node.config, 0o600)  # it holds the RPC secret
            node.start()
            self.nodes.append(node)
        for node in self.nodes:
            node.wait_for_id()
        first = self.nodes[0]
        # garage node connect <id>@<addr> from the first node to the others (README.md).
        for node in self.nodes[1:]:
            poll(f"garage node 1 to connect to node {node.index}",
                 lambda node=node: first.cli("node", "connect", f"{node.node_id}@127.0.0.1:{node.rpc_port}",
                                             check=False).returncode == 0,
                 STARTUP_TIMEOUT, interval=0.1, proc=node.proc)
        self.wait_healthy(self.nodes)
        # The short id that `garage status` shows, as README.md says.
        for node in self.nodes:
            first.cli("layout", "assign", "-z", f"dc{node.index}", "-c", "1G", node.node_id[:16])
        first.cli("layout", "apply", "--version", "1")
        poll("the bucket to be created", lambda: first.cli("bucket", "create", BUCKET, check=False).returncode == 0,
             STARTUP_TIMEOUT, interval=0.2)
        key = first.cli("key", "create", KEY_NAME).stdout
        self.key_id = re.search(r"^Key ID:\s*(\S+)", key, flags=re.MULTILINE).group(1)
        self.key_secret = re.search(r"^Secret key:\s*(\S+)", key, flags=re.MULTILINE).group(1)
        first.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME)
        # Every node knows the bucket before any instance asks it.
        for node in self.nodes:
            poll(f"garage node {node.index} to know bucket {BUCKET}",
                 lambda node=node: node.cli("bucket", "info", BUCKET, check=False).returncode == 0,
                 STARTUP_TIMEOUT, interval=0.1, proc=node.proc)

    def wait_healthy(self, nodes: list[GarageNode], timeout: float = STARTUP_TIMEOUT) -> None:
        """Every node in `nodes` lists exactly those nodes as healthy."""
        want = {n.node_id[:16] for n in nodes}
        for node in nodes:
            poll(f"garage node {node.index} to see nodes {sorted(want)} healthy",
                 lambda node=node: want <= node.healthy_ids(), timeout, interval=0.1, proc=node.proc)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def log_tails(self, n: int = 15) -> str:
        return "\n".join(f"--- garage node {node.index} ---\n{node.proc.output_tail(n)}"
                         for node in self.nodes if node.proc is not None and node.proc.lines)


# ---------------------------------------------------------------- Redis

def start_redis(work: Path) -> tuple[ManagedProcess, int]:
    """A private redis-server on a free loopback port (never the machine's own on 6379)."""
    binary = require_tool("redis-server", "redis-server")
    port = free_ports(1)[0]
    proc = ManagedProcess("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(work), "--protected-mode", "yes"],
                          work / "redis.log")
    try:
        proc.wait_for_line(r"Ready to accept connections", STARTUP_TIMEOUT)
        poll(f"redis on 127.0.0.1:{port}", lambda: port_open(port), STARTUP_TIMEOUT, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, port


# ---------------------------------------------------------------- hmac-file-server instances

ACCESS = re.compile(r"\bclient=(?P<client>\S+) method=(?P<method>\S+) path=(?P<path>\S+) status=(?P<status>\d+)")


def instance_toml(work: Path, port: int, metrics_port: int, secret_file: Path, s3_endpoint: str, key_id: str,
                  s3_secret_file: Path, redis_port: int) -> str:
    """deploy/s3/config.toml for one instance on loopback. S3PartSize 5MiB (the least S3 takes)
    so that the test's files need several parts."""
    return rewrite(INSTANCE_TOML.read_text(), [
        (r'^ListenPort = "[^"]+"$', f'ListenPort = "127.0.0.1:{port}"', 1),
        (r'^SecretFile = "[^"]+"$', f'SecretFile = "{secret_file}"', 1),
        (r'^S3Endpoint = "[^"]+"$', f'S3Endpoint = "{s3_endpoint}"', 1),
        (r'^S3AccessKeyId = "[^"]+"$', f'S3AccessKeyId = "{key_id}"', 1),
        (r'^S3SecretAccessKeyFile = "[^"]+"$', f'S3SecretAccessKeyFile = "{s3_secret_file}"', 1),
        (r'^S3PartSize = "8MiB"$', 'S3PartSize = "5MiB"', 1),
        (r'^StoreDir = "[^"]+"$', f'StoreDir = "{work / "store"}"', 1),
        (r'^RedisAddr = "redis://10\.0\.0\.10:6379"$', f'RedisAddr = "redis://127.0.0.1:{redis_port}"', 1),
        (r'^TrustedProxies = \["10\.0\.0\.10/32"\]$', 'TrustedProxies = ["127.0.0.1/32"]', 1),
        (r'^MetricsPort = "[^"]+"$', f'MetricsPort = "127.0.0.1:{metrics_port}"', 1),
    ], str(INSTANCE_TOML))


@dataclass
class Instance:
    """One hmac-file-server of the deployment, on fixed loopback ports (nginx's upstream names
    them), restartable on the same ports."""

    name: str
    binary: Path
    work: Path
    port: int
    metrics_port: int
    procs: list[ManagedProcess] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.work / "config.toml"

    @property
    def proc(self) -> ManagedProcess:
        return self.procs[-1]

    def start(self, healthy: bool = True) -> None:
        """Starts it and waits until it accepts connections and (healthy) /health says 200."""
        assert not self.procs or self.proc.exited()
        (self.work / "store").mkdir(exist_ok=True)
        env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        proc = ManagedProcess(f"{self.name}#{len(self.procs) + 1}", [str(self.binary), "-config", str(self.config)],
                              self.work / f"hfs-{len(self.procs) + 1}.log", env=env)
        self.procs.append(proc)
        proc.wait_for_line(rf" listening on 127\.0\.0\.1:{self.port}\b", STARTUP_TIMEOUT)
        poll(f"{self.name} to accept connections", lambda: port_open(self.port), STARTUP_TIMEOUT, proc=proc)
        if healthy:
            poll(f"{self.name} /health to answer 200 (bucket reachable)", lambda: self.health() == 200,
                 STARTUP_TIMEOUT, interval=0.1, proc=proc)

    def health(self) -> int | None:
        try:
            status, _body = self.metrics_get("/health")
            return status
        except OSError:
            return None

    def metrics_get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's series that have these labels (0 when none is exported yet)."""
        _status, text = self.metrics_get("/metrics")
        total = 0.0
        for m in re.finditer(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", text, flags=re.MULTILINE):
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stop()

    def stop(self) -> None:
        if self.procs:
            self.proc.stop(signal.SIGTERM, timeout=35)

    def access(self, method: str | None = None, path_prefix: str = "") -> list[dict]:
        """The access-log lines of every run of this instance, parsed."""
        out = []
        for proc in self.procs:
            for line in list(proc.lines):
                m = ACCESS.search(line)
                if m and (method is None or m["method"] == method) and m["path"].startswith(path_prefix):
                    out.append(m.groupdict())
        return out


# ---------------------------------------------------------------- nginx

def nginx_site(http_port: int, https_port: int, cert: Path, key: Path, proxy_inc: Path, upstream: Path) -> str:
    """deploy/nginx/hmac-file-server.conf with its single-server upstream block replaced by an
    include of deploy/s3/nginx-upstream.conf (what that file's comment tells to do), on loopback
    ports with the test's certificate."""
    return rewrite(NGINX_SITE.read_text(), [
        (r"^upstream hmac_file_server \{[^}]*\}\n", f"include {upstream};\n", 1),
        (r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{http_port};", 1),
        (r"^\s*listen \[::\]:80;\n", "", 1),
        (r"^(\s*)listen 443 ssl http2;$", rf"\g<1>listen 127.0.0.1:{https_port} ssl http2;", 1),
        (r"^\s*listen \[::\]:443 ssl http2;\n", "", 1),
        (r"^(\s*ssl_certificate\s+)\S+;$", rf"\g<1>{cert};", 1),
        (r"^(\s*ssl_certificate_key\s+)\S+;$", rf"\g<1>{key};", 1),
        (r"^(\s*include\s+)/etc/nginx/snippets/hmac-file-server-proxy\.inc;$", rf"\g<1>{proxy_inc};", 1),
    ], str(NGINX_SITE))


def nginx_upstream(ports: list[int]) -> str:
    """deploy/s3/nginx-upstream.conf with the three instances on loopback ports."""
    text = UPSTREAM_CONF.read_text()
    for i, port in enumerate(ports):
        text = rewrite(text, [(rf"^(\s*server\s+)10\.0\.0\.{11 + i}:8080\b", rf"\g<1>127.0.0.1:{port}", 1)],
                       str(UPSTREAM_CONF))
    return text


def nginx_main_conf(work: Path, site: Path) -> str:
    return f"""# private nginx for tests/deploy/test_deploy_scaleout.py
daemon off;
master_process on;
# One worker: one round-robin sequence over the upstream, so that consecutive requests of one
# client go to consecutive instances.
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$request_method $uri $status upstream=$upstream_addr';
    access_log {work}/access.log upstream;
    client_body_temp_path {work}/client_body_temp;
    proxy_temp_path {work}/proxy_temp;
    fastcgi_temp_path {work}/fastcgi_temp;
    uwsgi_temp_path {work}/uwsgi_temp;
    scgi_temp_path {work}/scgi_temp;
    default_type application/octet-stream;
    include {site};
}}
"""


def start_nginx(work: Path, cert: Path, key: Path, instance_ports: list[int]) -> tuple[ManagedProcess, int, str]:
    """Returns (process, https port, version)."""
    binary = require_tool("nginx", "nginx")
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30).stderr.strip()
    http_port, https_port = free_ports(2)
    upstream = work / "hmac-file-server-upstream.conf"
    upstream.write_text(nginx_upstream(instance_ports))
    site = work / "hmac-file-server.conf"
    site.write_text(nginx_site(http_port, https_port, cert, key, NGINX_PROXY_INC, upstream))
    conf = work / "nginx.conf"
    conf.write_text(nginx_main_conf(work, site))
    check = subprocess.run([binary, "-t", "-c", str(conf), "-p", str(work)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stdout}{check.stderr}"
    problems = [line for line in check.stderr.splitlines() if re.search(r"\[(warn|emerg|alert|crit)\]", line)]
    assert not problems, "nginx -t complains about the config:\n" + "\n".join(problems)
    proc = ManagedProcess("nginx", [binary, "-c", str(conf), "-p", str(work)], work / "nginx-stdout.log")
    try:
        for port in (http_port, https_port):
            poll(f"nginx on 127.0.0.1:{port}", lambda p=port: port_open(p), STARTUP_TIMEOUT, proc=proc)
    except BaseException:
        proc.stop(sig=signal.SIGQUIT)
        raise
    return proc, https_port, version
