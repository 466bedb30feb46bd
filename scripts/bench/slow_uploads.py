#!/usr/bin/env python3
"""Many slow uploads at once, for the bench's "many" phase: opens N connections to the server,
sends each PUT's head, then trickles every body at a fixed rate (CHUNK bytes per tick on each
connection) so that all N uploads are in flight together for most of the run. Prints one JSON
line: how many got 201, the other answers, the time taken, and how many were in flight at the
peak.

    python3 slow_uploads.py --port P --targets FILE --size BYTES [--chunk B] [--tick-ms MS] [--unique]

FILE holds one signed request target per line ("/upload/p?v=…"); one upload per line. With
--unique every chunk of every upload starts with its own stamp (upload and chunk number), so
no two bodies, nor two 1 MiB blocks, are alike (an object store that keeps one copy of equal
blocks would otherwise store one block for all of them), and body_sha256() says what each
upload's body hashes to, for checking the stored files. Bounded:
every upload has a deadline (--max-seconds), after which it is abandoned and counted as failed.
Only ever connects to 127.0.0.1.
"""

import argparse
import asyncio
import hashlib
import json
import sys
import time

HOST = "127.0.0.1"


def base_chunk(chunk_bytes: int) -> bytes:
    return bytes(range(256)) * (chunk_bytes // 256) + b"z" * (chunk_bytes % 256)


def chunk_of(base: bytes, upload: int, index: int, unique: bool) -> bytes:
    """Chunk `index` of upload `upload` (the upload's line in the targets file, from 0)."""
    if not unique:
        return base
    stamp = f"{upload:08d}:{index:08d}|".encode()
    return stamp + base[len(stamp):]


def body_sha256(size: int, chunk_bytes: int, upload: int, unique: bool) -> str:
    """The sha256 of the body that upload number `upload` sends."""
    base = base_chunk(chunk_bytes)
    digest = hashlib.sha256()
    sent, index = 0, 0
    while sent < size:
        n = min(len(base), size - sent)
        digest.update(chunk_of(base, upload, index, unique)[:n])
        sent += n
        index += 1
    return digest.hexdigest()


async def upload(
    port: int,
    target: str,
    number: int,
    unique: bool,
    size: int,
    chunk: bytes,
    tick_s: float,
    start_at: float,
    opened: asyncio.Event,
    counters: dict,
) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(
            (
                f"PUT {target} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        counters["opened"] += 1
        if counters["opened"] == counters["total"]:
            opened.set()
        # Every connection trickles on the same schedule, one chunk per tick.
        await opened.wait()
        counters["in_flight"] += 1
        counters["peak_in_flight"] = max(counters["peak_in_flight"], counters["in_flight"])
        sent, tick = 0, 0
        while sent < size:
            n = min(len(chunk), size - sent)
            writer.write(memoryview(chunk_of(chunk, number, tick, unique))[:n])
            await writer.drain()
            sent += n
            tick += 1
            delay = start_at + tick * tick_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        counters["in_flight"] -= 1
        status_line = await reader.readline()
        parts = status_line.split()
        return parts[1].decode() if len(parts) >= 2 else "no answer"
    finally:
        writer.close()


async def run(args) -> dict:
    with open(args.targets) as f:
        targets = [line.strip() for line in f if line.strip()]
    chunk = base_chunk(args.chunk)
    opened = asyncio.Event()
    counters = {"opened": 0, "total": len(targets), "in_flight": 0, "peak_in_flight": 0}
    t0 = time.monotonic()
    # Start the trickle a moment after the last connection is up.
    start_at = t0 + 1.0 + len(targets) / 1000

    async def one(number: int, target: str) -> str:
        try:
            return await asyncio.wait_for(
                upload(
                    args.port, target, number, args.unique, args.size, chunk, args.tick_ms / 1000, start_at, opened,
                    counters,
                ),
                timeout=args.max_seconds,
            )
        except asyncio.TimeoutError:
            return "timeout"
        except OSError as e:
            return f"error: {e.__class__.__name__}"

    results = await asyncio.gather(*(one(k, t) for k, t in enumerate(targets)))
    elapsed = time.monotonic() - t0
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r] = statuses.get(r, 0) + 1
    return {
        "uploads": len(targets),
        "bytes_each": args.size,
        "created": statuses.get("201", 0),
        "statuses": statuses,
        "seconds": round(elapsed, 3),
        "peak_in_flight": counters["peak_in_flight"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--targets", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=64 * 1024)
    parser.add_argument("--tick-ms", type=float, default=80.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--unique", action="store_true", help="stamp every chunk: no two bodies or blocks alike")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
