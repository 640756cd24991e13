"""Peak memory (RSS) of the mount daemon writing and reading a large file through FUSE.

The mount-side companion of bench/memory.py (which measures ``put``/``get``): one daemon
writes the file (until ``fsync`` returns, i.e. sealed and uploaded), a second daemon with an
empty read cache reads it back sequentially and checks it. Each daemon's ``VmHWM`` is read
just before it is unmounted. The goal is under 150 MB.

    python3 bench/mount_memory.py [--size-mib 1024] [--store dir|b2] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mountkit import (  # noqa: E402
    MIB,
    Blocks,
    Daemon,
    RssSampler,
    Server,
    make_keys,
    run_capped,
)

LIMIT = 150e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--store", choices=("dir", "b2"), default="dir")
    ap.add_argument("--latency-ms", type=float, default=0, help="B2 server reply delay")
    ap.add_argument("--cache-size", default="1G", help="the mount's --cache-size")
    ap.add_argument("--cap", type=float, default=900, help="seconds per phase")
    args = ap.parse_args()
    blocks = Blocks()
    work = Path(tempfile.mkdtemp(prefix="b2cryptfs-mountmem-"))
    server = None
    failed = False
    try:
        key_args = make_keys(work / "keys")
        if args.store == "b2":
            server = Server(args.latency_ms, 0, work)
            url, env = f"b2://{server.bucket}", server.env
        else:
            (work / "store").mkdir()
            url, env = str(work / "store"), {}

        def mount() -> Daemon:
            return Daemon(
                url, work / "mnt", work / "cache", key_args, env, work / "mount.log",
                ["--cache-size", args.cache_size],
            )  # fmt: skip

        path = work / "mnt" / "big.bin"

        def write() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for i in range(args.size_mib):
                    view = memoryview(blocks.block(i))
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)

        def read() -> tuple[int, int]:
            crc, got = 0, 0
            with open(path, "rb", buffering=0) as f:
                while data := f.read(MIB):
                    crc = zlib.crc32(data, crc)
                    got += len(data)
            return got, crc

        print(f"file: {args.size_mib} MiB through the mount ({args.store} store); limit 150 MB")
        rows = []
        for what in ("write", "read"):
            if what == "read":
                shutil.rmtree(next((work / "cache").glob("*/chunks")), ignore_errors=True)
            d = mount()
            sampler = RssSampler(d.pid)
            try:
                started = time.monotonic()
                if what == "write":
                    run_capped(write, args.cap)
                else:
                    got, crc = run_capped(read, args.cap)
                    if got != args.size_mib * MIB or crc != blocks.checksum(args.size_mib):
                        print("read back: WRONG CONTENT")
                        failed = True
                elapsed = time.monotonic() - started
                peak = d.peak_rss()
            except BaseException:
                d.kill()
                raise
            finally:
                samples = sampler.stop()
            d.unmount()
            rows.append((what, peak, elapsed, samples))
        for what, peak, elapsed, samples in rows:
            verdict = "ok" if peak < LIMIT else "OVER LIMIT"
            failed |= peak >= LIMIT
            # Where the peak came: the RSS at each tenth of the phase.
            marks = [samples[len(samples) * k // 10][1] / 1e6 for k in range(10)] if samples else []
            print(
                f"{what:5}: daemon peak RSS {peak / 1e6:6.1f} MB ({verdict}), "
                f"{args.size_mib / elapsed:6.1f} MiB/s; RSS by tenths: "
                + " ".join(f"{m:.0f}" for m in marks)
            )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
