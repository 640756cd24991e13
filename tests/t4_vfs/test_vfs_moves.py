"""Rename intents (vfs/moves.py): a rename cut short by a crash is finished by the next mount."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from vfs_testutil import listdir, open_vfs, read_file, run, write_file, x25519_identity

from b2cryptfs.cli.fsck import _local_outbox
from b2cryptfs.store.dirstore import DirStore


def test_store_rename_cut_after_the_key_copy_is_finished_at_the_next_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ident = x25519_identity()
    store = DirStore(str(tmp_path / "store"), create=True)
    src_data, dst_data = b"the source\n" * 100, b"the old target\n" * 5000
    where: dict[str, str] = {}

    async def first() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, "src", src_data)
            await write_file(vfs, "dst", dst_data)
            where["outbox"] = vfs.outbox.directory

    run(first)
    # What a kill -9 inside PairStore.rename leaves: the intent, and only src's key object
    # copied onto dst's (on a directory store: a pair that does not match, no older key).
    intent = {"old": "src", "new": "dst", "entry": None}
    Path(where["outbox"], f"{99:012d}.move.json").write_text(json.dumps(intent))
    store.copy(store.stat("src.key.enc"), "dst.key.enc")
    # fsck on this machine names the cut-short rename (it reads the mount's outbox).
    capsys.readouterr()
    assert _local_outbox(str(tmp_path / "cache"), store.url) == 0
    assert "rename       src -> dst: cut short" in capsys.readouterr().out

    async def second() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            assert await listdir(vfs) == ["dst"]
            assert await read_file(vfs, "dst") == src_data

    run(second)
    assert store.stat("src.enc") is None and store.stat("src.key.enc") is None
    assert not [n for n in os.listdir(where["outbox"]) if n.endswith(".move.json")]


def test_intent_after_a_finished_rename_changes_nothing(tmp_path: Path) -> None:
    ident = x25519_identity()
    store = DirStore(str(tmp_path / "store"), create=True)
    where: dict[str, str] = {}

    async def first() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, "src", b"moved\n")
            await write_file(vfs, "dst", b"replaced\n")
            await vfs.rename(1, "src", 1, "dst", 0)
            where["outbox"] = vfs.outbox.directory

    run(first)
    # The rename was done but its intent was not dropped (a crash right before): replaying
    # it must not undo anything.
    intent = {"old": "src", "new": "dst", "entry": None}
    Path(where["outbox"], f"{99:012d}.move.json").write_text(json.dumps(intent))

    async def second() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            assert await listdir(vfs) == ["dst"]
            assert await read_file(vfs, "dst") == b"moved\n"

    run(second)
    assert not [n for n in os.listdir(where["outbox"]) if n.endswith(".move.json")]
