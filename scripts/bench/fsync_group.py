#!/usr/bin/env python3
"""Would group commit make small PUTs on a disk faster? (issue 15, part 3)

Stores many small files in DIR the way the server does (a temporary file in a folder of its
own, write, fsync, a new folder per file as Prosody's slots give, rename into it, fsync of that
folder; `--one-folder`: all in one) from many threads at once, with two ways of syncing,
interleaved over a few rounds in the same run:

- per-request: every thread syncs its own file and then the folder, as the server does now;
  the kernel (jbd2 on ext4) already merges concurrent fsyncs into shared journal commits.
- group: threads write and close their temporary file and queue it; one committer thread
  takes everything queued, starts the write-back of all of them (sync_file_range), fsyncs
  each, renames them all, fsyncs the folder once and only then releases their threads (no
  answer before the file and its folder entry are durable). While it works, new files queue
  for the next batch.

Prints files/s and p50/p99 latency per round and mode, and the median ratio group / per-request.
Run it on the file system in question, e.g.:

    python3 scripts/bench/fsync_group.py /var/tmp/fsync-test
    # a journaled ext4 in a loop file, for a machine whose root has no journal:
    truncate -s 8G /var/tmp/ext4j.img && mkfs.ext4 -q /var/tmp/ext4j.img \\
      && mkdir -p /mnt/ext4j && mount -o loop /var/tmp/ext4j.img /mnt/ext4j \\
      && python3 scripts/bench/fsync_group.py /mnt/ext4j/fsync-test
"""

import argparse
import ctypes
import os
import queue
import shutil
import statistics
import threading
import time


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2


def start_write_back(fd: int) -> None:
    if _LIBC.sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "sync_file_range")


def final_place(folder: str, name: str, own_folder: bool) -> tuple[str, str]:
    """The folder a finished file goes into (made now when it has its own), and its path."""
    if not own_folder:
        return folder, os.path.join(folder, name)
    target = os.path.join(folder, f"slot-{name}")
    os.mkdir(target, 0o750)
    return target, os.path.join(target, "file.bin")


def temp_path(folder: str, name: str) -> str:
    return os.path.join(folder, ".tmp", name)


def per_request(folder: str, dir_fd: int, name: str, data: bytes, own_folder: bool) -> None:
    tmp = temp_path(folder, name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    target, final = final_place(folder, name, own_folder)
    os.rename(tmp, final)
    fsync_folder(target) if own_folder else os.fsync(dir_fd)


def fsync_folder(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Committer:
    """One thread that syncs what the others queued, a batch at a time."""

    def __init__(self, folder: str, dir_fd: int, own_folder: bool):
        self.folder, self.dir_fd, self.own_folder = folder, dir_fd, own_folder
        self.queue: "queue.Queue[tuple[str, threading.Event]]" = queue.Queue()
        self.batches: list[int] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            fds = [os.open(temp_path(self.folder, name), os.O_RDONLY) for name, _ in batch]
            try:
                for fd in fds:  # start every write-back first, then wait for each
                    start_write_back(fd)
                for fd in fds:
                    os.fsync(fd)
            finally:
                for fd in fds:
                    os.close(fd)
            targets = set()
            for name, _ in batch:
                target, final = final_place(self.folder, name, self.own_folder)
                os.rename(temp_path(self.folder, name), final)
                targets.add(target)
            if self.own_folder:
                for target in targets:  # on ext4 all but the first find the journal committed
                    fsync_folder(target)
            else:
                os.fsync(self.dir_fd)
            self.batches.append(len(batch))
            for _, done in batch:
                done.set()

    def store(self, name: str, data: bytes) -> None:
        tmp = temp_path(self.folder, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        done = threading.Event()
        self.queue.put((name, done))
        done.wait()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()


def run(mode: str, root: str, threads: int, files: int, data: bytes, own_folder: bool) -> dict:
    folder = os.path.join(root, f"{mode}-{time.monotonic_ns()}")
    os.makedirs(os.path.join(folder, ".tmp"))
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(os.open(root, os.O_RDONLY | os.O_DIRECTORY))
    committer = Committer(folder, dir_fd, own_folder) if mode == "group" else None
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = [0]

    def worker() -> None:
        mine = []
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= files:
                break
            t = time.perf_counter()
            if committer:
                committer.store(f"f{i}", data)
            else:
                per_request(folder, dir_fd, f"f{i}", data, own_folder)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    batches = committer.batches if committer else []
    if committer:
        committer.stop()
    os.close(dir_fd)
    shutil.rmtree(folder)
    latencies.sort()
    return {
        "rate": files / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "batch": statistics.mean(batches) if batches else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="a folder on the file system to measure (created; emptied after)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-folder", action="store_true",
                        help="all files in one folder (default: a new folder per file, as Prosody's slots)")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    data = os.urandom(args.size)
    ratios = []
    layout = "one folder" if args.one_folder else "a new folder each"
    print(f"{args.files} files of {args.size} B, {args.threads} threads, in {args.dir}, {layout}")
    for r in range(args.rounds):
        order = ["per-request", "group"] if r % 2 == 0 else ["group", "per-request"]
        got = {}
        for mode in order:
            got[mode] = run(mode, args.dir, args.threads, args.files, data, not args.one_folder)
            g = got[mode]
            print(f"round {r + 1} {mode:12} {g['rate']:8.0f} files/s  p50 {g['p50']:6.2f} ms  "
                  f"p99 {g['p99']:6.2f} ms  files per sync batch {g['batch']:.1f}")
        ratios.append(got["group"]["rate"] / got["per-request"]["rate"])
    print("group / per-request, files/s: median %.2f (rounds %s)"
          % (statistics.median(ratios), ", ".join(f"{x:.2f}" for x in ratios)))


if __name__ == "__main__":
    main()
