"""The outbox after a crash or a power loss (vfs/outboxfiles.py, vfs/outboxcommit.py).

A close no longer waits for the disk, so a power loss can leave a manifest whose content
never reached it: a torn entry. Here the files a killed mount leaves are torn by hand the
ways a power loss tears them (content cut to nothing, content of the right size but zeros,
the manifest's own data lost); the next mount must drop each of them with one ERROR line
and upload only the intact one. After a clean stop the scan trusts the entries unread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import trio
from vfs_testutil import (
    listdir,
    make_config,
    open_vfs,
    read_file,
    run,
    write_file,
    x25519_identity,
)

from b2cryptfs.bucket.factory import make_pairs
from b2cryptfs.cache.cachedir import store_id
from b2cryptfs.cache.outboxcheck import clean_mark, is_marked_clean
from b2cryptfs.cli.fsck import _local_outbox
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.outboxcommit import Committer
from b2cryptfs.vfs.outboxcontent import ContentFile
from b2cryptfs.vfs.outboxfiles import mark_clean, scan_dir

FILES = {name: os.urandom(3000 + 1000 * i) for i, name in enumerate("abcd")}


def _ident():  # noqa: ANN202
    return x25519_identity()


def _leave_pending(tmp: Path, ident) -> Path:  # noqa: ANN001
    """A mount killed with four sealed files not yet uploaded; returns its outbox."""

    async def killed() -> None:
        async with open_vfs(tmp, identity=ident, settle=3600, drain=False) as vfs:
            for name, data in FILES.items():
                vfs.outbox.writing(name, True)  # still open elsewhere: not uploaded yet
                await write_file(vfs, name, data)
            assert len(vfs.outbox) == 4

    run(killed)
    outbox = next((tmp / "cache").iterdir()) / "outbox"
    assert not is_marked_clean(str(outbox))
    return outbox


def _manifests(outbox: Path) -> dict[str, Path]:
    """File path -> its manifest."""
    out = {}
    for p in sorted(outbox.glob("*.json")):
        out[json.loads(p.read_bytes())["path"]] = p
    return out


def _tear(outbox: Path) -> dict[str, Path]:
    """Tear a, b and c as a power loss does; d stays whole. Returns the manifests."""
    manifests = _manifests(outbox)
    content = {path: m.with_suffix(".content") for path, m in manifests.items()}
    content["a"].write_bytes(b"")  # delayed allocation: the blocks never written
    size = content["b"].stat().st_size
    content["b"].write_bytes(bytes(size))  # the right size, the data never written
    manifests["c"].write_bytes(b"")  # the manifest's own data lost
    return manifests


def test_torn_entries_are_dropped_with_one_error_each_and_never_uploaded(
    tmp_path: Path, caplog
) -> None:  # noqa: ANN001
    ident = _ident()
    outbox = _leave_pending(tmp_path, ident)
    manifests = _tear(outbox)
    store_dir = tmp_path / "store"

    async def next_mount() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            assert await listdir(vfs) == ["d"]
            assert await read_file(vfs, "d") == FILES["d"]

    with caplog.at_level(logging.ERROR, logger="b2cryptfs"):
        run(next_mount)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3, errors
    assert sum("'a'" in e and str(manifests["a"]) in e for e in errors) == 1, errors
    assert sum("'b'" in e and "SHA-1" in e for e in errors) == 1, errors
    assert sum(str(manifests["c"]) in e and "JSON" in e for e in errors) == 1, errors
    assert all("torn" in e and "not uploaded" in e for e in errors), errors
    # Only the intact file reached the store, and nothing of the torn ones is left.
    store = DirStore(str(store_dir))
    pairs = make_pairs(make_config(tmp_path, store, identity=ident), store)
    assert sorted(pairs.list_dir("").files) == ["d"]
    assert os.listdir(outbox) == []


def test_fsck_reports_torn_entries_before_the_mount_drops_them(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    ident = _ident()
    outbox = _leave_pending(tmp_path, ident)
    _tear(outbox)
    url = DirStore(str(tmp_path / "store")).url
    assert store_id(url) == outbox.parent.name
    problems = _local_outbox(str(tmp_path / "cache"), url)
    lines = capsys.readouterr().out.splitlines()
    torn = [ln for ln in lines if ln.startswith("torn-upload")]
    assert problems == 3, lines
    assert len(torn) == 3, lines
    assert any("'a'" in ln for ln in torn) and any("'b'" in ln for ln in torn), lines
    assert [ln for ln in lines if ln.startswith("pending")] == [
        ln for ln in lines if ln.startswith("pending") and "d:" in ln
    ], lines
    assert len([ln for ln in lines if ln.startswith("pending")]) == 1, lines


def test_after_a_clean_stop_the_scan_reads_no_content(tmp_path: Path) -> None:
    ident = _ident()
    outbox = _leave_pending(tmp_path, ident)
    manifests = _manifests(outbox)
    # A clean stop leaves everything durable and says so: the scan then trusts the entries
    # (it would not notice b's zeros; nothing can make them after a clean stop).
    content_b = manifests["b"].with_suffix(".content")
    content_b.write_bytes(bytes(content_b.stat().st_size))
    mark_clean(str(outbox))
    assert Path(clean_mark(str(outbox))).exists()
    assert len(scan_dir(str(outbox), verify=False)[0]) == 4
    assert len(scan_dir(str(outbox), verify=True)[0]) == 3  # without the mark: b is torn


def test_a_clean_stop_leaves_the_mark_and_a_mount_takes_it(tmp_path: Path) -> None:
    ident = _ident()
    seen: list[bool] = []

    async def mount(data: bytes) -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            seen.append(is_marked_clean(vfs.outbox.directory))
            await write_file(vfs, "f", data)

    run(mount, b"one")
    outbox = next((tmp_path / "cache").iterdir()) / "outbox"
    assert is_marked_clean(str(outbox))
    run(mount, b"two")
    assert seen == [False, False]  # taken at the start of every mount
    assert is_marked_clean(str(outbox)) and os.listdir(outbox) == []


def test_a_killed_mount_leaves_no_mark_and_intact_entries_are_kept(tmp_path: Path) -> None:
    ident = _ident()
    outbox = _leave_pending(tmp_path, ident)
    found, _ = scan_dir(str(outbox), verify=True)
    assert sorted(e.path for e in found) == ["a", "b", "c", "d"]
    for e in found:
        data = Path(e.content_file).read_bytes()
        assert e.content_size == len(data)
        assert e.content_sha1 == hashlib.sha1(data).hexdigest()


def test_content_file_counts_and_hashes_what_is_written(tmp_path: Path) -> None:
    path = tmp_path / "1.content"
    with ContentFile(str(path), durable=True) as out:
        out.write(b"x" * 70_000)
        out.write(memoryview(b"tail"))
    data = path.read_bytes()
    assert out.size == len(data) == 70_004
    assert out.sha1 == hashlib.sha1(data).hexdigest()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_committer_syncs_in_batches_and_everything_at_close(tmp_path: Path) -> None:
    files = []
    for i in range(5):
        p = tmp_path / f"{i}.content"
        p.write_bytes(b"%d" % i)
        files.append(str(p))
    c = Committer(str(tmp_path), interval=3600, batch=4)
    c.add(files[0], files[1])
    assert c.pending() == 2  # under the batch size, long before the interval: waits
    c.add(files[2], files[3])  # a full batch goes at once

    async def batch_done() -> None:
        with trio.fail_after(30):
            while c.batches < 1:
                await trio.sleep(0.01)

    trio.run(batch_done)
    assert c.pending() == 0
    os.unlink(files[4])  # uploaded and removed before its batch: skipped, no error
    c.add(files[4])
    c.close()
    assert c.pending() == 0 and c.batches == 2


def _leave_big(tmp: Path, ident, data: bytes) -> Path:  # noqa: ANN001
    """A killed mount's entry of a file big enough to be sealed in place: its manifest."""

    async def killed() -> None:
        async with open_vfs(tmp, identity=ident, settle=3600, drain=False) as vfs:
            vfs.outbox.writing("big", True)
            await write_file(vfs, "big", data)

    run(killed)
    [manifest] = (next((tmp / "cache").iterdir()) / "outbox").glob("*.json")
    return manifest


def test_an_entry_sealed_in_place_records_its_sha1_and_is_uploaded_intact(tmp_path: Path) -> None:
    ident, big = _ident(), os.urandom(3 << 20)
    manifest = _leave_big(tmp_path, ident, big)
    m = json.loads(manifest.read_bytes())
    content = manifest.with_suffix(".content").read_bytes()
    # Taken by the spill thread while the file was written (vfs/agestaging.py).
    assert m["content_sha1"] == hashlib.sha1(content).hexdigest()
    assert m["content_size"] == len(content) > len(big)

    async def next_mount() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            assert await read_file(vfs, "big") == big

    run(next_mount)
    assert not manifest.exists()  # uploaded (it was not torn)


def test_a_torn_page_of_an_entry_sealed_in_place_is_found_by_its_sha1(
    tmp_path: Path, caplog
) -> None:  # noqa: ANN001
    ident = _ident()
    manifest = _leave_big(tmp_path, ident, os.urandom(3 << 20))
    content = manifest.with_suffix(".content")
    with open(content, "r+b") as f:  # one page never written: the size is right
        f.seek(1 << 20)
        f.write(bytes(4096))
    outbox = str(manifest.parent)
    with caplog.at_level(logging.ERROR, logger="b2cryptfs"):
        found, _ = scan_dir(outbox, verify=True)
    assert found == [] and os.listdir(outbox) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "'big'" in errors[0] and "SHA-1" in errors[0], errors
