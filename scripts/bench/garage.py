"""A local single-node Garage (the S3-compatible object store) for the bench's s3 phase, made as
tests/common/garage.rs makes the tests' one: a generated configuration with its metadata and
data in a folder of the bench's work folder (on /dev/shm), free loopback ports, the layout
assigned and applied, a bucket and a key made with Garage's CLI. Also a plain S3 client for it
(curl with --aws-sigv4), which gives the bench its ceiling: what Garage itself does with the
same object, without the server in between.

The binary is $GARAGE_BIN, else `garage` on the PATH, else ~/.cargo/bin/garage
(`cargo install garage --locked`). Only 127.0.0.1 is ever contacted; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

HOST = "127.0.0.1"
BUCKET = "hfs-bench"
REGION = "garage"


def binary() -> Path | None:
    """The garage binary, or None when there is none."""
    env = os.environ.get("GARAGE_BIN")
    if env:
        return Path(env)
    found = shutil.which("garage")
    if found:
        return Path(found)
    home = Path.home() / ".cargo" / "bin" / "garage"
    return home if home.is_file() else None


def version(path: Path) -> str:
    r = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10)
    return r.stdout.strip() or r.stderr.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class OneProcess:
    """pid, liveness and CPU seconds of something the bench runs as one process (`self.proc`):
    a Garage node, the server, prosody-filer, the floor."""

    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)


class Garage(OneProcess):
    """One Garage node with bucket BUCKET and a key allowed to use it; stopped and its folder
    removed on exit."""

    def __init__(self, workdir: Path, name: str, path: Path):
        self.binary = path
        self.dir = workdir / f"garage-{name}"
        self.config = self.dir / "garage.toml"
        self.log_path = self.dir / "garage.log"
        self.proc: subprocess.Popen | None = None
        self.s3_port = 0
        self.key_id = ""
        self.secret = ""

    # ---- the node -------------------------------------------------------------------------

    def __enter__(self) -> "Garage":
        self.dir.mkdir()
        rpc, self.s3_port, admin = free_port(), free_port(), free_port()
        # Garage's defaults otherwise (lmdb metadata, 1 MiB blocks, zstd level 1, no fsync):
        # what an operator runs unless they change it.
        self.config.write_text(
            f'metadata_dir = "{self.dir / "meta"}"\n'
            f'data_dir = "{self.dir / "data"}"\n'
            "replication_factor = 1\n"
            f'rpc_bind_addr = "{HOST}:{rpc}"\n'
            f'rpc_public_addr = "{HOST}:{rpc}"\n'
            f'rpc_secret = "{secrets.token_hex(32)}"\n'
            "[s3_api]\n"
            f's3_region = "{REGION}"\n'
            f'api_bind_addr = "{HOST}:{self.s3_port}"\n'
            'root_domain = ".s3.garage.localhost"\n'
            "[admin]\n"
            f'api_bind_addr = "{HOST}:{admin}"\n'
        )
        log_file = open(self.log_path, "wb")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [str(self.binary), "-c", str(self.config), "server"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
        )
        log_file.close()
        try:
            node = self._wait_for_node()
            self._wait_for_rpc()
            self.cli("layout", "assign", "-z", "dc1", "-c", "1G", node)
            self.cli("layout", "apply", "--version", "1")
            self.cli("bucket", "create", BUCKET)
            key = self.cli("key", "create", "hfs-bench-key")
            self.key_id = field(key, "Key ID:")
            self.secret = field(key, "Secret key:")
            self.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "hfs-bench-key")
            self._wait_for_s3()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def hwm_mib(self) -> float:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def problems(self) -> list[str]:
        """ERROR lines in Garage's log (its WARN lines are about its own housekeeping)."""
        return [line for line in self.log_text().splitlines() if " ERROR " in line]

    def cli(self, *args: str) -> str:
        r = subprocess.run(
            [str(self.binary), "-c", str(self.config), *args], capture_output=True, text=True, timeout=60
        )
        if r.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def _wait_for_node(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.alive():
                break
            r = subprocess.run(
                [str(self.binary), "-c", str(self.config), "node", "id", "-q"],
                capture_output=True, text=True, timeout=30,
            )
            node, _, _ = r.stdout.strip().partition("@")
            if r.returncode == 0 and node:
                return node
            time.sleep(0.1)
        raise RuntimeError(f"garage did not start; its log:\n{self.log_text()}")

    def _wait_for_rpc(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(
                [str(self.binary), "-c", str(self.config), "status"], capture_output=True, timeout=30
            )
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"garage answers no RPC; its log:\n{self.log_text()}")

    def _wait_for_s3(self) -> None:
        """Until a listing of the bucket answers 200 (the key's rights arrive a moment later)."""
        deadline = time.monotonic() + 30
        status = ""
        while time.monotonic() < deadline:
            status, _ = self._request("GET", f"/{BUCKET}?list-type=2&max-keys=1")
            if status == "200":
                return
            time.sleep(0.1)
        raise RuntimeError(f"garage's S3 API does not answer a listing (last: {status})")

    # ---- a plain S3 client: curl with --aws-sigv4 -----------------------------------------

    def endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    def server_config(self, prefix: str) -> tuple[str, ...]:
        """The hmac-file-server lines that put its files in the bucket under `prefix`
        (S3PartSize left at its default)."""
        return (
            'StoreBackend = "s3"',
            f'S3Endpoint = "{self.endpoint()}"',
            f'S3Region = "{REGION}"',
            f'S3Bucket = "{BUCKET}"',
            f'S3Prefix = "{prefix}"',
            f'S3AccessKeyId = "{self.key_id}"',
            f'S3SecretAccessKey = "{self.secret}"',
        )

    def _signed(self) -> list[str]:
        # UNSIGNED-PAYLOAD: curl does not hash the body (as the server's SDK does not).
        return [
            "--aws-sigv4", f"aws:amz:{REGION}:s3",
            "--user", f"{self.key_id}:{self.secret}",
            "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        ]

    def url(self, key: str) -> str:
        return f"{self.endpoint()}/{BUCKET}/{quote(key)}"

    def _request(self, method: str, target: str, max_seconds: int = 60) -> tuple[str, bytes]:
        """A small signed request; returns (HTTP status, body)."""
        r = subprocess.run(
            ["curl", "-sS", "--max-time", str(max_seconds), "-X", method, *self._signed(),
             "-w", "\n%{http_code}", self.endpoint() + target],
            capture_output=True, timeout=max_seconds + 30,
        )
        body, _, status = r.stdout.rpartition(b"\n")
        return status.decode(errors="replace").strip() or f"curl failed: {r.stderr.decode(errors='replace')}", body

    def put(self, key: str, source: Path, max_seconds: int = 300) -> tuple[str, float, int]:
        """One PutObject of `source` (curl -T: a single request, as curl can make no multipart
        upload); returns (HTTP status, seconds, bytes sent). Unlike the bench's other PUTs it
        keeps curl's `Expect: 100-continue` (one round trip, which Garage answers at once):
        curl 7.88 signs an emptied `Expect:` header and Garage then refuses the request."""
        return curl_timed([*self._signed(), "-T", str(source), self.url(key)], max_seconds)

    def get(self, key: str, max_seconds: int = 300) -> tuple[str, float, int]:
        """One GetObject into /dev/null; returns (HTTP status, seconds, bytes received)."""
        return curl_timed([*self._signed(), self.url(key)], max_seconds)

    def get_via(self, port: int, key: str, max_seconds: int = 300) -> tuple[str, float, int]:
        """The same GetObject sent to a relay on 127.0.0.1:`port` in front of this Garage
        (signed for the relay's address, which the relay passes on as Host)."""
        return curl_timed([*self._signed(), f"http://{HOST}:{port}/{BUCKET}/{quote(key)}"], max_seconds)

    def get_sha256(self, key: str, max_seconds: int = 300) -> tuple[str, int, str]:
        """GETs an object and hashes it as it streams: (HTTP status, length, sha256)."""
        cmd = ["curl", "-sS", "--max-time", str(max_seconds), *self._signed(), "-o", "-",
               "-w", "%{stderr}%{http_code}", self.url(key)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        digest, length = hashlib.sha256(), 0
        while True:
            chunk = proc.stdout.read(4 * 1024 * 1024)
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
        status = proc.stderr.read().decode(errors="replace").strip()[-3:]
        proc.wait(timeout=30)
        return status, length, digest.hexdigest()

    def delete(self, key: str) -> str:
        status, _ = self._request("DELETE", f"/{BUCKET}/{quote(key)}")
        return status

    def keys(self, prefix: str, max_pages: int = 1000) -> list[str]:
        """The keys of the objects under `prefix` (ListObjectsV2, page by page)."""
        out: list[str] = []
        token = None
        for _ in range(max_pages):
            query = f"list-type=2&prefix={quote(prefix, safe='')}"
            if token:
                query = f"continuation-token={quote(token, safe='')}&" + query
            status, body = self._request("GET", f"/{BUCKET}?{query}")
            if status != "200":
                raise RuntimeError(f"ListObjectsV2 answered {status}: {body[:300]!r}")
            root = ET.fromstring(body)
            out += [e.text or "" for e in root.iter() if e.tag.endswith("}Key") or e.tag == "Key"]
            truncated = next((e.text for e in root.iter() if e.tag.endswith("IsTruncated")), "false")
            token = next((e.text for e in root.iter() if e.tag.endswith("NextContinuationToken")), None)
            if truncated != "true" or not token:
                return out
        raise RuntimeError(f"ListObjectsV2 under {prefix!r}: more than {max_pages} pages")

    def multipart_uploads(self, prefix: str) -> list[str]:
        """The keys of the multipart uploads under way under `prefix` (first page: any is one too
        many)."""
        status, body = self._request("GET", f"/{BUCKET}?prefix={quote(prefix, safe='')}&uploads=")
        if status != "200":
            raise RuntimeError(f"ListMultipartUploads answered {status}: {body[:300]!r}")
        root = ET.fromstring(body)
        return [
            k.text or ""
            for u in root.iter()
            if u.tag.endswith("}Upload") or u.tag == "Upload"
            for k in u
            if k.tag.endswith("}Key") or k.tag == "Key"
        ]


def field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith(name):
            return line.strip()[len(name):].strip()
    raise RuntimeError(f"no {name!r} in:\n{text}")


def curl_timed(args: list[str], max_seconds: int) -> tuple[str, float, int]:
    """curl quietly into /dev/null; (HTTP status, time_total in s, bytes moved)."""
    cmd = ["curl", "-sS", "--max-time", str(max_seconds), "-o", "/dev/null",
           "-w", "%{http_code} %{time_total} %{size_upload} %{size_download}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds + 30)
    parts = r.stdout.split()
    if len(parts) != 4:
        return f"curl failed: {r.stderr.strip()}", float("nan"), 0
    return parts[0], float(parts[1]), int(float(parts[2])) + int(float(parts[3]))
