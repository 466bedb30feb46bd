"""Helpers shared by the XMPP interop tests (processes, ports, XMPP client, HTTP).

Imported by conftest.py and the test modules; pytest puts this folder on
sys.path because it has no __init__.py. Processes and ports come from tests/pykit/processes.py,
shared with the deploy tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pykit"))
from processes import ManagedProcess, free_port, kill_pid, poll, port_open  # noqa: E402,F401 (re-exported)

# Slot/registration/startup deadlines (seconds). Generous for a loaded 2-core CI box.
STARTUP_TIMEOUT = 60.0
XMPP_TIMEOUT = 30.0
HTTP_TIMEOUT = 30.0

def strict() -> bool:
    """In CI (or when asked) a missing prerequisite is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("HFS_REQUIRE_INTEROP") == "1"


def missing(reason: str) -> None:
    """Skip (locally) or fail loudly (CI=true / HFS_REQUIRE_INTEROP=1)."""
    if strict():
        pytest.fail(f"interop prerequisite missing (CI=true or HFS_REQUIRE_INTEROP=1, so not skipping): {reason}",
                    pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- tokens

def token_v(secret: str, path: str, size: int) -> str:
    return hmac.new(secret.encode(), f"{path} {size}".encode(), hashlib.sha256).hexdigest()


def token_v2(secret: str, path: str, size: int, content_type: str) -> str:
    msg = f"{path}\0{size}\0{content_type}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def split_slot_url(url: str, base_url: str) -> tuple[str, dict[str, str]]:
    """(path after the upload prefix, percent-decoded once; query dict)."""
    u = urllib.parse.urlsplit(url)
    b = urllib.parse.urlsplit(base_url)
    assert (u.scheme, u.netloc) == (b.scheme, b.netloc), f"slot URL {url!r} is not on {base_url!r}"
    prefix = b.path if b.path.endswith("/") else b.path + "/"
    assert u.path.startswith(prefix), f"slot URL {url!r} does not start with {prefix!r}"
    path = urllib.parse.unquote(u.path[len(prefix):], encoding="utf-8", errors="strict")
    query = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    return path, query


# ---------------------------------------------------------------- HTTP

@dataclass
class HttpResult:
    status: int | None
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    error: str | None = None  # transport error (reset, broken pipe) instead of a response

    def describe(self) -> str:
        if self.status is None:
            return f"no HTTP response ({self.error})"
        return f"HTTP {self.status} body={self.body[:300]!r}"


def http_request(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> HttpResult:
    """Send the request with the URL exactly as given (no re-quoting)."""
    u = urllib.parse.urlsplit(url)
    target = u.path + (f"?{u.query}" if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=HTTP_TIMEOUT)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        send_error = None
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The server may answer (e.g. 403) before reading the body.
                send_error = repr(e)
        try:
            resp = conn.getresponse()
            data = resp.read()
            return HttpResult(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            return HttpResult(None, error=f"{send_error or ''} {e!r}".strip())
    finally:
        conn.close()


def http_put(url: str, data: bytes, content_type: str | None) -> HttpResult:
    headers = {"Content-Length": str(len(data))}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return http_request("PUT", url, data, headers)


def http_get(url: str) -> HttpResult:
    return http_request("GET", url)


# ---------------------------------------------------------------- XMPP

def run_xmpp(port: int, jid: str, password: str, action, timeout: float = XMPP_TIMEOUT):
    """Log in with slixmpp over plain TCP to 127.0.0.1:port, run
    `await action(client)`, log out, and return its result."""
    import slixmpp  # imported late so a missing package can be skipped/failed cleanly

    async def main():
        client = slixmpp.ClientXMPP(jid, password)
        # Private test servers on loopback without TLS certificates.
        client.enable_direct_tls = False
        client.enable_starttls = False
        client.enable_plaintext = True
        client.register_plugin("xep_0030")
        client.register_plugin("xep_0363")
        mech = client.plugin["feature_mechanisms"]
        mech.unencrypted_scram = True
        mech.unencrypted_plain = True

        loop = asyncio.get_running_loop()
        session = loop.create_future()

        def ok(_event):
            if not session.done():
                session.set_result(True)

        def bad(what):
            def handler(event):
                if not session.done():
                    session.set_exception(AssertionError(f"XMPP {what}: {event!r}"))
            return handler

        client.add_event_handler("session_start", ok)
        client.add_event_handler("failed_auth", bad("authentication failed"))
        client.add_event_handler("connection_failed", bad("connection failed"))
        client.connect("127.0.0.1", port)
        try:
            await asyncio.wait_for(session, timeout)
            return await asyncio.wait_for(action(client), timeout)
        finally:
            try:
                await asyncio.wait_for(client.disconnect(wait=2.0), 5)
            except Exception:
                client.abort()

    return asyncio.run(main())


async def find_service(client) -> str:
    info = await client.plugin["xep_0363"].find_upload_service(timeout=XMPP_TIMEOUT)
    assert info is not None, "XMPP server advertises no XEP-0363 upload service"
    return str(info["from"])


async def request_slot(client, filename: str, size: int, content_type: str | None) -> dict:
    service = await find_service(client)
    iq = await client.plugin["xep_0363"].request_slot(
        service, filename, size, content_type, timeout=XMPP_TIMEOUT)
    slot = iq["http_upload_slot"]
    return {
        "service": service,
        "put": slot["put"]["url"],
        "get": slot["get"]["url"],
        "put_headers": {h["name"]: h["value"] for h in slot["put"]["headers"]},
    }


def payload(size: int, seed: str) -> bytes:
    """Deterministic binary (all byte values, incompressible) test data."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# ---------------------------------------------------------------- scenarios

def report(msg: str) -> None:
    """Printed with -s / shown on failure; the tests' record of what servers send."""
    print(msg)


def scenario_upload_file(server, hfs, filename: str, size: int) -> None:
    """slixmpp's own one-call helper: disco, slot request, aiohttp PUT; then GET."""
    import io

    data = payload(size, f"{server.name}-{server.protocol}-upload_file")

    async def action(client):
        return await client.plugin["xep_0363"].upload_file(
            filename, size=len(data), input_file=io.BytesIO(data), timeout=XMPP_TIMEOUT)

    get_url = run_xmpp(server.port, server.jid, server.password, action)
    report(f"{server.name} {server.version} ({server.protocol}) upload_file -> GET URL {get_url}")
    split_slot_url(get_url, hfs.base_url)
    r = http_get(get_url)
    assert r.status == 200, f"GET {get_url} after slixmpp upload_file: {r.describe()}"
    assert r.headers.get("content-length") == str(size), f"GET {get_url}: headers {r.headers}"
    assert r.body == data, f"GET {get_url}: {len(r.body)} bytes differ from the {size} uploaded"


def scenario_slot(server, hfs, filename: str, size: int, content_type: str, expect_path) -> dict:
    """Slot from the XMPP server, then PUT/GET by hand with the URLs exactly as
    the server sent them: wrong token 403, (v2: wrong Content-Type 403),
    PUT 201, GET bytes, second PUT 409 with the file untouched."""
    data = payload(size, f"{server.name}-{server.protocol}-slot")

    slot = run_xmpp(server.port, server.jid, server.password,
                    lambda client: request_slot(client, filename, size, content_type))
    put_url, get_url = slot["put"], slot["get"]
    report(f"{server.name} {server.version} ({server.protocol}) slot for {filename!r} ({size} B, "
           f"{content_type}):\n  PUT {put_url}\n  GET {get_url}\n  PUT headers {slot['put_headers']}")

    path, query = split_slot_url(put_url, hfs.base_url)
    get_path, get_query = split_slot_url(get_url, hfs.base_url)
    assert get_path == path and not get_query, f"GET URL {get_url!r} is not the PUT URL without query"
    assert list(query) == [server.protocol], f"expected only ?{server.protocol}= in {put_url!r}"
    expect_path(path)
    token = query[server.protocol]
    if server.protocol == "v":
        expected = token_v(hfs.secret, path, size)
    else:
        expected = token_v2(hfs.secret, path, size, content_type)
    assert token == expected, (f"{server.name} signed something other than the documented "
                               f"{server.protocol} message for path {path!r}: {token} != {expected}")

    # Wrong token: one hex digit changed.
    bad = token[:-1] + ("0" if token[-1] != "0" else "1")
    bad_url = put_url.replace(f"{server.protocol}={token}", f"{server.protocol}={bad}")
    assert bad_url != put_url
    r = http_put(bad_url, data, content_type)
    assert r.status == 403, f"PUT {bad_url} (wrong token): expected 403, got {r.describe()}"
    if server.protocol == "v2":
        # v2 signs the Content-Type: another type must be refused too.
        r = http_put(put_url, data, "image/png")
        assert r.status == 403, f"PUT {put_url} with Content-Type image/png (signed {content_type}): " \
                                f"expected 403, got {r.describe()}"
    r = http_get(get_url)
    assert r.status == 404, f"GET {get_url} after refused PUTs: expected 404, got {r.describe()}"

    r = http_put(put_url, data, content_type)
    assert r.status == 201, f"PUT {put_url} ({size} B, {content_type}): expected 201, got {r.describe()}"

    r = http_get(get_url)
    assert r.status == 200, f"GET {get_url}: expected 200, got {r.describe()}"
    assert r.headers.get("content-length") == str(size), f"GET {get_url}: headers {r.headers}"
    assert r.body == data, f"GET {get_url}: {len(r.body)} bytes differ from the {size} uploaded"

    other = payload(size, "a different body of the same length")
    r = http_put(put_url, other, content_type)
    assert r.status == 409, f"second PUT {put_url}: expected 409, got {r.describe()}"
    r = http_get(get_url)
    assert r.status == 200 and r.body == data, f"GET {get_url} after the 409: file changed ({r.describe()})"
    return {"put": put_url, "get": get_url, "path": path, "token": token}
