#!/usr/bin/env python3
"""A minimal HTTP sink for the bench's loopback ceilings: reads each PUT's Content-Length bytes
into one reused buffer, discards them and answers 201. Prints "listening on 127.0.0.1:PORT"
once bound. Serves a bounded number of requests (--requests) and then exits; no threads, no
keep-alive beyond one connection at a time: it exists to show what loopback plus curl can do
on this machine, not to be a server.

With --write-into DIR it is the least an upload server must do instead: each body goes into a
new file in DIR (`write` after each `recv_into`, one thread, `fsync` at the end), which is
removed once answered: what loopback plus storing the bytes can do.

    python3 sink.py [--requests N] [--max-seconds S] [--write-into DIR]
"""

import argparse
import os
import signal
import socket
import sys

BUFFER_BYTES = 4 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024


def read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """Reads up to the end of the request head; returns (head, bytes already read after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the request head ended")
        data += chunk
        if len(data) > MAX_HEAD_BYTES:
            raise ConnectionError("request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def serve_connection(conn: socket.socket, buf: memoryview, write_into: str | None) -> int:
    """Serves requests on one connection until it closes; returns how many were answered."""
    answered = 0
    while True:
        try:
            head, rest = read_head(conn)
        except ConnectionError:
            return answered
        remaining = content_length(head) - len(rest)
        if b"expect: 100-continue" in head.lower():
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        target = os.path.join(write_into, f"body-{os.getpid()}-{answered}") if write_into else None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if target else -1
        try:
            if fd >= 0 and rest:
                os.write(fd, rest)
            while remaining > 0:
                n = conn.recv_into(buf, min(remaining, len(buf)))
                if n == 0:
                    return answered
                remaining -= n
                if fd >= 0:
                    written = 0
                    while written < n:
                        written += os.write(fd, buf[written:n])
            if fd >= 0:
                os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)
                os.unlink(target)
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        answered += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--max-seconds", type=int, default=300)
    parser.add_argument("--write-into", metavar="DIR", help="write each body into a new file in DIR (removed after)")
    args = parser.parse_args()
    signal.alarm(args.max_seconds)  # bounded in time, whatever happens
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    buf = memoryview(bytearray(BUFFER_BYTES))
    answered = 0
    while answered < args.requests:
        conn, _ = listener.accept()
        with conn:
            answered += serve_connection(conn, buf, args.write_into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
