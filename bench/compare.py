"""b2cryptfs, rclone crypt and the Backblaze sample scripts side by side on one loopback B2.

    python3 bench/compare.py [--quick] [--runs 3] [--latencies 0,20] [--out bench/results]

Systems, each on a fresh loopback server (tests/b2server.py) per run:

- ``b2cryptfs``: the real mount (age format, plaintext names) in a subprocess;
- ``rclone``: ``rclone mount`` of a crypt remote (``filename_encryption = off``) over a b2
  remote whose endpoint is the server, ``--vfs-cache-mode writes --vfs-write-back 0s``;
- ``seed``: the sample's per-file openssl + ``b2`` commands (W1/W2/W4 only).

Workloads (W1-W8 of issue 11): W1 ``dd bs=1M`` of a file (until dd returns, until every
object is stored), W2 cold sequential read on a fresh mount, W3 random 4 KiB reads cold,
W4 N x 4 KiB files (until the last close, until all stored, read back on a fresh mount),
W5 ``ls -l`` of a D-file directory on a fresh mount, W6 ``mv`` of a directory of 100
files, W7 mount until usable (mounted and the root listed, showing the files seeded
there), W8 the daemon's peak RSS (VmHWM of its process tree) in the write and in the read
session. Systems are interleaved run by run; every ratio
(b2cryptfs / rclone, lower is better) comes from one run; the report gives the median and
min-max over runs. A missing tool is reported as skipped. Writes ``compare.json``,
``compare.md`` and (with matplotlib, the ``bench`` extra) ``compare.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mountkit import (  # noqa: E402
    MIB,
    ROOT,
    Blocks,
    Daemon,
    PhaseTimeout,
    Server,
    force_unmount,
    make_keys,
    median,
    run_capped,
    sealed_pair,
    timed_random_reads,
    timed_seq_read,
    vm_hwm,
    wait_mounted,
)

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "t7_cli"))  # the seed procedure test

RCLONE = shutil.which("rclone")
B2_TOOL = shutil.which("b2")
OPENSSL = shutil.which("openssl")
SYSTEMS = ("b2cryptfs", "rclone", "seed")
BIG = "big.bin"
SMALL = "small"
LISTDIR = "listdir"
MVDIR = "mvsrc"
MV_FILES = 100
SEEDED_TEXT = b"one of many\n"
SMALL_SIZE = 4096
W7_ROOT = [f"w7-{i}.txt" for i in range(5)]  # in the root when W7 mounts (seeded)


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    short: str


METRICS = [
    Metric("w1_dd_s", "W1 `dd bs=1M` {size}: until dd returns", "s", "W1 dd returns"),
    Metric("w1_stored_s", "W1 until all objects are stored", "s", "W1 stored"),
    # Not a target: what the loopback server (B2's stand-in, on this machine's cores) spent
    # taking the upload in; in a VM its fresh pages cost about as much as the client's work.
    Metric("w1_server_cpu_s", "W1 loopback server CPU until stored", "s", "W1 server CPU"),
    Metric("w2_read_s", "W2 cold sequential read {size}", "s", "W2 cold seq read"),
    Metric("w3_rand_s", "W3 {reads} random 4 KiB reads, cold", "s", "W3 random reads"),
    Metric(
        "w4_create_s",
        "W4 create {small} x 4 KiB: until the last close",
        "s",
        "W4 create (last close)",
    ),
    Metric("w4_stored_s", "W4 until all stored", "s", "W4 stored"),
    Metric("w4_readback_s", "W4 read them back on a fresh mount", "s", "W4 read back"),
    Metric("w5_ls_s", "W5 `ls -l` of {dir} files, fresh mount", "s", "W5 ls -l"),
    Metric("w6_mv_s", "W6 `mv` of a directory of 100 files", "s", "W6 mv dir"),
    Metric("w7_mount_s", "W7 mount until the root is listed", "s", "W7 mount"),
    Metric("w8_rss_write_mb", "W8 daemon peak RSS, writing", "MB", "W8 RSS writing"),
    Metric("w8_rss_read_mb", "W8 daemon peak RSS, reading", "MB", "W8 RSS reading"),
]
# Server request classes reported for W4, W5 and W6.
CLASSES = {
    "list": ("b2_list_file_names", "b2_list_file_versions"),
    "upload": ("b2_upload_file", "b2_upload_part"),
    "download": ("b2_download_file_by_id", "b2_download_file_by_name"),
    "copy": ("b2_copy_file", "b2_copy_part"),
    "hide/delete": ("b2_hide_file", "b2_delete_file_version"),
}
COUNTED = ("w4_write", "w4_readback", "w5_ls", "w6_mv")


def request_classes(stats: dict[str, int]) -> dict[str, int]:
    return {c: sum(stats.get(k, 0) for k in kinds) for c, kinds in CLASSES.items()}


# --- cleanup that survives Ctrl-C ------------------------------------------------------------


class Cleanup:
    """Everything started (mounts, servers, temp dirs), undone in reverse order at exit."""

    def __init__(self) -> None:
        self._undo: dict[int, Callable[[], None]] = {}
        self._next = 0

    def add(self, fn: Callable[[], None]) -> int:
        self._next += 1
        self._undo[self._next] = fn
        return self._next

    def done(self, token: int) -> None:
        self._undo.pop(token, None)

    def run_all(self) -> None:
        for token in sorted(self._undo, reverse=True):
            try:
                self._undo.pop(token)()
            except Exception as exc:  # noqa: BLE001 - clean up the rest regardless
                print(f"cleanup: {exc}", file=sys.stderr)


CLEANUP = Cleanup()


def tree_peak_rss(pid: int) -> int:
    """Sum of VmHWM over a process and its descendants (a daemon may fork helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += vm_hwm(p)
        todo.extend(children.get(p, []))
    return total


# --- the mounts ------------------------------------------------------------------------------


class RcloneMount:
    """``rclone mount sec: MNT`` in the foreground, same interface as _mountkit.Daemon."""

    def __init__(
        self,
        conf: Path,
        mountpoint: Path,
        cache_dir: Path,
        log_path: Path,
        root: list[str] | None = None,
    ) -> None:
        assert RCLONE is not None
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.mountpoint = mountpoint
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in unmount()/kill()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "B2_"))}
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [RCLONE, "mount", "sec:", str(mountpoint), "--config", str(conf),
             "--cache-dir", str(cache_dir), "--vfs-cache-mode", "writes",
             "--vfs-write-back", "0s"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        self.pid = self.proc.pid
        self.mount_seconds = wait_mounted(self.proc, mountpoint, started, self._log, root)

    def unmount(self, timeout: float = 300) -> None:
        try:
            force_unmount(self.mountpoint)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise PhaseTimeout(f"rclone still running {timeout:.0f} s after unmount") from None
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        force_unmount(self.mountpoint)
        self._log.close()


@dataclass
class Result:
    values: dict[str, float] = field(default_factory=dict)
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.blocks = Blocks()
        self.size = args.size_mib * MIB
        self.want_crc = self.blocks.checksum(args.size_mib)
        self.key_args = make_keys(work / "keys")
        self.pair = sealed_pair(self.key_args, SEEDED_TEXT)
        self.source = work / "source.bin"  # dd's input, on local disk
        with open(self.source, "wb") as f:
            for i in range(args.size_mib):
                f.write(self.blocks.block(i))
        self.small_payload = random.Random(7).randbytes(SMALL_SIZE)
        self._sessions = 0

    # --- per system -------------------------------------------------------------------

    def objects(self, system: str, rel: str) -> list[str]:
        """The object names one file is stored as."""
        return [rel + ".bin"] if system == "rclone" else [rel + ".enc", rel + ".key.enc"]

    def seed_tree(self, system: str, server: Server, names: list[str]) -> None:
        """Files holding SEEDED_TEXT, stored directly on the server (not counted)."""
        if system == "b2cryptfs":
            key_object, content, key_info, content_info = self.pair
            server.seed([n + ".key.enc" for n in names], key_object, key_info)
            server.seed([n + ".enc" for n in names], content, content_info)
        else:
            # rclone crypt: a 32-byte header, then 16 bytes of MAC per 64 KiB block. A listing
            # reads sizes only, and a server-side copy copies bytes, so same-size filler is
            # what these two workloads see of a real file.
            size = 32 + len(SEEDED_TEXT) + 16
            server.seed(
                [n + ".bin" for n in names], b"\0" * size, {"src_last_modified_millis": "0"}
            )

    def rclone_conf(self, server: Server, where: Path) -> Path:
        def obscure(secret: str) -> str:
            assert RCLONE is not None
            return subprocess.run(
                [RCLONE, "obscure", secret], capture_output=True, text=True, check=True
            ).stdout.strip()

        conf = where / "rclone.conf"
        conf.write_text(
            "[b2]\ntype = b2\n"
            f"account = {server.env['B2_APPLICATION_KEY_ID']}\n"
            f"key = {server.env['B2_APPLICATION_KEY']}\n"
            f"endpoint = {server.base}\n\n"
            f"[sec]\ntype = crypt\nremote = b2:{server.bucket}\n"
            "filename_encryption = off\ndirectory_name_encryption = false\n"
            f"password = {obscure('bench password one')}\n"
            f"password2 = {obscure('bench password two')}\n"
        )
        conf.chmod(0o600)
        return conf

    def mount(
        self, system: str, server: Server, where: Path, root: list[str] | None = None
    ) -> Daemon | RcloneMount:
        """A fresh mount with an empty cache directory, registered for cleanup; ``root``:
        the names its root must list before it counts as mounted (W7)."""
        self._sessions += 1
        cache = where / f"cache{self._sessions}"
        log = where / f"{system}.log"
        m: Daemon | RcloneMount
        if system == "b2cryptfs":
            m = Daemon(
                f"b2://{server.bucket}", where / "mnt", cache, self.key_args, server.env, log,
                root=root,
            )  # fmt: skip
        else:
            m = RcloneMount(where / "rclone.conf", where / "mnt", cache, log, root)
        m.cleanup_token = CLEANUP.add(m.kill)  # type: ignore[union-attr]
        return m

    def unmount(self, m: Daemon | RcloneMount) -> None:
        try:
            m.unmount()
        finally:
            CLEANUP.done(m.cleanup_token)  # type: ignore[union-attr]

    # --- waiting for the server -------------------------------------------------------

    def wait_stored(self, server: Server, names: list[str], started: float) -> float:
        """Seconds from ``started`` until every name is a stored version on the server.

        The cheap counters say when enough uploads finished; only then is the listing read.
        """
        want = set(names)
        while True:
            stats = server.stats()
            done = stats.get("b2_upload_file", 0) + stats.get("b2_finish_large_file", 0)
            if done >= len(want):
                stored = {v["fileName"] for v in server.file_versions() if v["action"] == "upload"}
                if want <= stored:
                    return time.monotonic() - started
            time.sleep(0.05)

    # --- workloads on a mount -----------------------------------------------------------

    def w1(self, mnt: Path, system: str, server: Server) -> dict[str, float]:
        cpu = server.cpu()
        started = time.monotonic()
        subprocess.run(
            ["dd", f"if={self.source}", f"of={mnt / BIG}", "bs=1M"],
            check=True, capture_output=True,
        )  # fmt: skip
        dd = time.monotonic() - started
        stored = self.wait_stored(server, self.objects(system, BIG), started)
        return {"w1_dd_s": dd, "w1_stored_s": stored, "w1_server_cpu_s": server.cpu() - cpu}

    def w2(self, mnt: Path) -> dict[str, float]:
        elapsed = timed_seq_read(mnt / BIG, self.blocks, self.size, self.want_crc, "W2")
        return {"w2_read_s": elapsed, "w2_mibps": self.size / MIB / elapsed}

    def w3(self, mnt: Path, seed: int) -> dict[str, float]:
        return {
            "w3_rand_s": timed_random_reads(
                mnt / BIG, self.blocks, self.size, self.args.reads, seed, "W3"
            )
        }

    def small_names(self) -> list[str]:
        return [f"{SMALL}/s{i:05d}" for i in range(self.args.small_files)]

    def w4_create(self, mnt: Path, system: str, server: Server) -> dict[str, float]:
        (mnt / SMALL).mkdir()
        names = self.small_names()
        started = time.monotonic()
        for rel in names:
            fd = os.open(mnt / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, self.small_payload)
            finally:
                os.close(fd)
        created = time.monotonic() - started
        objects = [o for rel in names for o in self.objects(system, rel)]
        stored = self.wait_stored(server, objects, started)
        return {"w4_create_s": created, "w4_stored_s": stored}

    def w4_readback(self, mnt: Path) -> dict[str, float]:
        started = time.monotonic()
        for rel in self.small_names():
            with open(mnt / rel, "rb") as f:
                if f.read() != self.small_payload:
                    raise RuntimeError(f"W4: {rel} read back wrong")
        return {"w4_readback_s": time.monotonic() - started}

    def w5(self, mnt: Path) -> dict[str, float]:
        started = time.monotonic()
        res = subprocess.run(["ls", "-l", str(mnt / LISTDIR)], capture_output=True, text=True)
        elapsed = time.monotonic() - started
        lines = res.stdout.count("\n") - 1
        if res.returncode != 0 or lines != self.args.dir_files:
            raise RuntimeError(f"W5: ls -l listed {lines} files: {res.stderr[-300:]}")
        return {"w5_ls_s": elapsed}

    def w6(self, mnt: Path) -> dict[str, float]:
        started = time.monotonic()
        res = subprocess.run(
            ["mv", str(mnt / MVDIR), str(mnt / "mvdst")], capture_output=True, text=True
        )
        elapsed = time.monotonic() - started
        if res.returncode != 0:
            raise RuntimeError(f"W6: mv failed: {res.stderr.strip()[-300:]}")
        moved = len(os.listdir(mnt / "mvdst"))
        if moved != MV_FILES or os.path.exists(mnt / MVDIR):
            raise RuntimeError(f"W6: {moved} files in the target after mv")
        return {"w6_mv_s": elapsed}

    # --- one system, one run ------------------------------------------------------------

    def run_mounted(self, system: str, server: Server, where: Path, rep: int) -> Result:
        res = Result()
        cap = self.args.cap
        if system == "rclone":
            self.rclone_conf(server, where)

        def session(
            body: Callable[[Daemon | RcloneMount], None], root: list[str] | None = None
        ) -> None:
            m = self.mount(system, server, where, root)
            try:
                body(m)
            except BaseException:
                m.kill()
                CLEANUP.done(m.cleanup_token)  # type: ignore[union-attr]
                raise
            self.unmount(m)

        def timed(name: str, fn: Callable[[], dict[str, float]], counted: bool = False) -> None:
            server.reset()
            res.values.update(run_capped(fn, cap))
            if counted:
                res.requests[name] = request_classes(server.stats())

        only = self.args.only  # the workloads asked for (all when empty)

        def want(*tags: str) -> bool:
            return not only or any(t in only for t in tags)

        def a(m: Daemon | RcloneMount) -> None:
            res.values["w7_mount_s"] = m.mount_seconds
            if want("W1", "W8"):
                timed("w1", lambda: self.w1(m.mountpoint, system, server))
                res.values["w8_rss_write_mb"] = tree_peak_rss(m.pid) / 1e6

        def b(m: Daemon | RcloneMount) -> None:
            timed("w2", lambda: self.w2(m.mountpoint))
            res.values["w8_rss_read_mb"] = tree_peak_rss(m.pid) / 1e6

        def c(m: Daemon | RcloneMount) -> None:
            timed("w3", lambda: self.w3(m.mountpoint, rep))

        def d(m: Daemon | RcloneMount) -> None:
            timed("w4_write", lambda: self.w4_create(m.mountpoint, system, server), True)

        def e(m: Daemon | RcloneMount) -> None:
            if want("W5"):
                timed("w5_ls", lambda: self.w5(m.mountpoint), True)
            if want("W4"):
                timed("w4_readback", lambda: self.w4_readback(m.mountpoint), True)
            if want("W6"):
                timed("w6_mv", lambda: self.w6(m.mountpoint), True)

        # W7 counts until the root is listed, and right: a mount that is live before it can
        # serve (an empty listing) is no faster mount.
        self.seed_tree(system, server, W7_ROOT)
        steps = [(a, True), (b, want("W2", "W8")), (c, want("W3")), (d, want("W4"))]
        for step, wanted in steps:
            if wanted:
                session(step, W7_ROOT if step is a else None)
        if want("W5"):
            self.seed_tree(
                system, server, [f"{LISTDIR}/f{i:05d}.txt" for i in range(self.args.dir_files)]
            )
        if want("W6"):
            self.seed_tree(system, server, [f"{MVDIR}/m{i:03d}.txt" for i in range(MV_FILES)])
        if want("W4", "W5", "W6"):
            session(e)
        return res

    def run_seed(self, server: Server, where: Path) -> Result:
        """The sample's per-file commands (imported from the test that runs them verbatim)."""
        from openssl_testutil import openssl_keypair
        from test_b2_seed_procedure import SEED_DOWNLOAD_AND_DECRYPT, SEED_ENCRYPT_AND_UPLOAD

        res = Result()
        priv, pub, pwfile = openssl_keypair(where / "keys")
        env = {k: v for k, v in os.environ.items() if not k.startswith("B2")}
        env.update(server.env, BUCKET=server.bucket, PUB=str(pub), PRIV=str(priv))
        env.update(PWFILE=str(pwfile), HOME=str(where), B2_ACCOUNT_INFO=str(where / "b2acct"))

        def sh(script: str, cwd: Path, name: str) -> None:
            p = subprocess.run(
                ["bash", "-c", script], env={**env, "F": name}, cwd=cwd,
                capture_output=True, text=True, timeout=self.args.cap,
            )  # fmt: skip
            if p.returncode != 0:
                raise RuntimeError(f"seed script on {name}: {p.stderr.strip()[-300:]}")

        up, down = where / "up", where / "down"
        (up / SMALL).mkdir(parents=True)
        (down / SMALL).mkdir(parents=True)
        shutil.copyfile(self.source, up / BIG)
        server.reset()
        started = time.monotonic()
        sh(SEED_ENCRYPT_AND_UPLOAD, up, BIG)
        res.values["w1_stored_s"] = time.monotonic() - started
        (up / BIG).unlink()
        started = time.monotonic()
        sh(SEED_DOWNLOAD_AND_DECRYPT, down, BIG)
        res.values["w2_read_s"] = time.monotonic() - started
        crc = 0
        with open(down / BIG, "rb") as f:
            while data := f.read(MIB):
                crc = zlib.crc32(data, crc)
        if crc != self.want_crc:
            raise RuntimeError("seed W2: the downloaded file differs")
        (down / BIG).unlink()

        # Per file, as the sample is: k files timed, scaled to N when k < N (said in notes).
        names = self.small_names()[: self.args.seed_files]
        scale = self.args.small_files / len(names)
        for rel in names:
            (up / rel).write_bytes(self.small_payload)
        started = time.monotonic()
        for rel in names:
            sh(SEED_ENCRYPT_AND_UPLOAD, up, rel)
        res.values["w4_stored_s"] = (time.monotonic() - started) * scale
        started = time.monotonic()
        for rel in names:
            sh(SEED_DOWNLOAD_AND_DECRYPT, down, rel)
        res.values["w4_readback_s"] = (time.monotonic() - started) * scale
        for rel in names:
            if (down / rel).read_bytes() != self.small_payload:
                raise RuntimeError(f"seed W4: {rel} read back wrong")
        if scale != 1:
            res.notes.append(
                f"W4 timed on {len(names)} files, scaled x{scale:g} to {self.args.small_files}"
            )
        return res

    def run_one(self, system: str, latency: float, rep: int) -> Result:
        where = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=self.work))
        token = CLEANUP.add(lambda: shutil.rmtree(where, ignore_errors=True))
        server = Server(latency, 0, where)
        stop_token = CLEANUP.add(server.stop)
        try:
            if system == "seed":
                return self.run_seed(server, where)
            return self.run_mounted(system, server, where, rep)
        except (PhaseTimeout, RuntimeError, subprocess.SubprocessError, OSError) as exc:
            r = Result()
            r.notes.append(f"stopped: {exc}")
            return r
        finally:
            server.stop()
            CLEANUP.done(stop_token)
            if not self.args.keep:
                shutil.rmtree(where, ignore_errors=True)
                CLEANUP.done(token)


def missing_tools() -> dict[str, str]:
    """System -> why it is skipped."""
    out = {}
    if RCLONE is None:
        out["rclone"] = "rclone is not installed"
    elif not os.path.exists("/dev/fuse"):
        out["rclone"] = "no /dev/fuse"
    need = [t for t, p in (("b2", B2_TOOL), ("openssl", OPENSSL)) if p is None]
    if need:
        out["seed"] = f"{' and '.join(need)} not installed"
    return out


# --- report ----------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(results: dict[str, dict[str, list[Result]]]) -> dict[str, Any]:
    """Per latency: per metric the systems' spreads and the same-run ratio spread."""
    out: dict[str, Any] = {}
    for lat, per_system in results.items():
        rows = {}
        for m in METRICS:
            row: dict[str, Any] = {}
            for s, runs in per_system.items():
                row[s] = spread([r.values[m.key] for r in runs if m.key in r.values])
            b2c, rcl = per_system.get("b2cryptfs", []), per_system.get("rclone", [])
            ratios = [
                x.values[m.key] / y.values[m.key]
                for x, y in zip(b2c, rcl, strict=False)
                if m.key in x.values and y.values.get(m.key)
            ]
            row["ratio"] = spread(ratios)
            rows[m.key] = row
        out[lat] = rows
    return out


def fmt(sp: dict[str, float] | None, digits: int = 2) -> str:
    if sp is None:
        return "-"
    cell = f"{sp['median']:.{digits}f}"
    if sp["n"] > 1:
        cell += f" [{sp['min']:.{digits}f}–{sp['max']:.{digits}f}]"
    return cell


def markdown(args: argparse.Namespace, results, summary, skipped: dict[str, str]) -> str:
    labels = dict(
        size=f"{args.size_mib} MiB", small=f"{args.small_files:,}", dir=f"{args.dir_files:,}",
        reads=f"{args.reads:,}",
    )  # fmt: skip
    lats = list(summary)
    lines = [
        f"Ratio b2cryptfs / rclone, same run, median [min–max] of {args.runs} run(s); "
        "lower is better.",
        "",
        "| workload | " + " | ".join(f"{lat} ms" for lat in lats) + " |",
        "|---|" + "---|" * len(lats),
    ]
    for m in METRICS:
        cells = [fmt(summary[lat][m.key]["ratio"]) for lat in lats]
        lines.append(f"| {m.label.format(**labels)} | " + " | ".join(cells) + " |")
    systems = [s for s in SYSTEMS if s not in skipped]
    for lat in lats:
        lines += ["", f"Absolute values at {lat} ms, median [min–max]:", ""]
        lines.append("| workload | unit | " + " | ".join(systems) + " |")
        lines.append("|---|---|" + "---|" * len(systems))
        for m in METRICS:
            cells = [fmt(summary[lat][m.key].get(s), 2 if m.unit == "s" else 0) for s in systems]
            lines.append(f"| {m.label.format(**labels)} | {m.unit} | " + " | ".join(cells) + " |")
    lines += ["", "Server requests (last run): list / upload / download / copy / hide+delete", ""]
    lines.append("| latency | system | " + " | ".join(COUNTED) + " |")
    lines.append("|---|---|" + "---|" * len(COUNTED))
    for lat in lats:
        for s in ("b2cryptfs", "rclone"):
            runs = results[lat].get(s) or []
            if not runs:
                continue
            req = runs[-1].requests
            cells = [
                " / ".join(str(v) for v in req[w].values()) if w in req else "-" for w in COUNTED
            ]
            lines.append(f"| {lat} ms | {s} | " + " | ".join(cells) + " |")
    notes = [f"- {s} skipped: {why}" for s, why in skipped.items()]
    for lat in lats:
        for s, runs in results[lat].items():
            for i, r in enumerate(runs):
                notes += [f"- {lat} ms, {s}, run {i + 1}: {n}" for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def chart(args: argparse.Namespace, summary: dict[str, Any], path: Path) -> str | None:
    """A PNG of the ratios; returns why not if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install -e .[bench]): no chart"
    lats = list(summary)
    keys = [m for m in METRICS if any(summary[lat][m.key]["ratio"] for lat in lats)]
    if not keys:
        return "no ratio to chart"
    fig, ax = plt.subplots(figsize=(9, 0.25 * len(keys) * len(lats) + 1.8))
    height = 0.8 / len(lats)
    for j, lat in enumerate(lats):
        ys, xs, lo, hi = [], [], [], []
        for i, m in enumerate(keys):
            sp = summary[lat][m.key]["ratio"]
            if sp is None:
                continue
            ys.append(i + (j - (len(lats) - 1) / 2) * height)
            xs.append(sp["median"])
            lo.append(sp["median"] - sp["min"])
            hi.append(sp["max"] - sp["median"])
        # Bars grow from 1 (parity): left of it b2cryptfs wins, right of it rclone.
        widths = [x - 1 for x in xs]
        ax.barh(ys, widths, left=1, height=height, label=f"{lat} ms RTT")
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="none", ecolor="black", capsize=2, linewidth=1)
    ax.axvline(1.0, color="black", linewidth=1)
    spans = [summary[lat][m.key]["ratio"] for lat in lats for m in keys]
    lo_x = min(sp["min"] for sp in spans if sp) / 1.3
    hi_x = max(sp["max"] for sp in spans if sp) * 1.3
    ax.set_xlim(lo_x, hi_x)
    ax.set_xscale("log")
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([m.short for m in keys])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if lo_x <= t <= hi_x])
    ax.invert_yaxis()
    ax.set_xlabel("b2cryptfs / rclone (same run; < 1: b2cryptfs faster or smaller)")
    ax.set_title(
        f"b2cryptfs vs rclone crypt mount, loopback B2: {args.size_mib} MiB file, "
        f"{args.small_files} small files, {args.dir_files}-file dir, {args.runs} run(s)",
        fontsize=9,
    )
    ax.legend(loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def compile_package() -> None:
    """Byte-compile b2cryptfs as an install does: without it, a PYTHONDONTWRITEBYTECODE
    environment recompiles every module at each mount and W7 measures the compiler."""
    import compileall

    compileall.compile_dir(str(ROOT / "b2cryptfs"), quiet=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, two runs (< 10 minutes)")
    ap.add_argument("--runs", type=int, help="runs per latency (default 3; --quick 2)")
    ap.add_argument("--latencies", default="0,20", help="server reply delays in ms")
    ap.add_argument("--size-mib", type=int, help="W1-W3 file size (1024; --quick 64)")
    ap.add_argument("--small-files", type=int, help="W4 files (1000; --quick 200)")
    ap.add_argument("--dir-files", type=int, help="W5 directory size (10000; --quick 2000)")
    ap.add_argument("--reads", type=int, default=1000, help="W3 random reads")
    ap.add_argument("--seed-files", type=int, help="W4 files the seed scripts run on (100; 10)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--cap", type=float, default=900, help="seconds per workload")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="report directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only", default="", help="workloads to run, e.g. W4,W7 (default all)")
    ap.add_argument("--chart-only", action="store_true", help="redraw the PNG from --out's JSON")
    args = ap.parse_args()
    if args.chart_only:
        dump = json.loads((Path(args.out) / "compare.json").read_text())
        why = chart(
            argparse.Namespace(**dump["args"]), dump["summary"], Path(args.out) / "compare.png"
        )
        print(why or f"wrote {args.out}/compare.png")
        return 0
    quick = args.quick
    for name, full, small in (("runs", 3, 2), ("size_mib", 1024, 64), ("small_files", 1000, 200),
                              ("dir_files", 10_000, 2000), ("seed_files", 100, 10)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.seed_files = max(1, min(args.seed_files, args.small_files))
    args.only = sorted({w.strip().upper() for w in args.only.split(",") if w.strip()})
    if set(args.only) - {f"W{i}" for i in range(1, 9)}:
        ap.error("--only takes workloads W1 to W8, e.g. --only W4,W7")
    latencies = [float(x) for x in args.latencies.split(",") if x.strip()]
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    if set(wanted) - set(SYSTEMS):
        ap.error(f"--systems takes {SYSTEMS}")
    skipped = {s: why for s, why in missing_tools().items() if s in wanted}
    systems = [s for s in wanted if s not in skipped]
    for s, why in skipped.items():
        print(f"{s}: skipped ({why})", flush=True)

    # SIGTERM ends the run like Ctrl-C: through the finally below.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in background
    work = Path(tempfile.mkdtemp(prefix="b2cryptfs-compare-"))
    CLEANUP.add(lambda: None if args.keep else shutil.rmtree(work, ignore_errors=True))
    results: dict[str, dict[str, list[Result]]] = {}
    started_all = time.monotonic()
    compile_package()
    try:
        bench = Bench(args, work)
        for lat in latencies:
            key = f"{lat:g}"
            results[key] = {s: [] for s in systems}
            for rep in range(args.runs):
                # Interleaved, and the order rotates so that no system always goes first.
                order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
                for s in order:
                    t0 = time.monotonic()
                    r = bench.run_one(s, lat, rep)
                    results[key][s].append(r)
                    shown = {k: round(v, 2) for k, v in r.values.items()}
                    print(
                        f"{key} ms run {rep + 1}/{args.runs} {s}: {time.monotonic() - t0:.0f} s "
                        f"{json.dumps(shown)} {' '.join(r.notes)}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        CLEANUP.run_all()
        if args.keep:
            print(f"work directory kept: {work}")

    summary = summarize(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(args, results, summary, skipped)
    machine = f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    md += f"\nMachine: {machine}; total {time.monotonic() - started_all:.0f} s.\n"
    (out / "compare.md").write_text(md)
    shown_args = dict(vars(args))
    # No machine paths in a report that may be committed.
    shown_args["out"] = (
        os.path.relpath(out.resolve(), ROOT) if out.resolve().is_relative_to(ROOT) else out.name
    )
    dump = {
        "args": shown_args,
        "skipped": skipped,
        "summary": summary,
        "runs": {
            lat: {s: [vars(r) for r in runs] for s, runs in per.items()}
            for lat, per in results.items()
        },
        "machine": machine,
    }
    (out / "compare.json").write_text(json.dumps(dump, indent=1))
    why = chart(args, summary, out / "compare.png")
    print(md)
    if why:
        print(why)
    print(f"wrote {out}/compare.md, compare.json" + ("" if why else ", compare.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
