"""Child processes and loopback ports for the Python test suites (tests/interop, tests/deploy).

Both suites import this through their *_util module, which puts this folder on sys.path.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports."""
    ports: list[int] = []
    for _ in range(50):
        p = free_port()
        if p not in ports:
            ports.append(p)
        if len(ports) == n:
            return ports
    raise AssertionError("could not find free ports")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ManagedProcess:
    """A child in its own session whose combined stdout/stderr is drained by a thread into memory
    and a log file, so it never blocks on a full pipe."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 cwd: str | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._log = open(log_path, "a", encoding="utf-8", errors="replace")
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True,
        )
        self._thread = threading.Thread(target=self._drain, name=f"drain-{name}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
            self._log.write(line + "\n")
            self._log.flush()
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def output_tail(self, n: int = 80) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match:
        """Wait until a line of output matches the regex; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.exited() and not self._thread.is_alive():
                    raise AssertionError(
                        f"{self.name} exited (rc={self.popen.returncode}) before printing /{pattern}/\n"
                        f"--- {self.name} output ---\n{self.output_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {self.name} to print "
                                         f"/{pattern}/\n--- {self.name} output ---\n{self.output_tail()}")
                self._cond.wait(min(left, 0.2))

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the child still runs after `timeout` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """`sig` to the whole session (the child and whatever it started), then SIGKILL to it
        after `timeout` seconds."""
        try:
            if self.popen.poll() is None:
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.popen.wait(5)
        finally:
            self._thread.join(5)
            self._log.close()


def poll(what: str, check, timeout: float, interval: float = 0.05, proc: ManagedProcess | None = None):
    """Call check() until it returns a truthy value or the deadline passes.

    If proc is given and it exits meanwhile, fail at once with its output."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.exited():
            raise AssertionError(f"{proc.name} exited (rc={proc.popen.returncode}) while waiting for {what}\n"
                                 f"--- {proc.name} output ---\n{proc.output_tail()}")
        if time.monotonic() > deadline:
            extra = f"\n--- {proc.name} output ---\n{proc.output_tail()}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def kill_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM one process we started (known by pid), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
