"""deploy/nginx: the shipped server blocks and proxy include, run in a private nginx.

The site file deploy/nginx/hmac-file-server.conf is used as shipped except for what a test box
must change (listen ports on 127.0.0.1, the certificate, the include path, the upstream port);
deploy/nginx/hmac-file-server-proxy.inc is included unchanged. The private nginx runs with
`daemon off`, its pid, logs and temp dirs in a temp dir, on free loopback ports; the system
nginx is never started.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy_util import (
    DEPLOY, HOSTNAME, MiB, STARTUP_TIMEOUT, DirWatcher, ManagedProcess, curl_h2, data_chunks, free_ports,
    get_sha256, make_workdir, poll, port_open, put_stream, remove_workdir, request, require_tool, rewrite, slot,
    tool_version, zero_chunks,
)

SITE = DEPLOY / "nginx" / "hmac-file-server.conf"
PROXY_INC = DEPLOY / "nginx" / "hmac-file-server-proxy.inc"
BUFFERED_WARNING = "buffered to a temporary file"


@dataclass
class Nginx:
    http_port: int      # the shipped port-80 server (redirects to https)
    https_port: int     # the shipped port-443 server
    control_port: int   # plain HTTP, the same include but proxy_request_buffering on
    work: Path
    client_body_temp: Path
    error_log: Path
    proc: ManagedProcess
    version: str

    def error_log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""


def site_for_test(http_port: int, https_port: int, backend_port: int, cert: Path, key: Path,
                  proxy_inc: Path) -> str:
    return rewrite(SITE.read_text(), [
        (r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{http_port};", 1),
        (r"^\s*listen \[::\]:80;\n", "", 1),
        (r"^(\s*)listen 443 ssl http2;$", rf"\g<1>listen 127.0.0.1:{https_port} ssl http2;", 1),
        (r"^\s*listen \[::\]:443 ssl http2;\n", "", 1),
        (r"^(\s*ssl_certificate\s+)\S+;$", rf"\g<1>{cert};", 1),
        (r"^(\s*ssl_certificate_key\s+)\S+;$", rf"\g<1>{key};", 1),
        (r"^(\s*include\s+)/etc/nginx/snippets/hmac-file-server-proxy\.inc;$", rf"\g<1>{proxy_inc};", 1),
        (r"^(\s*server\s+)127\.0\.0\.1:8080;", rf"\g<1>127.0.0.1:{backend_port};", 1),
    ], str(SITE))


def main_conf(work: Path, site: Path, control_port: int, control_inc: Path) -> str:
    return f"""# private nginx for tests/deploy
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/client_body_temp;
    proxy_temp_path {work}/proxy_temp;
    fastcgi_temp_path {work}/fastcgi_temp;
    uwsgi_temp_path {work}/uwsgi_temp;
    scgi_temp_path {work}/scgi_temp;
    default_type application/octet-stream;

    include {site};

    # Control: the same proxy settings with request buffering on, to show that the temp-file
    # detection used below does see a buffered body.
    server {{
        listen 127.0.0.1:{control_port};
        server_name {HOSTNAME};
        location ^~ /upload/ {{
            include {control_inc};
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def nginx(hfs, tls_cert) -> Nginx:
    binary = require_tool("nginx", "nginx")
    version = tool_version([binary, "-v"])
    work = make_workdir("nginx")
    http_port, https_port, control_port = free_ports(3)
    site = work / "hmac-file-server.conf"
    site.write_text(site_for_test(http_port, https_port, hfs.port, tls_cert.cert, tls_cert.key, PROXY_INC))
    control_inc = work / "proxy-buffered.inc"
    control_inc.write_text(rewrite(PROXY_INC.read_text(), [
        (r"^proxy_request_buffering off;$", "proxy_request_buffering on;", 1),
    ], str(PROXY_INC)))
    conf = work / "nginx.conf"
    conf.write_text(main_conf(work, site, control_port, control_inc))

    check = subprocess.run([binary, "-t", "-c", str(conf), "-p", str(work)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stdout}{check.stderr}"
    problems = [line for line in check.stderr.splitlines()
                if re.search(r"\[(warn|emerg|alert|crit)\]", line)]
    assert not problems, "nginx -t complains about the config:\n" + "\n".join(problems)

    proc = ManagedProcess("nginx", [binary, "-c", str(conf), "-p", str(work)], work / "nginx-stdout.log")
    try:
        for port in (http_port, https_port, control_port):
            poll(f"nginx on 127.0.0.1:{port}", lambda p=port: port_open(p), STARTUP_TIMEOUT, proc=proc)
        yield Nginx(http_port, https_port, control_port, work, work / "client_body_temp", work / "error.log",
                    proc, version)
    finally:
        proc.stop(timeout=15, sig=signal.SIGQUIT)
        if (work / "error.log").exists():
            tail = (work / "error.log").read_text(errors="replace").splitlines()[-20:]
            print(f"\n--- {version}: error.log (tail) ---\n" + "\n".join(tail))
        remove_workdir(work)


def test_upload_50mib_streams_through_tls_proxy(nginx, hfs, tls_cert):
    size = 50 * MiB
    data = os.urandom(size)
    want = hashlib.sha256(data).hexdigest()
    path, target = slot(hfs.secret, "größe (1).bin", size)

    with DirWatcher(nginx.client_body_temp) as watch:
        status, _headers, body, sent = put_stream(nginx.https_port, target, HOSTNAME, size, data_chunks(data),
                                                  cafile=tls_cert.cert)
    assert status == 201, f"PUT through nginx: {status} {body[:300]!r}"
    assert sent == size
    assert (hfs.store / "upload" / path).stat().st_size == size

    get_target = "/upload/" + urllib.parse.quote(path, safe="/")
    status, headers, got, n = get_sha256(nginx.https_port, get_target, HOSTNAME, cafile=tls_cert.cert)
    assert status == 200
    assert n == size and int(headers["content-length"]) == size
    assert got == want, "downloaded bytes differ from the uploaded ones"

    # proxy_request_buffering off: no client body temp file, ever (sampled during the upload).
    assert watch.samples > 10, "the temp dir watcher did not run"
    assert not watch.seen, f"nginx buffered the upload to disk: {sorted(watch.seen)}"
    assert list(nginx.client_body_temp.iterdir()) == []
    log = nginx.error_log_text()
    assert BUFFERED_WARNING not in log, f"nginx buffered to a temp file:\n{log[-2000:]}"


def test_upload_over_http2(nginx, hfs, tls_cert):
    """Conversations (OkHttp) and browsers upload over HTTP/2: streamed the same way."""
    size = 20 * MiB
    src = nginx.work / "h2-upload.bin"
    src.write_bytes(os.urandom(size))
    path, target = slot(hfs.secret, "h2 upload.bin", size)
    with DirWatcher(nginx.client_body_temp) as watch:
        version, status = curl_h2(nginx.https_port, "PUT", target, tls_cert.cert, upload=src)
    assert (version, status) == ("2", 201)
    dst = nginx.work / "h2-download.bin"
    version, status = curl_h2(nginx.https_port, "GET", "/upload/" + urllib.parse.quote(path, safe="/"),
                              tls_cert.cert, download=dst)
    assert (version, status) == ("2", 200)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert not watch.seen, f"nginx buffered the HTTP/2 upload to disk: {sorted(watch.seen)}"
    assert BUFFERED_WARNING not in nginx.error_log_text()


def test_buffering_detection_control(nginx, hfs):
    """The control server (proxy_request_buffering on) does produce what the test above looks for."""
    size = 2 * MiB  # > client_body_buffer_size (16k), so nginx writes the body to a temp file
    path, target = slot(hfs.secret, "control.bin", size)
    with DirWatcher(nginx.client_body_temp) as watch:
        status, _h, body, _sent = put_stream(nginx.control_port, target, HOSTNAME, size, zero_chunks(size))
    assert status == 201, f"{status} {body[:300]!r}"
    log = nginx.error_log_text()
    assert watch.seen or "client request body is buffered to a temporary file" in log, \
        "buffering detection saw nothing even with proxy_request_buffering on"


def test_over_max_upload_size_refused_by_server(nginx, hfs, tls_cert):
    """70 MiB passes client_max_body_size (100m) and the server (MaxUploadSize 64MiB) answers 413,
    which must reach the client as 413, not as nginx's 502 (see the 403 test below)."""
    size = 70 * MiB
    path, target = slot(hfs.secret, "too-big.bin", size)
    status, _h, body, sent = put_stream(nginx.https_port, target, HOSTNAME, size, zero_chunks(size),
                                        cafile=tls_cert.cert)
    assert status == 413, f"{status} {body[:300]!r}"
    assert b"<center>nginx" not in body, "expected the server's 413, got nginx's own"
    assert not (hfs.store / "upload" / path).exists()
    print(f"\n70 MiB: 413 after {sent / MiB:.1f} MiB sent")


def test_wrong_token_with_large_body_gets_403(nginx, hfs, tls_cert):
    """A refused upload whose body outlasts the socket buffers still gets its 403 through nginx
    (not a 502): the server must read or linger on the rest of the body after answering early
    (RFC 9112 §9.3), else nginx's writes fail with EPIPE and it answers 502."""
    size = 16 * MiB
    path, _target = slot(hfs.secret, "bad-token.bin", size)
    target = "/upload/" + urllib.parse.quote(path, safe="/") + "?v=" + "0" * 64
    status, _h, body, _sent = put_stream(nginx.https_port, target, HOSTNAME, size, zero_chunks(size),
                                         cafile=tls_cert.cert)
    assert status == 403, f"{status} {body[:300]!r}"
    assert not (hfs.store / "upload" / path).exists()


def test_over_client_max_body_size_refused_by_nginx(nginx, hfs, tls_cert):
    """Above client_max_body_size nginx answers 413 from the Content-Length, before any body."""
    size = 101 * MiB
    _path, target = slot(hfs.secret, "way-too-big.bin", size)
    status, _h, body, _sent = put_stream(nginx.https_port, target, HOSTNAME, size, iter(()),
                                         cafile=tls_cert.cert)
    assert status == 413
    assert b"nginx" in body, f"expected nginx's own 413 page, got {body[:300]!r}"


def test_head_range_and_wrong_token(nginx, hfs, tls_cert):
    data = bytes(range(256)) * 40
    path, target = slot(hfs.secret, "range.bin", len(data))
    bad = target[:-4] + ("0000" if not target.endswith("0000") else "1111")
    status, _h, _b = request(nginx.https_port, "PUT", bad, HOSTNAME, tls_cert.cert, body=data)
    assert status == 403
    status, _h, _b = request(nginx.https_port, "PUT", target, HOSTNAME, tls_cert.cert, body=data)
    assert status == 201
    get_target = "/upload/" + urllib.parse.quote(path, safe="/")
    status, headers, body = request(nginx.https_port, "HEAD", get_target, HOSTNAME, tls_cert.cert)
    assert status == 200 and int(headers["content-length"]) == len(data) and body == b""
    status, headers, body = request(nginx.https_port, "GET", get_target, HOSTNAME, tls_cert.cert,
                                    headers={"Range": "bytes=10-19"})
    assert status == 206, status
    assert body == data[10:20]
    assert headers.get("content-range") == f"bytes 10-19/{len(data)}"
    assert "content-encoding" not in headers


def test_http_redirects_to_https_and_other_paths_404(nginx, tls_cert):
    status, headers, _b = request(nginx.http_port, "GET", "/upload/a/b.txt", HOSTNAME)
    assert status == 301
    assert headers["location"] == f"https://{HOSTNAME}/upload/a/b.txt"
    status, _h, _b = request(nginx.https_port, "GET", "/", HOSTNAME, tls_cert.cert)
    assert status == 404
    status, headers, _b = request(nginx.https_port, "GET", "/", HOSTNAME, tls_cert.cert)
    assert "strict-transport-security" in headers


def test_report_nginx_version(nginx):
    print(f"\n{nginx.version}")
