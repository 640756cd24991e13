"""A foreground mount is made while its B2 store still opens (b2cryptfs.fs.gate).

Against a loopback server that answers every request slowly, the mount shows up in the
mount table before the store is open; what programs ask meanwhile waits and then gets the
store's answer (no ENOENT, no empty listing). A store that fails to open after the mount was
made leaves no mount behind and exits with its one-line error, as before the mount.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from b2fixtures import B2ServerHandle, start_b2_server
from mountutil import (  # noqa: F401
    B2CRYPTFS,
    MOUNT_TIMEOUT,
    Keys,
    StoreSpec,
    b2_store,
    force_unmount,
    is_mounted,
    mounted,
    requires_fuse,
    rsa_keys,
)

pytestmark = requires_fuse

# Each request to the server takes this long: opening the store (authorization, the bucket,
# the root's listing) takes several seconds, making the mount well before is quick.
SLOW_MS = 1500


@pytest.fixture
def server(tmp_path: Path) -> Iterator[B2ServerHandle]:
    """A server of the test's own: its latency is changed."""
    handle = start_b2_server(log_dir=str(tmp_path))
    try:
        yield handle
    finally:
        handle.stop()


def _start(spec: StoreSpec, url: str, mnt: Path, tmp_path: Path, keys: list[str], env=None):  # type: ignore[no-untyped-def]
    mnt.mkdir(exist_ok=True)
    argv = [*B2CRYPTFS, "mount", url, str(mnt), *keys, "--cache-dir", str(tmp_path / "cache"),
            "-o", "auto_unmount", "-f"]  # fmt: skip
    return subprocess.Popen(
        argv,
        env=env or spec.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_mounted_or_exit(proc: subprocess.Popen[str], mnt: Path) -> bool:
    """True once ``mnt`` is mounted, False if the process ended first."""
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not is_mounted(mnt):
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the mount did not appear"
        time.sleep(0.01)
    return True


def test_requests_before_the_store_is_open_get_its_answers(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    server: B2ServerHandle,
) -> None:
    spec = b2_store(tmp_path, server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()):
        (mnt / "a.txt").write_text("alpha\n")
        (mnt / "d").mkdir()
        (mnt / "d" / "x.txt").write_text("in d\n")
    server.configure(latency_ms=SLOW_MS)
    server.reset_stats()

    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        proc = _start(
            spec,
            spec.url,
            mnt,
            tmp_path,
            rsa_keys.args(),
            {**spec.env, "NOTIFY_SOCKET": str(notify)},
        )
        try:
            assert _wait_mounted_or_exit(proc, mnt), proc.communicate()
            # The point of the test: the store is not open yet (its root not even asked for;
            # READY=1 is sent once it is open).
            assert server.stats().get("b2_list_file_names", 0) == 0, server.stats()
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(4096)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                root = pool.submit(os.listdir, mnt)
                sub = pool.submit(os.listdir, mnt / "d")
                size = pool.submit(lambda: os.stat(mnt / "a.txt").st_size)
                text = pool.submit((mnt / "d" / "x.txt").read_text)
                assert sorted(root.result(timeout=120)) == ["a.txt", "d"]
                assert sub.result(timeout=120) == ["x.txt"]
                assert size.result(timeout=120) == len("alpha\n")
                assert text.result(timeout=120) == "in d\n"
            sock.settimeout(60)
            assert sock.recv(4096) == b"READY=1"  # answered only once the store was open
            server.configure(latency_ms=0)
        finally:
            force_unmount(mnt)
            out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert not is_mounted(mnt)


@pytest.mark.parametrize(
    "case",
    ["no such bucket", "wrong key"],
)
def test_a_store_that_fails_after_the_mount_leaves_nothing(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    server: B2ServerHandle,
    case: str,
) -> None:
    spec = b2_store(tmp_path, server)
    mnt = tmp_path / "mnt"
    url, env, code, needle = spec.url, spec.env, 5, "B2 rejected the application key"
    if case == "no such bucket":
        url, needle = "b2://no-such-bucket", "no such B2 bucket: no-such-bucket"
    else:
        env = {**spec.env, "B2_APPLICATION_KEY": "K00" + "x" * 28}
    server.configure(latency_ms=SLOW_MS)
    proc = _start(spec, url, mnt, tmp_path, rsa_keys.args(), env)
    try:
        assert _wait_mounted_or_exit(proc, mnt), proc.communicate()
        # A program that looks meanwhile gets an error once the store fails, not a hang.
        with pytest.raises(OSError):
            os.listdir(mnt)
        out, err = proc.communicate(timeout=120)
    finally:
        force_unmount(mnt)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert lines[0].startswith("b2cryptfs: error: "), err
    assert not is_mounted(mnt)


def test_a_wrong_passphrase_is_reported_before_any_mount(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    server: B2ServerHandle,
) -> None:
    spec = b2_store(tmp_path, server)
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase\n")
    server.configure(latency_ms=SLOW_MS)
    mnt = tmp_path / "mnt"
    keys = ["--private-key", str(rsa_keys.private), "--passphrase-file", str(wrong)]
    proc = _start(spec, spec.url, mnt, tmp_path, keys)
    try:
        assert not _wait_mounted_or_exit(proc, mnt)  # the keys load before the mount
        out, err = proc.communicate(timeout=120)
    finally:
        force_unmount(mnt)
    assert proc.returncode == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "wrong passphrase" in lines[0], err


def test_a_stop_while_the_store_opens_unmounts(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    server: B2ServerHandle,
) -> None:
    """SIGTERM before the store is open: the requests waiting for it are let go (EIO) and
    the mount ends, without waiting for the store."""
    spec = b2_store(tmp_path, server)
    server.configure(latency_ms=60_000)  # the store would take minutes to open
    mnt = tmp_path / "mnt"
    proc = _start(spec, spec.url, mnt, tmp_path, rsa_keys.args())
    try:
        assert _wait_mounted_or_exit(proc, mnt), proc.communicate()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(os.listdir, mnt)
            time.sleep(0.5)  # let the listing reach the gate (either way it must not hang)
            proc.send_signal(signal.SIGTERM)
            # Raises TimeoutError (the test fails) if the listing is still held.
            failure = waiting.exception(timeout=60)
        assert isinstance(failure, OSError) and not isinstance(failure, TimeoutError), failure
        out, err = proc.communicate(timeout=60)
    finally:
        force_unmount(mnt)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert not is_mounted(mnt)
