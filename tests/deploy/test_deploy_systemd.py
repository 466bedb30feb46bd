"""deploy/systemd: the unit verifies cleanly, is hardened as documented, its sandbox lets the real
server work (system calls under strace against SystemCallFilter), its ExecReload/stop signals do
what the unit promises, and the production config.toml is valid for the real binary.

No unit is installed or started: systemd-analyze works on a copy in a temp dir whose ExecStart
points at a dummy executable (verify insists the binary exists).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from deploy_util import (
    DEPLOY, MiB, hfs_binary, make_workdir, poll, put_stream, remove_workdir, request, require_tool, slot,
    start_hfs, tool_version,
)

UNIT = DEPLOY / "systemd" / "hmac-file-server.service"
CONFIG = DEPLOY / "systemd" / "config.toml"
UNIT_NAME = UNIT.name
PROD_EXEC = "/usr/local/bin/hmac-file-server"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """[Section] -> key -> every value in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        assert current is not None, f"line outside a section: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_copy(work: Path, text: str | None = None) -> Path:
    """A copy of the unit (same file name) whose ExecStart runs a dummy executable in work."""
    dummy = work / "hmac-file-server"
    dummy.write_text("#!/bin/sh\nexit 0\n")
    dummy.chmod(0o755)
    text = UNIT.read_text() if text is None else text
    new, n = re.subn(rf"^ExecStart={re.escape(PROD_EXEC)} ", f"ExecStart={dummy} ", text, flags=re.MULTILINE)
    assert n == 1, "ExecStart line not found in the unit"
    copy = work / UNIT_NAME
    copy.write_text(new)
    return copy


def verify(unit: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify; returns (rc, lines that are about this unit file)."""
    tool = require_tool("systemd-analyze", "systemd")
    p = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    out = (p.stdout + p.stderr).splitlines()
    about_unit = [line for line in out if UNIT_NAME in line or str(unit) in line]
    return p.returncode, about_unit


@pytest.fixture()
def work():
    path = make_workdir("systemd")
    try:
        yield path
    finally:
        remove_workdir(path)


def test_unit_verifies_without_warnings(work):
    rc, lines = verify(unit_copy(work))
    print("\n" + tool_version(["systemd-analyze", "--version"]))
    assert rc == 0 and not lines, "systemd-analyze verify:\n" + "\n".join(lines)


def test_verify_check_sees_a_broken_unit(work):
    """Control: the check above does catch unknown keys and bad values (verify exits 0 on them)."""
    broken = UNIT.read_text().replace("ProtectClock=yes", "ProtectClok=yes\nRestart=sometimes")
    _rc, lines = verify(unit_copy(work, broken))
    assert any("ProtectClok" in line for line in lines), lines
    assert any("sometimes" in line for line in lines), lines


def test_unit_security_exposure(work):
    tool = require_tool("systemd-analyze", "systemd")
    p = subprocess.run([tool, "security", "--offline=true", "--threshold=20", str(unit_copy(work))],
                       capture_output=True, text=True, timeout=120)
    overall = [line for line in p.stdout.splitlines() if "Overall exposure" in line]
    print("\n" + "\n".join(overall))
    # --threshold is on the 0..100 scale of the printed 0.0..10.0: fail above 2.0.
    assert p.returncode == 0, f"exposure above 2.0 or error:\n{p.stdout[-3000:]}{p.stderr}"


def test_unit_hardening_settings():
    unit = parse_unit(UNIT.read_text())
    svc = unit["Service"]

    def one(key: str) -> str:
        assert key in svc, f"[Service] {key}= missing"
        return svc[key][-1]

    assert one("ExecStart") == f"{PROD_EXEC} -config /etc/hmac-file-server/config.toml"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("User") == "hmac-file-server" and one("Group") == "hmac-file-server"
    assert "DynamicUser" not in svc or one("DynamicUser") in ("no", "false")
    assert one("Restart") == "on-failure"
    expected = {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "ProtectHome": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "UMask": "0027", "LimitNOFILE": "65535", "StateDirectory": "hmac-file-server",
        "LogsDirectory": "hmac-file-server",
    }
    for key, value in expected.items():
        assert one(key) == value, f"{key}={one(key)!r}, expected {value!r}"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert set(one("ReadWritePaths").split()) == {"/var/lib/hmac-file-server", "/var/log/hmac-file-server"}
    assert svc["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    stop = one("TimeoutStopSec")
    seconds = int(stop.rstrip("s"))
    assert 30 < seconds <= 60, f"TimeoutStopSec={stop}: must exceed the server's 30 s drain"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_production_config_is_valid_and_fits_the_unit(work):
    binary = hfs_binary()
    secret = work / "secret"
    secret.write_text(os.urandom(16).hex() + "\n")
    p = subprocess.run([str(binary), "-config", str(CONFIG), "--set", f"SecretFile={secret}", "check-config"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"check-config on {CONFIG}:\n{p.stdout}{p.stderr}"

    cfg = tomllib.loads(CONFIG.read_text())
    assert cfg["ListenPort"] == "127.0.0.1:8080"
    assert cfg["SecretFile"] == "/etc/hmac-file-server/secret" and "Secret" not in cfg
    assert cfg["StoreDir"] == "/var/lib/hmac-file-server"
    assert Path(cfg["LogFile"]).parent == Path("/var/log/hmac-file-server")
    metrics_host = cfg.get("MetricsPort", ":9090").rsplit(":", 1)[0]
    assert metrics_host in ("127.0.0.1", "[::1]", "localhost"), "metrics must stay on loopback"


# ----------------------------------------------------------------- sandbox vs the real server

def expand_syscall_groups(tool: str) -> dict[str, set[str]]:
    """Every @group of `systemd-analyze syscall-filter`, fully expanded."""
    out = subprocess.run([tool, "syscall-filter"], capture_output=True, text=True, timeout=60).stdout
    raw: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = raw.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None

    def expand(group: str, seen: frozenset = frozenset()) -> set[str]:
        names: set[str] = set()
        for item in raw.get(group, []):
            if item.startswith("@"):
                if item not in seen:
                    names |= expand(item, seen | {group})
            else:
                names.add(item)
        return names

    return {g: expand(g) for g in raw}


def allowed_syscalls(tool: str) -> set[str]:
    groups = expand_syscall_groups(tool)
    svc = parse_unit(UNIT.read_text())["Service"]
    allow: set[str] = set(groups["@default"])  # always permitted
    deny: set[str] = set()
    for value in svc["SystemCallFilter"]:
        target = deny if value.startswith("~") else allow
        for item in value.lstrip("~").split():
            target |= groups[item] if item.startswith("@") else {item}
    return allow - deny


def traced_pid(strace_pid: int) -> int | None:
    try:
        children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def test_server_system_calls_pass_the_unit_filter(work):
    """Run the real server under strace through a typical life (start, uploads, downloads, errors,
    DELETE, metrics, SIGHUP reload, SIGTERM) and check every system call it made is allowed by
    SystemCallFilter= (else, with SystemCallErrorNumber=EPERM, it would fail under systemd)."""
    strace = require_tool("strace", "strace")
    tool = require_tool("systemd-analyze", "systemd")
    allowed = allowed_syscalls(tool)
    assert "openat2" in allowed and "renameat2" in allowed, "unexpected syscall-filter output"
    assert not {"setuid", "setrlimit", "chown", "sched_setaffinity"} & allowed, "the deny list was not applied"

    trace = work / "strace.out"
    secret = "strace-" + os.urandom(8).hex()
    try:
        proc, port, store = start_hfs(hfs_binary(), work, secret,
                                      wrapper=[strace, "-f", "-qq", "-o", str(trace), "--"], name="hfs-strace")
    except AssertionError as e:
        if "Operation not permitted" in str(e) or "PTRACE" in str(e):
            pytest.skip(f"ptrace not permitted here: {e}")
        raise
    try:
        server_pid = poll("the traced server's pid", lambda: traced_pid(proc.popen.pid), 10)
        body = os.urandom(300_000)
        path, target = slot(secret, "trace.bin", len(body))
        assert request(port, "PUT", target, "t", body=body)[0] == 201
        assert request(port, "PUT", target, "t", body=body)[0] == 409
        get = "/upload/" + path
        assert request(port, "GET", get, "t")[0] == 200
        assert request(port, "HEAD", get, "t")[0] == 200
        assert request(port, "GET", get, "t", headers={"Range": "bytes=5-9"})[0] == 206
        assert request(port, "GET", "/upload/nope/x", "t")[0] == 404
        assert request(port, "OPTIONS", get, "t")[0] in (200, 204)
        bad = target[:-8] + "00000000"
        assert request(port, "PUT", bad, "t", body=b"x" * 1000)[0] == 403
        _big_path, big_target = slot(secret, "big.bin", 80 * MiB)
        assert put_stream(port, big_target, "t", 80 * MiB, iter(()))[0] == 413
        m = proc.wait_for_line(r"metrics and health on http://(127\.0\.0\.1:\d+)", 5)
        _host, mport = m.group(1).split(":")
        assert request(int(mport), "GET", "/metrics", "t")[0] == 200
        assert request(int(mport), "GET", "/health", "t")[0] == 200
        # Metronome's DELETE token; DeleteSecret defaults to Secret.
        token = hmac.new(secret.encode(), f"{path}\0{secret}".encode(), hashlib.sha256).hexdigest()
        status = request(port, "DELETE", f"{get}?token={token}", "t")[0]
        assert status == 204, f"DELETE: {status}"

        os.kill(server_pid, signal.SIGHUP)
        proc.wait_for_line(r"reload", 10)
        assert request(port, "GET", "/upload/nope/y", "t")[0] == 404
        os.kill(server_pid, signal.SIGTERM)
        assert proc.wait(40) is not None, "server did not stop after SIGTERM"
    finally:
        proc.stop()

    used: set[str] = set()
    for line in trace.read_text(errors="replace").splitlines():
        m = re.match(r"^\d+\s+([a-z_][a-z0-9_]*)\(", line)
        if m:
            used.add(m.group(1))
    assert len(used) > 20, f"strace saw too few system calls ({sorted(used)})"
    denied = sorted(used - allowed)
    print(f"\n{len(used)} distinct system calls checked against SystemCallFilter: {' '.join(sorted(used))}")
    assert not denied, (f"the server made system calls that the unit's SystemCallFilter denies: {denied}; "
                        "they would fail with EPERM under systemd")


def test_reload_keeps_serving_and_stop_is_prompt(work):
    """ExecReload sends SIGHUP: the server must survive it (a SIGHUP death counts as a clean exit,
    so Restart=on-failure would not even restart it). SIGTERM must end an idle server well within
    TimeoutStopSec, with status 0."""
    secret = "signals-" + os.urandom(8).hex()
    proc, port, _store = start_hfs(hfs_binary(), work, secret, metrics=False)
    try:
        proc.send_signal(signal.SIGHUP)
        proc.wait_for_line(r"reload", 10)
        time.sleep(0.2)
        assert not proc.exited(), f"SIGHUP killed the server (rc={proc.popen.returncode})"
        assert request(port, "GET", "/upload/nope/z", "t")[0] == 404
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(35)
        took = time.monotonic() - started
        assert rc == 0, f"SIGTERM: exit status {rc}"
        assert took < 5, f"idle server took {took:.1f}s to stop"
    finally:
        proc.stop()
