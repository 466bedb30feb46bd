"""Fixtures for the XMPP interop tests: hmac-file-server, Prosody, ejabberd.

Every server is a private child process on free loopback ports with its own
config and data in a temporary directory; nothing from the system instances
(/etc/prosody, /etc/ejabberd, /var/lib/...) is used or touched.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from interop_util import (
    STARTUP_TIMEOUT, ManagedProcess, free_port, kill_pid, missing, poll, port_open,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROSODY_UPLOAD_MODULE = Path("/usr/lib/prosody/modules/mod_http_upload_external/mod_http_upload_external.lua")
DOMAIN = "localhost"
UPLOAD_DOMAIN = "upload.localhost"
USER = "tester"
PASSWORD = "interop-" + secrets.token_hex(8)

_cleanups: list = []


@atexit.register
def _last_resort_cleanup() -> None:
    # Fixtures clean up after themselves; this only matters if pytest itself dies.
    for fn in reversed(_cleanups):
        try:
            fn()
        except Exception:
            pass


def _tmpdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"hfs-interop-{prefix}-"))
    return path


def _keep_or_remove(path: Path, request) -> None:
    """Keep a failed run's directory (logs!) when HFS_INTEROP_KEEP=1."""
    if os.environ.get("HFS_INTEROP_KEEP") == "1":
        print(f"\nkeeping {path}")
        return
    shutil.rmtree(path, ignore_errors=True)


def _require_slixmpp() -> None:
    try:
        import slixmpp  # noqa: F401
        import aiohttp  # noqa: F401
    except ImportError as e:
        missing(f"python package missing ({e}); run: pip install -r tests/interop/requirements.txt")


# ---------------------------------------------------------------- hmac-file-server

def hfs_binary() -> Path | None:
    env = os.environ.get("HFS_BIN")
    if env:
        return Path(env)
    for profile in ("release", "debug"):
        p = REPO_ROOT / "target" / profile / "hmac-file-server"
        if p.exists():
            return p
    return None


@dataclass
class HfsServer:
    port: int
    secret: str
    base_url: str  # http://127.0.0.1:PORT/upload/
    store: Path
    proc: ManagedProcess


def _garage_store(work: Path) -> tuple[object, str]:
    """A single-node Garage from deploy/s3/garage-single.toml, set up with deploy/s3/README.md's
    commands (tests/deploy/scaleout_util.py), and the server's lines that store into it."""
    import sys
    sys.path.insert(0, str(REPO_ROOT / "tests" / "deploy"))
    from scaleout_util import BUCKET, GARAGE_REGION, GARAGE_SINGLE_TOML, GarageCluster, garage_binary

    work.mkdir()
    garage = GarageCluster(garage_binary(), work, GARAGE_SINGLE_TOML, 1)
    _cleanups.append(garage.stop)
    garage.start()
    lines = (
        'StoreBackend = "s3"\n'
        f'S3Endpoint = "{garage.nodes[0].endpoint}"\n'
        f'S3Region = "{GARAGE_REGION}"\n'
        f'S3Bucket = "{BUCKET}"\n'
        f'S3AccessKeyId = "{garage.key_id}"\n'
        f'S3SecretAccessKey = "{garage.key_secret}"\n'
    )
    return garage, lines


# Every XMPP interop test runs against the server on each store: the local folder and an S3
# bucket in a real Garage (issue 10: the XEP-0363 path must not depend on the backend).
STORES = ("local", "s3")


@pytest.fixture(scope="session", params=STORES)
def hfs(request) -> HfsServer:
    _require_slixmpp()
    binary = hfs_binary()
    if binary is None or not binary.exists():
        missing(f"hmac-file-server binary not found (HFS_BIN={os.environ.get('HFS_BIN')!r}, "
                f"{REPO_ROOT}/target/{{release,debug}}/hmac-file-server); build it with cargo build")
    work = _tmpdir(f"hfs-{request.param}")
    store = work / "store"
    store.mkdir()
    garage = None
    proc = None
    try:
        store_lines = ""
        if request.param == "s3":
            garage, store_lines = _garage_store(work / "garage")
        secret = "interop-" + secrets.token_hex(16)
        config = work / "config.toml"
        config.write_text(
            'ListenPort = "127.0.0.1:0"\n'
            f'Secret = "{secret}"\n'
            f'StoreDir = "{store}"\n'
            'UploadSubDir = "upload"\n'
            "MetricsEnabled = false\n"
            # The tests send wrong tokens on purpose; bans would turn their 403s into 429s.
            "BlockAfterFails = 0\n" + store_lines
        )
        os.chmod(config, 0o600)  # it may hold the S3 secret
        env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        proc = ManagedProcess("hmac-file-server", [str(binary), "--config", str(config)], work / "hfs.log", env=env)
        _cleanups.append(proc.stop)
        m = proc.wait_for_line(r"listening on (?:https?://)?(\S+?):(\d+)\b", STARTUP_TIMEOUT)
        port = int(m.group(2))
        poll(f"hmac-file-server to accept connections on 127.0.0.1:{port}", lambda: port_open(port),
             STARTUP_TIMEOUT, proc=proc)
        yield HfsServer(port, secret, f"http://127.0.0.1:{port}/upload/", store, proc)
        if garage is not None:
            # The uploads went into the bucket (Garage counts its objects a moment later), and
            # none into the local upload folder.
            def objects():
                info = garage.nodes[0].cli("bucket", "info", "hmac-file-server", check=False).stdout
                m = re.search(r"^Objects:\s*(\d+)", info, flags=re.MULTILINE)
                return m is not None and int(m.group(1)) > 0
            poll("Garage to count the uploaded objects", objects, STARTUP_TIMEOUT, interval=0.5)
            local = store / "upload"
            stored = [p for p in local.rglob("*") if p.is_file()] if local.exists() else []
            assert not stored, f"files on local disk with StoreBackend = s3: {stored[:5]}"
    finally:
        if proc is not None:
            proc.stop()
            _cleanups.remove(proc.stop)
            if proc.lines:
                print("\n--- hmac-file-server log (tail) ---\n" + proc.output_tail(40))
        if garage is not None:
            garage.stop()
            _cleanups.remove(garage.stop)
        _keep_or_remove(work, request)


# ---------------------------------------------------------------- Prosody

@dataclass
class XmppServer:
    name: str
    version: str
    port: int
    jid: str
    password: str
    protocol: str  # query parameter the server signs with: "v" or "v2"
    proc: ManagedProcess


def _prosody_config(work: Path, c2s_port: int, hfs: HfsServer, protocol_option: str | None) -> str:
    proto = f'  http_upload_external_protocol = "{protocol_option}"\n' if protocol_option else ""
    return f"""-- private Prosody for hmac-file-server interop tests
run_as_root = true -- the CI runs as root; keeps the temp dir permissions simple
daemonize = false
pidfile = "{work}/prosody.pid"
data_path = "{work}/data"
plugin_paths = {{ "/usr/lib/prosody/modules" }}
log = {{ {{ levels = {{ min = "debug" }}, to = "console" }} }}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
certificates = "{work}/certs"
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
admin_socket = "{work}/admin.sock"
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "posix"; }}
modules_disabled = {{ "s2s"; "tls"; }}

VirtualHost "{DOMAIN}"

Component "{UPLOAD_DOMAIN}" "http_upload_external"
  http_upload_external_base_url = "{hfs.base_url}"
  http_upload_external_secret = "{hfs.secret}"
  http_upload_external_file_size_limit = 10485760
{proto}"""


def _prosody_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        return out or "unknown"
    except Exception:
        return "unknown"


# "v": option left out, the module's default ("v1" -> ?v=).  NB: the module
# only emits ?v= for the literal value "v1"; any other value, including "v",
# selects v2.  "v2": http_upload_external_protocol = "v2" (-> ?v2=).
PROSODY_PROTOCOLS = {"v": None, "v2": "v2"}


@pytest.fixture(scope="module", params=sorted(PROSODY_PROTOCOLS))
def prosody(request, hfs) -> XmppServer:
    protocol = request.param
    for tool in ("prosody", "prosodyctl"):
        if shutil.which(tool) is None:
            missing(f"{tool} not installed; run: sudo tests/interop/install.sh")
    if not PROSODY_UPLOAD_MODULE.exists():
        missing(f"{PROSODY_UPLOAD_MODULE} missing (Debian package prosody-modules); "
                "run: sudo tests/interop/install.sh")
    work = _tmpdir(f"prosody-{protocol}")
    (work / "data").mkdir()
    (work / "certs").mkdir()
    c2s_port = free_port()
    cfg = work / "prosody.cfg.lua"
    cfg.write_text(_prosody_config(work, c2s_port, hfs, PROSODY_PROTOCOLS[protocol]))
    proc = None
    try:
        reg = subprocess.run(["prosodyctl", "--config", str(cfg), "register", USER, DOMAIN, PASSWORD],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert reg.returncode == 0, f"prosodyctl register failed rc={reg.returncode}: {reg.stdout}{reg.stderr}"
        proc = ManagedProcess(f"prosody-{protocol}", ["prosody", "-F", "--config", str(cfg)], work / "prosody.log")
        _cleanups.append(proc.stop)
        proc.wait_for_line(rf"Activated host: {re.escape(UPLOAD_DOMAIN)}", STARTUP_TIMEOUT)
        poll(f"prosody c2s on 127.0.0.1:{c2s_port}", lambda: port_open(c2s_port), STARTUP_TIMEOUT, proc=proc)
        yield XmppServer("prosody", _prosody_version(), c2s_port, f"{USER}@{DOMAIN}", PASSWORD, protocol, proc)
    finally:
        if proc is not None:
            proc.stop()
            _cleanups.remove(proc.stop)
        _keep_or_remove(work, request)


# ---------------------------------------------------------------- ejabberd

EJABBERDCTL = "/usr/sbin/ejabberdctl"


@dataclass
class Ejabberd(XmppServer):
    ctl: list | None = None


def _ejabberd_config(work: Path, c2s_port: int, hfs: HfsServer) -> str:
    base = hfs.base_url.rstrip("/")  # ejabberd appends "/<sha1>/<random>/<name>"
    return f"""# private ejabberd for hmac-file-server interop tests
hosts:
  - "{DOMAIN}"
loglevel: info
log_rotate_count: 0
certfiles: []
acme:
  auto: false
listen:
  -
    port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    access: c2s
auth_method: internal
auth_password_format: scram
default_db: mnesia
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_disco: {{}}
  mod_http_upload:
    host: "{UPLOAD_DOMAIN}"
    put_url: "{base}"
    get_url: "{base}"
    external_secret: "{hfs.secret}"
    docroot: "{work}/docroot"
    max_size: 10485760
"""


def _ejabberd_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ejabberd"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        return out or "unknown"
    except Exception:
        return "unknown"


@pytest.fixture(scope="module")
def ejabberd(request, hfs) -> Ejabberd:
    if not os.path.exists(EJABBERDCTL):
        missing(f"{EJABBERDCTL} not installed (Debian package ejabberd); run: sudo tests/interop/install.sh")
    # Debian's ejabberdctl only runs as root (it then drops to the 'ejabberd'
    # user via su) or as the 'ejabberd' user itself.
    try:
        ej_user = pwd.getpwnam("ejabberd")
    except KeyError:
        missing("system user 'ejabberd' missing (Debian package ejabberd not installed properly)")
    if os.geteuid() not in (0, ej_user.pw_uid):
        missing("Debian's ejabberdctl must be run as root or as the ejabberd user; run pytest as root")

    work = _tmpdir("ejabberd")
    for d in ("db", "logs", "docroot"):
        (work / d).mkdir()
    c2s_port = free_port()
    dist_port = free_port()
    while dist_port == c2s_port:
        dist_port = free_port()
    node = f"hfsinterop{dist_port}@localhost"
    cfg = work / "ejabberd.yml"
    cfg.write_text(_ejabberd_config(work, c2s_port, hfs))
    # ERL_DIST_PORT makes ejabberdctl use epmd-less distribution on that one
    # port (-erl_epmd_port, -start_epmd false): the machine's epmd (4369) and
    # any other Erlang node (RabbitMQ...) are never contacted.
    cookie = secrets.token_hex(16)
    (work / "ejabberdctl.cfg").write_text(
        f"ERL_DIST_PORT={dist_port}\n"
        "INET_DIST_INTERFACE=127.0.0.1\n"
        f'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -setcookie {cookie}"\n'
        f"EJABBERD_PID_PATH={work}/ejabberd.pid\n"
        "EJABBERD_BYPASS_WARNINGS=true\n"
    )
    (work / "inetrc").write_text("")
    # The node runs as 'ejabberd': it needs to own its directories.
    for path in [work, *work.rglob("*")]:
        os.chown(path, ej_user.pw_uid, ej_user.pw_gid)
    os.chmod(work, 0o755)

    ctl = [EJABBERDCTL, "--config-dir", str(work), "--ctl-config", str(work / "ejabberdctl.cfg"),
           "--config", str(cfg), "--spool", str(work / "db"), "--logs", str(work / "logs"), "--node", node]

    def run_ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(ctl + list(args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=str(work))

    proc = None
    pid_file = work / "ejabberd.pid"

    def stop() -> None:
        try:
            if proc is not None and not proc.exited():
                run_ctl("stop", timeout=30)
        except Exception:
            pass
        # su puts the Erlang VM in a session of its own: stop it by its pid file.
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if proc is not None:
            proc.stop(timeout=15)
        if pid is not None:
            kill_pid(pid)

    _cleanups.append(stop)
    try:
        proc = ManagedProcess("ejabberd", ctl + ["foreground"], work / "ejabberd-foreground.log", cwd=str(work))
        proc.wait_for_line(r"ejabberd \S+ is started in the node", STARTUP_TIMEOUT)
        poll(f"ejabberd c2s on 127.0.0.1:{c2s_port}", lambda: port_open(c2s_port), STARTUP_TIMEOUT, proc=proc)
        reg = run_ctl("register", USER, DOMAIN, PASSWORD)
        assert reg.returncode == 0, (f"ejabberdctl register failed rc={reg.returncode}: {reg.stdout}{reg.stderr}"
                                     f"\n--- ejabberd output ---\n{proc.output_tail()}")
        yield Ejabberd("ejabberd", _ejabberd_version(), c2s_port, f"{USER}@{DOMAIN}", PASSWORD, "v", proc, ctl)
    finally:
        stop()
        _cleanups.remove(stop)
        _keep_or_remove(work, request)
