"""Helpers for the deploy kit tests (processes, ports, tokens, HTTP, config rewriting).

Imported by conftest.py and the test modules; pytest puts this folder on sys.path because it
has no __init__.py.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pykit"))
from processes import ManagedProcess, free_port, free_ports, poll, port_open  # noqa: E402,F401 (re-exported)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"

HOSTNAME = "files.example.com"  # server_name / ServerName in the shipped proxy configs
STARTUP_TIMEOUT = 60.0
HTTP_TIMEOUT = float(os.environ.get("HFS_DEPLOY_HTTP_TIMEOUT", "120"))
MiB = 1024 * 1024

def make_workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"hfs-deploy-{prefix}-"))
    # Proxy workers may run as another user (nginx: nobody, Apache: www-data) and must reach
    # their temp dirs below this one.
    os.chmod(path, 0o755)
    return path


def remove_workdir(path: Path) -> None:
    if os.environ.get("HFS_DEPLOY_KEEP") == "1":
        print(f"\nkeeping {path}")
        return
    shutil.rmtree(path, ignore_errors=True)


def strict() -> bool:
    """In CI (or when asked) a missing prerequisite is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("HFS_REQUIRE_DEPLOY") == "1"


def missing(reason: str, hint: str = "run: sudo tests/deploy/install.sh") -> None:
    """Skip (locally) or fail loudly (CI=true / HFS_REQUIRE_DEPLOY=1)."""
    if strict():
        pytest.fail(f"deploy test prerequisite missing (CI=true or HFS_REQUIRE_DEPLOY=1, so not skipping): "
                    f"{reason}; {hint}", pytrace=False)
    pytest.skip(f"{reason}; {hint}")


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if path is None:
        missing(f"{name} not found (Debian package {package})")
    return path


def tool_version(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a version string is only informational
        return f"unknown ({e})"


def hfs_binary() -> Path:
    env = os.environ.get("HFS_BIN")
    if env:
        p = Path(env)
    else:
        p = REPO_ROOT / "target" / "debug" / "hmac-file-server"
        if not p.exists() and (REPO_ROOT / "target" / "release" / "hmac-file-server").exists():
            p = REPO_ROOT / "target" / "release" / "hmac-file-server"
    if not (p.is_file() and os.access(p, os.X_OK)):
        missing(f"hmac-file-server binary not found at {p}", "build it with cargo build, or set HFS_BIN")
    return p


def start_hfs(binary: Path, work: Path, secret: str, extra: str = "", wrapper: list[str] | None = None,
              name: str = "hmac-file-server", metrics: bool = True) -> tuple[ManagedProcess, int, Path]:
    """Start the real server on a free loopback port with a store in work/store, metrics (when
    on) on another free loopback port; the log says "metrics and health on http://ADDR/metrics".

    Started as the unit starts it (`-config FILE`, Go-style single dash)."""
    store = work / "store"
    store.mkdir(exist_ok=True)
    config = work / "config.toml"
    config.write_text(
        'ListenPort = "127.0.0.1:0"\n'
        f'Secret = "{secret}"\n'
        f'StoreDir = "{store}"\n'
        'MaxUploadSize = "64MiB"\n'
        # Bans off: behind the test proxies every client is 127.0.0.1, and the tests send
        # wrong tokens on purpose.
        "BlockAfterFails = 0\n"
        + ('MetricsEnabled = true\nMetricsPort = "127.0.0.1:0"\n' if metrics else "MetricsEnabled = false\n")
        + extra
    )
    env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
    argv = (wrapper or []) + [str(binary), "-config", str(config)]
    proc = ManagedProcess(name, argv, work / f"{name}.log", env=env)
    try:
        m = proc.wait_for_line(r"listening on (?:https?://)?127\.0\.0\.1:(\d+)\b", STARTUP_TIMEOUT)
        port = int(m.group(1))
        poll(f"{name} to accept connections on 127.0.0.1:{port}", lambda: port_open(port), STARTUP_TIMEOUT,
             proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, port, store


def sign_v(secret: str, path: str, size: int) -> str:
    """Prosody's default token: HMAC-SHA256(secret, path + " " + size), lowercase hex."""
    return hmac.new(secret.encode(), f"{path} {size}".encode(), hashlib.sha256).hexdigest()


def slot(secret: str, name: str, size: int) -> tuple[str, str]:
    """(signed path, request target) for a fresh slot, as Prosody would hand it out."""
    path = f"deploy-{secrets.token_hex(8)}/{name}"
    target = "/upload/" + urllib.parse.quote(path, safe="/") + "?v=" + sign_v(secret, path, size)
    return path, target


def tls_context(cafile: Path | None) -> ssl.SSLContext | None:
    if cafile is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx


def connect(port: int, cafile: Path | None = None, timeout: float = HTTP_TIMEOUT) -> http.client.HTTPConnection:
    if cafile is None:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls_context(cafile))


def request(port: int, method: str, target: str, host: str, cafile: Path | None = None,
            headers: dict | None = None, body: bytes | None = None) -> tuple[int, dict, bytes]:
    conn = connect(port, cafile)
    try:
        hdrs = {"Host": host, **(headers or {})}
        conn.request(method, target, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def put_stream(port: int, target: str, host: str, size: int, chunks, cafile: Path | None = None,
               content_type: str = "application/octet-stream") -> tuple[int, dict, bytes, int]:
    """PUT with Content-Length = size, the body sent chunk by chunk as it is produced.

    Returns (status, headers, body, bytes_sent). A connection closed by the peer while sending is
    not an error as long as a response can still be read (an early 413/403)."""
    conn = connect(port, cafile)
    sent = 0
    try:
        conn.putrequest("PUT", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        conn.putheader("Content-Length", str(size))
        conn.putheader("Content-Type", content_type)
        conn.endheaders()
        try:
            for chunk in chunks:
                conn.send(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            pass
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, sent
    finally:
        conn.close()


def get_sha256(port: int, target: str, host: str, cafile: Path | None = None) -> tuple[int, dict, str, int]:
    """GET, hashing the body as it streams in. Returns (status, headers, sha256 hex, length)."""
    conn = connect(port, cafile)
    try:
        conn.request("GET", target, headers={"Host": host})
        resp = conn.getresponse()
        h = hashlib.sha256()
        n = 0
        while True:
            block = resp.read(1 << 20)
            if not block:
                break
            h.update(block)
            n += len(block)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, h.hexdigest(), n
    finally:
        conn.close()


def data_chunks(data: bytes, chunk: int = MiB):
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


def zero_chunks(size: int, chunk: int = MiB):
    block = bytes(chunk)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield block[:n]
        left -= n


class DirWatcher:
    """Samples a directory tree every few ms in a thread and remembers every file it ever saw
    (temp files are unlinked when their request ends, so looking afterwards proves nothing)."""

    def __init__(self, root: Path, interval: float = 0.005):
        self.root = root
        self.interval = interval
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{root.name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for dirpath, _dirs, files in os.walk(self.root):
                for f in files:
                    self.seen.add(os.path.join(dirpath, f))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "DirWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def curl_h2(port: int, method: str, target: str, cafile: Path, upload: Path | None = None,
            download: Path | None = None, host: str = HOSTNAME) -> tuple[str, int]:
    """One request over HTTP/2 with curl (as OkHttp in Conversations does it): returns
    (HTTP version, status). upload: the body file (PUT with Content-Length); download: where the
    response body goes."""
    curl = require_tool("curl", "curl")
    argv = [curl, "--silent", "--show-error", "--http2", "--cacert", str(cafile),
            "--resolve", f"{host}:{port}:127.0.0.1", "--max-time", str(int(HTTP_TIMEOUT)),
            "-X", method, "-o", str(download) if download else "/dev/null",
            "-w", "%{http_version} %{http_code}"]
    if upload is not None:
        argv += ["-T", str(upload)]
    argv.append(f"https://{host}:{port}{target}")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=HTTP_TIMEOUT + 30)
    assert p.returncode == 0, f"curl failed ({p.returncode}): {p.stderr}"
    version, status = p.stdout.split()
    return version, int(status)


def make_cert(work: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate for hostname and 127.0.0.1 (openssl CLI)."""
    openssl = require_tool("openssl", "openssl")
    cert, key = work / "cert.pem", work / "key.pem"
    p = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={hostname}",
         "-addext", f"subjectAltName=DNS:{hostname},IP:127.0.0.1"],
        capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"openssl req failed: {p.stderr}"
    os.chmod(key, 0o644)  # read by the proxy's master process (root) or the test user
    return cert, key


def rewrite(text: str, rules: list[tuple[str, str, int]], what: str) -> str:
    """Apply (regex, replacement, expected count) rules; fail when a pattern does not match as often
    as expected, so a change to a shipped config cannot silently escape the test."""
    for pattern, repl, count in rules:
        new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        assert n == count, (f"{what}: expected {count} match(es) of /{pattern}/, found {n}; "
                            "the shipped file changed: update the test's rewrite rules")
        text = new
    return text
