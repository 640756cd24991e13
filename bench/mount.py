"""Benchmark of the real mount: FUSE in a subprocess, over the loopback B2 server and a
directory store.

    python3 bench/mount.py [--stores b2,dir] [--size-mib 256] [--latency-ms 30]
                           [--bandwidth-mbps 0] [--repeat 1] [--pyspy DIR]

Per store, in four mount sessions (a fresh daemon each, so that cold means cold):

1. ``ls -l`` of a directory of 10,000 seeded pairs (first listing of the mount), sequential
   write of one large file (time to write it, then until ``fsync`` returns, which seals it
   and waits for the upload), 1,000 new 4 KiB files (create rate, then until the outbox is
   empty, i.e. everything uploaded);
2. random 4 KiB reads with an empty read cache (``POSIX_FADV_RANDOM``: no kernel read-ahead);
3. sequential read with an empty read cache (cold), then again in the same mount (hot: the
   kernel page cache);
4. a new daemon with the read cache kept: random 4 KiB reads and a sequential read (warm).

Each session reports the daemon's peak RSS (``VmHWM`` read before unmounting) and each phase
the daemon's CPU seconds and, on B2, the server requests it caused. Every phase has a time
cap; a phase over its cap is reported as such and its session ends. The machine may be
shared: run with ``--repeat 3`` or more and read the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mountkit import (  # noqa: E402
    MIB,
    ROOT,
    SEED_MTIME_MS,
    Blocks,
    Daemon,
    PhaseTimeout,
    PySpy,
    Server,
    make_keys,
    median,
    run_capped,
    sealed_pair,
    timed_random_reads,
    timed_seq_read,
)

sys.path.insert(0, str(ROOT))

BIGDIR = "big"
SMALLDIR = "small"
BIGFILE = "large.bin"
PHASES = ("ls", "write", "small", "rand_cold", "read_cold", "read_hot", "rand_warm", "read_warm")
SESSIONS = {
    "write": ("ls", "write", "small"),
    "rand_cold": ("rand_cold",),
    "read_cold": ("read_cold", "read_hot"),
    "read_warm": ("rand_warm", "read_warm"),
}


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    fmt: str = "{:.1f}"


METRICS = [
    Metric("ls_s", "ls -l of {dir_files} files", "s", "{:.2f}"),
    Metric("write_mibps", "seq write {size} MiB (to last write)", "MiB/s"),
    Metric("write_upload_s", "seq write {size} MiB until uploaded", "s", "{:.1f}"),
    Metric("small_fps", "create {small} x 4 KiB files", "files/s"),
    Metric("small_upload_s", "create {small} files until uploaded", "s", "{:.1f}"),
    Metric("rand_cold_ops", "random 4 KiB reads, cold", "ops/s"),
    Metric("read_cold_mibps", "seq read, cold (empty cache)", "MiB/s"),
    Metric("read_hot_mibps", "seq read, hot (same mount)", "MiB/s"),
    Metric("rand_warm_ops", "random 4 KiB reads, warm", "ops/s"),
    Metric("read_warm_mibps", "seq read, warm (disk cache, new daemon)", "MiB/s"),
    Metric("rss_write_mb", "daemon peak RSS, write session", "MB"),
    Metric("rss_read_mb", "daemon peak RSS, read sessions (max)", "MB"),
]


@dataclass
class Run:
    """One store's results of one repetition: values, daemon CPU and server requests."""

    values: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, key_args: list[str]) -> None:
        self.args = args
        self.work = work
        self.key_args = key_args
        self.blocks = Blocks()
        self.want_crc = self.blocks.checksum(args.size_mib)
        self.size = args.size_mib * MIB
        self.phases = set(PHASES if args.only is None else args.only.split(",")) | {"write"}
        if self.phases & {"rand_warm", "read_warm"}:
            self.phases.add("read_cold")  # what fills the cache that "warm" means

    # --- plumbing ----------------------------------------------------------------------

    def phase(
        self,
        run: Run,
        name: str,
        daemon: Daemon,
        server: Server | None,
        fn: Callable[[], dict[str, float]],
        cap: float,
    ) -> None:
        """Run one capped phase; record its values, daemon CPU and server requests."""
        if name not in self.phases:
            return
        spy = None
        if self.args.pyspy:
            out = Path(self.args.pyspy) / f"{run.requests.get('_store', 'x')}-{name}.txt"
            spy = PySpy(daemon.pid, out, gil=self.args.pyspy_gil)
        if server is not None:
            server.reset()
        cpu0 = daemon.cpu()
        try:
            values = run_capped(fn, cap)
        except PhaseTimeout as exc:
            run.notes.append(f"{name}: {exc}; daemon killed")
            daemon.kill()
            raise
        finally:
            if spy is not None:
                spy.stop()
        run.cpu[name] = daemon.cpu() - cpu0
        run.values.update(values)
        if server is not None:
            stats = server.stats()
            interesting = {
                k.replace("b2_", ""): v
                for k, v in sorted(stats.items())
                if k not in ("b2_authorize_account", "b2_get_upload_url", "b2_get_upload_part_url")
            }
            run.requests[name] = " ".join(f"{k}={v}" for k, v in interesting.items())

    def mount(self, url: str, env: dict[str, str], tag: str) -> Daemon:
        d = Daemon(
            url,
            self.work / tag / "mnt",
            self.work / tag / "cache",
            self.key_args,
            env,
            self.work / tag / "mount.log",
        )
        return d

    def clear_read_cache(self, tag: str) -> None:
        for chunks in (self.work / tag / "cache").glob("*/chunks"):
            shutil.rmtree(chunks)

    # --- phases ------------------------------------------------------------------------

    def seed_bigdir(self, kind: str, server: Server | None, store_root: Path | None) -> None:
        """``dir_files`` real pairs (one sealed pair is valid under any name)."""
        key_object, content, key_info, content_info = sealed_pair(self.key_args, b"one of many\n")
        mtime_ms = SEED_MTIME_MS
        names = [f"{BIGDIR}/f{i:05d}.txt" for i in range(self.args.dir_files)]
        if server is not None:
            server.seed([n + ".key.enc" for n in names], key_object, key_info)
            server.seed([n + ".enc" for n in names], content, content_info)
            return
        assert store_root is not None
        (store_root / BIGDIR).mkdir(parents=True, exist_ok=True)
        for n in names:
            for suffix, data, info in ((".key.enc", key_object, key_info),
                                       (".enc", content, content_info)):  # fmt: skip
                path = store_root / (n + suffix)
                path.write_bytes(data)
                os.setxattr(path, "user.b2cryptfs.info", json.dumps(info).encode())
                os.utime(path, ns=(mtime_ms * 1_000_000, mtime_ms * 1_000_000))

    def ls_phase(self, mnt: Path) -> dict[str, float]:
        started = time.monotonic()
        res = subprocess.run(
            ["ls", "-l", str(mnt / BIGDIR)], capture_output=True, text=True, check=True
        )
        elapsed = time.monotonic() - started
        lines = res.stdout.count("\n") - 1
        if lines != self.args.dir_files:
            raise RuntimeError(f"ls -l listed {lines} files, expected {self.args.dir_files}")
        return {"ls_s": elapsed}

    def write_phase(self, mnt: Path) -> dict[str, float]:
        path = mnt / BIGFILE
        started = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for i in range(self.args.size_mib):
                view = memoryview(self.blocks.block(i))
                while view:
                    view = view[os.write(fd, view) :]
            written = time.monotonic()
            os.fsync(fd)
            synced = time.monotonic()
        finally:
            os.close(fd)
        return {
            "write_mibps": self.args.size_mib / (written - started),
            "write_upload_s": synced - started,
        }

    def small_phase(self, mnt: Path, daemon: Daemon, cap: float) -> dict[str, float]:
        base = mnt / SMALLDIR
        base.mkdir()
        payload = os.urandom(4096)
        started = time.monotonic()
        for i in range(self.args.small_files):
            fd = os.open(base / f"s{i:04d}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
        created = time.monotonic()
        while daemon.outbox_pending():
            if time.monotonic() - started > cap:
                raise PhaseTimeout("uploads still pending")
            time.sleep(0.05)
        uploaded = time.monotonic()
        return {
            "small_fps": self.args.small_files / (created - started),
            "small_upload_s": uploaded - started,
        }

    def seq_read(self, mnt: Path, key: str) -> dict[str, float]:
        elapsed = timed_seq_read(mnt / BIGFILE, self.blocks, self.size, self.want_crc, key)
        return {key: self.size / MIB / elapsed}

    def random_reads(self, mnt: Path, key: str, count: int, seed: int) -> dict[str, float]:
        elapsed = timed_random_reads(mnt / BIGFILE, self.blocks, self.size, count, seed, key)
        return {key: count / elapsed}

    # --- one store ---------------------------------------------------------------------

    def run_store(self, kind: str, rep: int) -> Run:
        args = self.args
        run = Run()
        run.requests["_store"] = f"{kind}{rep}"
        tag = f"{kind}-{rep}"
        (self.work / tag).mkdir()
        server = None
        store_root = None
        try:
            if kind == "b2":
                server = Server(args.latency_ms, args.bandwidth_mbps, self.work / tag)
                url, env = f"b2://{server.bucket}", server.env
            else:
                store_root = self.work / tag / "store"
                store_root.mkdir()
                url, env = str(store_root), {}
            if "ls" in self.phases:
                self.seed_bigdir(kind, server, store_root)
            cap = args.phase_cap
            rss_reads: list[float] = []

            def session(name: str, body: Callable[[Daemon], None]) -> float:
                if not self.phases & set(SESSIONS[name]):
                    return 0.0
                d = self.mount(url, env, tag)
                try:
                    body(d)
                    rss = d.peak_rss() / 1e6
                except BaseException:
                    d.kill()
                    raise
                d.unmount()
                return rss

            def s1(d: Daemon) -> None:
                mnt = d.mountpoint
                self.phase(run, "ls", d, server, lambda: self.ls_phase(mnt), cap)
                self.phase(run, "write", d, server, lambda: self.write_phase(mnt), cap)
                self.phase(run, "small", d, server, lambda: self.small_phase(mnt, d, cap), cap)

            run.values["rss_write_mb"] = session("write", s1)

            def s2(d: Daemon) -> None:
                mnt = d.mountpoint
                self.phase(
                    run, "rand_cold", d, server,
                    lambda: self.random_reads(mnt, "rand_cold_ops", args.random_reads, rep), cap,
                )  # fmt: skip

            self.clear_read_cache(tag)
            rss_reads.append(session("rand_cold", s2))

            def s3(d: Daemon) -> None:
                mnt = d.mountpoint
                self.phase(
                    run, "read_cold", d, server, lambda: self.seq_read(mnt, "read_cold_mibps"), cap
                )
                self.phase(
                    run, "read_hot", d, server, lambda: self.seq_read(mnt, "read_hot_mibps"), cap
                )

            self.clear_read_cache(tag)
            rss_reads.append(session("read_cold", s3))

            def s4(d: Daemon) -> None:
                mnt = d.mountpoint
                self.phase(
                    run, "rand_warm", d, server,
                    lambda: self.random_reads(mnt, "rand_warm_ops", args.random_reads, rep + 99),
                    cap,
                )  # fmt: skip
                self.phase(
                    run, "read_warm", d, server, lambda: self.seq_read(mnt, "read_warm_mibps"), cap
                )

            rss_reads.append(session("read_warm", s4))
            run.values["rss_read_mb"] = max(rss_reads)
        except (PhaseTimeout, RuntimeError, subprocess.CalledProcessError) as exc:
            run.notes.append(f"stopped: {exc}")
        finally:
            if server is not None:
                server.stop()
            if not args.keep:
                shutil.rmtree(self.work / tag, ignore_errors=True)
        return run


def print_table(args: argparse.Namespace, results: dict[str, list[Run]]) -> None:
    stores = list(results)
    fmt_args = dict(size=args.size_mib, small=args.small_files, dir_files=args.dir_files)
    width = 42
    head = f"{'phase':{width}} {'unit':>7}" + "".join(f" {s:>22}" for s in stores)
    print()
    print(
        f"b2cryptfs mount benchmark: B2 loopback latency {args.latency_ms:g} ms, bandwidth "
        f"{args.bandwidth_mbps or 'unlimited'} Mbit/s; {args.repeat} run(s), median [min-max]"
    )
    print(head)
    print("-" * len(head))
    for m in METRICS:
        cells = []
        for s in stores:
            vals = [r.values[m.key] for r in results[s] if m.key in r.values]
            if not vals:
                cells.append(f"{'-':>22}")
                continue
            cell = m.fmt.format(median(vals))
            if len(vals) > 1:
                cell += f" [{m.fmt.format(min(vals))}-{m.fmt.format(max(vals))}]"
            cells.append(f" {cell:>22}")
        print(f"{m.label.format(**fmt_args):{width}} {m.unit:>7}" + "".join(cells))
    print()
    print("daemon CPU seconds per phase (median):")
    for s in stores:
        phases = sorted({p for r in results[s] for p in r.cpu})
        print(
            f"  {s}: "
            + ", ".join(
                f"{p} {median([r.cpu[p] for r in results[s] if p in r.cpu]):.1f}" for p in phases
            )  # fmt: skip
        )
    if "b2" in results and results["b2"]:
        print("B2 server requests per phase (last run):")
        last = results["b2"][-1]
        for p, text in last.requests.items():
            if not p.startswith("_"):
                print(f"  {p}: {text}")
    for s in stores:
        for i, r in enumerate(results[s]):
            for note in r.notes:
                print(f"note: {s} run {i + 1}: {note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", default="b2,dir", help="comma-separated: b2, dir")
    ap.add_argument("--size-mib", type=int, default=256, help="large file size")
    ap.add_argument("--latency-ms", type=float, default=30, help="B2 server reply delay")
    ap.add_argument("--bandwidth-mbps", type=float, default=0, help="per connection; 0: none")
    ap.add_argument("--random-reads", type=int, default=300)
    ap.add_argument("--small-files", type=int, default=1000)
    ap.add_argument("--dir-files", type=int, default=10_000)
    ap.add_argument("--phase-cap", type=float, default=300, help="seconds per phase")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--only",
        help=f"comma-separated phases among {PHASES} (write always runs, read_cold with the "
        "warm ones)",
    )
    ap.add_argument("--json", help="also write every run's numbers to this file")
    ap.add_argument("--pyspy", help="profile each phase with py-spy into this directory")
    ap.add_argument("--pyspy-gil", action="store_true", help="py-spy samples the GIL holder")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if set(stores) - {"b2", "dir"}:
        ap.error("--stores takes b2 and/or dir")
    if args.only and set(args.only.split(",")) - set(PHASES):
        ap.error(f"--only takes phases among {PHASES}")
    if args.pyspy:
        os.makedirs(args.pyspy, exist_ok=True)
    results: dict[str, list[Run]] = {s: [] for s in stores}
    work = Path(tempfile.mkdtemp(prefix="b2cryptfs-mountbench-"))
    try:
        bench = Bench(args, work, make_keys(work / "keys"))
        for rep in range(args.repeat):
            for s in stores:
                started = time.monotonic()
                run = bench.run_store(s, rep)
                results[s].append(run)
                print(
                    f"run {rep + 1}/{args.repeat} {s}: {time.monotonic() - started:.0f} s "
                    + json.dumps({k: round(v, 2) for k, v in run.values.items()}),
                    flush=True,
                )
        print_table(args, results)
        if args.json:
            dump: dict[str, Any] = {
                "args": vars(args),
                "runs": {
                    s: [
                        dict(values=r.values, cpu=r.cpu, requests=r.requests, notes=r.notes)
                        for r in runs
                    ]  # fmt: skip
                    for s, runs in results.items()
                },
            }
            Path(args.json).write_text(json.dumps(dump, indent=1))
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.notes for runs in results.values() for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
