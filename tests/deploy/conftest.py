"""Fixtures for the deploy kit tests: the real hmac-file-server and a TLS certificate.

Every process is private: the server listens on 127.0.0.1:0 with its store in a temp dir, and
the proxies (test_deploy_nginx.py, test_deploy_apache.py) get their own config, logs, pid and temp
dirs and free loopback ports. Nothing under /etc, /var or /run is used or touched.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy_util import HOSTNAME, ManagedProcess, hfs_binary, make_cert, make_workdir, remove_workdir, start_hfs


@dataclass
class Hfs:
    port: int
    secret: str
    store: Path
    proc: ManagedProcess
    metrics_port: int | None  # None if the server did not announce its metrics listener


@pytest.fixture(scope="session")
def hfs() -> Hfs:
    binary = hfs_binary()
    work = make_workdir("hfs")
    secret = "deploy-" + secrets.token_hex(16)
    proc, port, store = start_hfs(binary, work, secret)
    metrics_port = None
    for line in proc.lines:
        m = re.search(r"metrics and health on http://127\.0\.0\.1:(\d+)/", line)
        if m:
            metrics_port = int(m.group(1))
    try:
        yield Hfs(port, secret, store, proc, metrics_port)
    finally:
        proc.stop(timeout=35)
        if proc.lines:
            print("\n--- hmac-file-server log (tail) ---\n" + proc.output_tail(30))
        remove_workdir(work)


@dataclass
class Cert:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_cert() -> Cert:
    work = make_workdir("tls")
    try:
        cert, key = make_cert(work, HOSTNAME)
        yield Cert(cert, key)
    finally:
        remove_workdir(work)
