"""tus-js-client in its IETF "Resumable Uploads for HTTP" draft modes against hmac-file-server.

tus-js-client 4.3 speaks the draft as `protocol: "ietf-draft-03"` (interop version 5) and
`"ietf-draft-05"` (interop version 6): creation by POST to the slot URL with
`Upload-Complete: ?0`, appends by PATCH with `Upload-Offset` and `Upload-Complete`, offset
retrieval by HEAD. Each test uploads a 20 MiB random file in 1 MiB chunks, aborts after 4
chunks, kills the server (SIGKILL) and starts it again on the same store, checks the offset
with its own HEAD, resumes with a new client object through its URL storage, and compares
what GET serves byte for byte; on the embedded state and on a Redis of its own.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from interop_util import http_request, missing, poll, report
from test_tus_clients import (  # noqa: F401  (fixtures)
    CHUNK, SIZE, TusServer, assert_not_served, assert_served, hfs_binary, random_file,
    require_tus_js, run_tus_js, scratch,
)

DRAFT_PREFIX = "/upload/.hmac-file-server/resumable/"
INTEROP = {"ietf-draft-03": "5", "ietf-draft-05": "6"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["embedded", "redis"])
def draft_server(request):
    """A server on the embedded state, or on a redis-server of its own (never the shared one)."""
    binary = hfs_binary()
    if not binary.exists():
        missing(f"hmac-file-server binary {binary} not found; build it with cargo build")
    work = Path(tempfile.mkdtemp(prefix="hfs-interop-draft-"))
    redis = None
    server = TusServer(binary, work)
    try:
        if request.param == "redis":
            if shutil.which("redis-server") is None:
                missing("redis-server not installed")
            port = free_port()
            redis = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(work)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def redis_up() -> bool:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        return True
                except OSError:
                    return False

            poll("redis-server", redis_up, 10)
            server.extra_config = f'RedisAddr = "127.0.0.1:{port}"\n'
        server.start()
        yield server
        problems = server.log_problems()
        assert not problems, "hmac-file-server logged errors:\n" + "\n".join(problems)
    finally:
        server.stop()
        if redis is not None:
            redis.kill()
            redis.wait()
        for p in server.procs:
            if p.lines:
                print(f"\n--- {p.name} log (tail) ---\n" + p.output_tail(40))
        shutil.rmtree(work, ignore_errors=True)


def draft_head(url: str, interop: str) -> tuple[int, dict]:
    """Offset retrieval: (Upload-Offset, headers), asserting the draft's answer."""
    r = http_request("HEAD", url, headers={"Upload-Draft-Interop-Version": interop})
    assert r.status == 204, f"HEAD {url}: {r.describe()} {r.headers}"
    assert r.headers.get("upload-complete") == "?0", f"HEAD {url}: {r.headers}"
    assert r.headers.get("cache-control") == "no-store", f"HEAD {url}: {r.headers}"
    offset = r.headers.get("upload-offset", "")
    assert offset.isdigit(), f"HEAD {url}: {r.headers}"
    return int(offset), r.headers


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_tus_js_client_draft_abort_kill_and_resume(draft_server, random_file, scratch, protocol):
    node, versions = require_tus_js()
    report(f"{versions}, protocol {protocol}")
    file, sha256 = random_file
    path = f"draft-js/{protocol}/Grüße aus Köln.mp4"
    slot_url, get_url = draft_server.slot(path)
    storage = scratch / "urls.json"
    common = dict(file=str(file), source="path", endpoint=slot_url, urlStorage=str(storage), protocol=protocol)

    first = run_tus_js(node, **common, abortAfterChunks=4)
    assert first.rc == 0 and first.end()["event"] == "aborted", f"first run:\n{first.describe()}"
    posts = first.requests("POST")
    assert len(posts) == 1 and posts[0]["url"] == slot_url, f"creation:\n{first.describe()}"
    assert posts[0]["headers"].get("Upload-Draft-Interop-Version") == INTEROP[protocol], first.describe()
    assert "Tus-Resumable" not in posts[0]["headers"], first.describe()
    created = [e for e in first.of("response") if e["method"] == "POST"]
    assert created and created[0]["status"] == 201, f"creation:\n{first.describe()}"
    location = created[0]["headers"].get("Location", "")
    assert location.startswith(DRAFT_PREFIX), f"Location {location!r}"
    upload_url = draft_server.base + location
    patches = first.requests("PATCH")
    assert [p["headers"].get("Upload-Offset") for p in patches] == [str(i * CHUNK) for i in range(4)], \
        first.describe()
    if protocol == "ietf-draft-05":
        assert all(p["headers"].get("Content-Type") == "application/partial-upload" for p in patches)

    # The server dies (kill -9) and comes back on the same store, on a new port.
    draft_server.proc.stop(signal.SIGKILL, timeout=10)
    draft_server.start()
    upload_url = draft_server.on_current_port(upload_url)
    offset, _ = draft_head(upload_url, INTEROP[protocol])
    report(f"after kill -9 and restart: Upload-Offset {offset} of {SIZE}")
    assert offset == 4 * CHUNK, f"aborted between chunks after 4 MiB, the server has {offset}"
    assert_not_served(draft_server.on_current_port(get_url))

    # The stored URL names the old port: point the storage at the new one, as a client that
    # reaches the server under a stable name would not need to.
    text = storage.read_text()
    old = urllib.parse.urlsplit(slot_url).netloc
    storage.write_text(text.replace(old, f"127.0.0.1:{draft_server.port}"))
    second = run_tus_js(node, **dict(common, endpoint=draft_server.on_current_port(slot_url)), resumePrevious=True)
    assert second.rc == 0 and second.end()["event"] == "success", f"resume:\n{second.describe()}"
    assert not second.requests("POST"), f"a new upload instead of the resume:\n{second.describe()}"
    reqs = second.requests()
    assert reqs[0]["method"] == "HEAD" and reqs[0]["url"] == upload_url, second.describe()
    patches = second.requests("PATCH")
    assert patches[0]["headers"].get("Upload-Offset") == str(offset), second.describe()
    # tus-js-client sends its last chunk with Upload-Complete: ?0 (it reads the file as a
    # stream and does not know it is the last); the declared length reached completes it.
    last = [e for e in second.of("response") if e["method"] == "PATCH"][-1]
    assert last["status"] == 201 and last["headers"].get("Upload-Complete") == "?1", second.describe()
    assert [e for e in second.of("response") if e["status"] >= 300] == [], second.describe()
    assert_served(draft_server.on_current_port(get_url), sha256, "application/octet-stream")
    # The completed upload still answers its offset retrieval (a client whose answer was lost).
    r = http_request("HEAD", upload_url, headers={"Upload-Draft-Interop-Version": INTEROP[protocol]})
    assert r.status == 204 and r.headers.get("upload-complete") == "?1", r.headers
    assert r.headers.get("upload-offset") == str(SIZE), r.headers
