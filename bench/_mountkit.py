"""Shared pieces of the mount benchmarks: keys, the loopback B2 server, a mount daemon.

Everything runs in subprocesses on loopback addresses: the B2 server (tests/b2server.py) and
the real mount (``python3 -m b2cryptfs mount … -f``, real FUSE). Nothing here is imported by
the product or the tests.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = ROOT / "tests" / "b2server.py"
CLI = [sys.executable, "-m", "b2cryptfs"]
FUSERMOUNT = shutil.which("fusermount3") or "/bin/fusermount3"
MIB = 1 << 20
T = TypeVar("T")


class PhaseTimeout(Exception):
    """A phase ran past its cap."""


def run_capped(fn: Callable[[], T], seconds: float) -> T:
    """Run ``fn`` in a thread; raise PhaseTimeout if it is still running after ``seconds``.

    A stuck filesystem call cannot be interrupted from Python: the caller then kills the
    daemon (auto_unmount makes the call fail) and the thread ends by itself.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise PhaseTimeout(f"over its {seconds:.0f} s cap")
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- data ----------------------------------------------------------------------------------


class Blocks:
    """Distinct 1 MiB blocks, cheap to make again: a small random pool, stamped per index."""

    def __init__(self, seed: int = 1, pool: int = 16) -> None:
        rnd = random.Random(seed)
        self._pool = [rnd.randbytes(MIB) for _ in range(pool)]

    def block(self, index: int) -> bytes:
        return index.to_bytes(8, "big") + self._pool[index % len(self._pool)][8:]

    def checksum(self, size_mib: int) -> int:
        crc = 0
        for i in range(size_mib):
            crc = zlib.crc32(self.block(i), crc)
        return crc


# --- keys ----------------------------------------------------------------------------------


def make_keys(directory: Path) -> list[str]:
    """A passphrase-protected RSA key pair; returns the mount's key arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    priv, pub, pf = directory / "priv.pem", directory / "pub.pem", directory / "passphrase"
    pf.write_text("bench passphrase\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(
        [*CLI, "keygen", "-o", str(priv), "--public-out", str(pub), "--passphrase-file", str(pf)],
        env=env, check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return ["--private-key", str(priv), "--passphrase-file", str(pf)]


def public_key(key_args: list[str]) -> str:
    priv = Path(key_args[key_args.index("--private-key") + 1])
    return str(priv.with_name("pub.pem"))


SEED_MTIME_MS = 1_700_000_000_000


def sealed_pair(key_args: list[str], plaintext: bytes) -> tuple[bytes, bytes, dict, dict]:
    """One age-sealed pair (key object, content, their file infos); valid under any name, so
    a benchmark can seed thousands of files with one seal."""
    import io

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from b2cryptfs.formats import get_codec
    from b2cryptfs.keys.loader import load_recipients

    out = io.BytesIO()
    sealed = get_codec("age").seal(
        io.BytesIO(plaintext), out, load_recipients(public_key(key_args))
    )
    key_info = {"b2cryptfs-format": "age"}
    content_info = {"b2cryptfs-format": "age", "src_last_modified_millis": str(SEED_MTIME_MS)}
    return sealed.key_object, out.getvalue(), key_info, content_info


# --- process accounting --------------------------------------------------------------------


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process, in bytes (0 if unknown)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def vm_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class RssSampler:
    """Samples a process's RSS in a thread (VmHWM says the peak, this says when)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.every):
            self.samples.append((time.monotonic() - start, vm_rss(self.pid)))

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._t.join()
        return self.samples


# --- the loopback B2 server ----------------------------------------------------------------


class Server:
    """tests/b2server.py in a subprocess, on 127.0.0.1."""

    def __init__(self, latency_ms: float, bandwidth_mbps: float, log_dir: Path) -> None:
        self._log = open(log_dir / "b2server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, str(SERVER_SCRIPT), "--host", "127.0.0.1", "--port", "0",
                "--latency-ms", str(latency_ms), "--bandwidth-mbps", str(bandwidth_mbps),
            ],
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = run_capped(self.proc.stdout.readline, 30).decode().strip()
        fields = dict(part.split("=", 1) for part in line.split())
        self.env = {k: v for k, v in fields.items() if k.startswith("B2_")}
        self.bucket = fields["BUCKET"]
        self.base = fields["B2_ENVIRONMENT"]
        if not self.base.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the server is not on loopback: {self.base}")

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data else "GET")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read() or b"{}")

    def stats(self) -> dict[str, int]:
        return dict(self._call("/test/stats").get("requests", {}))

    def reset(self) -> None:
        self._call("/test/reset", {})

    def seed(self, names: list[str], data: bytes, info: dict[str, str]) -> None:
        """Store ``data`` under every name (a server without ``data_b64`` stores filler of
        the same length, which is all a listing shows)."""
        import base64

        self._call(
            "/test/seed",
            {
                "bucket": self.bucket,
                "names": names,
                "size": len(data),
                "info": info,
                "data_b64": base64.b64encode(data).decode(),
            },
        )

    def file_versions(self) -> list[dict[str, Any]]:
        """Every stored version (name, action, length, info) of the bucket."""
        return list(self._call(f"/test/file_versions?bucket={self.bucket}"))

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- the mount -----------------------------------------------------------------------------


def is_mounted(path: Path) -> bool:
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 4 and parts[4] == target:
                return True
    return False


def force_unmount(path: Path) -> None:
    for _ in range(20):
        if not is_mounted(path):
            return
        if subprocess.run([FUSERMOUNT, "-u", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run([FUSERMOUNT, "-uz", str(path)], capture_output=True)


class Daemon:
    """One ``b2cryptfs mount -f`` process (the daemon is that very process). ``root``: the
    names its root must list once mounted (see wait_mounted)."""

    def __init__(
        self,
        store_url: str,
        mountpoint: Path,
        cache_dir: Path,
        key_args: list[str],
        env: dict[str, str],
        log_path: Path,
        extra: list[str] | None = None,
        root: list[str] | None = None,
    ) -> None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.mountpoint = mountpoint
        self.cache_dir = cache_dir
        argv = [
            *CLI, "mount", store_url, str(mountpoint), *key_args,
            "--cache-dir", str(cache_dir), "-o", "auto_unmount", "-f", *(extra or []),
        ]  # fmt: skip
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in unmount()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("B2")}
        child_env.update(env)
        child_env["PYTHONPATH"] = str(ROOT)
        started = time.monotonic()
        # cwd: ``python -m`` looks in the current directory first; this tree's code must run.
        self.proc = subprocess.Popen(
            argv,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=ROOT,
        )
        self.pid = self.proc.pid
        self.mount_seconds = wait_mounted(self.proc, mountpoint, started, self._log, root)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def peak_rss(self) -> int:
        return vm_hwm(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def outbox_pending(self) -> int:
        """Sealed files not yet uploaded (manifests in the store's outbox directory)."""
        n = 0
        for outbox in self.cache_dir.glob("*/outbox"):
            n += sum(1 for p in outbox.iterdir() if p.suffix == ".json")
        return n

    def unmount(self, timeout: float = 300) -> float:
        """Unmount and wait for the daemon (its outbox drain included); seconds taken."""
        started = time.monotonic()
        try:
            force_unmount(self.mountpoint)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise PhaseTimeout(f"daemon still running {timeout:.0f} s after unmount") from None
            if code != 0:
                raise RuntimeError(f"daemon exited {code}: {self.log()[-2000:]}")
            return time.monotonic() - started
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        deadline = time.monotonic() + 5
        while is_mounted(self.mountpoint) and time.monotonic() < deadline:
            time.sleep(0.05)
        force_unmount(self.mountpoint)


class PySpy:
    """``py-spy record`` attached to the daemon for one phase (optional profiling).

    Idle threads are left out; with ``gil`` only the thread holding the GIL is sampled, which
    shows what the Python side of the daemon spends its single interpreter on.
    """

    def __init__(self, pid: int, out: Path, *, gil: bool = False) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out = out
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
             "--threads", "--output", str(out), *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def timed_seq_read(path: Path, blocks: Blocks, size: int, want_crc: int, what: str) -> float:
    """Seconds to read ``path`` whole in 1 MiB reads, checked against ``blocks``."""
    crc, got = 0, 0
    started = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        while data := f.read(MIB):
            crc = zlib.crc32(data, crc)
            got += len(data)
    elapsed = time.monotonic() - started
    if got != size or crc != want_crc:
        raise RuntimeError(f"{what}: read back {got} bytes, content differs or is short")
    return elapsed


def timed_random_reads(
    path: Path, blocks: Blocks, size: int, count: int, seed: int, what: str
) -> float:
    """Seconds for ``count`` 4 KiB preads at random offsets, kernel read-ahead off."""
    rnd = random.Random(seed)
    offsets = [rnd.randrange(size // 4096) * 4096 for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        started = time.monotonic()
        for off in offsets:
            data = os.pread(fd, 4096, off)
            within = off % MIB
            if data != blocks.block(off // MIB)[within : within + 4096]:
                raise RuntimeError(f"{what}: wrong bytes read at offset {off}")
        return time.monotonic() - started
    finally:
        os.close(fd)


def wait_mounted(
    proc: subprocess.Popen,
    mountpoint: Path,
    started: float,
    log_file: Any,
    root: list[str] | None = None,
) -> float:
    """Seconds from ``started`` until ``mountpoint`` is usable: in the mount table and its
    root listed. ``root``: the names the listing must show (else RuntimeError), so that no
    mount wins by being live before it can serve. Kills ``proc`` after 60 s; on failure the
    daemon's log file is closed and its tail is in the error."""
    try:
        while not is_mounted(mountpoint):
            if proc.poll() is not None:
                tail = Path(log_file.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mount exited {proc.returncode}: {tail}")
            if time.monotonic() - started > 60:
                proc.kill()
                proc.wait()
                force_unmount(mountpoint)
                raise RuntimeError("mount not live after 60 s")
            time.sleep(0.02)
        os.stat(mountpoint)
        names = os.listdir(mountpoint)
        elapsed = time.monotonic() - started
        if root is not None and sorted(names) != sorted(root):
            proc.kill()
            proc.wait()
            force_unmount(mountpoint)
            raise RuntimeError(f"the fresh mount's root lists {sorted(names)}, not {sorted(root)}")
    except RuntimeError:
        log_file.close()
        raise
    return elapsed


def read_all(path: Path, block: int = MIB) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while data := f.read(block):
            yield data


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
