"""The vfs core's reads and uploads: chunk cache, read-ahead, seed files, write-only mounts,
upload failures and retries."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from vfs_testutil import (
    all_bytes_under,
    ino_of,
    listdir,
    open_vfs,
    read_file,
    run,
    write_file,
    x25519_identity,
)

from b2cryptfs.bucket.layout import ROOT_META_OBJECT
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.errors import AuthError, TransientError
from b2cryptfs.fs.errors import errno_of
from b2cryptfs.keys.types import RsaIdentity
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.namespace import ROOT_INO

OPENSSL = shutil.which("openssl")


class RecordingStore(DirStore):
    """A real DirStore that records content reads and can fail uploads on demand."""

    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.reads: Counter[str] = Counter()
        self.fail_uploads = 0
        self.failure: type[Exception] = TransientError
        self.upload_attempts = 0

    def read(self, obj, offset=0, length=None):  # type: ignore[no-untyped-def]
        self.reads[obj.name] += 1
        return super().read(obj, offset, length)

    def _maybe_fail(self, name: str) -> None:
        if name == ROOT_META_OBJECT:
            return  # the root's new mtime, stored at the unmount: not a file's upload
        self.upload_attempts += 1
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise self.failure(f"injected failure uploading {name}")

    def upload_bytes(self, name, data, info):  # type: ignore[no-untyped-def]
        self._maybe_fail(name)
        return super().upload_bytes(name, data, info)


@pytest.fixture
def ident():
    return x25519_identity()


@pytest.fixture(scope="module")
def rsa_identity() -> RsaIdentity:
    return RsaIdentity(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_reads_go_through_the_ciphertext_cache(tmp_path: Path, ident) -> None:
    store = RecordingStore(str(tmp_path / "store"))
    data = os.urandom(3 * 1024 * 1024 + 5)

    async def first() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, "big", data)
            await vfs.outbox.drain()
            store.reads.clear()
            ino = await ino_of(vfs, "big")
            fh, _ = await vfs.open(ino, os.O_RDONLY)
            # A small read in the middle fetches only around it, not the whole object.
            assert await vfs.read(fh, 2_000_000, 10) == data[2_000_000:2_000_010]
            assert len(vfs.disk_cache) <= 2
            await vfs.release(fh)
            assert await read_file(vfs, "big") == data
            await vfs.fetcher.idle()
            assert store.reads["big.enc"] < 10  # about 1 MiB per request

    async def second() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            store.reads.clear()
            assert await read_file(vfs, "big") == data
            # Opening proves the pair with one small read; the content comes from the cache.
            assert store.reads["big.enc"] <= 1

    run(first)
    run(second)
    assert data[1000:1064] not in all_bytes_under(tmp_path / "cache")


def test_sequential_reads_fetch_ahead(tmp_path: Path, ident) -> None:
    store = RecordingStore(str(tmp_path / "store"))
    data = os.urandom(4 * 1024 * 1024)

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, "f", data)
            await vfs.outbox.drain()
            fh, _ = await vfs.open(await ino_of(vfs, "f"), os.O_RDONLY)
            for off in range(0, 256 * 1024, 64 * 1024):
                assert await vfs.read(fh, off, 64 * 1024) == data[off : off + 64 * 1024]
            await vfs.fetcher.idle()
            vid = vfs.table.by_path["f"].cache_version
            assert vid is not None
            # Chunks beyond what was read are cached already.
            ahead = [i for i in range(4, 12) if (vid, i) in vfs.disk_cache]
            assert len(ahead) >= 4
            await vfs.release(fh)

    run(main)


def test_a_stream_over_a_file_above_a_quarter_of_the_cache_is_not_kept_on_disk(
    tmp_path: Path, ident
) -> None:
    store = RecordingStore(str(tmp_path / "store"))
    big, small = os.urandom(4 * 1024 * 1024), os.urandom(1024 * 1024)  # cache: 8 MiB

    at = 3_000_000  # in chunk 45 of the big file
    vids: dict[str, str] = {}

    async def stream() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, cache_size=8 << 20) as vfs:
            await write_file(vfs, "big", big)
            await write_file(vfs, "small", small)
            await vfs.outbox.drain()
            for name, data in (("big", big), ("small", small)):
                fh, _ = await vfs.open(await ino_of(vfs, name), os.O_RDONLY)
                for off in range(0, len(data), 64 * 1024):
                    assert await vfs.read(fh, off, 64 * 1024) == data[off : off + 64 * 1024]
                    # Each read-ahead lands before the next read: no read waits for a fetch.
                    await vfs.fetcher.idle()
                await vfs.release(fh)
                vids[name] = vfs.table.by_path[name].cache_version
            cached = {
                n: [i for i in range(64) if (v, i) in vfs.disk_cache] for n, v in vids.items()
            }
            # The small file is kept whole; of the big one only the chunk its opening
            # fetched (a read waited for it), none of its read-ahead.
            assert cached == {"small": list(range(16)), "big": [0]}, cached

    async def random_read() -> None:
        # A fresh mount (nothing in memory): a read that waits is kept whatever the size.
        async with open_vfs(tmp_path, store=store, identity=ident, cache_size=8 << 20) as vfs:
            fh, _ = await vfs.open(await ino_of(vfs, "big"), os.O_RDONLY)
            assert await vfs.read(fh, at, 10) == big[at : at + 10]
            await vfs.fetcher.idle()
            assert (vids["big"], at // 65536) in vfs.disk_cache
            await vfs.release(fh)

    run(stream)
    run(random_read)


def test_reads_work_with_the_cache_disabled(tmp_path: Path, ident) -> None:
    data = os.urandom(700_000)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, cache_size=0) as vfs:
            assert vfs.disk_cache is None
            await write_file(vfs, "f", data)
            await vfs.outbox.drain()
            assert await read_file(vfs, "f", chunk=4096) == data

    run(main)


def _seed_encrypt(folder: Path, name: str, content: bytes, pub_pem: Path) -> None:
    """The seed's exact commands (PROCEDURE.md), writing F.enc and F.key.enc."""
    (folder / name).write_bytes(content)
    script = (
        'set -e; cd "$1"; F="$2"; PUB="$3"\n'
        "ONE_TIME_PASSWORD=`openssl rand -base64 180`\n"
        "echo $ONE_TIME_PASSWORD | openssl aes-256-cbc -a -salt -pass stdin -in $F -out $F.enc\n"
        "echo $ONE_TIME_PASSWORD | openssl rsautl -encrypt -pubin -inkey $PUB -out $F.key.enc\n"
        "rm -f $F\n"
    )
    subprocess.run(
        ["bash", "-c", script, "seed", str(folder), name, str(pub_pem)],
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")
def test_seed_openssl_files_read_with_exact_sizes(tmp_path: Path, rsa_identity) -> None:
    store_dir = tmp_path / "store"
    (store_dir / "docs").mkdir(parents=True)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        rsa_identity.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    contents = {"empty": b"", "one-block": b"0123456789abcdef", "text": os.urandom(200_001)}
    for name, content in contents.items():
        _seed_encrypt(store_dir / "docs", name, content, pub)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=rsa_identity) as vfs:
            assert sorted(await listdir(vfs, "docs")) == sorted(contents)
            for name, content in contents.items():
                attr = await vfs.lookup(await ino_of(vfs, "docs"), name)
                assert attr.size == len(content), name
                assert await read_file(vfs, f"docs/{name}") == content
                assert await vfs.getxattr(attr.ino, "user.b2cryptfs.format") == b"openssl"
            # Random access inside the seed file.
            fh, _ = await vfs.open(await ino_of(vfs, "docs/text"), os.O_RDONLY)
            for off in (0, 47, 48, 65519, 65520, 131_000, 199_990):
                assert await vfs.read(fh, off, 100) == contents["text"][off : off + 100]
            await vfs.release(fh)
            # Rewriting part of it keeps the rest (copy on open) and uploads in our format.
            fh, _ = await vfs.open(await ino_of(vfs, "docs/text"), os.O_WRONLY)
            await vfs.write(fh, 10, b"XYZ")
            await vfs.release(fh)
            expected = contents["text"][:10] + b"XYZ" + contents["text"][13:]
            assert await read_file(vfs, "docs/text") == expected

    run(main)


def test_write_only_mount(tmp_path: Path, ident, caplog) -> None:
    store = DirStore(str(tmp_path / "store"), create=True)
    full = PairStore(store, recipients=[ident.recipient()], identities=[ident])
    src = tmp_path / "src"
    src.write_bytes(b"existing content")
    full.put_file("existing", str(src))
    full.put_file("victim", str(src))
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, recipients=[ident.recipient()]) as vfs:
            assert sorted(await listdir(vfs)) == ["existing", "victim"]
            ino = await ino_of(vfs, "existing")
            assert (await vfs.getattr(ino)).size == len(b"existing content")
            for flags in (os.O_RDONLY, os.O_RDWR):
                with pytest.raises(OpError) as ei:
                    await vfs.open(ino, flags)
                assert ei.value.errno == errno.EACCES
            # A partial write would need the old content.
            fh, _ = await vfs.open(ino, os.O_WRONLY)
            with pytest.raises(OpError) as ei:
                await vfs.write(fh, 3, b"x")
            assert ei.value.errno == errno.EACCES
            await vfs.release(fh)
            # Replacing, creating, renaming and deleting work.
            fh, _ = await vfs.open(ino, os.O_WRONLY | os.O_TRUNC)
            await vfs.write(fh, 0, b"replaced")
            await vfs.release(fh)
            await write_file(vfs, "new", b"brand new")
            await vfs.rename(ROOT_INO, "new", ROOT_INO, "renamed", 0)
            await vfs.unlink(ROOT_INO, "victim")
            assert (await vfs.getattr(ino)).size == len(b"replaced")

    run(main)
    assert sorted(full.list_dir("").files) == ["existing", "renamed"]
    for path, expected in (("existing", b"replaced"), ("renamed", b"brand new")):
        entry = full.stat_file(path)
        assert entry is not None and full.open(entry).read(0, 100) == expected
    messages = [r.getMessage() for r in caplog.records if "write-only" in r.getMessage()]
    assert len(messages) == 1  # said once, not per request


def test_transient_upload_failures_are_retried(tmp_path: Path, ident) -> None:
    store = RecordingStore(str(tmp_path / "store"))
    store.fail_uploads = 2

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, "f", b"eventually")
            entry = vfs.outbox.latest("f")
            assert entry is not None
            await vfs.outbox.wait(entry)
            assert entry.attempts == 2

    run(main)
    assert store.upload_attempts == 3
    assert (tmp_path / "store" / "f.enc").exists()


def test_fsync_and_sync_upload_report_failures_as_eio(tmp_path: Path, ident, caplog) -> None:
    store = RecordingStore(str(tmp_path / "store"))
    store.failure = AuthError
    store.fail_uploads = 1

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, settle=3600) as vfs:
            fh, _ = await vfs.create(ROOT_INO, "f", 0o644, os.O_WRONLY)
            await vfs.write(fh, 0, b"data")
            with pytest.raises(OpError) as ei:
                await vfs.fsync(fh)
            assert ei.value.errno == errno.EIO
            await vfs.release(fh)
            # Kept in the outbox, still visible and readable.
            assert await read_file(vfs, "f") == b"data"
        async with open_vfs(tmp_path, store=store, identity=ident, sync_upload=True) as vfs:
            # The next mount uploads what was left; sync_upload makes close wait for it.
            assert await read_file(vfs, "f") == b"data"
            store.fail_uploads = 5
            store.failure = TransientError
            fh, _ = await vfs.create(ROOT_INO, "g", 0o644, os.O_WRONLY)
            await vfs.write(fh, 0, b"g")
            with pytest.raises(OpError) as ei:
                await vfs.flush(fh)
            assert ei.value.errno == errno.EIO
            store.fail_uploads = 0
            await vfs.release(fh)
            await write_file(vfs, "h", b"synced")  # flush returns once it is uploaded
            assert (tmp_path / "store" / "h.enc").exists()

    run(main)
    assert "kept in the outbox" in caplog.text
    pairs = PairStore(store, identities=[ident])
    assert sorted(pairs.list_dir("").files) == ["f", "g", "h"]


def test_concurrent_readers_share_fetches(tmp_path: Path, ident) -> None:
    store = RecordingStore(str(tmp_path / "store"))
    data = os.urandom(2 * 1024 * 1024)

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, cache_size=0) as vfs:
            await write_file(vfs, "f", data)
            await vfs.outbox.drain()
            ino = await ino_of(vfs, "f")
            results: dict[int, bytes] = {}

            async def reader(k: int) -> None:
                fh, _ = await vfs.open(ino, os.O_RDONLY)
                results[k] = await vfs.read(fh, 0, len(data))
                await vfs.release(fh)

            store.reads.clear()
            async with trio.open_nursery() as n:
                for k in range(4):
                    n.start_soon(reader, k)
            assert all(r == data for r in results.values())
            # One open (proof read) plus about 2 MiB in 1 MiB requests, not 4 times that.
            assert store.reads["f.enc"] <= 4

    run(main)


def test_damaged_or_unpaired_files_read_as_eio(tmp_path: Path, ident) -> None:
    from b2cryptfs.errors import B2CryptfsError

    store_dir = tmp_path / "store"
    data = os.urandom(300_000)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "damaged", data)
            await write_file(vfs, "other", b"other")
            await write_file(vfs, "keyless", b"keyless")
            await vfs.outbox.drain()
        # Flip a byte in the third chunk of the content; swap a key object; drop another.
        path = store_dir / "damaged.enc"
        raw = bytearray(path.read_bytes())
        raw[16 + 2 * 65552 + 100] ^= 0x40
        path.write_bytes(bytes(raw))
        (store_dir / "other.key.enc").write_bytes((store_dir / "damaged.key.enc").read_bytes())
        (store_dir / "keyless.key.enc").unlink()
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ino = await ino_of(vfs, "damaged")
            fh, _ = await vfs.open(ino, os.O_RDONLY)
            assert await vfs.read(fh, 0, 1000) == data[:1000]  # intact chunks still read
            with pytest.raises(B2CryptfsError) as ei:
                await vfs.read(fh, 2 * 65536 + 10, 10)
            assert errno_of(ei.value) == errno.EIO
            await vfs.release(fh)
            for name in ("other", "keyless"):
                with pytest.raises(B2CryptfsError) as ei:
                    await vfs.open(await ino_of(vfs, name), os.O_RDONLY)
                assert errno_of(ei.value) == errno.EIO, name
            assert sorted(await listdir(vfs)) == ["damaged", "keyless", "other"]

    run(main)


@pytest.mark.heavy
def test_random_io_against_a_model(tmp_path: Path, ident) -> None:
    import random

    size = (64 if os.environ.get("B2CRYPTFS_HEAVY") == "1" else 4) * 1024 * 1024
    rng = random.Random(42)
    model = bytearray(rng.randbytes(size))

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ino = await write_file(vfs, "f", bytes(model))
            for round_ in range(3):
                await vfs.outbox.drain()
                fh, _ = await vfs.open(ino, os.O_RDWR)
                for _ in range(40):
                    off = rng.randrange(0, len(model) + 1000)
                    if rng.random() < 0.5:
                        n = rng.randrange(1, 200_000)
                        assert await vfs.read(fh, off, n) == bytes(model[off : off + n])
                    else:
                        chunk = rng.randbytes(rng.randrange(1, 150_000))
                        await vfs.write(fh, off, chunk)
                        if off > len(model):
                            model.extend(bytes(off - len(model)))
                        model[off : off + len(chunk)] = chunk
                await vfs.release(fh)
                assert await read_file(vfs, "f") == bytes(model), round_
        async with open_vfs(tmp_path, identity=ident) as vfs:
            assert await read_file(vfs, "f") == bytes(model)

    run(main)
