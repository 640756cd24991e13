"""Read-ahead across a directory (vfs/dirahead.py), counted at the loopback server: small
files read in listing order are opened ahead, AHEAD_FILES at a time, each downloaded once;
opens out of order download nothing extra; a reader that stops early leaves at most
AHEAD_FILES downloads unused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import wait_outbox_empty

from b2cryptfs.vfs.dirahead import AHEAD_FILES

pytestmark = requires_fuse

FILES = 24
DOWNLOADS = ("b2_download_file_by_id", "b2_download_file_by_name")


def downloads(server) -> int:
    stats = server.stats()
    return sum(stats.get(k, 0) for k in DOWNLOADS)


def settled_downloads(server, at_least: int = 0, quiet: float = 0.6) -> int:
    """The download count once it reached ``at_least`` and then stayed put ``quiet`` s."""
    deadline = time.monotonic() + 30
    last, since = downloads(server), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = downloads(server)
        if now != last:
            last, since = now, time.monotonic()
        elif now >= at_least and time.monotonic() - since >= quiet:
            return now
    return last


def _stored(texts: dict[str, bytes], keys: Keys, tmp_path: Path, b2_server) -> tuple:
    """(store spec, mount point) once ``texts`` are stored as files of ``d`` by one mount."""
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache1", keys.args()):
        (mnt / "d").mkdir()
        for name, data in texts.items():
            (mnt / "d" / name).write_bytes(data)
        wait_outbox_empty(tmp_path / "cache1")
    return spec, mnt


def test_small_files_read_in_order_are_opened_ahead_once(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    texts = {f"f{i:02d}.txt": bytes([65 + i]) * (500 + i) for i in range(FILES)}
    spec, mnt = _stored(texts, rsa_keys, tmp_path, b2_server)
    names = sorted(texts)
    with mounted(spec, mnt, tmp_path / "cache2", rsa_keys.args()):
        b2_server.reset_stats()
        for name in names[:2]:
            assert (mnt / "d" / name).read_bytes() == texts[name]
        # The second open follows the first in the listing: the next ones are opened ahead.
        assert settled_downloads(b2_server, 2 + AHEAD_FILES) == 2 + AHEAD_FILES
        for name in names[2:]:
            assert (mnt / "d" / name).read_bytes() == texts[name]
        # Every file downloaded once, none twice, none in vain.
        assert settled_downloads(b2_server) == FILES


def test_opens_out_of_order_open_nothing_ahead(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    texts = {f"f{i:02d}.txt": bytes([65 + i]) * 700 for i in range(FILES)}
    spec, mnt = _stored(texts, rsa_keys, tmp_path, b2_server)
    with mounted(spec, mnt, tmp_path / "cache2", rsa_keys.args()):
        b2_server.reset_stats()
        for name in ("f10.txt", "f03.txt", "f20.txt", "f19.txt", "f05.txt"):
            assert (mnt / "d" / name).read_bytes() == texts[name]
        assert settled_downloads(b2_server) == 5
        # In order from here: the read-ahead starts, and stops with the listing's end.
        for name in ("f21.txt", "f22.txt", "f23.txt"):
            assert (mnt / "d" / name).read_bytes() == texts[name]
        assert settled_downloads(b2_server) == 8


def test_files_waiting_in_the_outbox_are_not_opened_ahead(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    texts = {f"f{i:02d}.txt": bytes([65 + i]) * 600 for i in range(FILES)}
    spec, mnt = _stored(texts, rsa_keys, tmp_path, b2_server)
    names = sorted(texts)
    with mounted(spec, mnt, tmp_path / "cache2", rsa_keys.args()):
        # Newer versions of the next files wait in the outbox (their uploads fail): an open
        # reads those, so downloading the stored ones ahead would be in vain.
        b2_server.inject("upload", "503", 1_000_000)
        try:
            newer = {n: b"newer " + n.encode() for n in names[2 : 2 + AHEAD_FILES]}
            for name, data in newer.items():
                (mnt / "d" / name).write_bytes(data)
            b2_server.reset_stats()
            for name in names[:2]:
                assert (mnt / "d" / name).read_bytes() == texts[name]
            assert settled_downloads(b2_server, 2) == 2
            for name, data in newer.items():
                assert (mnt / "d" / name).read_bytes() == data
            assert settled_downloads(b2_server) == 2
        finally:
            b2_server.clear_faults()


def test_a_failed_open_ahead_logs_nothing(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    texts = {f"f{i:02d}.txt": bytes([65 + i]) * 800 for i in range(FILES)}
    spec, mnt = _stored(texts, rsa_keys, tmp_path, b2_server)
    store = spec.open()
    damaged = "d/f03.txt.enc"
    obj = store.stat(damaged)
    body = bytearray(store.read(obj))
    body[-1] ^= 1  # its last tag no longer authenticates
    store.upload_bytes(damaged, bytes(body), dict(obj.info))
    with mounted(spec, mnt, tmp_path / "cache2", rsa_keys.args()) as m:
        for name in ("f01.txt", "f02.txt"):  # f03 is opened ahead, and fails
            assert (mnt / "d" / name).read_bytes() == texts[name]
        settled_downloads(b2_server, 2 + AHEAD_FILES)
        assert "f03.txt" not in m.log(), "an open the program never made was reported"
        # The program's own open of it reports the damage.
        with pytest.raises(OSError):
            (mnt / "d" / "f03.txt").read_bytes()
        time.sleep(0.2)
        assert "f03.txt" in m.log()
