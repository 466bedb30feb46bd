"""deploy/s3: three hmac-file-server instances on a three-node Garage cluster and one Redis,
behind nginx, no shared folder; everything real, on loopback, from the shipped files.

The deployment (the example topology of deploy/s3/README.md, on one machine):
- Garage 2.x, three nodes from deploy/s3/garage-node.toml (replication_factor = 3, zones
  dc1/dc2/dc3, joined with `garage node connect`, layout applied, bucket and key made with the
  CLI as the README says);
- a private redis-server on a free port;
- instances A, B, C from deploy/s3/config.toml (StoreBackend = "s3", each its own StoreDir,
  S3PartSize = "5MiB", TrustedProxies = the proxy's address, BlockAfterFails = 3); like the
  hosts of the README, each talks to its own Garage node: A to node 1, B to node 2, C to node 3;
- nginx running deploy/nginx/hmac-file-server.conf (TLS) with its upstream block replaced by
  deploy/s3/nginx-upstream.conf (round-robin over A, B, C) and the shipped proxy include
  (proxy_request_buffering off, client_max_body_size 100m).

The tests run in file order on that one deployment (module-scoped fixture); the last two
change it (an instance killed and restarted, a Garage node stopped).

A Garage node stopped (test_garage_node_stopped_mid_run): an instance whose only S3 endpoint is
down can only answer 503, and nginx cannot send a streamed upload elsewhere. So, as an operator
would, the test first points instance C (the one on node 3) at node 1, which stays up, and
restarts it; then it kills node 3 in the middle of uploads that are going through nginx. The
uploads finish and every file, old and new, is served, by the two remaining nodes.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import random
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy_util import (
    HOSTNAME, MiB, connect, free_ports, get_sha256, hfs_binary, make_workdir, missing, poll, put_stream, remove_workdir,
    request, rewrite, sign_v,
)
from scaleout_util import (
    BUCKET, GARAGE_NODE_TOML, GARAGE_REGION, GARAGE_SINGLE_TOML, LIFECYCLE_JSON, GarageCluster, Instance,
    garage_binary, instance_toml, start_nginx, start_redis,
)

INTEROP = Path(__file__).resolve().parents[1] / "interop"
TUS_JS_SCRIPT = INTEROP / "tus_js_upload.mjs"
TUS_JS_PACKAGE = INTEROP / "node_modules" / "tus-js-client" / "package.json"
TUS_PREFIX = "/upload/.hmac-file-server/tus/"
PARTIAL_PREFIX = ".hmac-file-server/partial/"  # S3Prefix is "": the bytes of unfinished uploads
KiB = 1024
PART = 5 * MiB  # S3PartSize of the instances
SIZES = [1, 100 * KiB, 5 * MiB, 5 * MiB + 1, 13 * MiB, 64 * MiB]  # and 0: test_empty_file
BAN_WITHIN = 5.0  # seconds for a ban to reach the other instances (the server promises 2)


def data_of(size: int, seed: str) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks_of(data: bytes, chunk: int = MiB):
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


@dataclass
class Deployment:
    work: Path
    secret: str
    cluster: GarageCluster
    redis_port: int
    instances: list[Instance]
    nginx_port: int
    nginx_work: Path
    cafile: Path
    nginx_version: str

    # ---- requests through nginx (TLS) or to one instance (plain HTTP)

    def put(self, target: str, data: bytes, port: int | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
        if port is None:
            status, h, body, _sent = put_stream(self.nginx_port, target, HOSTNAME, len(data), chunks_of(data),
                                                cafile=self.cafile)
            return status, h, body
        return request(port, "PUT", target, HOSTNAME, headers=headers, body=data)

    def get(self, target: str, port: int | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        if port is None:
            return request(self.nginx_port, "GET", target, HOSTNAME, self.cafile, headers=headers)
        return request(port, "GET", target, HOSTNAME, headers=headers)

    def get_sha(self, target: str, port: int | None = None) -> tuple[int, dict, str, int]:
        if port is None:
            return get_sha256(self.nginx_port, target, HOSTNAME, cafile=self.cafile)
        return get_sha256(port, target, HOSTNAME)

    def nginx(self, method: str, target: str, headers: dict | None = None, body: bytes | None = None):
        return request(self.nginx_port, method, target, HOSTNAME, self.cafile, headers=headers, body=body)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.nginx_port}"

    def slot(self, name: str, size: int) -> tuple[str, str, str]:
        """(path, PUT/creation target with ?v=, GET target)."""
        path = f"scaleout-{secrets.token_hex(6)}/{name}"
        get = "/upload/" + urllib.parse.quote(path, safe="/")
        return path, f"{get}?v={sign_v(self.secret, path, size)}", get

    def served_by(self, method: str, path_prefix: str) -> dict[str, int]:
        """Instance name -> how many `method` requests under path_prefix it logged."""
        out = {}
        for inst in self.instances:
            n = len(inst.access(method, path_prefix))
            if n:
                out[inst.name] = n
        return out

    def s3(self):
        """A boto3 client of the test key on node 1, to look into the bucket."""
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.cluster.nodes[0].endpoint, region_name=GARAGE_REGION,
            aws_access_key_id=self.cluster.key_id, aws_secret_access_key=self.cluster.key_secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def in_bucket(self, prefix: str) -> tuple[list[str], list[str]]:
        """(objects, multipart uploads under way) whose keys start with prefix."""
        s3 = self.s3()
        objects = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
        uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])]
        return objects, uploads


@pytest.fixture(scope="module")
def deployment(tls_cert) -> Deployment:
    binary = hfs_binary()
    garage = garage_binary()
    try:
        import boto3  # noqa: F401 (looks into the bucket)
    except ImportError:
        missing("python package boto3 missing")
    work = make_workdir("scaleout")
    cluster = GarageCluster(garage, work, GARAGE_NODE_TOML, 3)
    redis = None
    nginx = None
    instances: list[Instance] = []
    try:
        t0 = time.monotonic()
        cluster.start()
        t_garage = time.monotonic() - t0
        redis, redis_port = start_redis(work)
        secret = "scaleout-" + secrets.token_hex(16)
        secret_file = work / "secret"
        secret_file.write_text(secret)
        s3_secret_file = work / "s3-secret"
        s3_secret_file.write_text(cluster.key_secret)
        for f in (secret_file, s3_secret_file):
            os.chmod(f, 0o640)
        ports = free_ports(6)
        for i, name in enumerate("ABC"):
            inst_work = work / f"instance-{name}"
            inst_work.mkdir()
            inst = Instance(name, binary, inst_work, ports[2 * i], ports[2 * i + 1])
            inst.config.write_text(instance_toml(inst_work, inst.port, inst.metrics_port, secret_file,
                                                 cluster.nodes[i].endpoint, cluster.key_id, s3_secret_file,
                                                 redis_port))
            check = subprocess.run([str(binary), "-config", str(inst.config), "check-config"], capture_output=True,
                                   text=True, timeout=60)
            assert check.returncode == 0, f"check-config {name}:\n{check.stdout}{check.stderr}"
            instances.append(inst)
        for inst in instances:
            inst.start()
        assert len({inst.work / "store" for inst in instances}) == 3, "no shared folder"
        nginx_work = work / "nginx"
        nginx_work.mkdir()
        os.chmod(nginx_work, 0o755)
        nginx, nginx_port, version = start_nginx(nginx_work, tls_cert.cert, tls_cert.key,
                                                 [inst.port for inst in instances])
        print(f"\n{version}; garage cluster up in {t_garage:.1f}s, everything in {time.monotonic() - t0:.1f}s")
        yield Deployment(work, secret, cluster, redis_port, instances, nginx_port, nginx_work, tls_cert.cert,
                         version)
        panics = [line for inst in instances for p in inst.procs for line in p.lines if "panicked" in line]
        assert not panics, "an instance panicked:\n" + "\n".join(panics)
    finally:
        if nginx is not None:
            nginx.stop(timeout=15, sig=signal.SIGQUIT)
        for inst in instances:
            inst.stop()
            for p in inst.procs:
                if p.lines:
                    print(f"\n--- {p.name} (tail) ---\n" + p.output_tail(15))
        if redis is not None:
            redis.stop()
        cluster.stop()
        tails = cluster.log_tails()
        if tails:
            print("\n" + tails)
        remove_workdir(work)


# ---------------------------------------------------------------- 1. sizes, concurrency

def test_uploads_of_many_sizes_by_concurrent_clients(deployment):
    """Two uploads of each size, all at once from 8 client threads through nginx; every file read
    back byte-exact through nginx and through each instance directly."""
    d = deployment
    files = []
    for size in SIZES:
        for copy in range(2):
            data = data_of(size, f"sizes-{size}-{copy}")
            path, put_target, get_target = d.slot(f"{size}-{copy}.bin", size)
            files.append((size, path, put_target, get_target, data, sha256(data)))

    def upload(f):
        size, _path, put_target, _get, data, _sha = f
        status, _h, body = d.put(put_target, data)
        return size, status, body

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(upload, files))
    t_up = time.monotonic() - t0
    bad = [(size, status, body[:200]) for size, status, body in results if status != 201]
    assert not bad, f"uploads through nginx not 201: {bad}"
    by = d.served_by("PUT", "/upload/scaleout-")
    assert set(by) == {"A", "B", "C"}, f"nginx did not spread the uploads over the three instances: {by}"

    ports = [None] + [inst.port for inst in d.instances]

    def read_back(job):
        (size, path, _put, get_target, _data, want), port = job
        status, headers, got, n = d.get_sha(get_target, port)
        return size, path, port, status, headers.get("content-length"), n, got == want

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        reads = list(pool.map(read_back, [(f, p) for f in files for p in ports]))
    t_down = time.monotonic() - t0
    wrong = [r for r in reads if not (r[3] == 200 and r[4] == str(r[0]) and r[5] == r[0] and r[6])]
    assert not wrong, "files not served whole (size, path, port (None: nginx), status, Content-Length, " \
                      f"bytes, same sha256): {wrong}"
    total = sum(SIZES) * 2
    print(f"\n{len(files)} uploads, {total / MiB:.0f} MiB through nginx in {t_up:.1f}s; "
          f"{len(reads)} downloads ({4 * total / MiB:.0f} MiB) in {t_down:.1f}s; PUTs by instance {by}")


def test_empty_file(deployment):
    """A 0-byte file through nginx: 201, then served (Content-Length: 0) by nginx and each instance."""
    d = deployment
    _path, put_target, get_target = d.slot("empty.txt", 0)
    status, _h, body = d.put(put_target, b"")
    assert status == 201, f"empty PUT through nginx: {status} {body[:200]!r}"
    for port in [None] + [inst.port for inst in d.instances]:
        status, headers, body = d.get(get_target, port)
        assert (status, headers.get("content-length"), body) == (200, "0", b""), f"port {port}: {status} {headers}"


# ---------------------------------------------------------------- 2. racing PUTs

@pytest.mark.parametrize("size", [100 * KiB, 6 * MiB])
def test_racing_puts_to_one_path_one_wins(deployment, size):
    """Six clients PUT different bodies to one path at once through nginx (so on all three
    instances): exactly one 201, five 409, and the file is the winner's, with no multipart
    upload left behind."""
    d = deployment
    path, put_target, get_target = d.slot(f"race-{size}.bin", size)
    bodies = [data_of(size, f"race-{size}-{i}") for i in range(6)]
    barrier = threading.Barrier(len(bodies))

    def race(body):
        barrier.wait(timeout=30)
        return d.put(put_target, body)[0]

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        statuses = list(pool.map(race, bodies))
    assert statuses.count(201) == 1 and set(statuses) <= {201, 409}, f"racing PUTs: {statuses}"
    winner = bodies[statuses.index(201)]
    by = d.served_by("PUT", "/upload/" + urllib.parse.quote(path, safe="/"))
    assert len(by) == 3, f"the racing PUTs did not reach all three instances: {by}"
    for port in [None] + [inst.port for inst in d.instances]:
        status, _h, got, n = d.get_sha(get_target, port)
        assert status == 200 and n == size and got == sha256(winner), f"port {port}: {status}, {n} bytes"
    assert d.in_bucket(path) == ([path], []), "the losers left multipart uploads (or more) behind"
    assert sorted(statuses) == [201] + [409] * 5, f"racing PUTs: {statuses}"


def test_put_losing_to_a_finished_upload_gets_409(deployment):
    """The race above, made deterministic: a 6 MiB PUT to instance A stops after exactly its
    first part (5 MiB), once that part is in the bucket; a PUT of the same path to instance B
    finishes (201); then the first PUT's last MiB comes (its second UploadPart starts after the
    winner's upload was completed). It must get 409 and leave the winner's file and nothing
    else."""
    d = deployment
    a, b = d.instances[0], d.instances[1]
    size = 6 * MiB
    first, second = data_of(size, "late-loser"), data_of(size, "early-winner")
    path, put_target, get_target = d.slot("late-loser.bin", size)
    parts = a.metric("hmac_file_server_s3_requests_total", operation="UploadPart", outcome="ok")
    conn = connect(a.port)
    try:
        conn.putrequest("PUT", put_target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", HOSTNAME)
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        conn.send(first[:PART])
        poll("A to put the first part in the bucket",
             lambda: a.metric("hmac_file_server_s3_requests_total", operation="UploadPart", outcome="ok") > parts, 30)
        assert d.put(put_target, second, port=b.port)[0] == 201
        conn.send(first[PART:])
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    status_get, _h, got, _n = d.get_sha(get_target)
    assert status_get == 200 and got == sha256(second), "the winner's file changed"
    assert d.in_bucket(path) == ([path], []), "the loser left something in the bucket"
    assert status == 409, f"the PUT that lost: {status} {body[:200]!r}"


# ---------------------------------------------------------------- 3. tus clients

TUS_SIZE = 12 * MiB


def tus_head(d: Deployment, upload_path: str, port: int | None = None) -> tuple[int, dict]:
    if port is None:
        return d.nginx("HEAD", upload_path, headers={"Tus-Resumable": "1.0.0"})[:2]
    return request(port, "HEAD", upload_path, HOSTNAME, headers={"Tus-Resumable": "1.0.0"})[:2]


def patch_instances(d: Deployment, upload_path: str) -> dict[str, int]:
    return d.served_by("PATCH", upload_path)


def require_tus_js() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node not installed", "run: sudo tests/interop/install.sh")
    if not TUS_JS_PACKAGE.exists():
        missing(f"{TUS_JS_PACKAGE} missing", "run: sudo tests/interop/install.sh (npm ci in tests/interop)")
    return node


def run_tus_js(node: str, cafile: Path, **opts) -> list[dict]:
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(cafile))
    p = subprocess.run([node, str(TUS_JS_SCRIPT), json.dumps(opts)], cwd=INTEROP, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL, env=env)
    events = []
    for line in p.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"event": "output", "line": line})
    ends = [e for e in events if e["event"] in ("aborted", "success", "error")]
    assert ends, f"tus-js-client printed no outcome rc={p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    events.append({"event": "rc", "rc": p.returncode, "stderr": p.stderr[-2000:]})
    return events


def describe(events: list[dict]) -> str:
    return "\n".join(json.dumps(e) for e in events[-40:])


def test_tus_js_client_interrupted_and_resumed_across_instances(deployment):
    """tus-js-client (Node) through nginx, 1 MiB chunks (below S3's 5 MiB part minimum):
    abort() after 4 chunks, a new Upload resumes from the upload URL and finishes. Its PATCHes
    went to all three instances; the file is byte-exact."""
    d = deployment
    node = require_tus_js()
    data = data_of(TUS_SIZE, "tus-js")
    src = d.work / "tus-js.bin"
    src.write_bytes(data)
    path, put_target, get_target = d.slot("tus js.bin", TUS_SIZE)
    first = run_tus_js(node, d.cafile, file=str(src), source="path", endpoint=d.base + put_target,
                       chunkSize=MiB, uploadSize=TUS_SIZE, abortAfterChunks=4, metadata={"filetype": "application/zip"})
    end = [e for e in first if e["event"] in ("aborted", "success", "error")][-1]
    assert end["event"] == "aborted", f"first run:\n{describe(first)}"
    upload_url = end["url"]
    upload_path = urllib.parse.urlsplit(upload_url).path
    status, headers = tus_head(d, upload_path)
    assert status == 200, f"HEAD after abort: {status} {headers}"
    offset = int(headers["upload-offset"])
    assert 4 * MiB <= offset < TUS_SIZE, f"HEAD after 4 chunks: offset {offset}"
    assert d.get(get_target)[0] == 404, "unfinished upload visible at its URL"

    second = run_tus_js(node, d.cafile, file=str(src), source="path", uploadUrl=upload_url, chunkSize=MiB,
                        uploadSize=TUS_SIZE)
    end = [e for e in second if e["event"] in ("aborted", "success", "error")][-1]
    assert end["event"] == "success", f"resume:\n{describe(second)}"
    reqs = [e for e in second if e["event"] == "request"]
    assert reqs[0]["method"] == "HEAD" and not [e for e in reqs if e["method"] == "POST"], describe(second)
    patches = [e for e in reqs if e["method"] == "PATCH"]
    assert patches[0]["headers"]["Upload-Offset"] == str(offset), describe(second)
    bad = [e for e in second if e["event"] == "response" and e["status"] >= 300]
    assert not bad, f"error responses during the resume:\n{describe(second)}"

    by = patch_instances(d, upload_path)
    assert len(by) >= 2, f"the PATCHes of one upload all went to one instance: {by}"
    status, headers, got, n = d.get_sha(get_target)
    assert status == 200 and n == TUS_SIZE and got == sha256(data), f"{status} {n}"
    assert headers.get("content-type") == "application/zip", headers
    print(f"\ntus-js-client: resumed at {offset}; PATCHes by instance {by}")


def test_tuspy_interrupted_and_resumed_across_instances(deployment, monkeypatch):
    """tuspy through nginx, 2 MiB chunks: 3 upload_chunk() calls, then a new uploader with the
    upload URL resumes; PATCHes on at least two instances; bytes compared."""
    d = deployment
    try:
        from tusclient import client
    except ImportError:
        missing("python package tuspy missing", "run: sudo tests/interop/install.sh")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(d.cafile))
    data = data_of(TUS_SIZE, "tuspy")
    path, put_target, get_target = d.slot("tuspy.bin", TUS_SIZE)
    tus = client.TusClient(d.base + put_target)
    first = tus.uploader(file_stream=io.BytesIO(data), chunk_size=2 * MiB)
    for _ in range(3):
        first.upload_chunk()
    assert first.offset == 6 * MiB
    upload_url = first.url
    upload_path = urllib.parse.urlsplit(upload_url).path
    status, headers = tus_head(d, upload_path)
    assert status == 200 and int(headers["upload-offset"]) == 6 * MiB, (status, headers)
    assert d.get(get_target)[0] == 404

    second = client.TusClient(d.base + put_target).uploader(file_stream=io.BytesIO(data), chunk_size=2 * MiB,
                                                             url=upload_url)
    assert second.offset == 6 * MiB
    second.upload()
    assert second.offset == TUS_SIZE
    by = patch_instances(d, upload_path)
    assert len(by) >= 2, f"the PATCHes of one upload all went to one instance: {by}"
    status, _h, got, n = d.get_sha(get_target)
    assert status == 200 and n == TUS_SIZE and got == sha256(data), f"{status} {n}"
    print(f"\ntuspy: PATCHes by instance {by}")


# ---------------------------------------------------------------- 4. session token

def test_session_token_upload_cut_and_resumed_through_nginx(deployment):
    """PUT with X-Session-Token whose connection is cut after 7 MiB of 9 MiB; HEAD with the
    token tells the offset the instances share; PUT with Content-Range sends the rest. The three
    requests go through nginx one after the other, so to three consecutive instances of the
    round-robin: the resume is on another instance than the cut PUT."""
    d = deployment
    total = 9 * MiB
    cut = 7 * MiB
    data = data_of(total, "session")
    token = "scaleout-" + secrets.token_hex(16)
    path, put_target, get_target = d.slot("session.bin", total)
    quoted = "/upload/" + urllib.parse.quote(path, safe="/")

    conn = connect(d.nginx_port, d.cafile)
    conn.putrequest("PUT", put_target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", HOSTNAME)
    conn.putheader("Content-Length", str(total))
    conn.putheader("X-Session-Token", token)
    conn.endheaders()
    for chunk in chunks_of(data[:cut]):
        conn.send(chunk)
    conn.close()  # the connection ends in the middle of the body
    # The instance that had the PUT logs it once it has kept the bytes it got.
    first = poll("an instance to log the cut PUT", lambda: d.served_by("PUT", quoted), 30)
    for inst in d.instances:  # directly, so as not to move nginx's round-robin
        assert d.get(get_target, inst.port)[0] == 404, f"unfinished session upload visible on {inst.name}"

    status, headers, _b = d.nginx("HEAD", put_target, headers={"X-Session-Token": token})
    assert status == 200, f"session HEAD: {status} {headers}"
    offset = int(headers["upload-offset"])
    assert 0 < offset <= cut, f"offset {offset} after {cut} bytes were sent"
    status, _h, body = d.nginx("PUT", put_target, body=data[offset:], headers={
        "X-Session-Token": token, "Content-Range": f"bytes {offset}-{total - 1}/{total}"})
    assert status == 201, f"resume PUT: {status} {body[:300]!r}"
    puts = d.served_by("PUT", quoted)
    heads = d.served_by("HEAD", quoted)
    assert len(puts) == 2, f"cut PUT on {first}, HEAD on {heads}, PUTs {puts}: the resume was on the same instance"
    status, _h, got, n = d.get_sha(get_target)
    assert status == 200 and n == total and got == sha256(data), f"{status} {n}"
    print(f"\nsession: cut PUT on {first}, HEAD on {heads}, PUTs by instance {puts}, resumed at {offset}")


# ---------------------------------------------------------------- 5. bans

def test_ban_on_one_instance_is_refused_by_the_others(deployment):
    """Three wrong tokens sent to instance A directly, from a client address A believes
    (X-Forwarded-For from 127.0.0.1, a trusted proxy): A bans it, and B, C and nginx (so every
    instance) refuse it with 429 within a few seconds; other clients go on."""
    d = deployment
    a, b, c = d.instances
    data = b"ban test\n"
    path, put_target, get_target = d.slot("ban.txt", len(data))
    assert d.put(put_target, data)[0] == 201
    client_ip = f"203.0.113.{random.randint(1, 254)}"
    xff = {"X-Forwarded-For": client_ip}
    assert d.get(get_target, b.port, headers=xff)[0] == 200, "not banned yet"

    for i in range(3):
        _p, bad_target, _g = d.slot(f"wrong-{i}.txt", len(data))
        bad_target = bad_target[:-4] + "0000"
        status, _h, _b = d.put(bad_target, data, port=a.port, headers=xff)
        assert status == 403, f"wrong token #{i + 1} on A: {status}"
    assert d.get(get_target, a.port, headers=xff)[0] == 429, "A did not ban after 3 failures"
    t0 = time.monotonic()
    for inst in (b, c):
        poll(f"instance {inst.name} to refuse the client banned on A",
             lambda inst=inst: d.get(get_target, inst.port, headers=xff)[0] == 429, BAN_WITHIN, interval=0.1)
    took = time.monotonic() - t0
    # Through nginx: X-Forwarded-For becomes "<client>, 127.0.0.1"; three requests, three instances.
    statuses = [d.get(get_target, headers=xff)[0] for _ in range(3)]
    assert statuses == [429] * 3, f"through nginx: {statuses}"
    assert d.put(d.slot("after-ban.txt", 3)[1], b"ok\n", port=b.port, headers=xff)[0] == 429
    # Everybody else is served.
    assert [d.get(get_target)[0] for _ in range(3)] == [200] * 3
    print(f"\nban made on A refused by B and C within {took:.2f}s")


# ---------------------------------------------------------------- the shipped lifecycle rule

def test_lifecycle_rule_is_accepted_by_garage(deployment):
    """deploy/s3/lifecycle.json, as `aws s3api put-bucket-lifecycle-configuration` sends it
    (botocore), is accepted and read back by Garage."""
    rules = json.loads(LIFECYCLE_JSON.read_text())
    s3 = deployment.s3()
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration=rules)
    got = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert got == rules["Rules"], got


# ---------------------------------------------------------------- the single-node example

def test_single_node_garage_example(deployment):
    """deploy/s3/garage-single.toml: one Garage node (replication_factor = 1) set up with the
    README's commands, and an instance from deploy/s3/config.toml on it. It shares the Redis
    server of the cluster's instances, so it uses RedisDB = 1 (separate deployments on one Redis
    need separate databases). Whole-file uploads (one request and multipart) and a tus upload."""
    d = deployment
    work = d.work / "single"
    work.mkdir()
    garage = GarageCluster(d.cluster.binary, work, GARAGE_SINGLE_TOML, 1)
    inst = None
    try:
        garage.start()
        s3_secret = work / "s3-secret"
        s3_secret.write_text(garage.key_secret)
        os.chmod(s3_secret, 0o640)
        port, metrics_port = free_ports(2)
        inst = Instance("single", Path(d.instances[0].binary), work, port, metrics_port)
        toml = instance_toml(work, port, metrics_port, d.work / "secret", garage.nodes[0].endpoint, garage.key_id,
                             s3_secret, d.redis_port)
        inst.config.write_text(rewrite(toml, [(r"^RedisDB = 0$", "RedisDB = 1", 1)], "config.toml"))
        inst.start()
        for size in (1, 100 * KiB, 6 * MiB):
            data = data_of(size, f"single-{size}")
            _path, put_target, get_target = d.slot(f"single-{size}.bin", size)
            status, _h, body = d.put(put_target, data, port=port)
            assert status == 201, f"{size} B: {status} {body[:200]!r}"
            status, _h, got, n = d.get_sha(get_target, port)
            assert status == 200 and n == size and got == sha256(data)
            assert d.get(get_target, d.instances[0].port)[0] == 404, "the other deployment sees the file"
        size = 7 * MiB
        data = data_of(size, "single-tus")
        _path, put_target, get_target = d.slot("single-tus.bin", size)
        status, headers, _b = request(port, "POST", put_target, HOSTNAME, headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
        assert status == 201
        for start in range(0, size, 3 * MiB):
            status, _h, body = request(port, "PATCH", headers["location"], HOSTNAME, body=data[start:start + 3 * MiB],
                                       headers={"Tus-Resumable": "1.0.0", "Upload-Offset": str(start),
                                                "Content-Type": "application/offset+octet-stream"})
            assert status == 204, f"PATCH at {start}: {status} {body[:300]!r}"
        assert d.get_sha(get_target, port)[2] == sha256(data)
    finally:
        if inst is not None:
            inst.stop()
        garage.stop()


# ---------------------------------------------------------------- 6. kill -9

def test_instance_killed_mid_upload_resumable_through_nginx(deployment):
    """A tus PATCH of 40 MiB through nginx; once two parts are in the bucket the instance that
    has it gets SIGKILL. Nothing is visible at the file's URL (through nginx, on the
    survivors, nor as an object in the bucket); HEAD through nginx gives the offset that was
    kept, a PATCH through nginx sends the rest (once the dead instance's lock has expired), the
    file is byte-exact. The instance then starts again on its port."""
    d = deployment
    size = 40 * MiB
    data = data_of(size, "kill-9")
    path, put_target, get_target = d.slot("killed.bin", size)
    status, headers, body = d.nginx("POST", put_target, headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
    assert status == 201, f"creation: {status} {body[:300]!r}"
    upload_path = headers["location"]
    assert upload_path.startswith(TUS_PREFIX), upload_path

    conn = connect(d.nginx_port, d.cafile)
    conn.putrequest("PATCH", upload_path, skip_host=True, skip_accept_encoding=True)
    for k, v in {"Host": HOSTNAME, "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                 "Content-Type": "application/offset+octet-stream", "Content-Length": str(size)}.items():
        conn.putheader(k, v)
    conn.endheaders()
    sent = 0
    for chunk in chunks_of(data[:2 * MiB]):
        conn.send(chunk)
        sent += len(chunk)

    def busy():
        found = [inst for inst in d.instances if inst.metric("hmac_file_server_active_uploads") >= 1]
        return found[0] if len(found) == 1 else None
    victim = poll("the instance receiving the PATCH", busy, 30)
    others = [inst for inst in d.instances if inst is not victim]
    for chunk in chunks_of(data[sent:12 * MiB]):
        conn.send(chunk)
        sent += len(chunk)
    # The instance records what is durable (whole parts in the bucket) at most once a second,
    # when body bytes come: trickle the body, as a slow client would, until the record that
    # HEAD on another instance reads from Redis has two parts.
    kept = 0
    deadline = time.monotonic() + 30
    while kept < 2 * PART:
        assert time.monotonic() < deadline, f"{sent} of {size} bytes sent, the upload record still says {kept}"
        conn.send(data[sent:sent + 64 * KiB])
        sent += 64 * KiB
        step = time.monotonic() + 0.2
        while kept < 2 * PART and time.monotonic() < step:
            status, headers = tus_head(d, upload_path, others[0].port)
            assert status == 200, f"HEAD on {others[0].name} during the PATCH: {status} {headers}"
            kept = int(headers["upload-offset"])
    assert sent < size
    victim.kill()
    try:
        for chunk in chunks_of(data[sent:sent + 2 * MiB], 256 * KiB):
            conn.send(chunk)
        resp = conn.getresponse()
        outcome = f"HTTP {resp.status}"
        assert resp.status >= 500, f"the PATCH to a killed instance ended with {outcome}"
    except (OSError, http.client.HTTPException, ssl.SSLError) as e:
        outcome = repr(e)
    finally:
        conn.close()

    # Nothing at the URL: through nginx (three requests: both survivors, and nginx's retry
    # past the dead one), on each survivor, and no object with that name in the bucket.
    assert [d.get(get_target)[0] for _ in range(3)] == [404] * 3
    for inst in others:
        assert d.get(get_target, inst.port)[0] == 404, inst.name
    assert d.in_bucket(path) == ([], []), "something at the file's key in the bucket"

    # Resume through nginx. Until the dead instance's lock on the upload expires (a 10 s TTL),
    # a PATCH is refused with 423: probe with empty PATCHes (204 once the upload is free).
    t_kill = time.monotonic()
    probes = []

    def free() -> bool:
        status, headers = tus_head(d, upload_path)
        assert status == 200, f"HEAD through nginx after the kill: {status} {headers}"
        status = d.nginx("PATCH", upload_path, body=b"", headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": headers["upload-offset"],
            "Content-Type": "application/offset+octet-stream"})[0]
        probes.append(status)
        assert status in (204, 423), f"empty PATCH probes: {probes}"
        return status == 204
    poll("the killed instance's lock on the upload to expire", free, 30, interval=0.25)
    waited = time.monotonic() - t_kill
    status, headers = tus_head(d, upload_path)
    offset = int(headers["upload-offset"])
    assert kept <= offset < sent, f"HEAD after the kill: offset {offset}; {kept} were recorded, {sent} sent"
    status, _h, body = d.nginx("PATCH", upload_path, body=data[offset:], headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
    assert status == 204, f"resume PATCH from {offset}: {status} {body[:300]!r}"
    status, _h, got, n = d.get_sha(get_target)
    assert status == 200 and n == size and got == sha256(data), f"{status} {n}"

    assert d.in_bucket(path) == ([path], []), "the file, and only the file, at its key"
    partial = PARTIAL_PREFIX + upload_path[len(TUS_PREFIX):]
    assert d.in_bucket(partial) == ([], []), "the finished upload left pieces in the bucket"

    victim.start()
    assert d.get_sha(get_target, victim.port)[2] == sha256(data)
    print(f"\nkilled {victim.name} after {sent / MiB:.1f} MiB, {kept} B recorded (client saw {outcome}); "
          f"upload free again after {waited:.1f}s ({len(probes)} probes); resumed from {offset}")


# ---------------------------------------------------------------- 7. a Garage node stopped

def test_garage_node_stopped_mid_run(deployment):
    """Instance C is pointed at Garage node 1 and restarted (its own node 3 is about to go);
    then uploads through nginx start, and node 3 gets SIGKILL while they are under way (one of
    them waits at 20 MiB until it is gone). Every upload gets 201 and is served byte-exact
    through nginx and each instance; the files of the first test are still served; a tus
    upload made after the stop works too. An instance D started on node 3 alone answers 503
    (Retry-After) to an upload, and /health 503."""
    d = deployment
    a, b, c = d.instances
    node1, node3 = d.cluster.nodes[0], d.cluster.nodes[2]
    c.stop()
    c.config.write_text(rewrite(c.config.read_text(), [
        (rf'^S3Endpoint = "{node3.endpoint}"$', f'S3Endpoint = "{node1.endpoint}"', 1)], str(c.config)))
    c.start()

    paused = threading.Event()
    node_gone = threading.Event()

    def held_back(data: bytes):
        for i, chunk in enumerate(chunks_of(data)):
            if i == 20:
                paused.set()
                assert node_gone.wait(60), "node 3 was not stopped"
            yield chunk

    sizes = [64 * MiB, 13 * MiB, 5 * MiB + 1, 100 * KiB, 1]
    files = []
    for i, size in enumerate(sizes):
        data = data_of(size, f"garage-down-{i}")
        path, put_target, get_target = d.slot(f"node-down-{size}.bin", size)
        files.append((size, put_target, get_target, data))

    def upload(f):
        size, put_target, _g, data = f
        chunks = held_back(data) if size == sizes[0] else chunks_of(data)
        status, _h, body, _sent = put_stream(d.nginx_port, put_target, HOSTNAME, size, chunks, cafile=d.cafile)
        return size, status, body[:200]

    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        futures = [pool.submit(upload, f) for f in files]
        assert paused.wait(60), "the 64 MiB upload did not get to 20 MiB"
        node3.stop(signal.SIGKILL)
        node_gone.set()
        results = [f.result(timeout=180) for f in futures]
    assert all(status == 201 for _s, status, _b in results), f"uploads while node 3 went down: {results}"
    poll("node 1 to see node 3 down", lambda: node3.node_id[:16] not in node1.healthy_ids(), 30, interval=0.2)

    for size, _put, get_target, data in files:
        for port in [None, a.port, b.port, c.port]:
            status, _h, got, n = d.get_sha(get_target, port)
            assert status == 200 and n == size and got == sha256(data), f"{size} B via port {port}: {status} {n}"
    # Files written while all three nodes were up, one of each size.
    old = [line for line in a.access("PUT", "/upload/scaleout-") + b.access("PUT", "/upload/scaleout-")
           if line["status"] == "201"]
    assert old, "no earlier uploads found in the logs"
    for line in old[:10]:
        assert d.get(line["path"])[0] == 200, f"{line['path']} not served with node 3 down"

    # A resumable upload from start to end with two nodes.
    size = 11 * MiB
    data = data_of(size, "garage-down-tus")
    _path, put_target, get_target = d.slot("node-down-tus.bin", size)
    status, headers, _b = d.nginx("POST", put_target, headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
    assert status == 201
    for start in range(0, size, 4 * MiB):
        status, _h, body = d.nginx("PATCH", headers["location"], body=data[start:start + 4 * MiB], headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": str(start), "Content-Type": "application/offset+octet-stream"})
        assert status == 204, f"PATCH at {start}: {status} {body[:300]!r}"
    status, _h, got, n = d.get_sha(get_target)
    assert status == 200 and got == sha256(data)
    for inst in d.instances:
        assert inst.health() == 200, f"{inst.name} /health with node 3 down"

    # What C would have done on node 3: an instance whose only S3 endpoint is down says so.
    work = d.work / "instance-D"
    work.mkdir()
    port, metrics_port = free_ports(2)
    inst_d = Instance("D", a.binary, work, port, metrics_port)
    inst_d.config.write_text(instance_toml(work, port, metrics_port, d.work / "secret", node3.endpoint,
                                           d.cluster.key_id, d.work / "s3-secret", d.redis_port))
    try:
        inst_d.start(healthy=False)
        assert inst_d.health() == 503, "/health of an instance whose Garage node is down"
        size = 100 * KiB
        path, put_target, get_target = d.slot("node-down-503.bin", size)
        status, headers, body = d.put(put_target, data_of(size, "503"), port=port)
        assert status == 503 and headers.get("retry-after"), f"upload to D: {status} {headers} {body[:200]!r}"
        assert d.get(get_target)[0] == 404 and d.in_bucket(path) == ([], [])
    finally:
        inst_d.stop()
