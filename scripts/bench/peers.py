"""The peers of the bench's peer phase, each run as the bench's own process on a free loopback
port, stopped and its folder removed on exit (none of them is a system service):

- prosody-filer (Go, the XEP-0363 upload server this one is measured against), built by
  ../shared/peers/build.sh with Debian's Go into /tmp/peers/bin (or --peer-binary), with its
  store beside the server's on the same file system: its files go to <store>/upload/<path>, as
  the server's do, so the bench counts and removes both alike. It takes the same `v` token
  (HMAC-SHA256(secret, "<path> <size>")), so the same signed request lists serve both. It does
  not fsync (neither the file nor its folder); the server fsyncs both before it answers 201.
- nginx (Debian's), the ceiling for downloads: serves GET /upload/<path> straight from the
  server's store folder (`alias <store>/upload/`), 2 worker processes, sendfile on, access_log
  off, with its own generated configuration and prefix folder (`nginx -p DIR -c DIR/nginx.conf`,
  `daemon off`), so the system's nginx configuration and service are never touched.

Only 127.0.0.1 is ever contacted; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from garage import OneProcess, free_port, proc_cpu_seconds  # the bench's other helper module

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SCRIPT = REPO.parent / "shared" / "peers" / "build.sh"
DEFAULT_PEER_BINARY = Path("/tmp/peers/bin/prosody-filer")
# The commit build.sh builds (its header says so; the source is in shared/peers/prosody-filer/src).
PEER_COMMIT = "c97fa66"


def proc_start_ticks(pid: int) -> int | None:
    """A process's start time (field 22 of /proc/<pid>/stat): with the pid, it names the process
    (a pid can be reused, the pair cannot)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (scans /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 15.0) -> bool:
    """True once 127.0.0.1:<port> accepts a connection; False if the process ended or time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---- prosody-filer ----------------------------------------------------------------------------


def ensure_prosody_filer(path: Path, may_build: bool, log) -> str | None:
    """Makes sure `path` is a prosody-filer binary: builds it with build.sh (OUT = its folder)
    when it is missing and `may_build`; returns None when it is there, else why not."""
    if path.is_file() and os.access(path, os.X_OK):
        return None
    if not may_build:
        return f"{path} is missing"
    if not BUILD_SCRIPT.is_file():
        return f"{path} is missing and there is no {BUILD_SCRIPT} to build it"
    if os.geteuid() != 0:
        return f"{path} is missing; build it as root with OUT={path.parent} {BUILD_SCRIPT}"
    if path.name != "prosody-filer":
        return f"{path} is missing (build.sh writes <OUT>/prosody-filer)"
    log(f"prosody-filer: building it with {BUILD_SCRIPT} (Debian's Go; about a minute)")
    env = dict(os.environ, OUT=str(path.parent), DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=1200)
    if r.returncode != 0 or not path.is_file():
        return f"build.sh failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-600:]}"
    return None


class ProsodyFiler(OneProcess):
    """One prosody-filer on 127.0.0.1:<free port> with a fresh store `workdir/store-<name>`, its
    files under store/upload/ (its storeDir), as the server's are."""

    def __init__(self, binary: Path, workdir: Path, name: str, secret: str):
        self.binary = binary
        self.secret = secret
        self.store = workdir / f"store-{name}"
        self.config = workdir / f"peer-{name}.toml"
        self.log_path = workdir / f"peer-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "ProsodyFiler":
        (self.store / "upload").mkdir(parents=True)
        for _attempt in range(3):  # the free port is taken between asking and binding: rarely
            self.port = free_port()
            self.config.write_text(
                f'listenport = "{HOST}:{self.port}"\n'
                f'secret = "{self.secret}"\n'
                f'storeDir = "{self.store / "upload"}/"\n'
                'uploadSubDir = "upload/"\n'
                'logLevel = "warn"\n'
            )
            log_file = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [str(self.binary), "-config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
            log_file.close()
            if wait_for_port(self.port, self.proc):
                return self
            stop(self.proc)
        text = self.log_path.read_text(errors="replace")
        self.__exit__(None, None, None)
        raise RuntimeError(f"prosody-filer did not start; its log:\n{text}")

    def problems(self) -> list[str]:
        """Warnings and errors it logged (logrus: level=warning / level=error / level=fatal)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if re.search(r"level=(warning|error|fatal|panic)", line)]

    def __exit__(self, *exc) -> None:
        stop(self.proc)
        shutil.rmtree(self.store, ignore_errors=True)


# ---- nginx ------------------------------------------------------------------------------------


def nginx_binary(log) -> Path | None:
    """Debian's nginx (installed with apt-get when missing and running as root), or None."""
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    log("nginx is missing: apt-get install -y nginx (its service is not started: RUNLEVEL=1)")
    # RUNLEVEL=1 keeps invoke-rc.d from starting the system's nginx service on port 80.
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
    cmd = ["apt-get", "install", "-y", "-qq", "nginx"]
    if subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL, timeout=600)
        subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, timeout=600)
    return Path("/usr/sbin/nginx") if os.access("/usr/sbin/nginx", os.X_OK) else None


def nginx_version(path: Path) -> str:
    r = subprocess.run([str(path), "-v"], capture_output=True, text=True, timeout=10)
    return (r.stderr or r.stdout).strip().replace("nginx version: ", "")


class Nginx:
    """nginx with its own configuration in `workdir/nginx-<name>`, serving GET /upload/<path>
    from `files_dir` (the server's store/upload) on 127.0.0.1:<free port>."""

    WORKERS = 2

    def __init__(self, binary: Path, workdir: Path, name: str, files_dir: Path):
        self.binary = binary
        self.files_dir = files_dir
        self.dir = workdir / f"nginx-{name}"
        self.config = self.dir / "nginx.conf"
        self.error_log = self.dir / "error.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.workers: list[tuple[int, int | None]] = []  # (pid, start ticks)
        self.killed: list[int] = []  # workers that outlived their master and were killed

    def conf_text(self) -> str:
        return self.conf_with(
            "    sendfile on;\n"
            "    tcp_nopush on;\n"  # as Debian's own nginx.conf
            "    default_type application/octet-stream;\n",
            "        location /upload/ {\n"
            f"            alias {self.files_dir}/;\n"
            "            limit_except GET { deny all; }\n"
            "        }\n"
            "        location / { return 404; }\n",
        )

    def conf_with(self, http_lines: str, locations: str) -> str:
        """The whole configuration: its own pid, logs and temp folders, one server on the port."""
        d = self.dir
        # As root, nginx would run its workers as "nobody", who may not read the store (the
        # server makes files 0640 in folders 0750): the workers run as the bench's user.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(f"    {k}_temp_path {d / k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return (
            f"{user}"
            f"worker_processes {self.WORKERS};\n"
            "daemon off;\n"
            f"pid {d / 'nginx.pid'};\n"
            f"error_log {self.error_log} warn;\n"
            "events {\n    worker_connections 1024;\n}\n"
            "http {\n"
            "    access_log off;\n"
            f"{http_lines}"
            f"{temp}"
            "    server {\n"
            f"        listen {HOST}:{self.port};\n"
            f"{locations}"
            "    }\n"
            "}\n"
        )

    def __enter__(self) -> "Nginx":
        self.dir.mkdir()
        for _attempt in range(3):
            self.port = free_port()
            self.config.write_text(self.conf_text())
            err_file = open(self.dir / "stderr.log", "wb")
            self.proc = subprocess.Popen(
                [str(self.binary), "-p", f"{self.dir}/", "-c", str(self.config), "-e", str(self.error_log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
            )
            err_file.close()
            if wait_for_port(self.port, self.proc):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # the workers start just after the listener
                    kids = children_of(self.proc.pid)
                    if len(kids) >= self.WORKERS:
                        self.workers = [(k, proc_start_ticks(k)) for k in kids]
                        return self
                    time.sleep(0.02)
            stop(self.proc, signal.SIGTERM)
        text = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
        text += (self.dir / "stderr.log").read_text(errors="replace")
        self.__exit__(None, None, None)
        raise RuntimeError(f"nginx did not start; its error log:\n{text}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and all(self._same(w) for w in self.workers)

    def _same(self, worker: tuple[int, int | None]) -> bool:
        return worker[1] is not None and proc_start_ticks(worker[0]) == worker[1]

    def cpu_seconds(self) -> float:
        """The master's and the workers' CPU seconds (the workers do the serving)."""
        return proc_cpu_seconds(self.pid) + sum(proc_cpu_seconds(w[0]) for w in self.workers if self._same(w))

    def problems(self) -> list[str]:
        if not self.error_log.exists():
            return []
        lines = self.error_log.read_text(errors="replace").splitlines()
        return [line for line in lines if re.search(r"\[(warn|error|crit|alert|emerg)\]", line)]

    def leftover(self) -> list[int]:
        """Workers still running (by pid and start time) after the master was stopped."""
        return [pid for pid, ticks in self.workers if self._same((pid, ticks))]

    def __exit__(self, *exc) -> None:
        stop(self.proc, signal.SIGTERM)  # nginx's fast shutdown: the master ends its workers
        deadline = time.monotonic() + 10
        while self.leftover() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.killed = self.leftover()
        for pid in self.killed:  # not expected: only the workers this nginx started, by pid
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the HTTP stack's floor ---------------------------------------------------------------------


FLOOR_EXAMPLE = "floor"


def floor_binary(target_dir: Path, log) -> Path | None:
    """examples/floor.rs built in release mode (cargo build --release --example floor),
    or None when it cannot be built."""
    log(f"cargo build --release --example {FLOOR_EXAMPLE}")
    r = subprocess.run(
        ["cargo", "build", "--release", "--example", FLOOR_EXAMPLE], cwd=REPO, capture_output=True, text=True,
        timeout=1800,
    )
    path = target_dir / "release" / "examples" / FLOOR_EXAMPLE
    if r.returncode != 0 or not path.is_file():
        log(f"cannot build examples/{FLOOR_EXAMPLE}.rs:\n{r.stderr[-2000:]}")
        return None
    return path


class Floor(OneProcess):
    """examples/floor.rs: bare hyper on tokio. `Floor(binary, body_bytes)` answers every GET with
    the same `body_bytes` bytes from memory; `Floor(binary, files_of=DIR)` answers GETs with the
    files of the server's store at DIR, opened and sent by the server's own store and connection
    code (left in place); `Floor(binary, put=MODE, store=DIR)` takes every PUT's body and
    discards it, writes it as prosody-filer does, or keeps it durably as the server does, and
    with MODE `store` commits it through the server's own store code (see the example; DIR is
    removed at the end). It listens on the free loopback port it prints."""

    def __init__(
        self,
        binary: Path,
        body_bytes: int = 0,
        put: str | None = None,
        store: Path | None = None,
        files_of: Path | None = None,
    ):
        self.binary = binary
        if files_of is not None:
            self.args = ["get-store", str(files_of)]
        elif put is None:
            self.args = ["get", str(body_bytes)]
        elif put == "store":
            self.args = ["put-store", str(store)]
        else:
            self.args = ["put", put, str(store)]
        self.store = store
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "Floor":
        self.proc = subprocess.Popen(
            [str(self.binary), *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # it prints at once, or dies
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.__exit__(None, None, None)
            raise RuntimeError(f"{self.binary} did not start: {line!r}")
        self.port = int(m.group(1))
        return self

    def __exit__(self, *exc) -> None:
        stop(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.store is not None:
            shutil.rmtree(self.store, ignore_errors=True)


class NginxRelay(Nginx):
    """nginx as a plain streaming reverse proxy in front of an object store on
    127.0.0.1:`upstream_port` (`proxy_buffering off`, the client's Host passed on so that its
    SigV4 signature still holds): what relaying a download costs any server on this machine,
    the measure for the server's own relay of S3 GETs."""

    def __init__(self, binary: Path, workdir: Path, name: str, upstream_port: int):
        super().__init__(binary, workdir, name, files_dir=Path("/nonexistent"))
        self.upstream_port = upstream_port

    def conf_text(self) -> str:
        return self.conf_with(
            "",
            "        location / {\n"
            f"            proxy_pass http://{HOST}:{self.upstream_port};\n"
            "            proxy_set_header Host $http_host;\n"
            "            proxy_http_version 1.1;\n"
            "            proxy_buffering off;\n"
            "            proxy_buffer_size 256k;\n"
            "            proxy_buffers 4 256k;\n"
            "            proxy_busy_buffers_size 256k;\n"
            "        }\n",
        )
