#!/usr/bin/env python3
"""The hmac-file-server benchmark: `scripts/bench.sh [--quick] [--perf]`.

Builds the release binary, then measures on loopback with every store on /dev/shm:

- ceilings of this machine, in the same run: a plain 1 GiB PUT with curl into a sink that
  discards it (sink.py), the same PUT into a minimal writer that stores it in /dev/shm
  (sink.py --write-into), both in the large phase's rounds, and a 1 GiB write into /dev/shm;
- small: 20,000 PUTs of 64 KiB at concurrency 32, each a new signed path, then GETs of the same
  files (wrk with signed.lua): req/s, MiB/s, p50/p99, non-2xx answers, wrong-length bodies;
- large: 1 GiB PUT and GET with curl, sha256 of the downloaded bytes checked, in rounds with
  the two loopback ceilings (each PUT after the same /dev/shm warm-up), ratios per round;
- rss-2g: one 2 GiB PUT, peak server RSS (the bounded-memory target);
- resumable: the same 1 GiB through tus and through the IETF resumable-upload draft (interop
  version 8) in 8 MiB PATCHes, in rounds with one plain PUT each, ratios per round;
- many: 500 concurrent slow uploads of 8 MiB (slow_uploads.py), peak server RSS (VmHWM);
- sweep: PUT and GET req/s at concurrency 1, 8, 32 and 128, drawn as an SVG plot;
- s3: the server with StoreBackend = "s3" on a local single-node Garage (garage.py), in rounds
  next to the same work on the local store: small PUT/GET, 1 GiB PUT/GET beside Garage's own
  speed with a plain S3 client (the ceiling), peak RSS during a 2 GiB PUT and 200 concurrent
  slow 8 MiB uploads.
- peer: the server side by side with prosody-filer (built by ../shared/peers/build.sh) and, for
  downloads, nginx serving the server's store, in the same run, interleaved (peers.py): in each
  round the same 5,000 small PUTs and GETs (wrk) and one 1 GiB PUT and GET (curl) on each, req/s,
  MiB/s and server CPU per request (and curl's during the large GET), ratios within the round
  (`--rounds`, `--small-count`), after an untimed warm-up of both servers.
- floor: small GETs of the same files from the server, from nginx on its store, from bare
  hyper (examples/floor.rs: this server's HTTP crates answering from memory, nothing else) and
  from bare hyper sending the store's files with the server's store and connection code,
  rotating, `--rounds` rounds: how far the server is from its own HTTP stack's floor and from
  the least a stored file's download costs, and those floors from nginx; then small PUTs to
  the server, prosody-filer and bare hyper that discards, writes (as prosody-filer), durably
  keeps (as the server) or commits through the server's store code each body: the least a PUT
  with the server's guarantees costs, against prosody-filer, and how much of the server's
  distance to it is its store and how much its request work.

Every phase gets a fresh server (so VmHWM is that phase's peak) and a fresh store. Results go to
bench-results/<date>.md (the table), .json (every raw figure) and -concurrency.svg; the table is
also printed. Only 127.0.0.1 is ever contacted; every run and loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from garage import OneProcess, proc_cpu_seconds  # the helper module beside this script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Where `cargo build --release` puts it: CARGO_TARGET_DIR (relative to the repository) when set.
DEFAULT_BINARY = (REPO / os.environ.get("CARGO_TARGET_DIR", "target")) / "release" / "hmac-file-server"
BINARY = DEFAULT_BINARY  # --binary replaces it
HOST = "127.0.0.1"
SECRET = "bench-secret-" + "0123456789abcdef"
EXTRA_CONFIG: list[str] = []  # --config-line, for experiments (e.g. 'BufferSize = 1048576')
WAIT_QUIET_SECONDS = 30.0  # --wait-quiet
STORE_ROOT = Path("/dev/shm")  # --store-root: where the work folder (stores, source, sinks' files) goes
WAITED = {"busy": 0.0, "steal": 0.0, "own": 0.0, "time": 0.0}  # spent in wait_quiet(), not measured
MIB = 1024 * 1024
GIB = 1024 * MIB

# Reference figures from the issue (2 cores, loopback, /dev/shm).
REFERENCE = {
    "prosody-filer": {"small_put_rps": 6466, "small_get_rps": 11061, "large_put_mibs": 1185, "large_get_mibs": 3099},
    "go-3.4": {"small_put_rps": 5965, "small_get_rps": 7649, "large_put_mibs": 1089, "large_get_mibs": 1954},
}
TARGETS = {
    "small_put_rps": 1.5 * REFERENCE["prosody-filer"]["small_put_rps"],
    "small_get_rps": 1.2 * REFERENCE["prosody-filer"]["small_get_rps"],
    "large_put_of_ceiling": 0.85,
    "large_get_mibs": REFERENCE["prosody-filer"]["large_get_mibs"],
    "many_rss_mib": 150,
    "big_rss_mib": 100,
}


@dataclass
class Plan:
    """How much each phase does; `--quick` makes a smoke-test-sized one."""

    small_count: int = 20_000
    small_bytes: int = 64 * 1024
    small_concurrency: int = 32
    large_bytes: int = GIB
    big_bytes: int = 2 * GIB
    tus_chunk_bytes: int = 8 * MIB
    many_count: int = 500
    many_bytes: int = 8 * MIB
    many_tick_ms: float = 80.0
    sweep_concurrency: tuple[int, ...] = (1, 8, 32, 128)
    sweep_count: int = 3_000
    repeats: int = 3
    large_rounds: int = 5
    compare_rounds: int = 5
    compare_small_count: int = 5_000
    s3_rounds: int = 5
    s3_small_count: int = 3_000
    s3_many_count: int = 200
    s3_many_bytes: int = 8 * MIB
    peer_rounds: int = 5
    peer_small_count: int = 5_000

    @classmethod
    def quick(cls) -> "Plan":
        return cls(
            small_count=2_000,
            large_bytes=256 * MIB,
            big_bytes=512 * MIB,
            many_count=100,
            many_bytes=2 * MIB,
            many_tick_ms=40.0,
            sweep_count=500,
            repeats=1,
            large_rounds=1,
            compare_rounds=2,
            compare_small_count=1_000,
            s3_rounds=1,
            s3_small_count=500,
            s3_many_count=50,
            peer_rounds=2,
            peer_small_count=1_000,
        )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sign_v(path: str, size: int) -> str:
    """The XEP-0363 `v` token: HMAC-SHA256(secret, path + " " + size), lowercase hex."""
    return hmac.new(SECRET.encode(), f"{path} {size}".encode(), hashlib.sha256).hexdigest()


def signed_put_target(path: str, size: int) -> str:
    return f"/upload/{path}?v={sign_v(path, size)}"


def new_paths(prefix: str, count: int) -> list[str]:
    """Prosody-style slot paths: a fresh random folder and a file name each."""
    return [f"{prefix}-{uuid.uuid4().hex}/file-{k:06d}.bin" for k in range(count)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# The server under test


def proc_status(pid: int | str) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def proc_kib(pid: int, key: str) -> int:
    value = proc_status(pid).get(key, "0 kB").split()[0]
    return int(value) if value.isdigit() else 0


def proc_context_switches(pid: int) -> int:
    """Context switches of the process's live threads (those that exited are not counted)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        status = proc_status(f"{pid}/task/{tid}")
        for key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            value = status.get(key, "0")
            total += int(value) if value.isdigit() else 0
    return total


class Sampler:
    """Samples a process's RSS and thread count every 50 ms while running (bounded by stop())."""

    def __init__(self, pid: int):
        self.pid = pid
        self.max_rss_kib = 0
        self.max_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            status = proc_status(self.pid)
            rss = status.get("VmRSS", "0 kB").split()[0]
            threads = status.get("Threads", "0")
            if rss.isdigit():
                self.max_rss_kib = max(self.max_rss_kib, int(rss))
            if threads.isdigit():
                self.max_threads = max(self.max_threads, int(threads))

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Server(OneProcess):
    """One hmac-file-server on 127.0.0.1:<free port> with a fresh store under the work folder."""

    def __init__(self, workdir: Path, name: str, extra: tuple[str, ...] = (), binary: Path | None = None):
        self.name = name
        self.extra = extra
        self.binary = binary
        self.store = workdir / f"store-{name}"
        self.config = workdir / f"server-{name}.toml"
        self.log_path = workdir / f"server-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "Server":
        self.store.mkdir()
        self.config.write_text(
            f'ListenPort = "{HOST}:0"\n'
            f'Secret = "{SECRET}"\n'
            f'StoreDir = "{self.store}"\n'
            'MaxUploadSize = "4GiB"\n'
            'LogLevel = "warn"\n'
            # Metrics on, as by default, on a port of their own that the kernel picks (several
            # servers run at once in some phases).
            f'MetricsPort = "{HOST}:0"\n' + "".join(line + "\n" for line in [*EXTRA_CONFIG, *self.extra])
        )
        env = dict(os.environ)
        # LogLevel warn keeps access lines out of the measurement; the one "listening on" line
        # comes from the server module, so let that module say it.
        env["RUST_LOG"] = "warn,hmac_file_server::server=info"
        log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary or BINARY), "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            preexec_fn=raise_nofile_limit,
        )
        log_file.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log_path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError(f"server did not start; its log:\n{self.log_path.read_text(errors='replace')}")

    def hwm_mib(self) -> float:
        return proc_kib(self.pid, "VmHWM") / 1024

    def problems(self) -> list[str]:
        """WARN/ERROR lines the server logged (config notes about inactive features aside)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        # The start-up hint about TrustedProxies is for deployments behind a proxy: none here;
        # the one about RedisAddr with StoreBackend = "s3" is for several instances: one here.
        quiet = ("not built", "TrustedProxies is empty", "without RedisAddr: run one instance only")
        return [line for line in lines if re.search(r"\b(WARN|ERROR)\b", line) and not any(q in line for q in quiet)]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.store, ignore_errors=True)


def raise_nofile_limit() -> None:
    """500 uploads need ~1,000 descriptors (socket + staged file): lift the soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_checkpoint() -> dict:
    """The machine's busy and steal CPU seconds (/proc/stat), this process's and its reaped
    children's CPU seconds (the servers, wrk, curl and helpers are all reaped by a phase's end),
    and the time."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    raw = {
        "busy": (user + nice + system + irq + softirq) / tick,
        "steal": steal / tick,
        "own": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        "time": time.monotonic(),
    }
    return {k: v - WAITED[k] for k, v in raw.items()}


def other_cpu_share(before: dict, after: dict) -> dict:
    """How much of the machine went to anything but the bench (other processes, the kernel's
    own work, the hypervisor's steal) between two checkpoints: the figures are only as good as
    the machine was quiet."""
    capacity = (after["time"] - before["time"]) * (os.cpu_count() or 1)
    if capacity <= 0:
        return {"others": 0.0, "steal": 0.0}
    others = (after["busy"] - before["busy"]) - (after["own"] - before["own"])
    return {
        "others": round(max(0.0, others) / capacity, 3),
        "steal": round((after["steal"] - before["steal"]) / capacity, 3),
    }


def wait_quiet() -> None:
    """Waits (at most WAIT_QUIET_SECONDS) until the machine has been idle for a second: on a
    shared machine, a compile that starts in the middle of a measurement halves it."""
    if WAIT_QUIET_SECONDS <= 0:
        return
    deadline = time.monotonic() + WAIT_QUIET_SECONDS
    start = cpu_checkpoint()
    try:
        wait_quiet_until(deadline)
    finally:
        end = cpu_checkpoint()
        for k in WAITED:
            WAITED[k] += end[k] - start[k]


def wait_quiet_until(deadline: float) -> None:
    waited = False
    while True:
        before = cpu_checkpoint()
        time.sleep(1.0)
        share = other_cpu_share(before, cpu_checkpoint())
        if share["others"] < 0.05 or time.monotonic() >= deadline:
            if waited and share["others"] >= 0.05:
                log(f"the machine stayed busy ({share['others']:.0%} of it): measuring anyway")
            return
        if not waited:
            log(f"waiting up to {WAIT_QUIET_SECONDS:.0f} s for the machine to go quiet ({share['others']:.0%} busy)")
            waited = True


# ---------------------------------------------------------------------------------------------
# Tools


def ensure_tools() -> dict[str, str]:
    """wrk (Debian package) and curl; installs wrk with apt-get when running as root."""
    if shutil.which("wrk") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log("wrk is missing: apt-get install -y wrk")
            cmd = ["apt-get", "install", "-y", "-qq", "wrk"]
            if subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=600).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL, timeout=600, check=True)
                subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=600, check=True)
        else:
            sys.exit("bench: needs wrk (Debian: sudo apt-get install wrk)")
    if shutil.which("curl") is None:
        sys.exit("bench: needs curl (Debian: sudo apt-get install curl)")
    versions = {}
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    versions["wrk"] = (wrk.stdout + wrk.stderr).split("Copyright")[0].strip()
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=10)
    versions["curl"] = curl.stdout.split()[1] if curl.stdout else "?"
    return versions


def build() -> None:
    log("cargo build --release")
    result = subprocess.run(["cargo", "build", "--release"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        sys.exit("bench: cargo build --release failed")


def machine_info(tools: dict[str, str]) -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    version = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "os": distro_name(),
        "server": version,
        "commit": commit_of_binary(git),
        "tools": tools,
    }


def mount_of(path: Path) -> str:
    """`path (fstype, options)` of the mount that holds `path`, from /proc/mounts."""
    best = ("/", "?", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                _, point, fstype, options = line.split()[:4]
                inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[0]):
                    best = (point, fstype, options)
    except OSError:
        pass
    return f"{path} ({best[1]}, {best[2]})"


def commit_of_binary(git) -> str:
    if BINARY != DEFAULT_BINARY:
        return f"unknown (--binary {BINARY})"
    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")


def distro_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


# ---------------------------------------------------------------------------------------------
# Measurements


def make_source(path: Path, size: int) -> str:
    """Writes `size` random bytes to `path` (on /dev/shm) and returns their sha256."""
    digest = hashlib.sha256()
    block = 4 * MIB
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = os.urandom(min(block, size - written))
            digest.update(chunk)
            f.write(chunk)
            written += len(chunk)
    return digest.hexdigest()


def shm_write_mibs(workdir: Path, size: int) -> float:
    """MiB/s of writing `size` bytes into a new /dev/shm file in 1 MiB writes (page allocation
    included, as the server pays it too)."""
    target = workdir / "shm-write.bin"
    buf = b"\xa5" * MIB
    t0 = time.perf_counter()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, buf[: min(MIB, left)])
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    target.unlink()
    return size / MIB / seconds


def curl(args: list[str], max_seconds: int = 300) -> tuple[str, float, int]:
    """Runs curl quietly; returns (HTTP status, time_total in s, bytes moved)."""
    cmd = ["curl", "-sS", "--max-time", str(max_seconds), "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_upload} %{size_download}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds + 30)
    parts = r.stdout.split()
    if len(parts) != 4:
        return f"curl failed: {r.stderr.strip()}", float("nan"), 0
    return parts[0], float(parts[1]), int(float(parts[2])) + int(float(parts[3]))


def curl_put(url: str, source: Path) -> tuple[str, float, int]:
    # -T streams the file as the PUT body; an empty Expect skips the 100-continue round trip.
    return curl(["-T", str(source), "-H", "Expect:", url])


class Sink:
    """sink.py on a free port: discarding each PUT body, or with `write_into`, storing it."""

    def __init__(self, requests: int, write_into: Path | None = None):
        self.args = [sys.executable, str(HERE / "sink.py"), "--requests", str(requests), "--max-seconds", "600"]
        if write_into is not None:
            self.args += ["--write-into", str(write_into)]
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "Sink":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().strip().rsplit(":", 1)[1])
        return self

    def put_mibs(self, source: Path, size: int) -> float:
        status, seconds, moved = curl_put(f"http://{HOST}:{self.port}/sink", source)
        if status != "201" or moved != size:
            raise RuntimeError(f"sink PUT failed: {status}, {moved} bytes")
        return size / MIB / seconds

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def write_target_lists(workdir: Path, name: str, targets: list[str], threads: int) -> str:
    prefix = workdir / f"targets-{name}"
    files = [open(f"{prefix}.{i}", "w") for i in range(threads)]
    for k, target in enumerate(targets):
        files[k % threads].write(target + "\n")
    for f in files:
        f.close()
    return str(prefix)


def run_wrk(
    server: Server, workdir: Path, name: str, mode: str, targets: list[str], concurrency: int, body_bytes: int,
    unique: bool = False, also=None,
) -> dict:
    """One wrk run over exactly these targets; returns signed.lua's summary plus CPU use. With
    `unique`, every PUT body differs and every GET body is checked byte for byte (signed.lua);
    `also` (a process with cpu_seconds(), e.g. the object store) gets its CPU counted too."""
    threads = max(1, min(os.cpu_count() or 2, concurrency, len(targets)))
    prefix = write_target_lists(workdir, name, targets, threads)
    cap_seconds = 20 + len(targets) // 250
    cmd = [
        "wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{cap_seconds}s", "--timeout", "30s",
        "-s", str(HERE / "signed.lua"), f"http://{HOST}:{server.port}", "--", mode, prefix, str(body_bytes), str(threads),
    ] + (["unique"] if unique else [])
    also0 = also.cpu_seconds() if also is not None else 0.0
    cpu0 = server.cpu_seconds()
    switches0 = proc_context_switches(server.pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=cap_seconds + 60)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    switches1 = proc_context_switches(server.pid)
    cpu1 = server.cpu_seconds()
    also1 = also.cpu_seconds() if also is not None else 0.0
    line = next((l for l in r.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    out = json.loads(line[len("BENCH_JSON "):])
    seconds = out["duration_us"] / 1e6
    out["mode"] = mode
    out["concurrency"] = concurrency
    out["threads"] = threads
    out["seconds"] = seconds
    out["complete"] = out["answered"] == out["expected"] == out["sent"]
    out["req_per_s"] = out["answered"] / seconds if seconds > 0 else 0.0
    out["mib_per_s"] = out["answered"] * body_bytes / MIB / seconds if seconds > 0 else 0.0
    out["server_cpu_s"] = round(cpu1 - cpu0, 3)
    out["server_cpu_us_per_request"] = (cpu1 - cpu0) * 1e6 / max(1, out["answered"])
    out["server_switches_per_request"] = (switches1 - switches0) / max(1, out["answered"])
    out.setdefault("wrong_body", 0)
    if also is not None:
        out["also_cpu_us_per_request"] = (also1 - also0) * 1e6 / max(1, out["answered"])
    out["client_cpu_s"] = round(
        (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime), 3
    )
    return out


def get_sha256(port: int, path: str, max_seconds: int = 300) -> tuple[int, int, str]:
    """GETs a file, hashing it as it streams; returns (status, length, sha256)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=max_seconds)
    try:
        conn.request("GET", f"/upload/{path}")
        resp = conn.getresponse()
        digest = hashlib.sha256()
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        length = 0
        while True:
            n = resp.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
            length += n
        return resp.status, length, digest.hexdigest()
    finally:
        conn.close()


def put_from_file_repeated(port: int, path: str, source: Path, times: int, max_seconds: int = 300) -> tuple[int, float]:
    """PUTs `times` copies of `source` back to back as one body (sendfile from /dev/shm, so the
    client costs little); returns (status, seconds)."""
    size = source.stat().st_size * times
    sock = socket.create_connection((HOST, port), timeout=max_seconds)
    try:
        t0 = time.perf_counter()
        sock.sendall(
            (
                f"PUT {signed_put_target(path, size)} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            ).encode()
        )
        for _ in range(times):
            with open(source, "rb") as f:
                sock.sendfile(f)
        status_line = sock.makefile("rb").readline()
        seconds = time.perf_counter() - t0
        parts = status_line.split()
        return (int(parts[1]) if len(parts) >= 2 else 0), seconds
    finally:
        sock.close()


def tus_advertised(port: int) -> str | None:
    """The server's Tus-Version header on OPTIONS, or None when it does not speak tus."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("OPTIONS", "/upload/", headers={"Tus-Resumable": "1.0.0"})
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("Tus-Version")
    finally:
        conn.close()


# ---- RESUMABLE (tus) ------------------------------------------------------------------------
# Runs only when OPTIONS answers with Tus-Version (SPEC §4.2); otherwise the table says "not
# built yet", so the bench also measures builds from before tus. Checked against the server's
# tus 1.0.0 (commit 72a22b5): 128 PATCHes, sha256 of the result matches.
def raw_put(port: int, target: str, source: Path, max_seconds: int = 300) -> float | None:
    """One plain PUT of `source` with the tus phase's own client (raw socket, sendfile), so
    the two are compared with the same client; returns seconds, or None unless 201."""
    size = source.stat().st_size
    with socket.create_connection((HOST, port), timeout=max_seconds) as sock, open(source, "rb") as f:
        t0 = time.perf_counter()
        sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: {size}\r\n\r\n".encode())
        sock.sendfile(f, 0, size)
        with sock.makefile("rb") as reader:
            status = int(reader.readline().split()[1])
        seconds = time.perf_counter() - t0
    return seconds if status == 201 else None


def read_final_head(reader) -> tuple[int, dict[str, str]]:
    """Reads response heads from `reader` until a final one (interim 1xx answers, such as the
    draft's 104, are skipped; http.client takes them for the answer); returns its status and
    lower-cased headers, its body read and dropped."""
    while True:
        status_line = reader.readline().decode()
        if not status_line:
            raise ConnectionError("connection closed before an answer")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = reader.readline().decode()
            if line in ("\r\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            continue
        length = int(headers.get("content-length", "0"))
        if length:
            reader.read(length)
        return status, headers


def tus_upload(
    port: int, path: str, source: Path, chunk_bytes: int, max_seconds: int = 300, draft: bool = False
) -> dict:
    """Creates a tus upload (with `draft`: an upload of the IETF resumable-upload draft,
    interop version 8) at the signed slot URL and sends `source` in PATCHes of `chunk_bytes`;
    returns status, seconds (creation to last PATCH answer) and MiB/s.

    Everything goes over one raw socket, the bodies with sendfile, as curl sends the plain PUT:
    the client must not be what is measured (http.client copies each 8 MiB body through Python
    and made tus look slower than it is)."""
    size = source.stat().st_size
    deadline = time.monotonic() + max_seconds
    protocol = "Upload-Draft-Interop-Version: 8\r\n" if draft else "Tus-Resumable: 1.0.0\r\n"
    sock = socket.create_connection((HOST, port), timeout=max_seconds)
    reader = sock.makefile("rb")
    try:
        t0 = time.perf_counter()
        creation = "Upload-Complete: ?0\r\n" if draft else ""
        sock.sendall(
            (
                f"POST {signed_put_target(path, size)} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{protocol}{creation}"
                f"Upload-Length: {size}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        status, headers = read_final_head(reader)
        location = headers.get("location")
        if status != 201 or not location:
            return {"status": f"creation answered {status}", "seconds": 0.0, "mib_per_s": 0.0}
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        with open(source, "rb") as f:
            offset = 0
            patches = 0
            while offset < size:
                if time.monotonic() > deadline:
                    return {"status": "timeout", "seconds": 0.0, "mib_per_s": 0.0}
                n = min(chunk_bytes, size - offset)
                if draft:
                    last = "?1" if offset + n == size else "?0"
                    content_type = "application/partial-upload"
                    protocol_lines = f"{protocol}Upload-Complete: {last}\r\n"
                else:
                    content_type = "application/offset+octet-stream"
                    protocol_lines = protocol
                sock.sendall(
                    (
                        f"PATCH {location} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{protocol_lines}"
                        f"Content-Type: {content_type}\r\nUpload-Offset: {offset}\r\nContent-Length: {n}\r\n\r\n"
                    ).encode()
                )
                sock.sendfile(f, offset, n)
                status, headers = read_final_head(reader)
                # The draft's completing append answers what a PUT does: 201.
                if status != 204 and not (draft and status == 201 and offset + n == size):
                    return {"status": f"PATCH at {offset} answered {status}", "seconds": 0.0, "mib_per_s": 0.0}
                offset = int(headers.get("upload-offset", offset + n))
                patches += 1
        seconds = time.perf_counter() - t0
        return {"status": "ok", "patches": patches, "seconds": seconds, "mib_per_s": size / MIB / seconds}
    finally:
        reader.close()
        sock.close()


# ---------------------------------------------------------------------------------------------
# Phases


@dataclass
class Results:
    plan: dict
    machine: dict
    started: str
    command: str
    ceilings: dict = field(default_factory=dict)
    small: dict = field(default_factory=dict)
    large: dict = field(default_factory=dict)
    big: dict = field(default_factory=dict)
    resumable: dict = field(default_factory=dict)
    checksum: dict = field(default_factory=dict)
    many: dict = field(default_factory=dict)
    sweep: list = field(default_factory=list)
    compare: dict = field(default_factory=dict)
    s3: dict = field(default_factory=dict)
    peer: dict = field(default_factory=dict)
    floor: dict = field(default_factory=dict)
    perf: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)  # wrong answers, lost files: exit status 1
    warnings: list = field(default_factory=list)  # a busy machine: figures not to be trusted
    seconds: float = 0.0
    load_at_start: str = ""
    other_cpu: dict = field(default_factory=dict)


def phase_ceilings(res: Results, plan: Plan, workdir: Path) -> None:
    """The /dev/shm write ceiling; the loopback ceilings are measured by the large phase, in the
    same rounds as the server's PUTs."""
    log(f"ceilings: {plan.repeats}× /dev/shm write of {plan.large_bytes // MIB} MiB")
    shm = []
    for _ in range(plan.repeats):
        wait_quiet()
        shm.append(shm_write_mibs(workdir, plan.large_bytes))
    res.ceilings.update({"shm_write_mibs": median(shm), "shm_write_mibs_all": [round(x, 1) for x in shm]})


def combine_runs(runs: list[dict]) -> dict:
    """One summary of several wrk runs: medians of rates, latencies and times; sums of counts."""
    out = {
        "runs": len(runs),
        "concurrency": runs[0]["concurrency"],
        "complete": all(r["complete"] for r in runs),
        "statuses": {},
        "errors": {},
        "latency_us": {},
    }
    for key in ("req_per_s", "mib_per_s", "seconds", "server_cpu_s", "client_cpu_s",
                "server_cpu_us_per_request", "server_switches_per_request"):
        out[key] = median([r[key] for r in runs])
        out[f"{key}_all"] = [round(r[key], 3) for r in runs]
    for key in ("expected", "sent", "answered", "non_2xx", "wrong_length", "wrong_body"):
        out[key] = sum(r.get(key, 0) for r in runs)
    for key in ("p50", "p90", "p99", "p999", "max"):
        out["latency_us"][key] = median([r["latency_us"][key] for r in runs])
    for r in runs:
        for k, v in r["statuses"].items():
            out["statuses"][k] = out["statuses"].get(k, 0) + v
        for k, v in r["errors"].items():
            out["errors"][k] = out["errors"].get(k, 0) + v
    return out


def phase_small(res: Results, plan: Plan, workdir: Path) -> None:
    n, size, c = plan.small_count, plan.small_bytes, plan.small_concurrency
    puts, gets, stored_all, rss = [], [], [], []
    for i in range(plan.repeats):
        log(f"small {i + 1}/{plan.repeats}: {n} PUTs of {size // 1024} KiB at c={c}, then GETs of the same files")
        paths = new_paths("small", n)
        wait_quiet()
        with Server(workdir, f"small{i}") as server:
            put = run_wrk(server, workdir, f"small{i}-put", "put", [signed_put_target(p, size) for p in paths], c, size)
            stored = sum(1 for f in (server.store / "upload").rglob("*") if f.is_file())
            get = run_wrk(server, workdir, f"small{i}-get", "get", [f"/upload/{p}" for p in paths], c, size)
            puts.append(put)
            gets.append(get)
            stored_all.append(stored)
            rss.append(server.hwm_mib())
            for name, run in (("PUT", put), ("GET", get)):
                if not run["complete"] or run["non_2xx"] or run["wrong_length"] or any(run["errors"].values()):
                    res.problems.append(
                        f"small run {i + 1} {name}: {run['answered']}/{run['expected']} answered, "
                        f"non-2xx {run['non_2xx']}, wrong length {run['wrong_length']}, "
                        f"statuses {run['statuses']}, socket errors {run['errors']}"
                    )
            if stored != n:
                res.problems.append(f"small run {i + 1}: {stored} files stored after {n} PUTs")
            if not server.alive():
                res.problems.append(f"small run {i + 1}: the server died")
            res.problems += [f"small run {i + 1}: server log: {line}" for line in server.problems()[:20]]
    res.small = {
        "put": combine_runs(puts),
        "get": combine_runs(gets),
        "put_runs": puts,
        "get_runs": gets,
        "files_stored": sum(stored_all),
        "peak_rss_mib": max(rss),
    }


def phase_large(res: Results, plan: Plan, workdir: Path, source: Path, sha256: str) -> None:
    """Rounds of one 1 GiB PUT each into the discarding sink (the issue's ceiling), into the
    minimal writer (sink.py --write-into: what storing the bytes costs by itself) and into the
    server, in a rotating order, each ratio taken within its round; then the server's GET.

    Before every PUT, /dev/shm gets a 1 GiB write that is removed again: on a VM that hands freed
    memory back to its host (virtio-balloon free page reporting, as on this machine), the first
    touch of memory costs a host fault per page, and which PUT pays for it would otherwise be
    luck. Every contestant gets the same warm-up."""
    size = plan.large_bytes
    rounds = plan.large_rounds
    log(f"large: {rounds} rounds of {size // MIB} MiB PUTs into the sink, the minimal writer and the server; GET, sha256 checked")
    puts, gets, checks, sinks, writers = [], [], [], [], []
    writer_dir = workdir / "writer"
    writer_dir.mkdir()
    with Server(workdir, "large") as server, Sink(rounds) as sink, Sink(rounds, writer_dir) as writer:

        def server_put() -> float:
            path = f"large-{uuid.uuid4().hex}/big.bin"
            status, seconds, _ = curl_put(f"http://{HOST}:{server.port}{signed_put_target(path, size)}", source)
            puts.append({"status": status, "seconds": seconds, "mib_per_s": size / MIB / seconds if status == "201" else 0.0})
            status, seconds, moved = curl([f"http://{HOST}:{server.port}/upload/{path}"])
            gets.append({"status": status, "seconds": seconds, "bytes": moved, "mib_per_s": size / MIB / seconds if status == "200" and moved == size else 0.0})
            got_status, got_len, got_sha = get_sha256(server.port, path)
            checks.append(got_status == 200 and got_len == size and got_sha == sha256)
            stored = server.store / "upload" / path
            if stored.exists():
                stored.unlink()  # keep /dev/shm small
            return puts[-1]["mib_per_s"]

        contestants = [
            ("sink", lambda: sinks.append(sink.put_mibs(source, size))),
            ("writer", lambda: writers.append(writer.put_mibs(source, size))),
            ("server", server_put),
        ]
        for i in range(rounds):
            wait_quiet()
            for _, run in contestants[i % 3 :] + contestants[: i % 3]:
                shm_write_mibs(workdir, size)  # the warm-up
                run()
        of_sink = [p["mib_per_s"] / k for p, k in zip(puts, sinks)]
        of_writer = [p["mib_per_s"] / w for p, w in zip(puts, writers)]
        res.ceilings.update(
            {
                "sink_put_mibs": median(sinks),
                "sink_put_mibs_all": [round(x, 1) for x in sinks],
                "writer_put_mibs": median(writers),
                "writer_put_mibs_all": [round(x, 1) for x in writers],
            }
        )
        res.large = {
            "bytes": size,
            "put": puts,
            "get": gets,
            "put_mib_per_s": median([p["mib_per_s"] for p in puts]),
            "get_mib_per_s": median([g["mib_per_s"] for g in gets]),
            "put_of_sink": median(of_sink),
            "put_of_sink_all": [round(x, 3) for x in of_sink],
            "put_of_writer": median(of_writer),
            "put_of_writer_all": [round(x, 3) for x in of_writer],
            "sha256_ok": all(checks),
            "peak_rss_mib": server.hwm_mib(),
            "server_cpu_s": server.cpu_seconds(),
        }
        if not all(p["status"] == "201" for p in puts) or not all(g["status"] == "200" for g in gets):
            res.problems.append(f"large: unexpected answers: PUT {[p['status'] for p in puts]}, GET {[g['status'] for g in gets]}")
        if not all(checks):
            res.problems.append("large: sha256 of the downloaded file differs from the upload")
        res.problems += [f"large: server log: {line}" for line in server.problems()[:20]]


def phase_big(res: Results, plan: Plan, workdir: Path, source: Path) -> None:
    times = max(1, plan.big_bytes // source.stat().st_size)
    size = times * source.stat().st_size
    log(f"rss-2g: one PUT of {size // MIB} MiB, peak server RSS")
    with Server(workdir, "big") as server:
        wait_quiet()
        with Sampler(server.pid) as sampler:
            status, seconds = put_from_file_repeated(server.port, f"big-{uuid.uuid4().hex}/huge.bin", source, times)
        res.big = {
            "bytes": size,
            "status": status,
            "seconds": seconds,
            "mib_per_s": size / MIB / seconds,
            "peak_rss_mib": server.hwm_mib(),
            "max_threads": sampler.max_threads,
        }
        if status != 201:
            res.problems.append(f"rss-2g: PUT answered {status}")
        res.problems += [f"rss-2g: server log: {line}" for line in server.problems()[:20]]


def phase_checksum(res: Results, plan: Plan, workdir: Path, source: Path, sha256: str) -> None:
    """What ChecksumVerification costs: rounds of one large PUT into a server without it and one
    with it (the client sends `Repr-Digest: sha-256=…`, which the server checks), each after the
    same /dev/shm warm-up; MiB/s and server CPU seconds per GiB."""
    size = plan.large_bytes
    rounds = plan.repeats
    log(f"checksum: {rounds} rounds of {size // MIB} MiB PUTs without and with ChecksumVerification")
    digest = "sha-256=:" + base64.b64encode(bytes.fromhex(sha256)).decode() + ":"
    runs: dict[str, list[dict]] = {"plain": [], "checked": []}
    with Server(workdir, "plain") as plain, Server(workdir, "checked", ("ChecksumVerification = true",)) as checked:
        for i in range(rounds):
            wait_quiet()
            for name, server in [("plain", plain), ("checked", checked)][:: 1 if i % 2 == 0 else -1]:
                path = f"sum-{uuid.uuid4().hex}/big.bin"
                shm_write_mibs(workdir, size)  # the warm-up, as in the large phase
                cpu = server.cpu_seconds()
                headers = ["-H", f"Repr-Digest: {digest}"] if name == "checked" else []
                status, seconds, _ = curl(["-T", str(source), "-H", "Expect:", *headers, f"http://{HOST}:{server.port}{signed_put_target(path, size)}"])
                cpu = server.cpu_seconds() - cpu
                runs[name].append({"status": status, "mib_per_s": size / MIB / seconds if status == "201" else 0.0, "cpu_s_per_gib": cpu * GIB / size})
                stored = server.store / "upload" / path
                if stored.exists():
                    stored.unlink()
        problems = [f"checksum: server log: {line}" for line in plain.problems()[:10] + checked.problems()[:10]]
    res.checksum = {
        name: {
            "runs": r,
            "mib_per_s": median([x["mib_per_s"] for x in r]),
            "cpu_s_per_gib": median([x["cpu_s_per_gib"] for x in r]),
        }
        for name, r in runs.items()
    }
    if not all(x["status"] == "201" for r in runs.values() for x in r):
        res.problems.append(f"checksum: unexpected answers: { {k: [x['status'] for x in r] for k, r in runs.items()} }")
    res.problems += problems


def phase_resumable(res: Results, plan: Plan, workdir: Path, source: Path, sha256: str) -> None:
    with Server(workdir, "tus") as server:
        version = tus_advertised(server.port)
        if not version:
            log("resumable: the server does not advertise tus (no Tus-Version on OPTIONS): not built yet")
            res.resumable = {"built": False}
            return
        log(f"resumable: tus {version}, {plan.large_bytes // MIB} MiB in {plan.tus_chunk_bytes // MIB} MiB PATCHes")
        # Issue 4 compares tus with one plain PUT of the same bytes "on the same run": both go
        # to this server with the same client (raw socket, sendfile), in rounds (one of each),
        # so the machine's state (page cache, tmpfs pages) is the same for both, each after
        # the large phase's warm-up; the ratio is taken within each round, its median reported.
        tus_runs, plain_runs, draft_runs = [], [], []
        out = {"status": "ok"}
        draft_out = {"status": "ok"}
        for _ in range(plan.large_rounds):
            wait_quiet()
            plain_path = f"plain-{uuid.uuid4().hex}/big.bin"
            shm_write_mibs(workdir, plan.large_bytes)
            plain = raw_put(server.port, signed_put_target(plain_path, plan.large_bytes), source)
            if plain is not None:
                plain_runs.append(plan.large_bytes / MIB / plain)
            path = f"tus-{uuid.uuid4().hex}/big.bin"
            wait_quiet()
            shm_write_mibs(workdir, plan.large_bytes)
            out = tus_upload(server.port, path, source, plan.tus_chunk_bytes)
            if out["status"] != "ok":
                res.problems.append(f"resumable: {out['status']}")
                break
            status, length, got_sha = get_sha256(server.port, path)
            out["sha256_ok"] = status == 200 and length == plan.large_bytes and got_sha == sha256
            tus_runs.append(out["mib_per_s"])
            draft_path = f"draft-{uuid.uuid4().hex}/big.bin"
            wait_quiet()
            shm_write_mibs(workdir, plan.large_bytes)
            draft_out = tus_upload(server.port, draft_path, source, plan.tus_chunk_bytes, draft=True)
            if draft_out["status"] != "ok":
                res.problems.append(f"resumable (IETF draft): {draft_out['status']}")
                break
            status, length, got_sha = get_sha256(server.port, draft_path)
            draft_out["sha256_ok"] = status == 200 and length == plan.large_bytes and got_sha == sha256
            draft_runs.append(draft_out["mib_per_s"])
            for stored in (
                server.store / "upload" / plain_path,
                server.store / "upload" / path,
                server.store / "upload" / draft_path,
            ):
                if stored.exists():
                    stored.unlink()  # keep /dev/shm small
        if tus_runs:
            out["mib_per_s"] = statistics.median(tus_runs)
            out["tus_runs"] = tus_runs
        if plain_runs:
            out["plain_mib_per_s"] = statistics.median(plain_runs)
        if tus_runs and len(tus_runs) == len(plain_runs):
            out["ratios"] = [t / p for t, p in zip(tus_runs, plain_runs)]
            out["ratio"] = statistics.median(out["ratios"])
            out["plain_runs"] = plain_runs
        if draft_runs and len(draft_runs) == len(plain_runs):
            out["draft"] = {
                "mib_per_s": statistics.median(draft_runs),
                "runs": draft_runs,
                "ratios": [d / p for d, p in zip(draft_runs, plain_runs)],
                "sha256_ok": draft_out.get("sha256_ok", False),
            }
            out["draft"]["ratio"] = statistics.median(out["draft"]["ratios"])
        out.update({"built": True, "tus_version": version, "peak_rss_mib": server.hwm_mib()})
        res.resumable = out


def phase_many(res: Results, plan: Plan, workdir: Path) -> None:
    n, size = plan.many_count, plan.many_bytes
    log(f"many: {n} concurrent slow uploads of {size // MIB} MiB")
    targets = workdir / "targets-many"
    targets.write_text("".join(signed_put_target(p, size) + "\n" for p in new_paths("many", n)))
    with Server(workdir, "many") as server:
        wait_quiet()
        cpu0 = server.cpu_seconds()
        with Sampler(server.pid) as sampler:
            r = subprocess.run(
                [
                    sys.executable, str(HERE / "slow_uploads.py"), "--port", str(server.port),
                    "--targets", str(targets), "--size", str(size), "--tick-ms", str(plan.many_tick_ms),
                    "--max-seconds", "120",
                ],
                capture_output=True, text=True, timeout=200, preexec_fn=raise_nofile_limit,
            )
        if r.returncode != 0 or not r.stdout.strip():
            raise RuntimeError(f"slow_uploads.py failed:\n{r.stderr}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out.update({
            "peak_rss_mib": server.hwm_mib(),
            "max_threads": sampler.max_threads,
            "server_cpu_s": round(server.cpu_seconds() - cpu0, 3),
        })
        # The blocking pool's idle threads end after tokio's keep-alive (10 s): what is left
        # 15 s after the burst, and the memory then.
        time.sleep(15)
        status = proc_status(server.pid)
        out["threads_after_15s"] = int(status.get("Threads", "0"))
        out["rss_after_15s_mib"] = round(int(status.get("VmRSS", "0 kB").split()[0]) / 1024, 1)
        res.many = out
        if out["created"] != n:
            res.problems.append(f"many: only {out['created']} of {n} uploads got 201: {out['statuses']}")
        res.problems += [f"many: server log: {line}" for line in server.problems()[:20]]


def phase_compare(res: Results, plan: Plan, workdir: Path, source: Path, sha256: str, before: Path) -> None:
    """The binary under test against another one (`--compare OLD_BINARY`, e.g. the build before a
    change), interleaved: in each round both get a fresh server and store and run the same work
    (small PUTs then GETs with wrk, one large PUT and GET with curl), in alternating order, and
    the ratios after/before are taken within the round. A figure counts only as such a ratio:
    the machine's speed drifts between rounds, not within one."""
    rounds, n, size, c = plan.compare_rounds, plan.compare_small_count, plan.small_bytes, plan.small_concurrency
    big = plan.large_bytes
    contestants = [("before", before.resolve()), ("after", BINARY)]
    log(f"compare: {rounds} rounds of {before} against {BINARY}: {n} PUTs+GETs of {size // 1024} KiB at c={c}, {big // MIB} MiB PUT+GET")
    rows = []
    for i in range(rounds):
        row = {}
        for name, binary in contestants if i % 2 == 0 else contestants[::-1]:
            paths = new_paths(f"cmp{i}{name}", n)
            wait_quiet()
            with Server(workdir, f"cmp{i}-{name}", binary=binary) as server:
                put = run_wrk(server, workdir, f"cmp{i}-{name}-put", "put", [signed_put_target(p, size) for p in paths], c, size)
                get = run_wrk(server, workdir, f"cmp{i}-{name}-get", "get", [f"/upload/{p}" for p in paths], c, size)
                for stored in (server.store / "upload").iterdir():  # keep /dev/shm small
                    shutil.rmtree(stored, ignore_errors=True)
                shm_write_mibs(workdir, big)  # the same warm-up for both
                path = f"cmp-{uuid.uuid4().hex}/big.bin"
                put_status, put_s, _ = curl_put(f"http://{HOST}:{server.port}{signed_put_target(path, big)}", source)
                get_status, get_s, moved = curl([f"http://{HOST}:{server.port}/upload/{path}"])
                got = get_sha256(server.port, path)
                for label, run in (("PUT", put), ("GET", get)):
                    if not run["complete"] or run["non_2xx"] or run["wrong_length"]:
                        res.problems.append(f"compare round {i + 1} {name} small {label}: {run['answered']}/{run['expected']} answered, statuses {run['statuses']}")
                if put_status != "201" or get_status != "200" or moved != big or got != (200, big, sha256):
                    res.problems.append(f"compare round {i + 1} {name} large: PUT {put_status}, GET {get_status}, {moved} bytes, sha256 ok {got[2] == sha256}")
                row[name] = {
                    "small_put_rps": put["req_per_s"],
                    "small_get_rps": get["req_per_s"],
                    "small_put_cpu_us": put["server_cpu_us_per_request"],
                    "small_get_cpu_us": get["server_cpu_us_per_request"],
                    "large_put_mibs": big / MIB / put_s if put_status == "201" else 0.0,
                    "large_get_mibs": big / MIB / get_s if get_status == "200" else 0.0,
                    "peak_rss_mib": server.hwm_mib(),
                }
                res.problems += [f"compare round {i + 1} {name}: server log: {line}" for line in server.problems()[:10]]
        rows.append(row)
    keys = ["small_put_rps", "small_get_rps", "small_put_cpu_us", "small_get_cpu_us", "large_put_mibs", "large_get_mibs"]
    ratios = {k: [r["after"][k] / r["before"][k] if r["before"][k] else float("nan") for r in rows] for k in keys}
    res.compare = {
        "before": str(before),
        "after": str(BINARY),
        "rounds": rows,
        "ratios": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
        "median_ratios": {k: median(v) for k, v in ratios.items()},
        "medians": {name: {k: median([r[name][k] for r in rows]) for k in keys} for name in ("before", "after")},
    }


def compare_table(res: Results) -> str:
    if not res.compare:
        return ""
    c = res.compare
    names = {
        "small_put_rps": "small PUT req/s",
        "small_get_rps": "small GET req/s",
        "small_put_cpu_us": "server CPU µs per small PUT",
        "small_get_cpu_us": "server CPU µs per small GET",
        "large_put_mibs": "large PUT MiB/s",
        "large_get_mibs": "large GET MiB/s",
    }
    lines = [
        f"## Before and after, interleaved ({len(c['rounds'])} rounds)",
        "",
        f"before: `{c['before']}`; after: `{c['after']}`. Ratio = after / before within each round "
        "(for CPU per request, below 1 is better).",
        "",
        "| figure | before (median) | after (median) | ratio, median | ratio per round |",
        "|---|---|---|---|---|",
    ]
    for k, label in names.items():
        lines.append(
            f"| {label} | {fmt(c['medians']['before'][k])} | {fmt(c['medians']['after'][k])} | "
            f"{c['median_ratios'][k]:.2f} | {', '.join(f'{x:.2f}' for x in c['ratios'][k])} |"
        )
    return "\n".join(lines)


# ---- PEER (prosody-filer and nginx, side by side) ----------------------------------------------
# Issue 15: the server next to prosody-filer (the upload server it replaces) and nginx (the
# ceiling for downloads) on this machine, in the same run, interleaved (peers.py starts both).

PEER_FIGURES = {  # key: (label, measured for nginx too)
    "small_put_rps": ("small PUT req/s", False),
    "small_put_mibs": ("small PUT MiB/s", False),
    "small_put_cpu_us": ("server CPU µs per small PUT", False),
    "small_get_rps": ("small GET req/s", True),
    "small_get_mibs": ("small GET MiB/s", True),
    "small_get_cpu_us": ("server CPU µs per small GET", True),
    "large_put_mibs": ("large PUT MiB/s", False),
    "large_put_cpu_s": ("server CPU s per large PUT", False),
    "large_get_mibs": ("large GET MiB/s", True),
    "large_get_cpu_s": ("server CPU s per large GET", True),
    "large_get_client_busy": ("curl's CPU during the large GET, of one core", True),
}
PEER_FSYNC_NOTE = (
    "prosody-filer does not fsync: it copies the body into the file and closes it, neither the file "
    "nor its folder is synced before its 201. This server fsyncs the file and then its folder (after "
    "the rename into place) before answering 201, so its PUT figures carry that cost and prosody-filer's "
    "do not (on tmpfs an fsync costs little; on a disk it can cost far more than the rest of a small PUT)."
)


def stored_under(store: Path) -> int:
    return sum(1 for f in (store / "upload").rglob("*") if f.is_file())


def empty_upload_folder(store: Path) -> None:
    for entry in (store / "upload").iterdir():  # keep /dev/shm small
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()


def peer_round(
    res: Results, plan: Plan, workdir: Path, source: Path, sha256: str, peer_bin: Path, nginx_bin: Path | None, i: int
) -> dict:
    """One round: a fresh server and a fresh prosody-filer (and an nginx on the server's store),
    each doing the same work in turn (prosody-filer first in even rounds): wrk PUTs of the same
    signed paths, then GETs of them (the server's files also through nginx, in alternating
    order), then one large PUT and GET with curl (again also through nginx), sha256 checked."""
    import contextlib

    import peers

    n, size, c, big = plan.peer_small_count, plan.small_bytes, plan.small_concurrency, plan.large_bytes
    label = f"peer round {i + 1}"
    paths = new_paths(f"peer{i}", n)  # one list for both: the token form is the same
    put_targets = [signed_put_target(p, size) for p in paths]
    get_targets = [f"/upload/{p}" for p in paths]
    order = ["peer", "ours"] if i % 2 == 0 else ["ours", "peer"]
    row: dict = {"round": i + 1, "order": order, "ours": {}, "peer": {}, "nginx": {}}
    for who in order:
        with contextlib.ExitStack() as stack:
            if who == "ours":
                server = stack.enter_context(Server(workdir, f"peer{i}-ours"))
            else:
                server = stack.enter_context(peers.ProsodyFiler(peer_bin, workdir, f"peer{i}-filer", SECRET))
            readers = [(who, server)]
            ngx = None
            if who == "ours" and nginx_bin is not None:
                ngx = stack.enter_context(peers.Nginx(nginx_bin, workdir, f"r{i}", server.store / "upload"))
                readers = readers + [("nginx", ngx)] if i % 2 == 0 else [("nginx", ngx)] + readers
            name = "prosody-filer" if who == "peer" else "server"
            wait_quiet()
            put = run_wrk(server, workdir, f"peer{i}-{who}-put", "put", put_targets, c, size)
            stored = stored_under(server.store)
            if wrk_failed(put):
                res.problems.append(wrk_problem(f"{label} {name} small PUT", put))
            if stored != n:
                res.problems.append(f"{label} {name}: {stored} files stored after {n} PUTs")
            row[who].update({
                "small_put_rps": put["req_per_s"],
                "small_put_mibs": put["mib_per_s"],
                "small_put_cpu_us": put["server_cpu_us_per_request"],
                "small_put_p99_ms": put["latency_us"]["p99"] / 1000,
                "small_put_client_cpu_s": put["client_cpu_s"],
                "small_put_statuses": put["statuses"],
                "small_stored": stored,
            })
            for reader, srv in readers:
                get = run_wrk(srv, workdir, f"peer{i}-{reader}-get", "get", get_targets, c, size)
                if wrk_failed(get):
                    res.problems.append(wrk_problem(f"{label} {'nginx' if reader == 'nginx' else name} small GET", get))
                row[reader].update({
                    "small_get_rps": get["req_per_s"],
                    "small_get_mibs": get["mib_per_s"],
                    "small_get_cpu_us": get["server_cpu_us_per_request"],
                    "small_get_p99_ms": get["latency_us"]["p99"] / 1000,
                    "small_get_client_cpu_s": get["client_cpu_s"],  # wrk's: near the ceiling, the client is the limit
                    "small_get_statuses": get["statuses"],
                })
            empty_upload_folder(server.store)

            shm_write_mibs(workdir, big)  # the large phase's warm-up, for each alike
            path = f"peer-{uuid.uuid4().hex}/big.bin"
            cpu0 = server.cpu_seconds()
            put_status, put_s, put_bytes = curl_put(f"http://{HOST}:{server.port}{signed_put_target(path, big)}", source)
            cpu1 = server.cpu_seconds()
            row[who].update({
                "large_put_status": put_status,
                "large_put_mibs": big / MIB / put_s if put_status == "201" else 0.0,
                "large_put_cpu_s": cpu1 - cpu0,
            })
            if put_status != "201" or put_bytes != big:
                res.problems.append(f"{label} {name} large PUT: answered {put_status}, {put_bytes} bytes sent")
            for reader, srv in readers:
                cpu0 = srv.cpu_seconds()
                client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                get_status, get_s, moved = curl([f"http://{HOST}:{srv.port}/upload/{path}"])
                client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu1 = srv.cpu_seconds()
                ok = get_status == "200" and moved == big
                client_s = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
                row[reader].update({
                    "large_get_status": get_status,
                    "large_get_bytes": moved,
                    "large_get_mibs": big / MIB / get_s if ok else 0.0,
                    "large_get_cpu_s": cpu1 - cpu0,
                    # curl's own CPU over the transfer's time: near 1.0, the download ran at the
                    # client's pace (one core), and the servers' ratio says little about them.
                    "large_get_client_busy": client_s / get_s if ok and get_s > 0 else float("nan"),
                })
                if not ok:
                    who_name = "nginx" if reader == "nginx" else name
                    res.problems.append(f"{label} {who_name} large GET: answered {get_status}, {moved} of {big} bytes")
            got = get_sha256(server.port, path)
            row[who]["large_sha256_ok"] = got == (200, big, sha256)
            if got != (200, big, sha256):
                res.problems.append(f"{label} {name} large: GET for the check answered {got[0]}, {got[1]} bytes, sha256 {'matches' if got[2] == sha256 else 'DIFFERS'}")
            empty_upload_folder(server.store)
            if not server.alive():
                res.problems.append(f"{label}: {name} died")
            res.problems += [f"{label} {name}: log: {line}" for line in server.problems()[:10]]
            if ngx is not None:
                if not ngx.alive():
                    res.problems.append(f"{label}: nginx died")
                res.problems += [f"{label} nginx: error log: {line}" for line in ngx.problems()[:10]]
        if ngx is not None and ngx.killed:
            res.problems.append(f"{label}: nginx workers outlived their master and were killed: {ngx.killed}")
        for leftover in (f"nginx-r{i}", f"store-peer{i}-ours", f"store-peer{i}-filer"):
            if (workdir / leftover).exists():
                res.problems.append(f"{label}: {leftover} left behind in the work folder")
    for key in PEER_FIGURES:
        if key in row["peer"]:
            row.setdefault("ours_of_peer", {})[key] = row["ours"][key] / row["peer"][key] if row["peer"][key] else float("nan")
        if PEER_FIGURES[key][1] and key in row["nginx"]:
            row.setdefault("ours_of_nginx", {})[key] = row["ours"][key] / row["nginx"][key] if row["nginx"][key] else float("nan")
    o, p, x = row["ours"], row["peer"], row["nginx"]
    log(
        f"{label} ({' then '.join(order)}): small PUT {o['small_put_rps']:.0f} / {p['small_put_rps']:.0f} req/s, "
        f"GET {o['small_get_rps']:.0f} / {p['small_get_rps']:.0f}" + (f" / {x['small_get_rps']:.0f} (nginx)" if x else "")
        + f"; {big // MIB} MiB PUT {o['large_put_mibs']:.0f} / {p['large_put_mibs']:.0f} MiB/s, "
        f"GET {o['large_get_mibs']:.0f} / {p['large_get_mibs']:.0f}" + (f" / {x['large_get_mibs']:.0f} (nginx)" if x else "")
        + " (server / prosody-filer)"
    )
    return row


def phase_peer(res: Results, plan: Plan, workdir: Path, source: Path, sha256: str, peer_bin: Path, may_build: bool) -> None:
    import peers

    why = peers.ensure_prosody_filer(peer_bin, may_build, log)
    if why:
        log(f"peer: no prosody-filer ({why}): skipped")
        res.peer = {"available": False, "reason": why}
        res.warnings.append(f"peer phase skipped: {why}")
        return
    nginx_bin = peers.nginx_binary(log)
    if nginx_bin is None:
        res.warnings.append("peer phase: no nginx (Debian: apt-get install nginx): measured without the download ceiling")
    else:
        res.machine["tools"]["nginx"] = peers.nginx_version(nginx_bin)
    res.machine["tools"]["prosody-filer"] = f"{peer_bin} (commit {peers.PEER_COMMIT}, Debian's Go)"
    rounds, n = plan.peer_rounds, plan.peer_small_count
    log(
        f"peer: {rounds} round{'s' if rounds != 1 else ''} of the server and prosody-filer" + (" (and nginx for GETs)" if nginx_bin else "")
        + f", interleaved: {n} PUTs+GETs of {plan.small_bytes // 1024} KiB at c={plan.small_concurrency}, "
        f"{plan.large_bytes // MIB} MiB PUT+GET"
    )
    warm_up(workdir, plan, peer_bin)
    rows = [peer_round(res, plan, workdir, source, sha256, peer_bin, nginx_bin, i) for i in range(rounds)]
    left = [p.name for p in workdir.iterdir() if p.name.startswith(("nginx-", "store-peer"))]
    if left:
        res.problems.append(f"peer: folders left behind: {left}")
    who_all = ("ours", "peer", "nginx") if nginx_bin else ("ours", "peer")
    res.peer = {
        "available": True,
        "prosody_filer": str(peer_bin),
        "prosody_filer_commit": peers.PEER_COMMIT,
        "nginx": res.machine["tools"].get("nginx"),
        "rounds": rows,
        "medians": {
            who: {k: median([r[who][k] for r in rows if k in r[who]]) for k in PEER_FIGURES if any(k in r[who] for r in rows)}
            for who in who_all
        },
        "ratios": {
            rel: {k: [round(r[rel][k], 3) for r in rows] for k in rows[0].get(rel, {})}
            for rel in ("ours_of_peer", "ours_of_nginx") if rel in rows[0]
        },
        "fsync": PEER_FSYNC_NOTE,
    }
    res.peer["median_ratios"] = {rel: {k: median(v) for k, v in ks.items()} for rel, ks in res.peer["ratios"].items()}


def peer_section(res: Results) -> str:
    s = res.peer
    if not s:
        return ""
    title = "## Side by side with prosody-filer and nginx, interleaved"
    if not s.get("available"):
        return f"{title}\n\nNot run: {s['reason']}.\n"
    p, rows = res.plan, s["rounds"]
    mib = p["large_bytes"] // MIB
    has_nginx = "ours_of_nginx" in s["ratios"]
    labels = {k: v[0].replace("large", f"{mib} MiB") for k, v in PEER_FIGURES.items()}
    ratio = lambda x: "—" if x != x else f"{x:.2f}"  # noqa: E731  (NaN: a zero to divide by)
    lines = [
        f"{title} ({len(rows)} round{'s' if len(rows) != 1 else ''})",
        "",
        f"Each round: a fresh server and a fresh prosody-filer (commit {s['prosody_filer_commit']}, built with Debian's Go), "
        f"each with its store on {STORE_ROOT}, in turn (prosody-filer first in odd-numbered rounds, the server first in "
        f"even ones), each doing the same work: {p['peer_small_count']:,} PUTs of {p['small_bytes'] // 1024} KiB at "
        f"c={p['small_concurrency']} (wrk, signed.lua, the same signed paths for both: same `v` token), GETs of the same "
        f"files, then one {mib} MiB PUT (curl -T, after the same {STORE_ROOT} warm-up) and its GET (curl), sha256 of the "
        "download checked. "
        + (
            f"nginx {s['nginx']} (2 workers, sendfile on, access_log off, its own configuration and process) serves "
            "the server's store folder in the same round, right after the server's own GETs of the same files "
            "(alternating which goes first): the ceiling for downloads. "
            if has_nginx else "No nginx on this machine: no download ceiling. "
        )
        + "Server CPU = utime + stime of the server's process (for nginx: master and workers) from /proc, per "
        "request. Ratios are taken within each round (ours / theirs; for CPU, below 1 is better) and their median "
        "reported.",
        "",
        f"**fsync:** {s['fsync']}",
        "",
        "| figure | server (median) | prosody-filer (median) | server / prosody-filer, median | per round |"
        + (" nginx (median) | server / nginx, median | per round |" if has_nginx else ""),
        "|---|---|---|---|---|" + ("---|---|---|" if has_nginx else ""),
    ]
    m, r = s["medians"], s["median_ratios"]
    ratios = s["ratios"]
    digits = lambda k: 2 if k.endswith(("_cpu_s", "_busy")) else 0  # noqa: E731
    for k, (label, for_nginx) in PEER_FIGURES.items():
        line = (
            f"| {labels[k]} | {fmt(m['ours'][k], digits(k))} | {fmt(m['peer'][k], digits(k))} | "
            f"{ratio(r['ours_of_peer'][k])} | {', '.join(ratio(x) for x in ratios['ours_of_peer'][k])} |"
        )
        if has_nginx:
            line += (
                f" {fmt(m['nginx'][k], digits(k))} | {ratio(r['ours_of_nginx'][k])} | {', '.join(ratio(x) for x in ratios['ours_of_nginx'][k])} |"
                if for_nginx else " | | |"
            )
        lines.append(line)
    for row in rows:
        first = "prosody-filer" if row["order"][0] == "peer" else "the server"
        lines += [
            "",
            f"Round {row['round']} ({first} first):",
            "",
            "| figure | server | prosody-filer | server / prosody-filer |" + (" nginx | server / nginx |" if has_nginx else ""),
            "|---|---|---|---|" + ("---|---|" if has_nginx else ""),
        ]
        for k, (label, for_nginx) in PEER_FIGURES.items():
            line = (
                f"| {labels[k]} | {fmt(row['ours'][k], digits(k))} | {fmt(row['peer'][k], digits(k))} | "
                f"{ratio(row['ours_of_peer'][k])} |"
            )
            if has_nginx:
                line += (
                    f" {fmt(row['nginx'][k], digits(k))} | {ratio(row['ours_of_nginx'][k])} |" if for_nginx else " | |"
                )
            lines.append(line)
    return "\n".join(lines)



def phase_floor(res: Results, plan: Plan, workdir: Path, peer_bin: Path) -> None:
    """Small GETs from four servers in rotating order, 'peer_rounds' rounds: the server, nginx
    on the server's store (as in the peer phase), the HTTP stack's floor (examples/floor.rs
    get: bare hyper and tokio answering from memory) and the file floor (examples/floor.rs
    get-store: bare hyper sending the server's files as the server's store opens them and its
    connection layer sends them). Where a floor itself stays below nginx, no server built on it
    reaches nginx either; what lies between the file floor and the server is the server's own
    work per request. Then small PUTs the same way (put_floor_rounds)."""
    import contextlib

    import peers

    nginx_bin = peers.nginx_binary(log)
    floor_bin = peers.floor_binary(DEFAULT_BINARY.parent.parent, log)
    if nginx_bin is None or floor_bin is None:
        why = "no nginx" if nginx_bin is None else "examples/floor.rs did not build"
        res.floor = {"available": False, "reason": why}
        res.warnings.append(f"floor phase skipped: {why}")
        return
    rounds, n, size, c = plan.peer_rounds, plan.peer_small_count, plan.small_bytes, plan.small_concurrency
    log(f"floor: {rounds} rounds of {n} GETs of {size // 1024} KiB at c={c}: the server, nginx, bare hyper from memory and from the store, rotating")
    paths = new_paths("floor", n)
    get_targets = [f"/upload/{p}" for p in paths]
    rows = []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Server(workdir, "floor"))
        put = run_wrk(server, workdir, "floor-put", "put", [signed_put_target(p, size) for p in paths], c, size)
        if wrk_failed(put):
            res.problems.append(wrk_problem("floor: small PUT", put))
        ngx = stack.enter_context(peers.Nginx(nginx_bin, workdir, "floor", server.store / "upload"))
        bare = stack.enter_context(peers.Floor(floor_bin, size))
        files = stack.enter_context(peers.Floor(floor_bin, files_of=server.store))
        contestants = [("ours", server), ("nginx", ngx), ("floor", bare), ("files", files)]
        for i in range(rounds):
            order = contestants[i % len(contestants):] + contestants[:i % len(contestants)]
            row: dict = {"round": i + 1, "order": [who for who, _ in order]}
            for who, srv in order:
                wait_quiet()
                get = run_wrk(srv, workdir, f"floor{i}-{who}-get", "get", get_targets, c, size)
                if wrk_failed(get):
                    res.problems.append(wrk_problem(f"floor round {i + 1}: {who} small GET", get))
                row[who] = {"rps": get["req_per_s"], "cpu_us": get["server_cpu_us_per_request"]}
            for a, b in GET_FLOOR_RATIOS:
                row[f"{a}_of_{b}"] = row[a]["rps"] / row[b]["rps"] if row[b]["rps"] else float("nan")
            log(
                f"floor round {i + 1}: req/s server {row['ours']['rps']:.0f}, nginx {row['nginx']['rps']:.0f}, "
                f"bare hyper {row['floor']['rps']:.0f}, file floor {row['files']['rps']:.0f}; "
                f"server/nginx {row['ours_of_nginx']:.2f}, bare hyper/nginx {row['floor_of_nginx']:.2f}, "
                f"file floor/nginx {row['files_of_nginx']:.2f}"
            )
            rows.append(row)
        for who, srv in contestants:
            if not srv.alive():
                res.problems.append(f"floor: {who} died")
        res.problems += [f"floor: nginx error log: {line}" for line in ngx.problems()[:10]]
        res.problems += [f"floor: server log: {line}" for line in server.problems()[:10]]
    put = put_floor_rounds(res, plan, workdir, floor_bin, peer_bin)
    res.floor = {
        "available": True,
        "nginx": peers.nginx_version(nginx_bin),
        "put": put,
        "rounds": rows,
        "medians": {
            who: {k: median([r[who][k] for r in rows]) for k in ("rps", "cpu_us")}
            for who in ("ours", "nginx", "floor", "files")
        },
        "median_ratios": {f"{a}_of_{b}": median([r[f"{a}_of_{b}"] for r in rows]) for a, b in GET_FLOOR_RATIOS},
    }


# The small-GET floor phase's ratios (numerator, denominator): the server, the file floor and
# bare hyper against nginx, and the server against each floor.
GET_FLOOR_RATIOS = (
    ("ours", "nginx"), ("floor", "nginx"), ("files", "nginx"), ("ours", "files"), ("ours", "floor"),
)
GET_FLOOR_NAMES = {"ours": "server", "nginx": "nginx", "floor": "bare hyper", "files": "file floor"}


PUT_FLOORS = ("discard", "write", "durable", "store")  # examples/floor.rs put modes, and put-store
# The small-PUT floor phase's ratios besides each contestant's to prosody-filer: the server to
# the bare durable protocol, and the store floor between them.
PUT_FLOOR_RATIOS = (("ours", "durable"), ("store", "durable"), ("ours", "store"))


def warm_up(workdir: Path, plan: Plan, peer_bin: Path) -> None:
    """Small PUTs and GETs into a throwaway server and prosody-filer, not measured: the first
    round of a phase ran one contestant at half speed now and then (prosody-filer at 240 µs per
    PUT against 86-108 in the rounds after it), which a median absorbs but a per-round target
    does not."""
    import contextlib

    import peers

    n, size, c = min(2_000, plan.peer_small_count), plan.small_bytes, plan.small_concurrency
    for who in ("ours", "peer"):
        paths = new_paths(f"warm-{who}", n)
        with contextlib.ExitStack() as stack:
            if who == "ours":
                srv = stack.enter_context(Server(workdir, "warm-ours"))
            else:
                srv = stack.enter_context(peers.ProsodyFiler(peer_bin, workdir, "warm-peer", SECRET))
            run_wrk(srv, workdir, f"warm-{who}-put", "put", [signed_put_target(p, size) for p in paths], c, size)
            run_wrk(srv, workdir, f"warm-{who}-get", "get", [f"/upload/{p}" for p in paths], c, size)


def put_floor_rounds(res: Results, plan: Plan, workdir: Path, floor_bin: Path, peer_bin: Path) -> dict:
    """Small PUTs in rotating order, 'peer_rounds' rounds, each contestant fresh each round with
    its own new signed paths: the server, prosody-filer, and bare hyper (examples/floor.rs) that
    discards each body, writes it as prosody-filer does, or keeps it durably as the server does
    (unnamed temporary, fsync, no-replace link, fsync, folder fsync), or commits it with the
    server's own store code (`store`). `durable` is the least a small PUT with the server's
    guarantees costs on this stack; its ratio to prosody-filer bounds the server's. `store`
    splits the rest: what the store adds to the bare protocol, and what the request adds."""
    import contextlib

    import peers

    if not peer_bin.is_file():
        return {"available": False, "reason": f"no prosody-filer at {peer_bin}"}
    # Four times the peer phase's count: a run of 5,000 PUTs lasts well under a second here,
    # too short to even out this kind of machine's swings.
    rounds, n, size, c = plan.peer_rounds, 4 * plan.peer_small_count, plan.small_bytes, plan.small_concurrency
    log(f"floor: {rounds} rounds of {n} PUTs of {size // 1024} KiB at c={c}: the server, prosody-filer, bare hyper {'/'.join(PUT_FLOORS)}")
    who_all = ["ours", "peer", *PUT_FLOORS]
    warm_up(workdir, plan, peer_bin)
    rows = []
    for i in range(rounds):
        order = who_all[i % len(who_all):] + who_all[:i % len(who_all)]
        row: dict = {"round": i + 1, "order": order}
        for who in order:
            targets = [signed_put_target(p, size) for p in new_paths(f"pfloor{i}-{who}", n)]
            with contextlib.ExitStack() as stack:
                name = f"pfloor{i}-{who}"
                if who == "ours":
                    srv = stack.enter_context(Server(workdir, name))
                elif who == "peer":
                    srv = stack.enter_context(peers.ProsodyFiler(peer_bin, workdir, name, SECRET))
                else:
                    srv = stack.enter_context(peers.Floor(floor_bin, put=who, store=workdir / f"store-{name}"))
                wait_quiet()
                put = run_wrk(srv, workdir, f"{name}-put", "put", targets, c, size)
                if wrk_failed(put):
                    res.problems.append(wrk_problem(f"floor round {i + 1}: {who} small PUT", put))
                row[who] = {"rps": put["req_per_s"], "cpu_us": put["server_cpu_us_per_request"]}
        for who in who_all:
            row[f"{who}_of_peer"] = row[who]["rps"] / row["peer"]["rps"] if row["peer"]["rps"] else float("nan")
        for a, b in PUT_FLOOR_RATIOS:
            row[f"{a}_of_{b}"] = row[a]["rps"] / row[b]["rps"] if row[b]["rps"] else float("nan")
        log(
            f"floor round {i + 1}, PUT req/s: server {row['ours']['rps']:.0f}, prosody-filer {row['peer']['rps']:.0f}, "
            + ", ".join(f"{m} {row[m]['rps']:.0f}" for m in PUT_FLOORS)
            + f"; server/prosody-filer {row['ours_of_peer']:.2f}, durable/prosody-filer {row['durable_of_peer']:.2f}"
            + f", store/prosody-filer {row['store_of_peer']:.2f}"
        )
        rows.append(row)
    ratio_keys = [f"{who}_of_peer" for who in who_all if who != "peer"] + [f"{a}_of_{b}" for a, b in PUT_FLOOR_RATIOS]
    return {
        "available": True,
        "rounds": rows,
        "medians": {who: {k: median([r[who][k] for r in rows]) for k in ("rps", "cpu_us")} for who in who_all},
        "median_ratios": {k: median([r[k] for r in rows]) for k in ratio_keys},
    }


def put_floor_section(s: dict, plan: dict) -> list[str]:
    if not s:
        return []
    if not s.get("available"):
        return ["", f"Small PUT floor not run: {s['reason']}."]
    rows, m, r = s["rounds"], s["medians"], s["median_ratios"]
    names = {"ours": "server", "peer": "prosody-filer", "discard": "bare hyper, discard", "write": "bare hyper, write",
             "durable": "bare hyper, durable", "store": "bare hyper, the server's store"}
    lines = [
        "",
        f"### Small PUTs: the server, prosody-filer and the floor ({len(rows)} rounds)",
        "",
        f"{4 * plan['peer_small_count']:,} signed PUTs of {plan['small_bytes'] // 1024} KiB at c={plan['small_concurrency']} each "
        "round to each of: the server; prosody-filer; and bare hyper (`examples/floor.rs put`) that **discards** the body, "
        "**writes** it as prosody-filer does (folder, file at its final path, no fsync) or keeps it **durably** as the server "
        "does (folder, unnamed temporary, fsync, no-replace link, fsync, folder fsync), or commits it with **the server's "
        "store** code (`LocalStore::commit`: the same protocol, with folders opened beneath the root, the defaults mark and "
        "the stale-sidecar guard), with no token, routing, headers or log. `durable` is the least a PUT with the server's "
        "guarantees costs here: its ratio to prosody-filer bounds the server's; `store` is the server's store alone, so "
        "server / store is what the server's request work costs and store / durable what its store adds to the bare protocol.",
        "",
        "| figure (median) | " + " | ".join(names[w] for w in m) + " |",
        "|---|" + "---|" * len(m),
        "| req/s | " + " | ".join(fmt(m[w]["rps"]) for w in m) + " |",
        "| CPU µs per PUT | " + " | ".join(fmt(m[w]["cpu_us"], 1) for w in m) + " |",
        "",
        "| ratio | median | per round |",
        "|---|---|---|",
    ]
    for k in r:
        a, b = k.split("_of_")
        lines.append(f"| {names[a]} / {names[b]} | {r[k]:.2f} | {', '.join(f'{row[k]:.2f}' for row in rows)} |")
    return lines


def floor_section(res: Results) -> str:
    s = res.floor
    if not s:
        return ""
    title = "## Small GETs: the server, nginx and the HTTP stack's floor"
    if not s.get("available"):
        return f"{title}\n\nNot run: {s['reason']}.\n"
    p, rows, m, r = res.plan, s["rounds"], s["medians"], s["median_ratios"]
    lines = [
        f"{title} ({len(rows)} rounds)",
        "",
        f"{p['peer_small_count']:,} GETs of {p['small_bytes'] // 1024} KiB at c={p['small_concurrency']} (wrk, signed.lua) "
        f"each round from: the server; nginx {s['nginx']} serving the server's store folder (2 workers, sendfile, "
        "access_log off, as in the peer phase); and **bare hyper** (`examples/floor.rs get`: the server's HTTP crates, "
        "runtime and connection settings, every GET answered with the same bytes from memory, no file system, no "
        "routing, no headers but `date` and `content-length`): the least any download through this stack can cost; "
        "and the **file floor** (`examples/floor.rs get-store`: the same bare hyper sending the server's files as the "
        "server's store opens them and its connection layer sends them, `sendfile`, with no token, routing, headers, "
        "log or metrics): the least a download of a stored file costs the server's own code. "
        "Order rotates each round; ratios are taken within a round.",
        "",
        "| figure (median) | server | nginx | bare hyper | file floor |",
        "|---|---|---|---|---|",
        "| req/s | " + " | ".join(fmt(m[who]["rps"]) for who in GET_FLOOR_NAMES) + " |",
        "| CPU µs per GET | " + " | ".join(fmt(m[who]["cpu_us"], 1) for who in GET_FLOOR_NAMES) + " |",
        "",
        "| ratio | median | per round |",
        "|---|---|---|",
    ]
    for a, b in GET_FLOOR_RATIOS:
        k = f"{a}_of_{b}"
        label = f"{GET_FLOOR_NAMES[a]} / {GET_FLOOR_NAMES[b]}"
        lines.append(f"| {label} | {r[k]:.2f} | {', '.join(f'{row[k]:.2f}' for row in rows)} |")
    lines += put_floor_section(s.get("put", {}), p)
    return "\n".join(lines)


def phase_sweep(res: Results, plan: Plan, workdir: Path) -> None:
    log(f"sweep: {plan.sweep_count} PUTs and GETs of {plan.small_bytes // 1024} KiB at c = {', '.join(map(str, plan.sweep_concurrency))}")
    size = plan.small_bytes
    with Server(workdir, "sweep") as server:
        for c in plan.sweep_concurrency:
            paths = new_paths(f"sweep{c}", plan.sweep_count)
            wait_quiet()
            put = run_wrk(server, workdir, f"sweep-put-{c}", "put", [signed_put_target(p, size) for p in paths], c, size)
            get = run_wrk(server, workdir, f"sweep-get-{c}", "get", [f"/upload/{p}" for p in paths], c, size)
            res.sweep.append({"concurrency": c, "put": put, "get": get})
            for name, run in (("PUT", put), ("GET", get)):
                if not run["complete"] or run["non_2xx"] or run["wrong_length"] or any(run["errors"].values()):
                    res.problems.append(
                        f"sweep c={c} {name}: {run['answered']}/{run['expected']} answered, "
                        f"non-2xx {run['non_2xx']}, wrong length {run['wrong_length']}, statuses {run['statuses']}"
                    )
            for f in (server.store / "upload").iterdir():
                shutil.rmtree(f, ignore_errors=True)
        res.problems += [f"sweep: server log: {line}" for line in server.problems()[:20]]


# ---- S3 (object storage) ----------------------------------------------------------------------
# The server with StoreBackend = "s3" against a local single-node Garage (garage.py), next to
# the same work on the local store in the same round, and Garage's own speed with a plain S3
# client (curl --aws-sigv4) as the ceiling. Garage stores a 1 MiB block it already has only
# once, so every body sent to it is made unique: the small PUTs by signed.lua's "unique", the
# 1 GiB source by new stamps in each of its 1 MiB blocks before each PUT (BlockStamps), the
# slow uploads by slow_uploads.py --unique.

STAMP_BYTES = 48


class BlockStamps:
    """Writes a new stamp at the start of every 1 MiB block of the source (so no PUT of it
    repeats a block an earlier one stored) and puts the original bytes back at the end, for
    the phases that come after."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.offsets = range(0, self.size, MIB)
        with open(path, "rb") as f:
            self.original = [os.pread(f.fileno(), STAMP_BYTES, off) for off in self.offsets]

    def stamp(self) -> str:
        """New stamps; returns the source's sha256 now."""
        tag = uuid.uuid4().hex
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for k, off in enumerate(self.offsets):
                os.pwrite(fd, stamp_bytes(tag, k)[: self.size - off], off)
        finally:
            os.close(fd)
        return file_sha256(self.path)

    def restore(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for off, data in zip(self.offsets, self.original):
                os.pwrite(fd, data, off)
        finally:
            os.close(fd)


def stamp_bytes(tag: str, block: int) -> bytes:
    return f"{tag}:{block:012d}:".encode().ljust(STAMP_BYTES, b"#")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def stamped_pieces(source: Path, tags: list[str]):
    """The source once per tag, each copy's 1 MiB blocks stamped with its tag, in 4 MiB pieces."""
    block = 0
    for tag in tags:
        with open(source, "rb") as f:
            while True:
                piece = bytearray(f.read(4 * MIB))
                if not piece:
                    break
                for at in range(0, len(piece), MIB):
                    stamp = stamp_bytes(tag, block)[: len(piece) - at]
                    piece[at : at + len(stamp)] = stamp
                    block += 1
                yield piece


def put_stamped_copies(port: int, path: str, source: Path, tags: list[str], max_seconds: int = 600) -> tuple[int, float]:
    """One PUT of len(tags) stamped copies of `source` back to back; returns (status, seconds)."""
    size = source.stat().st_size * len(tags)
    with socket.create_connection((HOST, port), timeout=max_seconds) as sock:
        t0 = time.perf_counter()
        sock.sendall(
            (
                f"PUT {signed_put_target(path, size)} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            ).encode()
        )
        for piece in stamped_pieces(source, tags):
            sock.sendall(piece)
        with sock.makefile("rb") as reader:
            parts = reader.readline().split()
        seconds = time.perf_counter() - t0
    return (int(parts[1]) if len(parts) >= 2 else 0), seconds


def stored_files(server: Server) -> int:
    return sum(1 for f in (server.store / "upload").rglob("*") if f.is_file())


def s3_objects(garage, prefix: str) -> list[str]:
    """The file objects under a server's S3Prefix (its own objects, under .hmac-file-server/, aside)."""
    return [k for k in garage.keys(prefix) if not k[len(prefix):].startswith(".hmac-file-server/")]


def wrk_failed(run: dict) -> bool:
    return not run["complete"] or run["non_2xx"] or run["wrong_length"] or run.get("wrong_body", 0) or any(run["errors"].values())


def wrk_problem(label: str, run: dict) -> str:
    return (
        f"{label}: {run['answered']}/{run['expected']} answered, non-2xx {run['non_2xx']}, wrong length "
        f"{run['wrong_length']}, wrong body {run.get('wrong_body', 0)}, statuses {run['statuses']}, socket errors {run['errors']}"
    )


def s3_round(res: Results, plan: Plan, workdir: Path, source: Path, stamps: BlockStamps, garage_bin: Path, i: int) -> dict:
    """One round: a fresh Garage, a server on it and one on the local store; small PUTs+GETs on
    both (alternating which goes first), then the 1 GiB PUT+GET by Garage's own client, the
    server on S3 and the server on the local store (rotating), each after the same warm-up."""
    import contextlib

    import garage as garage_mod
    import peers

    n, size, c, big = plan.s3_small_count, plan.small_bytes, plan.small_concurrency, plan.large_bytes
    prefix = f"r{i}/"
    label = f"s3 round {i + 1}"
    row: dict = {"round": i + 1}
    nginx_bin = peers.nginx_binary(log)
    with garage_mod.Garage(workdir, f"r{i}", garage_bin) as g, \
            Server(workdir, f"s3-r{i}", g.server_config(prefix)) as s3, \
            Server(workdir, f"s3local-r{i}") as local, \
            (peers.NginxRelay(nginx_bin, workdir, f"relay-r{i}", g.s3_port) if nginx_bin else contextlib.nullcontext()) as relay:
        servers = {"s3": s3, "local": local}
        # Small: the same work on both, in alternating order.
        for name in ("s3", "local") if i % 2 == 0 else ("local", "s3"):
            server = servers[name]
            also = g if name == "s3" else None
            paths = new_paths(f"s3small-{name}", n)
            wait_quiet()
            put = run_wrk(server, workdir, f"s3r{i}-{name}-put", "put", [signed_put_target(p, size) for p in paths], c, size, unique=True, also=also)
            stored = len(s3_objects(g, prefix)) if name == "s3" else stored_files(server)
            wait_quiet()
            get = run_wrk(server, workdir, f"s3r{i}-{name}-get", "get", [f"/upload/{p}" for p in paths], c, size, unique=True, also=also)
            for what, run in (("PUT", put), ("GET", get)):
                if wrk_failed(run):
                    res.problems.append(wrk_problem(f"{label} {name} small {what}", run))
            if stored != n:
                res.problems.append(f"{label} {name} small: {stored} files stored after {n} PUTs")
            row[f"{name}_small"] = {
                "put_rps": put["req_per_s"],
                "get_rps": get["req_per_s"],
                "put_cpu_us": put["server_cpu_us_per_request"],
                "get_cpu_us": get["server_cpu_us_per_request"],
                "put_store_cpu_us": put.get("also_cpu_us_per_request"),
                "get_store_cpu_us": get.get("also_cpu_us_per_request"),
                "put_p99_ms": put["latency_us"]["p99"] / 1000,
                "get_p99_ms": get["latency_us"]["p99"] / 1000,
                "stored": stored,
            }
            if name == "local":
                for stored_dir in (server.store / "upload").iterdir():  # keep /dev/shm small
                    shutil.rmtree(stored_dir, ignore_errors=True)

        # 1 GiB: Garage's own client, the server on S3, the server on the local store.
        def via_garage() -> dict:
            key = f"ceiling/{uuid.uuid4().hex}/big.bin"
            return {
                "put": lambda: g.put(key, source),
                "get": lambda: g.get(key),
                # The same GET through nginx as a plain relay: what any relay costs here.
                "relay_get": (lambda: g.get_via(relay.port, key)) if relay is not None else None,
                "check": lambda: g.get_sha256(key),
                "remove": lambda: None,  # a fresh Garage each round; deleted blocks would stay 10 min anyway
                "cpu": lambda: (0.0, g.cpu_seconds()),
            }

        def via_server(name: str) -> dict:
            server = servers[name]
            path = f"s3large-{uuid.uuid4().hex}/big.bin"

            def check():
                status, length, sha = get_sha256(server.port, path)
                return str(status), length, sha

            def remove():
                stored = server.store / "upload" / path
                if stored.exists():
                    stored.unlink()

            return {
                "put": lambda: curl_put(f"http://{HOST}:{server.port}{signed_put_target(path, big)}", source),
                "get": lambda: curl([f"http://{HOST}:{server.port}/upload/{path}"]),
                "check": check,
                "remove": remove,
                "cpu": lambda: (server.cpu_seconds(), g.cpu_seconds()),
            }

        contestants = [("garage", via_garage), ("s3", lambda: via_server("s3")), ("local", lambda: via_server("local"))]
        for name, make in contestants[i % 3 :] + contestants[: i % 3]:
            how = make()
            sha = stamps.stamp()
            wait_quiet()
            shm_write_mibs(workdir, big)  # the large phase's warm-up, for each alike
            cpu0 = how["cpu"]()
            put_status, put_s, put_bytes = how["put"]()
            cpu1 = how["cpu"]()
            get_status, get_s, get_bytes = how["get"]()
            cpu2 = how["cpu"]()
            if how.get("relay_get") is not None:
                wait_quiet()
                r_status, r_s, r_bytes = how["relay_get"]()
                row["relay_large"] = {"get_mibs": big / MIB / r_s if r_status == "200" and r_bytes == big else 0.0}
                if r_status != "200" or r_bytes != big:
                    res.problems.append(f"{label} 1 GiB GET through the nginx relay: {r_status}, {r_bytes} bytes")
            got_status, got_len, got_sha = how["check"]()
            how["remove"]()
            ok = put_status in ("200", "201") and get_status == "200" and get_bytes == big and got_len == big and got_sha == sha
            if not ok:
                res.problems.append(
                    f"{label} 1 GiB {name}: PUT {put_status} ({put_bytes} bytes), GET {get_status} ({get_bytes} bytes), "
                    f"check {got_status}, {got_len} bytes, sha256 {'matches' if got_sha == sha else 'DIFFERS'}"
                )
            row[f"{name}_large"] = {
                "put_status": put_status,
                "get_status": get_status,
                "put_mibs": big / MIB / put_s if put_status in ("200", "201") else 0.0,
                "get_mibs": big / MIB / get_s if get_status == "200" and get_bytes == big else 0.0,
                "sha256_ok": got_sha == sha and got_len == big,
                "server_cpu_s_per_gib_put": (cpu1[0] - cpu0[0]) * GIB / big,
                "server_cpu_s_per_gib_get": (cpu2[0] - cpu1[0]) * GIB / big,
                "garage_cpu_s_per_gib_put": (cpu1[1] - cpu0[1]) * GIB / big,
                "garage_cpu_s_per_gib_get": (cpu2[1] - cpu1[1]) * GIB / big,
            }
        left = g.multipart_uploads(prefix)
        if left:
            res.problems.append(f"{label}: multipart uploads left in the bucket: {left[:5]}")
        for name, server in servers.items():
            if not server.alive():
                res.problems.append(f"{label}: the server on {name} died")
            res.problems += [f"{label} {name}: server log: {line}" for line in server.problems()[:10]]
        res.problems += [f"{label}: garage log: {line}" for line in g.problems()[:10]]
        row["garage_peak_rss_mib"] = g.hwm_mib()
    for kind in ("put", "get"):
        ceiling, on_s3, local_ = (row[f"{k}_large"][f"{kind}_mibs"] for k in ("garage", "s3", "local"))
        row[f"large_{kind}_of_ceiling"] = on_s3 / ceiling if ceiling else float("nan")
        row[f"large_{kind}_of_local"] = on_s3 / local_ if local_ else float("nan")
        row[f"small_{kind}_of_local"] = row["s3_small"][f"{kind}_rps"] / row["local_small"][f"{kind}_rps"]
    if row.get("relay_large", {}).get("get_mibs"):
        relay_mibs, ceiling = row["relay_large"]["get_mibs"], row["garage_large"]["get_mibs"]
        row["relay_get_of_ceiling"] = relay_mibs / ceiling if ceiling else float("nan")
        row["large_get_of_relay"] = row["s3_large"]["get_mibs"] / relay_mibs
    log(
        f"{label}: {big // MIB} MiB PUT {row['garage_large']['put_mibs']:.0f} (Garage) / {row['s3_large']['put_mibs']:.0f} (S3) / "
        f"{row['local_large']['put_mibs']:.0f} (local) MiB/s, GET {row['garage_large']['get_mibs']:.0f} / "
        f"{row['s3_large']['get_mibs']:.0f} / {row['local_large']['get_mibs']:.0f}; small PUT {row['s3_small']['put_rps']:.0f} / "
        f"{row['local_small']['put_rps']:.0f} req/s, GET {row['s3_small']['get_rps']:.0f} / {row['local_small']['get_rps']:.0f}"
    )
    return row


def s3_memory(res: Results, plan: Plan, workdir: Path, source: Path, garage_bin: Path) -> dict:
    """Peak RSS of a fresh server on S3 during one 2 GiB PUT, and of another during many
    concurrent slow 8 MiB uploads; every stored file read back and checked."""
    import garage as garage_mod
    import slow_uploads

    out: dict = {}
    copies = max(1, plan.big_bytes // source.stat().st_size)
    size = copies * source.stat().st_size
    with garage_mod.Garage(workdir, "mem", garage_bin) as g:
        log(f"s3 memory: one {size // MIB} MiB PUT to the server on S3, peak RSS")
        with Server(workdir, "s3-big", g.server_config("big/")) as server:
            path = f"s3big-{uuid.uuid4().hex}/huge.bin"
            tags = [uuid.uuid4().hex for _ in range(copies)]
            wait_quiet()
            with Sampler(server.pid) as sampler:
                status, seconds = put_stamped_copies(server.port, path, source, tags)
            hwm = server.hwm_mib()
            got_status, got_len, got_sha = get_sha256(server.port, path, max_seconds=600)
            digest = hashlib.sha256()
            for piece in stamped_pieces(source, tags):
                digest.update(piece)
            ok = status == 201 and got_status == 200 and got_len == size and got_sha == digest.hexdigest()
            out["big"] = {
                "bytes": size,
                "status": status,
                "seconds": seconds,
                "mib_per_s": size / MIB / seconds,
                "peak_rss_mib": hwm,
                "max_threads": sampler.max_threads,
                "sha256_ok": ok,
            }
            if not ok:
                res.problems.append(
                    f"s3 memory {size // MIB} MiB: PUT {status}, GET {got_status}, {got_len} bytes, "
                    f"sha256 {'matches' if got_sha == digest.hexdigest() else 'DIFFERS'}"
                )
            res.problems += [f"s3 memory big: server log: {line}" for line in server.problems()[:10]]

        n, each = plan.s3_many_count, plan.s3_many_bytes
        log(f"s3 memory: {n} concurrent slow uploads of {each // MIB} MiB to the server on S3, peak RSS")
        paths = new_paths("s3many", n)
        targets = workdir / "targets-s3many"
        targets.write_text("".join(signed_put_target(p, each) + "\n" for p in paths))
        with Server(workdir, "s3-many", g.server_config("many/")) as server:
            wait_quiet()
            cpu0 = server.cpu_seconds()
            with Sampler(server.pid) as sampler:
                r = subprocess.run(
                    [
                        sys.executable, str(HERE / "slow_uploads.py"), "--port", str(server.port),
                        "--targets", str(targets), "--size", str(each), "--tick-ms", str(plan.many_tick_ms),
                        "--max-seconds", "120", "--unique",
                    ],
                    capture_output=True, text=True, timeout=200, preexec_fn=raise_nofile_limit,
                )
            if r.returncode != 0 or not r.stdout.strip():
                raise RuntimeError(f"slow_uploads.py failed:\n{r.stderr}")
            many = json.loads(r.stdout.strip().splitlines()[-1])
            many.update({
                "peak_rss_mib": server.hwm_mib(),
                "max_threads": sampler.max_threads,
                "server_cpu_s": round(server.cpu_seconds() - cpu0, 3),
            })
            stored = s3_objects(g, "many/")
            wrong = [
                p for k, p in enumerate(paths)
                if get_sha256(server.port, p) != (200, each, slow_uploads.body_sha256(each, 64 * 1024, k, True))
            ]
            many.update({"stored": len(stored), "wrong": len(wrong)})
            out["many"] = many
            if many["created"] != n or len(stored) != n or wrong:
                res.problems.append(
                    f"s3 memory many: {many['created']} of {n} got 201 ({many['statuses']}), {len(stored)} objects stored, "
                    f"{len(wrong)} read back wrong (e.g. {wrong[:3]})"
                )
            res.problems += [f"s3 memory many: server log: {line}" for line in server.problems()[:10]]
        left = g.multipart_uploads("")
        if left:
            res.problems.append(f"s3 memory: multipart uploads left in the bucket: {left[:5]}")
        res.problems += [f"s3 memory: garage log: {line}" for line in g.problems()[:10]]
        out["garage_peak_rss_mib"] = g.hwm_mib()
    return out


def phase_s3(res: Results, plan: Plan, workdir: Path, source: Path) -> None:
    import garage as garage_mod

    garage_bin = garage_mod.binary()
    if garage_bin is None or not garage_bin.exists():
        log("s3: no garage binary (cargo install garage --locked, or GARAGE_BIN): skipped")
        res.s3 = {"available": False}
        res.warnings.append("s3 phase skipped: no garage binary (cargo install garage --locked, or set GARAGE_BIN)")
        return
    res.machine["tools"]["garage"] = garage_mod.version(garage_bin)
    log(
        f"s3: {plan.s3_rounds} rounds against a single-node Garage on {STORE_ROOT}: {plan.s3_small_count} PUTs+GETs of "
        f"{plan.small_bytes // 1024} KiB at c={plan.small_concurrency} (S3 and local), {plan.large_bytes // MIB} MiB PUT+GET "
        "(Garage's own client, S3, local)"
    )
    stamps = BlockStamps(source)
    rows = []
    try:
        for i in range(plan.s3_rounds):
            rows.append(s3_round(res, plan, workdir, source, stamps, garage_bin, i))
        memory = s3_memory(res, plan, workdir, source, garage_bin)
    finally:
        stamps.restore()
    left = [p.name for p in workdir.glob("garage-*")]
    if left:
        res.problems.append(f"s3: Garage folders left behind: {left}")

    def col(key: str) -> list[float]:
        return [r[key] for r in rows]

    def sub(group: str, key: str) -> list[float]:
        return [r[group][key] for r in rows]

    res.s3 = {
        "available": True,
        "garage": res.machine["tools"]["garage"],
        "rounds": rows,
        "medians": {
            "large_put_of_ceiling": median(col("large_put_of_ceiling")),
            "large_get_of_ceiling": median(col("large_get_of_ceiling")),
            "large_put_of_local": median(col("large_put_of_local")),
            "large_get_of_local": median(col("large_get_of_local")),
            "small_put_of_local": median(col("small_put_of_local")),
            "small_get_of_local": median(col("small_get_of_local")),
            **{
                f"{who}_large_{kind}_mibs": median(sub(f"{who}_large", f"{kind}_mibs"))
                for who in ("garage", "s3", "local")
                for kind in ("put", "get")
            },
            **{
                f"{who}_small_{key}": median(sub(f"{who}_small", key))
                for who in ("s3", "local")
                for key in ("put_rps", "get_rps", "put_cpu_us", "get_cpu_us")
            },
            "s3_small_put_store_cpu_us": median(sub("s3_small", "put_store_cpu_us")),
            "s3_small_get_store_cpu_us": median(sub("s3_small", "get_store_cpu_us")),
            **(
                {k: median(col(k)) for k in ("relay_get_of_ceiling", "large_get_of_relay")}
                if all("large_get_of_relay" in r for r in rows) else {}
            ),
        },
        **memory,
    }


def s3_section(res: Results) -> str:
    s = res.s3
    if not s:
        return ""
    if not s.get("available"):
        return "## Object storage (S3) next to the local store\n\nNot run: no garage binary (`cargo install garage --locked`, or `GARAGE_BIN`).\n"
    p, m, rows = res.plan, s["medians"], s["rounds"]
    mib = p["large_bytes"] // MIB
    pct = lambda xs: ", ".join(f"{x:.0%}" for x in xs)  # noqa: E731
    big, many = s["big"], s["many"]
    lines = [
        "## Object storage (S3) next to the local store",
        "",
        f"A single-node {s['garage'].split(' [')[0]} on {STORE_ROOT} (Garage's defaults: lmdb metadata, 1 MiB blocks, zstd level 1), "
        "a fresh one each round; the server with `StoreBackend = \"s3\"` (S3PartSize 8 MiB, the default) and one on the local "
        f"store, each round's work on both. The ceiling is Garage with a plain S3 client: `curl --aws-sigv4` with "
        f"`UNSIGNED-PAYLOAD`, one PutObject of the same {mib} MiB (curl makes no multipart upload; the server, on a store that "
        "ignores `If-None-Match: *` as Garage does, sends 8 MiB UploadParts) and a GetObject of it. Every body is unique "
        "(Garage keeps one copy of equal blocks), every PUT answered 201 (200 from Garage), every GET checked byte for byte.",
        "",
        f"| round | small PUT req/s, S3 / local | small GET req/s, S3 / local | {mib} MiB PUT MiB/s: Garage / S3 / local | "
        f"PUT S3 of ceiling | {mib} MiB GET MiB/s: Garage / S3 / local | GET S3 of ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, s3l, lo = r["garage_large"], r["s3_large"], r["local_large"]
        lines.append(
            f"| {r['round']} | {fmt(r['s3_small']['put_rps'])} / {fmt(r['local_small']['put_rps'])} ({r['small_put_of_local']:.0%}) | "
            f"{fmt(r['s3_small']['get_rps'])} / {fmt(r['local_small']['get_rps'])} ({r['small_get_of_local']:.0%}) | "
            f"{fmt(g['put_mibs'])} / {fmt(s3l['put_mibs'])} / {fmt(lo['put_mibs'])} | {r['large_put_of_ceiling']:.0%} | "
            f"{fmt(g['get_mibs'])} / {fmt(s3l['get_mibs'])} / {fmt(lo['get_mibs'])} | {r['large_get_of_ceiling']:.0%} |"
        )
    cpu = lambda who, k: median([r[f"{who}_large"][k] for r in rows])  # noqa: E731
    lines += [
        "",
        "| figure | this run (median) | per round | target | met |",
        "|---|---|---|---|---|",
        f"| {mib} MiB PUT through the server on S3, of Garage's own PUT | {m['large_put_of_ceiling']:.0%} ({fmt(m['s3_large_put_mibs'])} of {fmt(m['garage_large_put_mibs'])} MiB/s) | {pct(r['large_put_of_ceiling'] for r in rows)} | ≥ 80% | {verdict(m['large_put_of_ceiling'] >= 0.8)} |",
        f"| {mib} MiB GET through the server on S3, of Garage's own GET | {m['large_get_of_ceiling']:.0%} ({fmt(m['s3_large_get_mibs'])} of {fmt(m['garage_large_get_mibs'])} MiB/s) | {pct(r['large_get_of_ceiling'] for r in rows)} | ≥ 80% | {verdict(m['large_get_of_ceiling'] >= 0.8)} |",
        *(
            [
                f"| {mib} MiB GET through nginx as a plain relay to Garage (`proxy_buffering off`), of Garage's own GET: what relaying costs on this machine | {m['relay_get_of_ceiling']:.0%} | {pct(r['relay_get_of_ceiling'] for r in rows)} | | |",
                f"| {mib} MiB GET through the server on S3, of the same through the nginx relay | {m['large_get_of_relay']:.0%} | {pct(r['large_get_of_relay'] for r in rows)} | | |",
            ]
            if "large_get_of_relay" in m else []
        ),
        f"| {mib} MiB PUT / GET on S3, of the same server on the local store | {m['large_put_of_local']:.0%} / {m['large_get_of_local']:.0%} ({fmt(m['local_large_put_mibs'])} / {fmt(m['local_large_get_mibs'])} MiB/s) | {pct(r['large_put_of_local'] for r in rows)} / {pct(r['large_get_of_local'] for r in rows)} | | |",
        f"| CPU s per GiB PUT: server on S3 + Garage / Garage alone (curl) / server on local | {cpu('s3', 'server_cpu_s_per_gib_put'):.2f} + {cpu('s3', 'garage_cpu_s_per_gib_put'):.2f} / {cpu('garage', 'garage_cpu_s_per_gib_put'):.2f} / {cpu('local', 'server_cpu_s_per_gib_put'):.2f} | | | |",
        f"| CPU s per GiB GET: server on S3 + Garage / Garage alone (curl) / server on local | {cpu('s3', 'server_cpu_s_per_gib_get'):.2f} + {cpu('s3', 'garage_cpu_s_per_gib_get'):.2f} / {cpu('garage', 'garage_cpu_s_per_gib_get'):.2f} / {cpu('local', 'server_cpu_s_per_gib_get'):.2f} | | | |",
        f"| small PUT, {p['s3_small_count']:,} × {p['small_bytes'] // 1024} KiB, c={p['small_concurrency']}: req/s S3 / local | {fmt(m['s3_small_put_rps'])} / {fmt(m['local_small_put_rps'])} ({m['small_put_of_local']:.0%}) | {pct(r['small_put_of_local'] for r in rows)} | | |",
        f"| | server CPU µs per PUT, S3 (+ Garage's) / local | {fmt(m['s3_small_put_cpu_us'])} (+ {fmt(m['s3_small_put_store_cpu_us'])}) / {fmt(m['local_small_put_cpu_us'])} | | | |",
        f"| small GET, the same files: req/s S3 / local | {fmt(m['s3_small_get_rps'])} / {fmt(m['local_small_get_rps'])} ({m['small_get_of_local']:.0%}) | {pct(r['small_get_of_local'] for r in rows)} | | |",
        f"| | server CPU µs per GET, S3 (+ Garage's) / local | {fmt(m['s3_small_get_cpu_us'])} (+ {fmt(m['s3_small_get_store_cpu_us'])}) / {fmt(m['local_small_get_cpu_us'])} | | | |",
        f"| one {big['bytes'] // MIB} MiB PUT to the server on S3 | peak server RSS (VmHWM) | {big['peak_rss_mib']:.1f} MiB ({fmt(big['mib_per_s'])} MiB/s, answer {big['status']}, sha256 {'matches' if big['sha256_ok'] else 'DIFFERS'}) | < 100 MiB | {verdict(big['peak_rss_mib'] < 100 and big['sha256_ok'])} |",
        f"| {many['uploads']} concurrent slow uploads × {many['bytes_each'] // MIB} MiB to the server on S3 | peak server RSS (VmHWM) | {many['peak_rss_mib']:.1f} MiB ({many['created']} × 201, peak {many['peak_in_flight']} in flight, {many['stored']} objects, {many['wrong']} read back wrong) | < 200 MiB | {verdict(many['peak_rss_mib'] < 200 and many['created'] == many['uploads'] and not many['wrong'])} |",
        f"| Garage's peak RSS (VmHWM), rounds / memory tests | {', '.join(fmt(r['garage_peak_rss_mib']) for r in rows)} / {fmt(s['garage_peak_rss_mib'])} MiB | | | |",
    ]
    return "\n".join(lines)


def perf_works() -> bool:
    if shutil.which("perf") is None:
        return False
    r = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"], capture_output=True, timeout=30)
    return r.returncode == 0


# Inclusive-time entries that every sample shares (thread entry points): left out of the summary.
PERF_ROOTS = re.compile(
    r"clone3|start_thread|thread_start|__rust_begin_short_backtrace|call_once|entry_SYSCALL|"
    r"do_syscall_64|Inner::run$|^main$|lang_start|block_on"
)


def parse_perf_report(report: str, with_children: bool) -> list[dict]:
    """Rows of `perf report --stdio -g none`: percent (inclusive first when with_children),
    object where shown, and symbol."""
    rows = []
    pattern = (
        r"\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*)" if with_children
        else r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)"
    )
    for line in report.splitlines():
        m = re.match(pattern, line)
        if not m:
            continue
        symbol = re.split(r"\s{2,}", m.group(3).strip())[0]  # later columns are padded apart
        if with_children:
            rows.append({"percent": float(m.group(1)), "self": float(m.group(2)), "symbol": symbol})
        else:
            rows.append({"percent": float(m.group(1)), "dso": m.group(2), "symbol": symbol})
    return rows


def phase_perf(res: Results, plan: Plan, workdir: Path, source: Path, out_prefix: Path, s3: bool = False) -> None:
    """Profiles the server (perf record -e cpu-clock, DWARF call graphs: Rust release builds
    have no frame pointers) during an extra small-PUT run and an extra large PUT; not counted in
    the table. With `s3` (the s3 phase ran), also the server on a fresh Garage during the same
    two. Writes the flat and the inclusive (children) reports beside the results."""
    if not perf_works():
        log("perf: not available (Debian: apt-get install linux-perf); skipped")
        res.perf = {"available": False}
        return
    import contextlib

    import garage as garage_mod

    garage_bin = garage_mod.binary() if s3 else None
    names = ["small-put", "small-get", "large-put", "large-get"] + (["s3-small-put", "s3-large-put", "s3-large-get"] if garage_bin else [])
    reports = {}
    for name in names:
        log(f"perf: profiling the server during an extra {name} run")
        with contextlib.ExitStack() as stack:
            extra: tuple[str, ...] = ()
            if name.startswith("s3-"):
                g = stack.enter_context(garage_mod.Garage(workdir, f"perf-{name}", garage_bin))
                extra = g.server_config("perf/")
            server = stack.enter_context(Server(workdir, f"perf-{name}", extra))
            path = f"perf-{uuid.uuid4().hex}/big.bin"
            if name.endswith("large-get"):  # the file to GET, not profiled
                curl_put(f"http://{HOST}:{server.port}{signed_put_target(path, plan.large_bytes)}", source)
            if name == "small-get":  # the files to GET, not profiled
                get_paths = new_paths("perf", plan.small_count)
                run_wrk(server, workdir, "perf-small-get-put", "put",
                        [signed_put_target(p, plan.small_bytes) for p in get_paths], plan.small_concurrency, plan.small_bytes)
            data = workdir / f"perf-{name}.data"
            rec = subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384",
                 "-p", str(server.pid), "-o", str(data)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
            wait_quiet()
            if name.endswith("small-put"):
                count = plan.small_count if name == "small-put" else plan.s3_small_count
                paths = new_paths("perf", count)
                run_wrk(server, workdir, f"perf-{name}", "put", [signed_put_target(p, plan.small_bytes) for p in paths],
                        plan.small_concurrency, plan.small_bytes, unique=name.startswith("s3-"))
            elif name == "small-get":
                run_wrk(server, workdir, "perf-small-get", "get", [f"/upload/{p}" for p in get_paths],
                        plan.small_concurrency, plan.small_bytes)
            elif name.endswith("large-get"):
                curl([f"http://{HOST}:{server.port}/upload/{path}"])
            else:
                curl_put(f"http://{HOST}:{server.port}{signed_put_target(path, plan.large_bytes)}", source)
            rec.send_signal(signal.SIGINT)
            rec.wait(timeout=120)
        log(f"perf: reading the {name} profile")
        flat = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
             "--sort", "dso,symbol", "--percent-limit", "0.7"],
            capture_output=True, text=True, timeout=600,
        ).stdout
        inclusive = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--children", "-g", "none",
             "--sort", "symbol", "--percent-limit", "2"],
            capture_output=True, text=True, timeout=600,
        ).stdout
        text_path = Path(f"{out_prefix}-perf-{name}.txt")
        text_path.write_text(
            "# flat profile (self time)\n" + flat + "\n\n# inclusive profile (children)\n" + inclusive
        )
        top_inclusive = [r for r in parse_perf_report(inclusive, True) if not PERF_ROOTS.search(r["symbol"])]
        reports[name] = {
            "report": text_path.name,
            "top": parse_perf_report(flat, False)[:25],
            "top_inclusive": top_inclusive[:40],
        }
    res.perf = {"available": True, **reports}


# ---------------------------------------------------------------------------------------------
# Output


def fmt(x: float, digits: int = 0) -> str:
    if x != x:  # NaN
        return "—"
    return f"{x:,.{digits}f}"


def spread(values: list[float]) -> str:
    """" (min-max)" for several runs, "" for one."""
    if len(values) < 2:
        return ""
    return f" ({fmt(min(values))}-{fmt(max(values))})"


def median_of(n: int) -> str:
    return f" (median of {n})" if n > 1 else ""


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(res: Results) -> str:
    pf, go = REFERENCE["prosody-filer"], REFERENCE["go-3.4"]
    rows = ["| test | figure | this run | prosody-filer | Go 3.4 | target | met |", "|---|---|---|---|---|---|---|"]
    c = res.ceilings
    s = res.small
    if s:
        put, get = s["put"], s["get"]
        n, kib, conc, runs = res.plan["small_count"], res.plan["small_bytes"] // 1024, put["concurrency"], put["runs"]
        of = f", median of {runs} runs" if runs > 1 else ""
        label = f"small PUT, {n:,} × {kib} KiB, c={conc}{of}"
        rows += [
            f"| {label} | req/s | {fmt(put['req_per_s'])}{spread(put['req_per_s_all'])} | {pf['small_put_rps']} | {go['small_put_rps']} | ≥ {fmt(TARGETS['small_put_rps'])} (1.5× prosody-filer) | {verdict(put['req_per_s'] >= TARGETS['small_put_rps'])} |",
            f"| | MiB/s | {fmt(put['mib_per_s'])} | | | | |",
            f"| | latency p50 / p99 | {put['latency_us']['p50'] / 1000:.2f} / {put['latency_us']['p99'] / 1000:.2f} ms | | | | |",
            f"| | non-2xx / not stored (all runs) | {put['non_2xx'] + put['expected'] - put['answered']} / {put['expected'] - s['files_stored']} | | | 0 / 0 | {verdict(put['non_2xx'] == 0 and put['complete'] and s['files_stored'] == put['expected'])} |",
            f"| | CPU s: server / wrk (wall {put['seconds']:.1f} s) | {put['server_cpu_s']:.1f} / {put['client_cpu_s']:.1f} | | | | |",
            f"| | server CPU µs / context switches per request | {put['server_cpu_us_per_request']:.0f} / {put['server_switches_per_request']:.1f} | | | | |",
        ]
        label = f"small GET, the same files, c={conc}{of}"
        rows += [
            f"| {label} | req/s | {fmt(get['req_per_s'])}{spread(get['req_per_s_all'])} | {pf['small_get_rps']} | {go['small_get_rps']} | ≥ {fmt(TARGETS['small_get_rps'])} (1.2× prosody-filer) | {verdict(get['req_per_s'] >= TARGETS['small_get_rps'])} |",
            f"| | MiB/s | {fmt(get['mib_per_s'])} | | | | |",
            f"| | latency p50 / p99 | {get['latency_us']['p50'] / 1000:.2f} / {get['latency_us']['p99'] / 1000:.2f} ms | | | | |",
            f"| | non-2xx / wrong length (all runs) | {get['non_2xx'] + get['expected'] - get['answered']} / {get['wrong_length']} | | | 0 / 0 | {verdict(get['non_2xx'] == 0 and get['wrong_length'] == 0 and get['complete'])} |",
            f"| | CPU s: server / wrk (wall {get['seconds']:.1f} s) | {get['server_cpu_s']:.1f} / {get['client_cpu_s']:.1f} | | | | |",
            f"| | server CPU µs / context switches per request | {get['server_cpu_us_per_request']:.0f} / {get['server_switches_per_request']:.1f} | | | | |",
            f"| | peak server RSS (VmHWM) | {s['peak_rss_mib']:.1f} MiB | | | | |",
        ]
    lg = res.large
    if lg:
        mib = lg["bytes"] // MIB
        need = TARGETS["large_put_of_ceiling"]
        pct = lambda xs: ", ".join(f"{x:.0%}" for x in xs)  # noqa: E731
        rows += [
            f"| large PUT, {mib} MiB (curl -T) | MiB/s{median_of(len(lg['put']))} | {fmt(lg['put_mib_per_s'])}{spread([p['mib_per_s'] for p in lg['put']])} | {pf['large_put_mibs']} | {go['large_put_mibs']} | | |",
            f"| | of the discarding sink, per round (median) | {lg['put_of_sink']:.0%} ({pct(lg['put_of_sink_all'])}) | | | ≥ {need:.0%} of the sink ceiling | {verdict(lg['put_of_sink'] >= need)} |",
            f"| | of the minimal writer, per round (median) | {lg['put_of_writer']:.0%} ({pct(lg['put_of_writer_all'])}) | | | | |",
            f"| large GET, {mib} MiB (curl) | MiB/s{median_of(len(lg['get']))} | {fmt(lg['get_mib_per_s'])}{spread([g['mib_per_s'] for g in lg['get']])} | {pf['large_get_mibs']} | {go['large_get_mibs']} | ≥ {fmt(TARGETS['large_get_mibs'])} (prosody-filer) | {verdict(lg['get_mib_per_s'] >= TARGETS['large_get_mibs'])} |",
            f"| | sha256 of the download | {'matches' if lg['sha256_ok'] else 'DIFFERS'} | | | matches | {verdict(lg['sha256_ok'])} |",
            f"| | peak server RSS (VmHWM) | {lg['peak_rss_mib']:.1f} MiB | | | | |",
        ]
    b = res.big
    if b:
        rows.append(
            f"| one {b['bytes'] // MIB} MiB PUT (sendfile client) | peak server RSS (VmHWM) | {b['peak_rss_mib']:.1f} MiB ({fmt(b['mib_per_s'])} MiB/s, answer {b['status']}) | | | < {TARGETS['big_rss_mib']} MiB during a 2 GiB upload | {verdict(b['peak_rss_mib'] < TARGETS['big_rss_mib'] and b['status'] == 201)} |"
        )
    k = res.checksum
    if k:
        mib = res.plan["large_bytes"] // MIB
        p, q = k["plain"], k["checked"]
        extra = q["cpu_s_per_gib"] - p["cpu_s_per_gib"]
        hashing = f"hashing ≈ {1 / extra:.1f} GiB per CPU second" if extra > 0 else "no measurable hashing cost"
        rows.append(
            f"| {mib} MiB PUT with ChecksumVerification (Repr-Digest sent, SHA-256 checked; median of {len(q['runs'])}, interleaved) | MiB/s; server CPU s per GiB | "
            f"{fmt(q['mib_per_s'])}; {q['cpu_s_per_gib']:.2f} (without: {fmt(p['mib_per_s'])}; {p['cpu_s_per_gib']:.2f}): {hashing} | | | | |"
        )
    r = res.resumable
    if r:
        chunk = res.plan["tus_chunk_bytes"] // MIB
        if not r.get("built"):
            rows.append(f"| resumable, tus, {chunk} MiB PATCHes | MiB/s | not built yet | | | | — |")
        else:
            rows.append(
                (
                    f"| resumable, tus {r['tus_version']}, {chunk} MiB PATCHes ({len(r['ratios'])} rounds, each with a plain PUT) | MiB/s | "
                    f"{fmt(r.get('mib_per_s', 0.0))}; per round {r['ratio']:.0%} ({', '.join(f'{x:.0%}' for x in r['ratios'])}) of one plain 1 GiB PUT by the same client in the same server ({fmt(r['plain_mib_per_s'])} MiB/s); {r['status']}, sha256 {'matches' if r.get('sha256_ok') else 'not checked/differs'} "
                    f"| | | ≥ 80% of the plain PUT | {verdict(r['ratio'] >= 0.8)} |"
                )
                if r.get("ratios")
                else f"| resumable, tus {r['tus_version']}, {chunk} MiB PATCHes | MiB/s | {fmt(r.get('mib_per_s', 0.0))} ({r['status']}, sha256 {'matches' if r.get('sha256_ok') else 'not checked/differs'}) | | | | — |"
            )
            d = r.get("draft")
            if d:
                rows.append(
                    f"| resumable, IETF draft (interop 8), {chunk} MiB PATCHes (same rounds) | MiB/s | "
                    f"{fmt(d['mib_per_s'])}; per round {d['ratio']:.0%} ({', '.join(f'{x:.0%}' for x in d['ratios'])}) of the plain PUT of its round; "
                    f"sha256 {'matches' if d['sha256_ok'] else 'differs'} | | | ≥ 80% of the plain PUT | {verdict(d['ratio'] >= 0.8)} |"
                )
    m = res.many
    if m:
        rows += [
            f"| many: {m['uploads']} concurrent slow uploads × {m['bytes_each'] // MIB} MiB | peak server RSS (VmHWM) | {m['peak_rss_mib']:.1f} MiB | | | < {TARGETS['many_rss_mib']} MiB | {verdict(m['peak_rss_mib'] < TARGETS['many_rss_mib'])} |",
            f"| | 201 answers / peak in flight / server threads | {m['created']} / {m['peak_in_flight']} / {m['max_threads']} | | | all {m['uploads']} | {verdict(m['created'] == m['uploads'])} |",
            f"| | server threads and RSS 15 s after the last upload | {m['threads_after_15s']} threads, {m['rss_after_15s_mib']:.1f} MiB | | | | |",
        ]
    if c:
        mib = res.plan["large_bytes"] // MIB
        rows += [
            f"| ceiling: plain PUT of {mib} MiB into a discarding sink (curl → sink.py) | MiB/s{median_of(len(c['sink_put_mibs_all']))} | {fmt(c['sink_put_mibs'])}{spread(c['sink_put_mibs_all'])} | | | (issue: 1820-2100) | |",
            f"| ceiling: the same PUT into a minimal writer (sink.py --write-into {STORE_ROOT}) | MiB/s{median_of(len(c['writer_put_mibs_all']))} | {fmt(c['writer_put_mibs'])}{spread(c['writer_put_mibs_all'])} | | | | |",
        ] if "sink_put_mibs" in c else []
        if "shm_write_mibs" in c:
            rows.append(
                f"| ceiling: {mib} MiB write into {STORE_ROOT} | MiB/s{median_of(len(c['shm_write_mibs_all']))} | {fmt(c['shm_write_mibs'])}{spread(c['shm_write_mibs_all'])} | | | | |"
            )
    return "\n".join(rows)


def sweep_table(res: Results) -> str:
    rows = ["| concurrency | PUT req/s | PUT p99 ms | GET req/s | GET p99 ms |", "|---|---|---|---|---|"]
    for s in res.sweep:
        rows.append(
            f"| {s['concurrency']} | {fmt(s['put']['req_per_s'])} | {s['put']['latency_us']['p99'] / 1000:.2f} | "
            f"{fmt(s['get']['req_per_s'])} | {s['get']['latency_us']['p99'] / 1000:.2f} |"
        )
    return "\n".join(rows)


def perf_section(res: Results) -> str:
    if not res.perf or not res.perf.get("available"):
        return ""
    out = ["## Where the server spends its time (perf, cpu-clock)", ""]
    for name in ("small-put", "small-get", "large-put", "large-get", "s3-small-put", "s3-large-put", "s3-large-get"):
        p = res.perf.get(name)
        if not p:
            continue
        out += [f"{name}, self time (full report: `{p['report']}`):", "", "| % | object | symbol |", "|---|---|---|"]
        for t in p["top"][:12]:
            out.append(f"| {t['percent']:.1f} | {t['dso']} | `{t['symbol'][:90]}` |")
        out += ["", f"{name}, inclusive time (a function and what it calls):", "", "| % | symbol |", "|---|---|"]
        for t in p.get("top_inclusive", [])[:25]:
            out.append(f"| {t['percent']:.1f} | `{t['symbol'][:110]}` |")
        out.append("")
    return "\n".join(out)


def markdown(res: Results, plot_name: str | None, peer_plot: str | None = None) -> str:
    m = res.machine
    lines = [
        f"# hmac-file-server benchmark, {res.started}",
        "",
        f"- command: `{res.command}` ({'quick smoke run' if res.plan['small_count'] < 20_000 else 'full run'}, {res.seconds:.0f} s)",
        f"- server: {m['server']}, commit {m['commit']}"
        + (f"; extra config: {'; '.join(f'`{line}`' for line in EXTRA_CONFIG)}" if EXTRA_CONFIG else ""),
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Linux {m['kernel']}; "
        f"server and load generator on the same machine, loopback (127.0.0.1), store on {m.get('store', '/dev/shm')}",
        f"- tools: {m['tools'].get('wrk', '?')}, curl {m['tools'].get('curl', '?')}, Python {platform.python_version()}",
        f"- quiet machine? load average at start {res.load_at_start}; CPU taken by other processes "
        f"(and steal) while each phase ran: "
        + (", ".join(f"{k} {v['others']:.0%} ({v['steal']:.0%})" for k, v in res.other_cpu.items()) or "—"),
        "",
    ]
    main_table = table(res)
    if main_table.count("\n") > 1:  # more than its head: --only may have left it empty
        lines += [main_table, ""]
    if res.sweep:
        lines += [
            f"Throughput against concurrency (64 KiB, {res.plan['sweep_count']:,} requests per point):",
            "",
            sweep_table(res),
            "",
        ]
    if plot_name:
        lines += [f"![throughput against concurrency]({plot_name})", ""]
    compared = compare_table(res)
    if compared:
        lines += [compared, ""]
    s3 = s3_section(res)
    if s3:
        lines += [s3, ""]
    peer = peer_section(res)
    if peer:
        lines += [peer, ""]
    if peer_plot:
        lines += [f"![each round's ratio to prosody-filer and nginx]({peer_plot})", ""]
    floor = floor_section(res)
    if floor:
        lines += [floor, ""]
    perf = perf_section(res)
    if perf:
        lines += [perf, ""]
    lines += ["## Problems seen", ""]
    lines += [f"- {p}" for p in res.problems] or ["- none"]
    if res.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in res.warnings]
    return "\n".join(lines) + "\n"


def main() -> int:
    global BINARY, WAIT_QUIET_SECONDS, STORE_ROOT
    parser = argparse.ArgumentParser(description="hmac-file-server benchmark (loopback, store on /dev/shm)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (2,000 small PUTs, 256 MiB large, …)")
    parser.add_argument("--perf", action="store_true", help="also profile the server with perf during extra small and large PUT and GET runs")
    parser.add_argument("--no-build", action="store_true", help="do not run cargo build --release first")
    parser.add_argument("--binary", help="measure this hmac-file-server binary instead (implies --no-build)")
    parser.add_argument(
        "--wait-quiet", type=float, default=WAIT_QUIET_SECONDS, metavar="SECONDS",
        help="before each measurement, wait up to this long for the machine to be idle (0: never wait)",
    )
    parser.add_argument(
        "--config-line", action="append", default=[], metavar="'Key = value'",
        help="add a line to the server's TOML (repeatable), to try a setting, e.g. 'BufferSize = 1048576'",
    )
    parser.add_argument(
        "--store-root", default="/dev/shm", metavar="DIR",
        help="put the stores, the source file and the writer's files under DIR instead of /dev/shm (e.g. a tmpfs mounted with huge=within_size)",
    )
    parser.add_argument(
        "--compare", metavar="OLD_BINARY",
        help="also run the compare phase: this binary (e.g. the build before a change) against the one under test, interleaved",
    )
    parser.add_argument(
        "--peer-binary", metavar="PATH",
        help="the prosody-filer binary for the peer phase (default: /tmp/peers/bin/prosody-filer, "
        "built with ../shared/peers/build.sh when missing)",
    )
    parser.add_argument("--rounds", type=int, metavar="N", help="rounds of the peer phase (default 5; --quick: 2)")
    parser.add_argument(
        "--small-count", type=int, metavar="N",
        help="small files per server and round in the peer phase (default 5,000; --quick: 1,000)",
    )
    parser.add_argument("--out", default=str(REPO / "bench-results"), help="folder for the results (default: bench-results/)")
    parser.add_argument("--only", default="", help="comma-separated phases to run (ceilings,small,large,big,checksum,resumable,many,sweep,s3,peer,floor,compare)")
    args = parser.parse_args()

    STORE_ROOT = Path(args.store_root).resolve()
    if not sys.platform.startswith("linux") or not STORE_ROOT.is_dir():
        sys.exit(f"bench: needs Linux and the folder {STORE_ROOT}")
    plan = Plan.quick() if args.quick else Plan()
    if args.rounds is not None:
        plan.peer_rounds = max(1, args.rounds)
    if args.small_count is not None:
        plan.peer_small_count = max(1, args.small_count)
    phases = set(args.only.split(",")) if args.only else {"ceilings", "small", "large", "big", "checksum", "resumable", "many", "sweep", "s3", "peer", "floor"}
    if args.compare:
        phases.add("compare")
    elif "compare" in phases:
        sys.exit("bench: the compare phase needs --compare OLD_BINARY")
    EXTRA_CONFIG.extend(args.config_line)
    WAIT_QUIET_SECONDS = args.wait_quiet
    tools = ensure_tools()
    if args.binary:
        BINARY = Path(args.binary).resolve()
    elif not args.no_build:
        build()
    if not BINARY.exists():
        sys.exit(f"bench: {BINARY} is missing; run cargo build --release")
    import peers

    peer_binary = Path(args.peer_binary).resolve() if args.peer_binary else peers.DEFAULT_PEER_BINARY
    if args.peer_binary and "peer" in phases and not peer_binary.is_file():
        sys.exit(f"bench: --peer-binary {peer_binary} is missing")

    need = plan.large_bytes + plan.many_count * plan.many_bytes + plan.small_count * plan.small_bytes + GIB // 2
    if "s3" in phases:  # a round's Garage holds two large objects and the small files, beside the local copy and the warm-up
        need = max(need, 5 * plan.large_bytes + plan.s3_small_count * plan.small_bytes + GIB // 2,
                   plan.large_bytes + plan.big_bytes + plan.s3_many_count * plan.s3_many_bytes + GIB // 2)
    free = shutil.disk_usage(STORE_ROOT).free
    if free < need:
        sys.exit(f"bench: {STORE_ROOT} has {free // MIB} MiB free, needs about {need // MIB} MiB")

    started = dt.datetime.now()
    stamp = started.strftime("%Y-%m-%d-%H%M%S")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_prefix = out_dir / stamp
    command = "scripts/bench.sh" + "".join(f" {a}" for a in sys.argv[1:])
    res = Results(
        plan={k: v for k, v in plan.__dict__.items()},
        machine=machine_info(tools),
        started=started.strftime("%Y-%m-%d %H:%M"),
        command=command,
    )
    with open("/proc/loadavg") as f:
        res.load_at_start = " ".join(f.read().split()[:3])
    if float(res.load_at_start.split()[0]) > 0.5:
        log(f"the machine is busy (load average {res.load_at_start}): figures will be low and noisy")
    t0 = time.monotonic()
    res.machine["store"] = mount_of(STORE_ROOT)
    workdir = Path(tempfile.mkdtemp(prefix="hfs-bench-", dir=STORE_ROOT))
    try:
        source = workdir / "source.bin"
        log(f"writing a {plan.large_bytes // MIB} MiB random source file in {workdir}")
        sha256 = make_source(source, plan.large_bytes)
        steps = [
            ("ceilings", lambda: phase_ceilings(res, plan, workdir)),
            ("small", lambda: phase_small(res, plan, workdir)),
            ("large", lambda: phase_large(res, plan, workdir, source, sha256)),
            ("big", lambda: phase_big(res, plan, workdir, source)),
            ("checksum", lambda: phase_checksum(res, plan, workdir, source, sha256)),
            ("resumable", lambda: phase_resumable(res, plan, workdir, source, sha256)),
            ("many", lambda: phase_many(res, plan, workdir)),
            ("sweep", lambda: phase_sweep(res, plan, workdir)),
            ("s3", lambda: phase_s3(res, plan, workdir, source)),
            ("peer", lambda: phase_peer(res, plan, workdir, source, sha256, peer_binary, not args.peer_binary)),
            ("floor", lambda: phase_floor(res, plan, workdir, peer_binary)),
            ("compare", lambda: phase_compare(res, plan, workdir, source, sha256, Path(args.compare or "."))),
        ]
        for name, step in steps:
            if name in phases:
                before = cpu_checkpoint()
                step()
                res.other_cpu[name] = other_cpu_share(before, cpu_checkpoint())
        if args.perf:
            phase_perf(res, plan, workdir, source, out_prefix, s3=bool(res.s3.get("available")))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    res.seconds = time.monotonic() - t0
    busy = {k: v for k, v in res.other_cpu.items() if v["others"] > 0.10 or v["steal"] > 0.05}
    if busy:
        res.warnings.append(
            "other work ran during the bench (share of both cores not used by the bench: "
            + ", ".join(f"{k} {v['others']:.0%} + steal {v['steal']:.0%}" for k, v in busy.items())
            + "): rerun on a quiet machine"
        )

    plot_name = None
    if res.sweep:
        from svgplot import concurrency_plot

        plot_path = Path(f"{out_prefix}-concurrency.svg")
        plot_path.write_text(concurrency_plot(res.sweep, REFERENCE, TARGETS, res.plan["small_concurrency"], res.started))
        plot_name = plot_path.name
    peer_plot = None
    if res.peer and res.peer.get("available") and res.peer.get("ratios"):
        from svgplot import ratio_plot

        peer_path = Path(f"{out_prefix}-peer.svg")
        peer_path.write_text(ratio_plot(res.peer["ratios"], res.started, str(STORE_ROOT)))
        peer_plot = peer_path.name
    md = markdown(res, plot_name, peer_plot)
    Path(f"{out_prefix}.md").write_text(md)
    Path(f"{out_prefix}.json").write_text(json.dumps(res.__dict__, indent=2, default=str) + "\n")
    print(md)
    plots = [name for name in (plot_name, peer_plot) if name]
    log(f"written: {out_prefix}.md, {out_prefix}.json" + "".join(f", {Path(out_prefix).parent / n}" for n in plots))
    return 1 if res.problems else 0


if __name__ == "__main__":
    sys.dont_write_bytecode = True  # no __pycache__ in scripts/bench
    sys.path.insert(0, str(HERE))
    sys.exit(main())
