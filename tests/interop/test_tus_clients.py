"""Real tus 1.0 clients against hmac-file-server: tus-js-client (Node) and tuspy.

Each test uploads a 20 MiB random file in 1 MiB chunks to a v-signed slot URL
(creation is `POST <slot url>?v=<token>`; the parallel one uses a v3 token), interrupts
the upload after a few chunks,
checks with its own HEAD that the server kept a partial offset (0 < offset < size),
resumes with a new client object from the upload URL, and compares the file that
GET /upload/<path> serves byte for byte. Two of them restart the server (SIGTERM,
start again on the same StoreDir, on a new port) between the interruption and the resume.

Every server is private: a temp StoreDir and config, ListenPort 127.0.0.1:0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from interop_util import (
    STARTUP_TIMEOUT, ManagedProcess, http_get, http_request, missing, poll, port_open, report, token_v,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
NODE_SCRIPT = HERE / "tus_js_upload.mjs"
TUS_JS_PACKAGE = HERE / "node_modules" / "tus-js-client" / "package.json"

MiB = 1 << 20
SIZE = 20 * MiB
CHUNK = MiB
CLIENT_TIMEOUT = 60.0  # one client run; a healthy one takes a few seconds
TUS_PREFIX = "/upload/.hmac-file-server/tus/"
TUS_URL = re.compile(r"/upload/\.hmac-file-server/tus/[0-9A-Za-z_-]+")


# ---------------------------------------------------------------- hmac-file-server

def hfs_binary() -> Path:
    """$HFS_BIN, else the debug build (what `cargo build` refreshes; a release binary left
    from an earlier benchmark may predate tus)."""
    env = os.environ.get("HFS_BIN")
    return Path(env) if env else REPO_ROOT / "target" / "debug" / "hmac-file-server"


@dataclass
class TusServer:
    """One StoreDir served by successive hmac-file-server processes (restartable)."""

    binary: Path
    work: Path
    secret: str = field(default_factory=lambda: "tus-interop-" + secrets.token_hex(16))
    proc: ManagedProcess | None = None
    port: int = 0
    runs: int = 0
    procs: list = field(default_factory=list)

    @property
    def store(self) -> Path:
        return self.work / "store"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    extra_config: str = ""

    def start(self) -> None:
        assert self.proc is None or self.proc.exited()
        self.store.mkdir(exist_ok=True)
        config = self.work / "config.toml"
        config.write_text(
            'ListenPort = "127.0.0.1:0"\n'
            "MetricsEnabled = false\n"
            f'Secret = "{self.secret}"\n'
            f'StoreDir = "{self.store}"\n'
            'MaxUploadSize = "64MiB"\n'
            + self.extra_config
        )
        self.runs += 1
        env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        self.proc = ManagedProcess(f"hmac-file-server#{self.runs}", [str(self.binary), "--config", str(config)],
                                   self.work / f"hfs-{self.runs}.log", env=env)
        self.procs.append(self.proc)
        # " listening on": another line says "metrics and health on ...".
        m = self.proc.wait_for_line(r" listening on (\S+)", STARTUP_TIMEOUT)
        host, _, port = m.group(1).rpartition(":")
        assert host == "127.0.0.1", f"listening on {m.group(1)!r}, expected 127.0.0.1:PORT"
        self.port = int(port)
        poll(f"hmac-file-server to accept connections on 127.0.0.1:{self.port}", lambda: port_open(self.port),
             STARTUP_TIMEOUT, proc=self.proc)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 30 s); the exit status."""
        if self.proc is None:
            return None
        self.proc.stop(signal.SIGTERM, timeout=30)
        return self.proc.popen.returncode

    def restart(self) -> None:
        old = self.port
        rc = self.stop()
        assert rc == 0, f"hmac-file-server exited with {rc} on SIGTERM\n{self.proc.output_tail()}"
        self.start()
        report(f"restarted hmac-file-server on the same StoreDir: port {old} -> {self.port}")

    def slot(self, path: str) -> tuple[str, str]:
        """(PUT/creation URL with ?v=, GET URL) for a path, as Prosody would sign it."""
        url = f"{self.base}/upload/{urllib.parse.quote(path)}"
        return f"{url}?v={token_v(self.secret, path, SIZE)}", url

    def slot_v3(self, path: str, method: str = "POST", ttl: int = 600) -> tuple[str, str]:
        """(creation URL with ?v3=&expires=, GET URL): the Go hmac-file-server 3.x token,
        HMAC(secret, METHOD \n expires \n /upload/<decoded path>). It does not sign the size,
        so the server allows tus partial uploads (concatenation) with it."""
        expires = int(time.time()) + ttl
        msg = f"{method}\n{expires}\n/upload/{path}".encode()
        token = hmac.new(self.secret.encode(), msg, hashlib.sha256).hexdigest()
        url = f"{self.base}/upload/{urllib.parse.quote(path)}"
        return f"{url}?v3={token}&expires={expires}", url

    def on_current_port(self, url: str) -> str:
        """The same URL on this server's current host:port (after a restart)."""
        u = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(u._replace(netloc=f"127.0.0.1:{self.port}"))

    def log_problems(self) -> list[str]:
        return [line for p in self.procs for line in p.lines
                if " ERROR " in line or "panicked" in line]


@pytest.fixture
def tus_server(request):
    binary = hfs_binary()
    if not binary.exists():
        missing(f"hmac-file-server binary {binary} not found (HFS_BIN={os.environ.get('HFS_BIN')!r}); "
                "build it with cargo build")
    work = Path(tempfile.mkdtemp(prefix="hfs-interop-tus-"))
    server = TusServer(binary, work)
    try:
        server.start()
        yield server
        problems = server.log_problems()
        assert not problems, "hmac-file-server logged errors:\n" + "\n".join(problems)
    finally:
        server.stop()
        for p in server.procs:
            if p.lines:
                print(f"\n--- {p.name} log (tail) ---\n" + p.output_tail(40))
        if os.environ.get("HFS_INTEROP_KEEP") == "1":
            print(f"\nkeeping {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- shared checks

@pytest.fixture
def scratch():
    """A temp dir for the test file and client state, removed afterwards (pytest's tmp_path
    would keep 20 MiB per test for the last three runs)."""
    path = Path(tempfile.mkdtemp(prefix="hfs-interop-tus-client-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def random_file(scratch) -> tuple[Path, str]:
    data = os.urandom(SIZE)
    path = scratch / "upload.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def tus_head(url: str) -> tuple[int, dict]:
    """HEAD on an upload URL: (Upload-Offset, headers); asserts a well-formed tus answer."""
    r = http_request("HEAD", url, headers={"Tus-Resumable": "1.0.0"})
    assert r.status == 200, f"HEAD {url}: {r.describe()} {r.headers}"
    assert r.headers.get("tus-resumable") == "1.0.0", f"HEAD {url}: headers {r.headers}"
    assert r.headers.get("upload-length") == str(SIZE), f"HEAD {url}: headers {r.headers}"
    offset = r.headers.get("upload-offset", "")
    assert offset.isdigit(), f"HEAD {url}: headers {r.headers}"
    return int(offset), r.headers


def assert_partial(url: str, at_least: int) -> tuple[int, dict]:
    """The interrupted upload kept at least `at_least` bytes and is not complete."""
    offset, headers = tus_head(url)
    report(f"HEAD {url} before resuming: Upload-Offset {offset} of {SIZE}")
    assert 0 < offset < SIZE, f"HEAD {url}: offset {offset} is not a partial upload of {SIZE} bytes"
    assert offset >= at_least, f"HEAD {url}: offset {offset}, but the client had {at_least} bytes accepted"
    return offset, headers


def assert_not_served(get_url: str) -> None:
    r = http_get(get_url)
    assert r.status == 404, f"GET {get_url} while the upload is unfinished: expected 404, got {r.describe()}"


def assert_served(get_url: str, sha256: str, content_type: str) -> None:
    r = http_get(get_url)
    assert r.status == 200, f"GET {get_url} after the resumed upload: {r.describe()}"
    assert len(r.body) == SIZE, f"GET {get_url}: {len(r.body)} bytes, uploaded {SIZE}"
    got = hashlib.sha256(r.body).hexdigest()
    assert got == sha256, f"GET {get_url}: sha256 {got} differs from the uploaded file's {sha256}"
    assert r.headers.get("content-type") == content_type, f"GET {get_url}: headers {r.headers}"


def assert_upload_url(url: str, server: TusServer) -> None:
    u = urllib.parse.urlsplit(url)
    assert (u.scheme, u.netloc) == ("http", f"127.0.0.1:{server.port}") and TUS_URL.fullmatch(u.path) \
        and not u.query, f"unexpected tus upload URL {url!r}"


# ---------------------------------------------------------------- tus-js-client

@dataclass
class JsRun:
    rc: int
    events: list[dict]
    stderr: str

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]

    def end(self) -> dict:
        ends = [e for e in self.events if e["event"] in ("aborted", "success", "error", "killing")]
        assert ends, f"tus-js-client run printed no outcome:\n{self.describe()}"
        return ends[-1]

    def requests(self, method: str | None = None) -> list[dict]:
        return [e for e in self.of("request") if method is None or e["method"] == method]

    def describe(self) -> str:
        lines = [json.dumps(e) for e in self.events]
        return f"rc={self.rc}\n" + "\n".join(lines[-60:]) + f"\n--- stderr ---\n{self.stderr[-3000:]}"


def require_tus_js() -> tuple[str, str]:
    node = shutil.which("node")
    if node is None:
        missing("node not installed (Node 20 expected); run: sudo tests/interop/install.sh")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    m = re.fullmatch(r"v(\d+)\.\d+\.\d+", out)
    if m is None or int(m.group(1)) < 18:
        missing(f"node {out!r} is too old for tus-js-client 4 (needs >= 18; Node 20 expected)")
    if not TUS_JS_PACKAGE.exists():
        missing(f"{TUS_JS_PACKAGE} missing; run: sudo tests/interop/install.sh (npm ci in tests/interop)")
    version = json.loads(TUS_JS_PACKAGE.read_text())["version"]
    return node, f"node {out}, tus-js-client {version}"


def run_tus_js(node: str, **opts) -> JsRun:
    opts.setdefault("chunkSize", CHUNK)
    opts.setdefault("uploadSize", SIZE)
    opts = {k: v for k, v in opts.items() if v is not None}  # uploadSize=None: leave it out
    try:
        p = subprocess.run([node, str(NODE_SCRIPT), json.dumps(opts)], cwd=HERE, capture_output=True,
                           text=True, timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"tus-js-client run did not end within {CLIENT_TIMEOUT:.0f}s: {opts}\n"
                             f"{(e.stdout or b'')[-3000:]!r}\n{(e.stderr or b'')[-3000:]!r}") from None
    events = []
    for line in p.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"event": "output", "line": line})
    return JsRun(p.returncode, events, p.stderr)


def check_js_creation(run: JsRun, slot_url: str, server: TusServer, metadata: dict | None) -> str:
    """The first run created the upload with the slot URL as given (query kept); returns the
    upload URL."""
    posts = run.requests("POST")
    assert len(posts) == 1, f"expected one creation POST:\n{run.describe()}"
    assert posts[0]["url"] == slot_url, f"tus-js-client POSTed to {posts[0]['url']!r}, not the slot URL {slot_url!r}"
    headers = posts[0]["headers"]
    assert headers.get("Tus-Resumable") == "1.0.0" and headers.get("Upload-Length") == str(SIZE), headers
    if metadata:
        expected = {k: v.encode() for k, v in metadata.items()}
        sent = {k: base64.b64decode(v) for k, v in
                (pair.split(" ") for pair in headers["Upload-Metadata"].split(","))}
        assert sent == expected, f"Upload-Metadata {headers['Upload-Metadata']!r} is not {metadata}"
    created = [e for e in run.of("response") if e["method"] == "POST"]
    assert len(created) == 1 and created[0]["status"] == 201, f"creation:\n{run.describe()}"
    location = created[0]["headers"].get("Location", "")
    assert TUS_URL.fullmatch(location), f"Location {location!r} is not {TUS_PREFIX}<id>"
    url = run.end().get("url") or ""
    assert url == server.base + location, f"upload URL {url!r} is not {server.base}{location}"
    assert_upload_url(url, server)
    return url


def check_js_resume(run: JsRun, upload_url: str, offset: int) -> None:
    """The resuming run went on from the server's offset: HEAD first, no new POST,
    PATCHes from `offset` to the end, success, no retries."""
    assert run.rc == 0 and run.end()["event"] == "success", f"resume failed:\n{run.describe()}"
    reqs = run.requests()
    assert not run.requests("POST"), f"tus-js-client created a new upload instead of resuming:\n{run.describe()}"
    assert reqs[0]["method"] == "HEAD" and reqs[0]["url"] == upload_url, f"resume:\n{run.describe()}"
    patches = run.requests("PATCH")
    assert patches and all(p["url"] == upload_url for p in patches), f"resume:\n{run.describe()}"
    assert patches[0]["headers"].get("Upload-Offset") == str(offset), \
        f"first PATCH of the resume is not at the server's offset {offset}:\n{run.describe()}"
    assert not run.of("retry"), f"tus-js-client retried (server errors?):\n{run.describe()}"
    bad = [e for e in run.of("response") if e["status"] >= 300]
    assert not bad, f"error responses during the resume:\n{run.describe()}"
    chunks = run.of("chunk")
    assert chunks[-1]["accepted"] == SIZE, f"resume:\n{run.describe()}"
    assert len(chunks) == -(-(SIZE - offset) // CHUNK), f"resume sent more chunks than needed:\n{run.describe()}"


def test_tus_js_client_abort_and_resume(tus_server, random_file, scratch):
    """tus-js-client, fs.ReadStream source, FileUrlStorage: abort() after 4 chunks, then a new
    Upload finds the stored URL (findPreviousUploads / resumeFromPreviousUpload) and finishes."""
    node, versions = require_tus_js()
    report(versions)
    file, sha256 = random_file
    path = f"tus-js/{secrets.token_hex(8)}/Grüße aus Köln (1).mp4"
    slot_url, get_url = tus_server.slot(path)
    metadata = {"filename": "Grüße aus Köln (1).mp4", "filetype": "video/mp4"}
    storage = scratch / "tus-js-urls.json"
    common = dict(file=str(file), source="path", endpoint=slot_url, metadata=metadata, urlStorage=str(storage))

    first = run_tus_js(node, **common, abortAfterChunks=4)
    assert first.rc == 0 and first.end()["event"] == "aborted", f"first run:\n{first.describe()}"
    upload_url = check_js_creation(first, slot_url, tus_server, metadata)
    patches = first.requests("PATCH")
    assert [p["headers"].get("Upload-Offset") for p in patches] == [str(i * CHUNK) for i in range(4)], \
        f"first run:\n{first.describe()}"
    assert first.end()["accepted"] == 4 * CHUNK, f"first run:\n{first.describe()}"

    offset, head = assert_partial(upload_url, 4 * CHUNK)
    assert offset == 4 * CHUNK, f"aborted between chunks after 4 MiB, the server has {offset}"
    assert head.get("upload-metadata") == first.requests("POST")[0]["headers"]["Upload-Metadata"], head
    assert_not_served(get_url)

    second = run_tus_js(node, **common, resumePrevious=True)
    prev = second.of("previous")
    assert prev and [u["uploadUrl"] for u in prev[0]["uploads"]] == [upload_url], \
        f"findPreviousUploads did not return the first run's URL:\n{second.describe()}"
    check_js_resume(second, upload_url, offset)
    assert_served(get_url, sha256, "video/mp4")


def test_tus_js_client_cut_mid_chunk_server_restarted(tus_server, random_file):
    """tus-js-client, Buffer source: the 4th PATCH breaks off after CUT bytes of its body (the
    node process kills itself), the server keeps those bytes, is restarted (new port), and a
    new Upload with `uploadUrl` (the old URL moved to the new port) finishes from that
    unaligned offset."""
    node, versions = require_tus_js()
    report(versions)
    file, sha256 = random_file
    path = f"tus-js-restart/{secrets.token_hex(8)}/clip.bin"
    slot_url, get_url = tus_server.slot(path)
    cut = 512 * 1024 + 12345

    first = run_tus_js(node, file=str(file), source="buffer", endpoint=slot_url, cutAfterChunks=3, cutBytes=cut)
    end = first.end()
    assert end["event"] == "killing" and end["how"] == "mid-body" and first.rc == -signal.SIGKILL, \
        f"first run:\n{first.describe()}"
    assert end["offset"] == 3 * CHUNK and end["length"] == CHUNK, f"first run:\n{first.describe()}"
    upload_url = check_js_creation(first, slot_url, tus_server, None)
    assert [e["accepted"] for e in first.of("chunk")] == [CHUNK, 2 * CHUNK, 3 * CHUNK], first.describe()

    # tus: "The Server SHOULD always attempt to store as much of the received data as possible."
    # The offset moves once the server has seen the body end early.
    deadline = time.monotonic() + 10.0
    while (offset := tus_head(upload_url)[0]) == 3 * CHUNK:
        assert time.monotonic() < deadline, (
            f"10 s after a PATCH broke off {cut} bytes into its body, the upload's offset is still {3 * CHUNK}: "
            "the bytes received were not kept")
        time.sleep(0.05)
    assert offset == 3 * CHUNK + cut, f"the PATCH broke off after {cut} body bytes; offset {offset}"

    tus_server.restart()
    moved = tus_server.on_current_port(upload_url)
    after, _ = assert_partial(moved, 3 * CHUNK + cut)
    assert after == offset, f"offset {offset} before the restart, {after} after"
    assert_not_served(tus_server.on_current_port(get_url))

    second = run_tus_js(node, file=str(file), source="buffer", uploadUrl=moved)
    check_js_resume(second, moved, offset)
    assert_served(tus_server.on_current_port(get_url), sha256, "application/octet-stream")


def test_tus_js_client_killed_before_response(tus_server, random_file):
    """tus-js-client, Buffer source: the 4th PATCH sends its whole 1 MiB body, then the node
    process kills itself before the response (an app killed, a tab closed). The server has every
    byte of that chunk: it must record it (offset 4 MiB) and release the upload, so a new Upload
    with `uploadUrl` resumes at once (no 423) and finishes."""
    node, versions = require_tus_js()
    report(versions)
    file, sha256 = random_file
    path = f"tus-js-killed/{secrets.token_hex(8)}/voice message.ogg"
    slot_url, get_url = tus_server.slot(path)

    first = run_tus_js(node, file=str(file), source="buffer", endpoint=slot_url, cutAfterChunks=3, cutBytes=CHUNK)
    end = first.end()
    assert end["event"] == "killing" and end["how"] == "after-body" and first.rc == -signal.SIGKILL, \
        f"first run:\n{first.describe()}"
    upload_url = check_js_creation(first, slot_url, tus_server, None)

    deadline = time.monotonic() + 10.0
    while (offset := tus_head(upload_url)[0]) != 4 * CHUNK:
        assert offset == 3 * CHUNK and time.monotonic() < deadline, (
            f"a PATCH sent its whole 1 MiB body at offset {3 * CHUNK} and its client closed the connection "
            f"without waiting for the response: 10 s later the upload's offset is {offset}, not {4 * CHUNK}")
        time.sleep(0.05)
    assert_partial(upload_url, 4 * CHUNK)

    second = run_tus_js(node, file=str(file), source="buffer", uploadUrl=upload_url)
    check_js_resume(second, upload_url, 4 * CHUNK)
    assert_served(get_url, sha256, "application/octet-stream")


def test_tus_js_client_parallel_concatenation_abort_and_resume(tus_server, random_file, scratch):
    """tus-js-client with parallelUploads: 3 and uploadDataDuringCreation (the concatenation and
    creation-with-upload extensions) on a v3-signed slot (a v/v2 token signs the size, so the
    server refuses partial uploads with it): three partial uploads POSTed to the slot URL,
    abort() after 4 chunks in all (the other parts' PATCHes are cut off in flight), then a new
    Upload finds the three part URLs in its FileUrlStorage, resumes each, and creates the final
    upload (Upload-Concat: final;...)."""
    node, versions = require_tus_js()
    report(versions)
    file, sha256 = random_file
    path = f"tus-js-parallel/{secrets.token_hex(8)}/photo album.zip"
    slot_url, get_url = tus_server.slot_v3(path)
    common = dict(file=str(file), source="path", endpoint=slot_url, uploadSize=None, parallelUploads=3,
                  uploadDataDuringCreation=True, metadata={"filetype": "application/zip"},
                  urlStorage=str(scratch / "tus-js-urls.json"))

    first = run_tus_js(node, **common, abortAfterChunks=4)
    assert first.rc == 0 and first.end()["event"] == "aborted", f"first run:\n{first.describe()}"
    posts = first.requests("POST")
    assert len(posts) == 3 and all(p["url"] == slot_url and p["headers"].get("Upload-Concat") == "partial"
                                   and p["headers"].get("Content-Type") == "application/offset+octet-stream"
                                   for p in posts), f"first run:\n{first.describe()}"
    created = [e for e in first.of("response") if e["method"] == "POST"]
    assert len(created) == 3 and all(e["status"] == 201 for e in created), f"first run:\n{first.describe()}"
    parts = [tus_server.base + e["headers"]["Location"] for e in created]
    for e in created:
        # creation-with-upload: the POST carried the part's first chunk.
        assert e["headers"].get("Upload-Offset") == str(CHUNK), f"creation-with-upload:\n{first.describe()}"
    for p in posts:
        assert int(p["headers"]["Upload-Length"]) > CHUNK, p
    assert sum(int(p["headers"]["Upload-Length"]) for p in posts) == SIZE, posts

    total = 0
    for url in parts:
        assert_upload_url(url, tus_server)
        r = http_request("HEAD", url, headers={"Tus-Resumable": "1.0.0"})
        assert r.status == 200 and r.headers.get("upload-concat") == "partial", f"HEAD {url}: {r.describe()} {r.headers}"
        offset, length = int(r.headers["upload-offset"]), int(r.headers["upload-length"])
        assert CHUNK <= offset < length, f"HEAD {url}: part at {offset} of {length}"
        total += offset
    report(f"parts before resuming: {total} of {SIZE} bytes")
    assert total < SIZE
    assert_not_served(get_url)

    second = run_tus_js(node, **common, resumePrevious=True)
    assert second.rc == 0 and second.end()["event"] == "success", f"resume:\n{second.describe()}"
    prev = second.of("previous")
    assert prev and sorted(prev[0]["uploads"][0]["parallelUploadUrls"] or []) == sorted(parts), \
        f"findPreviousUploads did not return the three part URLs:\n{second.describe()}"
    assert sorted(r["url"] for r in second.requests("HEAD")) == sorted(parts), f"resume:\n{second.describe()}"
    posts = second.requests("POST")
    assert len(posts) == 1, f"the resume created new parts instead of resuming them:\n{second.describe()}"
    final = posts[0]["headers"].get("Upload-Concat", "")
    assert final.startswith("final;") and sorted(final[len("final;"):].split()) == sorted(parts), final
    # abort() broke off the other parts' PATCHes mid-body; if the server was still finishing one
    # when the resume's HEAD came, the next PATCH gets 409 (offset moved) or 423 (locked) and
    # tus-js-client retries from a new HEAD, as tus intends. Nothing else is acceptable.
    retries = second.of("retry")
    if retries:
        report(f"retries during the resume: {retries}")
    assert all(r["status"] in (409, 423) for r in retries), f"tus-js-client retried:\n{second.describe()}"
    bad = [e for e in second.of("response") if e["status"] >= 300 and e["status"] not in (409, 423)]
    assert not bad, f"error responses during the resume:\n{second.describe()}"
    done = [e for e in second.of("response") if e["method"] == "POST"]
    assert done and done[0]["status"] == 201, f"final upload:\n{second.describe()}"
    assert_served(get_url, sha256, "application/zip")


# ---------------------------------------------------------------- tuspy

def require_tuspy():
    try:
        from tusclient import client  # noqa: F401
        import importlib.metadata
        return importlib.metadata.version("tuspy")
    except ImportError as e:
        missing(f"python package tuspy missing ({e}); run: pip install -r tests/interop/requirements.txt")


@dataclass
class Recorded:
    method: str
    url: str
    headers: dict
    status: int | None = None
    response_headers: dict = field(default_factory=dict)


@pytest.fixture
def wire(monkeypatch) -> list[Recorded]:
    """Records every request tuspy makes through `requests` (it calls requests.post/patch/head)."""
    import requests

    log: list[Recorded] = []

    def spy(method, real):
        def call(url, *args, **kwargs):
            rec = Recorded(method, url, {k.lower(): v for k, v in (kwargs.get("headers") or {}).items()})
            log.append(rec)
            resp = real(url, *args, **kwargs)
            rec.status = resp.status_code
            rec.response_headers = {k.lower(): v for k, v in resp.headers.items()}
            return resp
        return call

    for name in ("post", "patch", "head"):
        monkeypatch.setattr(requests, name, spy(name.upper(), getattr(requests, name)))
    return log


def check_tuspy_creation(wire: list[Recorded], slot_url: str, server: TusServer, upload_url: str) -> None:
    posts = [r for r in wire if r.method == "POST"]
    assert len(posts) == 1, f"expected one creation POST, got {posts}"
    post = posts[0]
    assert post.url == slot_url, f"tuspy POSTed to {post.url!r}, not the slot URL {slot_url!r}"
    # tuspy always sends Upload-Metadata, empty when there is none: the server must take it.
    assert post.headers.get("upload-metadata") == "", f"tuspy creation headers {post.headers}"
    assert post.headers.get("upload-length") == str(SIZE) and post.headers.get("tus-resumable") == "1.0.0", \
        post.headers
    assert post.status == 201, f"creation: {post}"
    assert TUS_URL.fullmatch(post.response_headers.get("location", "")), post.response_headers
    assert upload_url == server.base + post.response_headers["location"], (upload_url, post.response_headers)
    assert_upload_url(upload_url, server)


def check_tuspy_resume(wire: list[Recorded], upload_url: str, offset: int) -> None:
    assert not [r for r in wire if r.method == "POST"], f"tuspy created a new upload instead of resuming: {wire}"
    assert wire[0].method == "HEAD" and wire[0].url == upload_url and wire[0].status == 200, wire[0]
    patches = [r for r in wire if r.method == "PATCH"]
    assert all(p.url == upload_url and p.status == 204 for p in patches), [p for p in patches if p.status != 204]
    assert patches[0].headers.get("upload-offset") == str(offset), patches[0]
    assert patches[-1].response_headers.get("upload-offset") == str(SIZE), patches[-1]
    assert len(patches) == -(-(SIZE - offset) // CHUNK), f"{len(patches)} PATCHes to resume from {offset}"


def test_tuspy_interrupt_and_resume(tus_server, random_file, wire):
    """tuspy: 4 upload_chunk() calls, stop; a new uploader with url= resumes and upload()s."""
    version = require_tuspy()
    report(f"tuspy {version}")
    from tusclient import client

    file, sha256 = random_file
    path = f"tuspy/{secrets.token_hex(8)}/report 2024 (final).pdf"
    slot_url, get_url = tus_server.slot(path)
    tus = client.TusClient(slot_url)

    with open(file, "rb") as f:
        first = tus.uploader(file_stream=f, chunk_size=CHUNK)
        for _ in range(4):
            first.upload_chunk()
        assert first.offset == 4 * CHUNK, first.offset
        upload_url = first.url
    check_tuspy_creation(wire, slot_url, tus_server, upload_url)
    assert [r.headers.get("upload-offset") for r in wire if r.method == "PATCH"] == \
        [str(i * CHUNK) for i in range(4)], wire

    offset, head = assert_partial(upload_url, 4 * CHUNK)
    assert offset == 4 * CHUNK, f"stopped between chunks after 4 MiB, the server has {offset}"
    assert head.get("upload-metadata", "") == "", f"empty Upload-Metadata came back as {head}"
    assert_not_served(get_url)

    wire.clear()
    with open(file, "rb") as f:
        second = tus.uploader(file_stream=f, chunk_size=CHUNK, url=upload_url)
        assert second.offset == offset, f"new uploader starts at {second.offset}, the server has {offset}"
        second.upload()
        assert second.offset == SIZE
    check_tuspy_resume(wire, upload_url, offset)
    assert_served(get_url, sha256, "application/octet-stream")


def test_tuspy_server_restarted(tus_server, random_file, wire):
    """tuspy with Upload-Checksum (sha1) on every chunk: 3 chunks, server restart (new port),
    a new uploader with the moved URL resumes and finishes."""
    version = require_tuspy()
    report(f"tuspy {version}")
    from tusclient import client

    file, sha256 = random_file
    path = f"tuspy-restart/{secrets.token_hex(8)}/data.tar"
    slot_url, get_url = tus_server.slot(path)
    tus = client.TusClient(slot_url)

    with open(file, "rb") as f:
        first = tus.uploader(file_stream=f, chunk_size=CHUNK, upload_checksum=True)
        for _ in range(3):
            first.upload_chunk()
        assert first.offset == 3 * CHUNK, first.offset
        upload_url = first.url
    check_tuspy_creation(wire, slot_url, tus_server, upload_url)
    assert all(r.headers.get("upload-checksum", "").startswith("sha1 ") for r in wire if r.method == "PATCH"), wire

    tus_server.restart()
    moved = tus_server.on_current_port(upload_url)
    offset, _ = assert_partial(moved, 3 * CHUNK)
    assert offset == 3 * CHUNK, f"stopped between chunks after 3 MiB, the server has {offset}"
    assert_not_served(tus_server.on_current_port(get_url))

    wire.clear()
    with open(file, "rb") as f:
        second = client.TusClient(tus_server.on_current_port(slot_url)).uploader(
            file_stream=f, chunk_size=CHUNK, url=moved, upload_checksum=True)
        assert second.offset == offset, f"new uploader starts at {second.offset}, the server has {offset}"
        second.upload()
        assert second.offset == SIZE
    check_tuspy_resume(wire, moved, offset)
    assert_served(tus_server.on_current_port(get_url), sha256, "application/octet-stream")
