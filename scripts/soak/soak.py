#!/usr/bin/env python3
"""Soak: a mixed workload against one release build of the server for a given time, on
loopback, with the store on /dev/shm, while its resources are sampled.

The workload (several client threads, each picking its next action at random): small and
large PUTs, GETs whole and with Range (every byte compared), tus uploads interrupted
mid-PATCH and resumed from HEAD, session-token PUTs broken off and resumed with
Content-Range, Metronome DELETEs, uploads that break off and must leave nothing, slow
uploads and slow downloads, and hostile requests (bad tokens, path traversal, malformed
request lines, oversized heads, a wrong offset). Every 10 s a cleanup pass runs
(CleanupInterval, with retention by age); every 30 s the server gets SIGHUP. With --redis the
upload state is in a redis-server of its own on a free port.

Every few seconds it samples the server's RSS, open file descriptors, threads, the
temporaries and partial uploads in the store, and the Redis keys. It fails when a request gets
an answer its action does not allow, when a file read back differs from what was stored, or
when a sampled resource keeps growing (the last third of the run reaches above the middle
third by more than the allowed slack). Bans are off (BlockAfterFails = 0): the hostile
requests come from 127.0.0.1, like everything else.

    scripts/soak.sh                      # 10 minutes
    scripts/soak.sh --minutes 30 --redis # what docs/soak.md reports

Writes soak-results/<time>.json, .md and .svg (RSS, fds, threads over time).
Needs only the Python standard library, redis-server for --redis, and a release build
(built first unless --binary or --no-build).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "scripts" / "bench"))
from svgplot import nice_ceiling  # noqa: E402

HOST = "127.0.0.1"
SECRET = "soak-secret-0123456789abcdef"
KIB, MIB = 1024, 1024 * 1024
RETENTION_SECONDS = 120
SAMPLE_EVERY = 2.0
# Growth allowed from the middle third to the last third of the run, beyond 25%.
SLACK = {"rss_mib": 48.0, "fds": 64, "threads": 64, "temporaries": 32, "partials": 64, "redis_keys": 256}


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sign_v(path: str, size: int) -> str:
    return hmac.new(SECRET.encode(), f"{path} {size}".encode(), hashlib.sha256).hexdigest()


def sign_delete(path: str) -> str:
    return hmac.new(SECRET.encode(), f"{path}\0{SECRET}".encode(), hashlib.sha256).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


# ---------------------------------------------------------------------------------------------
# The server and what is sampled


class Server:
    def __init__(self, workdir: Path, binary: Path, redis_port: int | None):
        self.store = workdir / "store"
        self.store.mkdir()
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / "server.log"
        redis = f'RedisAddr = "{HOST}:{redis_port}"\n' if redis_port else ""
        self.config = workdir / "server.toml"
        self.config.write_text(
            f'ListenPort = "{HOST}:{self.port}"\n'
            f'Secret = "{SECRET}"\n'
            f'StoreDir = "{self.store}"\n'
            'MaxUploadSize = "256MiB"\n'
            "BlockAfterFails = 0\n"
            "ReadTimeout = 20\n"
            "WriteTimeout = 20\n"
            'UploadExpiry = "1h"\n'
            'CleanupInterval = "10s"\n'
            "RetentionPolicyEnabled = true\n"
            f"MaxRetentionTime = {RETENTION_SECONDS}\n"
            'MaxRetentionSize = "8GiB"\n'
            "MetricsEnabled = true\n"
            f"MetricsPort = {self.metrics_port}\n"
            'LogLevel = "warn"\n' + redis
        )
        log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(self.config)], stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL
        )
        log_file.close()
        wait_port(self.port, self.proc, "the server")

    def sample(self) -> dict:
        pid = self.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        internal = self.store / ".hmac-file-server"
        count = lambda d: len(os.listdir(d)) if d.is_dir() else 0  # noqa: E731
        return {
            "rss_mib": round(rss, 1),
            "fds": fds,
            "threads": threads,
            "temporaries": count(internal / "tmp") + self.unnamed_temporaries(internal / "tmp"),
            "partials": count(internal / "partial"),
        }

    def unnamed_temporaries(self, folder: Path) -> int:
        """Uploads in progress without a name (O_TMPFILE): open in the server as
        `<folder>/#<inode> (deleted)`."""
        prefix = str(folder.resolve()) + "/"
        n = 0
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
            except OSError:
                continue
            n += target.startswith(prefix) and target.endswith(" (deleted)")
        return n

    def problems(self) -> list[str]:
        quiet = ("TrustedProxies is empty",)
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [l for l in lines if re.search(r"\bERROR\b", l) and not any(q in l for q in quiet)]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Redis:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, "redis-server")

    def keys(self) -> int:
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
            return int(s.recv(64).decode().strip().lstrip(":"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# The workload


@dataclass
class Stored:
    path: str
    data: bytes
    at: float


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    actions: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0

    def count(self, action: str) -> None:
        with self.lock:
            self.actions[action] = self.actions.get(action, 0) + 1

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(f"{time.strftime('%H:%M:%S')} {message}")
        log(f"FAILURE: {message}")


class Workload:
    def __init__(self, server: Server, tally: Tally, stop: threading.Event):
        self.server = server
        self.tally = tally
        self.stop = stop
        self.files: list[Stored] = []
        self.files_lock = threading.Lock()

    # -- helpers

    def conn(self, timeout: float = 60) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, self.server.port, timeout=timeout)

    def request(self, method: str, target: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, dict, bytes]:
        conn = self.conn(timeout)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def expect(self, action: str, status: int, allowed: tuple[int, ...], detail: str = "") -> bool:
        if status not in allowed:
            self.tally.fail(f"{action}: status {status}, expected {allowed} {detail}")
            return False
        return True

    def remember(self, path: str, data: bytes) -> None:
        with self.files_lock:
            self.files.append(Stored(path, data, time.monotonic()))
            if len(self.files) > 400:
                self.files = self.files[-400:]

    def pick(self) -> Stored | None:
        with self.files_lock:
            return random.choice(self.files) if self.files else None

    def known(self, stored: Stored) -> bool:
        with self.files_lock:
            return stored in self.files

    def forget(self, stored: Stored) -> None:
        with self.files_lock:
            if stored in self.files:
                self.files.remove(stored)

    @staticmethod
    def new_path(kind: str) -> str:
        return f"soak-{kind}-{uuid.uuid4().hex[:12]}/file-{random.randint(0, 999)}.bin"

    def put(self, path: str, data: bytes, action: str) -> None:
        status, _, _ = self.request("PUT", f"/upload/{path}?v={sign_v(path, len(data))}", data,
                                    {"Content-Type": "application/octet-stream"})
        if self.expect(action, status, (201,), path):
            self.remember(path, data)
            with self.tally.lock:
                self.tally.bytes_up += len(data)

    # -- actions

    def small_put(self) -> None:
        self.put(self.new_path("small"), random.randbytes(random.randint(1, 64 * KIB)), "small PUT")

    def large_put(self) -> None:
        self.put(self.new_path("large"), random.randbytes(random.randint(4, 24) * MIB), "large PUT")

    def get(self) -> None:
        stored = self.pick()
        if stored is None:
            return
        age = time.monotonic() - stored.at
        headers = {}
        start = end = None
        if random.random() < 0.5 and len(stored.data) > 1:
            start = random.randrange(len(stored.data))
            end = random.randrange(start, len(stored.data))
            headers["Range"] = f"bytes={start}-{end}"
        status, _, body = self.request("GET", f"/upload/{stored.path}", headers=headers)
        if status == 404 and (age > RETENTION_SECONDS - 2 or not self.known(stored)):
            self.forget(stored)  # retention took it, as configured, or another client deleted it
            return
        if not self.expect("GET", status, (206,) if start is not None else (200,), f"{stored.path} age {age:.0f}s"):
            return
        want = stored.data if start is None else stored.data[start:end + 1]
        if body != want:
            self.tally.fail(f"GET {stored.path} {headers}: {len(body)} bytes differ from the {len(want)} stored")
        with self.tally.lock:
            self.tally.bytes_down += len(body)

    def delete(self) -> None:
        stored = self.pick()
        if stored is None:
            return
        self.forget(stored)
        status, _, _ = self.request("DELETE", f"/upload/{stored.path}?token={sign_delete(stored.path)}")
        self.expect("DELETE", status, (200, 204, 404), stored.path)
        status, _, _ = self.request("GET", f"/upload/{stored.path}")
        self.expect("GET after DELETE", status, (404,), stored.path)

    def send_partial(self, head: str, body: bytes) -> None:
        """Sends a request head and only `body` of its announced body, then goes away."""
        with socket.create_connection((HOST, self.server.port), timeout=30) as s:
            s.sendall(head.encode() + body)
            time.sleep(0.05)

    def broken_put(self) -> None:
        path = self.new_path("broken")
        size = random.randint(64 * KIB, 4 * MIB)
        data = random.randbytes(size)
        cut = random.randrange(size)
        self.send_partial(
            f"PUT /upload/{path}?v={sign_v(path, size)} HTTP/1.1\r\nHost: soak\r\nContent-Length: {size}\r\n\r\n",
            data[:cut],
        )
        time.sleep(0.2)
        status, _, _ = self.request("GET", f"/upload/{path}")
        self.expect("GET after a broken-off PUT", status, (404,), path)

    def tus(self) -> None:
        path = self.new_path("tus")
        size = random.randint(256 * KIB, 12 * MIB)
        data = random.randbytes(size)
        status, headers, _ = self.request(
            "POST", f"/upload/{path}?v={sign_v(path, size)}", b"",
            {"Tus-Resumable": "1.0.0", "Upload-Length": str(size)},
        )
        if not self.expect("tus creation", status, (201,), path):
            return
        location = headers["location"]
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        offset = 0
        interruptions = resyncs = 0
        while offset < size:
            chunk = min(size - offset, random.randint(64 * KIB, 4 * MIB))
            if random.random() < 0.3 and interruptions < 3:
                interruptions += 1
                self.send_partial(
                    f"PATCH {location} HTTP/1.1\r\nHost: soak\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
                    f"Content-Type: application/offset+octet-stream\r\nContent-Length: {chunk}\r\n\r\n",
                    data[offset:offset + random.randrange(chunk)],
                )
                # The server may still hold the lock while it saves the broken-off bytes (423).
                for _ in range(50):
                    status, headers, _ = self.request("HEAD", location, headers={"Tus-Resumable": "1.0.0"})
                    if status != 423:
                        break
                    time.sleep(0.1)
                if not self.expect("tus HEAD after an interruption", status, (200,), path):
                    return
                offset = int(headers["upload-offset"])
                continue
            status, headers, _ = self.request(
                "PATCH", location, data[offset:offset + chunk],
                {"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                 "Content-Type": "application/offset+octet-stream"},
            )
            if status in (409, 423) and resyncs < 20:
                # Still locked by the broken-off PATCH, or it moved the offset after our HEAD:
                # ask again, as tus clients do.
                resyncs += 1
                time.sleep(0.2)
                status, headers, _ = self.request("HEAD", location, headers={"Tus-Resumable": "1.0.0"})
                if status == 200:
                    offset = int(headers["upload-offset"])
                continue
            if not self.expect("tus PATCH", status, (204,), f"{path} at {offset}"):
                return
            offset = int(headers["upload-offset"])
        self.remember(path, data)
        with self.tally.lock:
            self.tally.bytes_up += size
        self.tally.count(f"tus interruptions ({interruptions})")

    def session(self) -> None:
        path = self.new_path("session")
        size = random.randint(256 * KIB, 8 * MIB)
        data = random.randbytes(size)
        token = uuid.uuid4().hex
        target = f"/upload/{path}?v={sign_v(path, size)}"
        self.send_partial(
            f"PUT {target} HTTP/1.1\r\nHost: soak\r\nX-Session-Token: {token}\r\nContent-Length: {size}\r\n\r\n",
            data[:random.randrange(size)],
        )
        time.sleep(0.2)  # the server notices the broken-off body and keeps its bytes
        for _ in range(50):
            status, headers, _ = self.request("HEAD", target, headers={"X-Session-Token": token})
            if status != 423:
                break
            time.sleep(0.1)
        if status == 404:  # nothing had arrived yet: start over whole
            self.put(path, data, "session PUT (whole)")
            return
        if not self.expect("session HEAD", status, (200,), path):
            return
        offset = int(headers["upload-offset"])
        if offset >= size:
            status, _, _ = self.request("GET", f"/upload/{path}")
            if self.expect("GET of a session upload complete at HEAD", status, (200,), path):
                self.remember(path, data)
            return
        status, _, _ = self.request(
            "PUT", target, data[offset:],
            {"X-Session-Token": token, "Content-Range": f"bytes {offset}-{size - 1}/{size}"},
        )
        if self.expect("session resume", status, (201,), f"{path} from {offset}"):
            self.remember(path, data)

    def slow_put(self) -> None:
        path = self.new_path("slow")
        size = 96 * KIB
        data = random.randbytes(size)
        with socket.create_connection((HOST, self.server.port), timeout=60) as s:
            s.sendall(f"PUT /upload/{path}?v={sign_v(path, size)} HTTP/1.1\r\nHost: soak\r\n"
                      f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode())
            for i in range(0, size, 8 * KIB):  # 8 KiB every 0.25 s: about 3 s
                if self.stop.is_set():
                    return
                s.sendall(data[i:i + 8 * KIB])
                time.sleep(0.25)
            answer = s.makefile("rb").readline().decode()
        if self.expect("slow PUT", int(answer.split()[1]) if answer else 0, (201,), path):
            self.remember(path, data)

    def slow_get(self) -> None:
        stored = self.pick()
        if stored is None or len(stored.data) < MIB:
            return
        with socket.create_connection((HOST, self.server.port), timeout=60) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
            s.sendall(f"GET /upload/{stored.path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
            got = 0
            for _ in range(12):  # read a little, slowly, then go away mid-download
                chunk = s.recv(16 * KIB)
                if not chunk:
                    break
                got += len(chunk)
                time.sleep(0.25)

    def hostile(self) -> None:
        path = self.new_path("hostile")
        choice = random.randrange(6)
        if choice == 0:
            status, _, _ = self.request("PUT", f"/upload/{path}?v={'0' * 64}", b"x" * 100)
            self.expect("PUT with a bad token", status, (403,))
        elif choice == 1:
            status, _, _ = self.request("GET", "/upload/a/%2e%2e/%2e%2e/etc/passwd")
            self.expect("traversal", status, (400, 403, 404))
        elif choice == 2:
            with socket.create_connection((HOST, self.server.port), timeout=10) as s:
                s.sendall(b"GET /upload/x y z HTTP/1.1\r\nHost: soak\r\n\r\n")
                answer = s.makefile("rb").readline().decode()
            self.expect("malformed request line", int(answer.split()[1]) if answer else 0, (400,))
        elif choice == 3:
            status, _, _ = self.request("GET", "/upload/a.bin", headers={"X-Big": "a" * (80 * KIB)})
            self.expect("80 KiB header", status, (431,))
        elif choice == 4:
            status, _, _ = self.request("PUT", f"/upload/{path}?v={sign_v(path, 10)}", b"y" * 11)
            self.expect("PUT longer than signed", status, (403,))
        else:
            stored = self.pick()
            if stored is not None and time.monotonic() - stored.at < RETENTION_SECONDS - 15:
                data = random.randbytes(len(stored.data))
                status, _, _ = self.request("PUT", f"/upload/{stored.path}?v={sign_v(stored.path, len(data))}", data)
                if status == 201 and not self.known(stored):
                    return  # another client deleted it just before: the path was free again
                self.expect("overwrite", status, (409,), stored.path)

    ACTIONS = [
        ("small PUT", small_put, 30), ("GET", get, 30), ("large PUT", large_put, 4), ("tus", tus, 4),
        ("session", session, 4), ("DELETE", delete, 4), ("broken PUT", broken_put, 4), ("slow PUT", slow_put, 1),
        ("slow GET", slow_get, 1), ("hostile", hostile, 6),
    ]

    def run_client(self) -> None:
        names, funcs, weights = zip(*self.ACTIONS)
        while not self.stop.is_set():
            i = random.choices(range(len(funcs)), weights=weights)[0]
            try:
                funcs[i](self)
                self.tally.count(names[i])
            except (OSError, http.client.HTTPException) as e:
                self.tally.fail(f"{names[i]}: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------
# Growth check and report


def growth_problems(samples: list[dict], keys: list[str]) -> list[str]:
    problems = []
    third = len(samples) // 3
    if third < 3:
        return ["too few samples to judge growth"]
    for key in keys:
        middle = max(s[key] for s in samples[third:2 * third])
        last = max(s[key] for s in samples[2 * third:])
        if last > middle * 1.25 + SLACK[key]:
            problems.append(f"{key} keeps growing: at most {middle} in the middle third, {last} in the last")
    return problems


def plot(samples: list[dict], title: str) -> str:
    panels = [("rss_mib", "RSS, MiB", "#1f77b4"), ("fds", "open file descriptors", "#ff7f0e"),
              ("threads", "threads", "#2ca02c")]
    width, panel_h, left, right, top, gap = 760, 150, 70, 20, 40, 40
    height = top + len(panels) * (panel_h + gap) + 10
    t_max = max(s["t"] for s in samples) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>']
    for n, (key, label, colour) in enumerate(panels):
        y0 = top + n * (panel_h + gap)
        y_max, y_step = nice_ceiling(max(s[key] for s in samples) * 1.1)
        x = lambda t: left + (width - left - right) * t / t_max  # noqa: E731
        y = lambda v: y0 + panel_h - panel_h * v / y_max  # noqa: E731
        out.append(f'<text x="{left}" y="{y0 - 6}">{label}</text>')
        tick = 0.0
        while tick <= y_max + 1e-9:
            out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
            tick += y_step
        minutes = 0
        while minutes * 60 <= t_max:
            out.append(f'<text x="{x(minutes * 60):.1f}" y="{y0 + panel_h + 14}" text-anchor="middle">{minutes} min</text>')
            minutes += 5 if t_max > 900 else 1
        points = " ".join(f"{x(s['t']):.1f},{y(s[key]):.1f}" for s in samples)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
    out.append("</svg>")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--redis", action="store_true", help="upload state in a redis-server of its own")
    parser.add_argument("--binary", help="this hmac-file-server binary (default: target/release, built first)")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--out", default=str(REPO / "soak-results"))
    args = parser.parse_args()

    binary = Path(args.binary).resolve() if args.binary else REPO / "target" / "release" / "hmac-file-server"
    if not args.binary and not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="hfs-soak-", dir="/dev/shm"))
    redis = Redis(workdir) if args.redis else None
    server = Server(workdir, binary, redis.port if redis else None)
    tally = Tally()
    stop = threading.Event()
    workload = Workload(server, tally, stop)
    started = time.monotonic()
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    log(f"soak: {args.minutes:g} min, {args.clients} clients, server on port {server.port}, "
        f"state {'in Redis' if redis else 'embedded'}, store {server.store}")
    clients = [threading.Thread(target=workload.run_client, daemon=True) for _ in range(args.clients)]
    for c in clients:
        c.start()
    samples: list[dict] = []
    last_hup = started
    reloads = 0
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(SAMPLE_EVERY)
            if server.proc.poll() is not None:
                tally.fail(f"the server exited with {server.proc.returncode}")
                break
            sample = {"t": round(time.monotonic() - started, 1), **server.sample()}
            if redis:
                sample["redis_keys"] = redis.keys()
            samples.append(sample)
            if time.monotonic() - last_hup >= 30:
                server.proc.send_signal(signal.SIGHUP)
                last_hup = time.monotonic()
                reloads += 1
            if len(samples) % 30 == 0:
                log(f"{sample['t']:.0f}s: {sample}; {sum(tally.actions.values())} actions, {len(tally.failures)} failures")
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
        server_problems = server.problems()
        exit_code = server.stop()
        if redis:
            redis.stop()

    keys = ["rss_mib", "fds", "threads", "temporaries", "partials"] + (["redis_keys"] if redis else [])
    growth = growth_problems(samples, keys)
    problems = tally.failures + growth + [f"server log: {l}" for l in server_problems[:20]]
    if exit_code != 0:
        problems.append(f"the server exited with {exit_code} after SIGTERM")
    peak = {k: max(s[k] for s in samples) for k in keys}
    final = samples[-1] if samples else {}
    elapsed = time.monotonic() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"hmac-file-server soak, {args.minutes:g} min, {args.clients} clients, {'Redis' if redis else 'embedded'} state ({stamp})"
    (out / f"{stamp}.svg").write_text(plot(samples, title))
    result = {"minutes": args.minutes, "clients": args.clients, "redis": bool(redis), "reloads": reloads,
              "actions": tally.actions, "bytes_up": tally.bytes_up, "bytes_down": tally.bytes_down,
              "peak": peak, "final": final, "problems": problems, "samples": samples}
    (out / f"{stamp}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# {title}", "", f"- command: `scripts/soak.sh {' '.join(sys.argv[1:])}`",
             f"- {sum(tally.actions.values()):,} actions in {elapsed / 60:.1f} min; {reloads} SIGHUP reloads; "
             f"{tally.bytes_up / MIB:,.0f} MiB up, {tally.bytes_down / MIB:,.0f} MiB down",
             "- actions: " + ", ".join(f"{k} {v:,}" for k, v in sorted(tally.actions.items())), "",
             "| resource | first sample | peak | last sample |", "|---|---|---|---|"]
    for k in keys:
        lines.append(f"| {k} | {samples[0][k] if samples else '-'} | {peak[k]} | {final.get(k, '-')} |")
    lines += ["", "## Problems", ""] + ([f"- {p}" for p in problems] or ["- none"])
    (out / f"{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"written: {out / stamp}.md, .json, .svg")
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
