"""The gate a foreground mount's requests wait in until the store is open (no kernel)."""

from __future__ import annotations

import errno
from pathlib import Path

import pyfuse3
import pytest
import trio
from vfs_testutil import open_vfs, run, write_file, x25519_identity

from b2cryptfs.fs.gate import REQUESTS, GatedOperations
from b2cryptfs.fs.operations import Operations
from b2cryptfs.vfs.namespace import ROOT_INO


def test_every_request_waits() -> None:
    """Every request pyfuse3 can send that Operations answers is gated (init is not)."""
    answered = {
        n
        for n, fn in vars(Operations).items()
        if n in vars(pyfuse3.Operations) and callable(fn) and n != "init"
    }
    assert answered and answered <= set(REQUESTS)
    assert {"lookup", "getattr", "readdir", "opendir", "open", "read", "statfs"} <= set(REQUESTS)
    assert "init" not in REQUESTS


def test_requests_wait_for_the_store_then_see_it(tmp_path: Path) -> None:
    ident = x25519_identity()

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "seen.txt", b"there before the mount\n")
            ops = GatedOperations()
            answers: list[object] = []

            async def look() -> None:
                answers.append(await ops.lookup(ROOT_INO, b"seen.txt", None))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(look)
                await trio.sleep(0.2)
                assert answers == []  # still waiting: nothing is answered before the store
                ops.open_gate(vfs)
            (attr,) = answers
            assert attr.st_size == len(b"there before the mount\n")
            # Once open, requests go straight to the handlers (no waiting version left).
            assert "lookup" not in vars(ops)
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await ops.lookup(ROOT_INO, b"missing", None)
            assert ei.value.errno == errno.ENOENT

    run(main)


def test_a_failed_store_fails_the_waiting_requests() -> None:
    async def main() -> None:
        ops = GatedOperations()
        assert ops.vfs is None and not ops.is_open
        codes: list[int] = []

        async def look() -> None:
            try:
                await ops.opendir(ROOT_INO, None)
            except pyfuse3.FUSEError as exc:
                codes.append(exc.errno)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(look)
            await trio.sleep(0.1)
            ops.fail_gate()
        assert codes == [errno.EIO]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops.getattr(ROOT_INO, None)
        assert ei.value.errno == errno.EIO
        assert not ops.is_open

    run(main)
