"""What cut-short changes leave in the store is cleaned by the mount (vfs/tidy.py), and an
upload that cannot succeed is reported, not retried in silence (vfs/outboxstats.py).

The crash loop (tests/t6_fuse/test_crash_loop.py) shows the same under real kill -9s; here
each state a kill can leave is made exactly, with the tidy log a killed daemon leaves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
from vfs_testutil import (
    listdir,
    make_config,
    open_vfs,
    parent_and_leaf,
    run,
    write_file,
    x25519_identity,
)

from b2cryptfs.bucket.check import check
from b2cryptfs.bucket.factory import make_pairs
from b2cryptfs.bucket.layout import content_name, key_name
from b2cryptfs.bucket.tidylog import TidyLog
from b2cryptfs.cache.cachedir import store_id
from b2cryptfs.cli.fsck import _local_outbox
from b2cryptfs.errors import InvalidName, TransientError
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs import outboxstats, tidy


def problems(tmp: Path, ident) -> list[str]:  # noqa: ANN001
    store = DirStore(str(tmp / "store"))
    pairs = make_pairs(make_config(tmp, store, identity=ident), store)
    return [f"{p.kind} {p.name}" for p in check(pairs, verify=True)]


async def tidied(vfs, timeout: float = 30) -> None:  # noqa: ANN001
    with trio.fail_after(timeout):
        while vfs.outbox.tidier.due_count():
            await trio.sleep(0.05)


def test_next_mount_cleans_what_killed_deletes_and_renames_left(tmp_path: Path) -> None:
    ident = x25519_identity()

    async def first() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "a.bin", b"a" * 5000)
            await write_file(vfs, "b.bin", b"b" * 5000)

    run(first)
    # The daemon is killed half-way through deleting a.bin (its content object is gone)
    # and through renaming b.bin to c.bin (c's key object copied, nothing else).
    store = DirStore(str(tmp_path / "store"))
    outbox = tmp_path / "cache" / store_id(store.url) / "outbox"
    notes = TidyLog(str(outbox) + "-tidy")
    for path in ("a.bin", "b.bin", "c.bin"):
        notes.begin(path)
    store.hide(content_name("a.bin"))
    store.copy(store.stat(key_name("b.bin")), key_name("c.bin"))
    assert problems(tmp_path, ident) == ["orphan-key a.bin.key.enc", "orphan-key c.bin.key.enc"]

    async def second() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await tidied(vfs)
            assert await listdir(vfs) == ["b.bin"]

    run(second)
    assert problems(tmp_path, ident) == []
    assert store.stat(key_name("b.bin")) is not None  # a whole pair is left alone


class RefusingStore(DirStore):
    """A store that refuses one content object: for good, or with transient errors."""

    def __init__(self, root: str, name: str, *, transient: bool = False) -> None:
        super().__init__(root, create=True)
        self.refused, self.transient = name, transient

    def upload_file(self, name: str, path: str, info: dict[str, str], **kw):  # noqa: ANN003, ANN201
        if name == self.refused:
            if self.transient:
                raise TransientError(f"{name}: the store is busy")
            raise InvalidName(f"{name}: the store refuses this name")
        return super().upload_file(name, path, info, **kw)

    def delete_version(self, obj):  # noqa: ANN001, ANN201
        # As a kill -9 right after the key object went up: nothing takes it back.
        if obj.name == self.refused.removesuffix(".enc") + ".key.enc":
            raise TransientError(f"{obj.name}: the store is busy")
        return super().delete_version(obj)


def test_an_upload_dropped_after_its_key_went_up_leaves_no_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tidy, "_LIVE_DELAY", 0.0)
    ident = x25519_identity()
    store = RefusingStore(str(tmp_path / "store"), content_name("gone.bin"), transient=True)

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, retry_base=30) as vfs:
            await write_file(vfs, "gone.bin", b"x" * 1000)
            entry = vfs.outbox.latest("gone.bin")
            with trio.fail_after(30):
                while entry.attempts == 0:
                    await trio.sleep(0.02)
            # Its key object is up, its content refused (retried in 30 s): now unlinked.
            assert store.stat(key_name("gone.bin")) is not None
            parent, leaf = await parent_and_leaf(vfs, "gone.bin")
            await vfs.unlink(parent, leaf)
            await tidied(vfs)
            assert store.stat(key_name("gone.bin")) is None

    run(main)
    assert problems(tmp_path, ident) == []


def test_an_upload_the_store_refuses_for_good_is_reported_stuck(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    ident = x25519_identity()
    store = RefusingStore(str(tmp_path / "store"), content_name("bad.bin"))
    caplog.set_level(logging.WARNING, "b2cryptfs.vfs.outbox")

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, drain=False) as vfs:
            await write_file(vfs, "bad.bin", b"x" * 1000)
            await write_file(vfs, "good.bin", b"y" * 1000)
            entry = vfs.outbox.latest("bad.bin")
            with trio.fail_after(30):
                while entry.stuck is None:
                    await trio.sleep(0.02)
            st = vfs.outbox.stats.snapshot(vfs.outbox.pending())
            assert st["stuck_files"] == 1 and st["stuck"][0]["path"] == "bad.bin", st
            assert "refuses this name" in st["stuck"][0]["error"]
            with open(entry.manifest_file) as fh:
                assert "refuses this name" in json.load(fh)["stuck"]

    run(main)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("bad.bin" in m and "stuck" in m for m in warned), warned
    # fsck, on this machine, names it (it reads the outbox the mount left).
    capsys.readouterr()
    assert _local_outbox(str(tmp_path / "cache"), store.url) == 1
    out = capsys.readouterr().out
    assert "stuck-upload bad.bin: " in out and "stuck-upload good.bin" not in out, out


def test_an_upload_failing_transiently_for_long_is_reported_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(outboxstats, "STUCK_FAILURES", 3)
    monkeypatch.setattr(outboxstats, "STUCK_SECONDS", 0.0)
    ident = x25519_identity()
    store = RefusingStore(str(tmp_path / "store"), content_name("slow.bin"), transient=True)
    caplog.set_level(logging.WARNING, "b2cryptfs.vfs.outbox")

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, drain=False) as vfs:
            await write_file(vfs, "slow.bin", b"x" * 1000)
            entry = vfs.outbox.latest("slow.bin")
            with trio.fail_after(30):
                while entry.stuck is None:
                    await trio.sleep(0.02)
            assert entry.attempts >= 3
            st = vfs.outbox.stats.snapshot(vfs.outbox.pending())
            assert st["stuck_files"] == 1 and "busy" in st["stuck"][0]["error"], st

    run(main)
    warned = [r.getMessage() for r in caplog.records if "stuck" in r.getMessage()]
    assert len(warned) == 1 and "slow.bin" in warned[0] and "failed 3 times" in warned[0]
