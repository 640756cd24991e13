"""The store fails under a live mount (loopback B2): an outage, a bucket that vanishes,
faults sprinkled over normal use. Listings and reads fail with EIO (or ENOENT) and a log
line, never a crash or a hang; what is written waits in the outbox and is uploaded once the
store is back, in the same mount or the next one."""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mounted, requires_fuse, rsa_keys, tree_snapshot  # noqa: F401
from reliability_util import b2_spec, log_lines, outbox_entries, versions, wait_until  # noqa: F401

pytestmark = requires_fuse


def stored_names(spec: StoreSpec) -> set[str]:
    return {v["fileName"] for v in versions(spec) if v["action"] == "upload"}


def errno_of(fn) -> int:  # type: ignore[no-untyped-def]
    try:
        fn()
    except OSError as exc:
        return exc.errno or 0
    raise AssertionError(f"{fn} did not fail")


def test_outage_reads_fail_writes_wait(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt = b2_spec.server, tmp_path / "mnt"
    with mounted(b2_spec, mnt, tmp_path / "cache-1", rsa_keys.args()):
        (mnt / "a.txt").write_bytes(b"stored before the outage\n")
        (mnt / "d").mkdir()
        (mnt / "d" / "b.txt").write_bytes(b"in a directory\n")

    # Transfers retry for as long as --io-timeout: a short one, so the outage shows soon.
    short = ["--io-timeout", "5"]
    with mounted(b2_spec, mnt, tmp_path / "cache-2", rsa_keys.args(), extra_args=short) as m:
        assert sorted(os.listdir(mnt)) == ["a.txt", "d"]  # listed before the outage
        # Listings and uploads fail with 503 for good, downloads with an expired token.
        server.inject("b2_list_file_names", "503", 1_000_000)
        server.inject("upload", "503", 1_000_000)
        server.inject("download", "expired", 1_000_000)

        # What was listed stays listed; a directory never listed cannot be: EIO.
        assert sorted(os.listdir(mnt)) == ["a.txt", "d"]
        assert errno_of(lambda: os.listdir(mnt / "d")) == errno.EIO
        # Content that must be downloaded: EIO, and the log names the object (the content:
        # a small file's key object comes with the listing, bucket/keycopy.py).
        assert errno_of(lambda: (mnt / "a.txt").read_bytes()) == errno.EIO
        assert log_lines(m.log(), "ERROR", "a.txt.enc"), m.log()
        assert log_lines(m.log(), "ERROR", "list"), m.log()

        # A write is durable in the outbox, visible and readable from there.
        (mnt / "new.txt").write_bytes(b"written during the outage\n")
        assert (mnt / "new.txt").read_bytes() == b"written during the outage\n"
        assert sorted(os.listdir(mnt)) == ["a.txt", "d", "new.txt"]
        assert len(outbox_entries(tmp_path / "cache-2")) == 1
        # One WARNING once the store's retries are spent, naming the file (not one per try).
        wait_until(
            "a failed upload attempt",
            lambda: log_lines(m.log(), "WARNING", "uploads keep failing", "new.txt"),
        )
        assert "new.txt.enc" not in stored_names(b2_spec)

        # The store is back: the same mount uploads and reads again.
        server.clear_faults()
        wait_until(
            "the upload after the outage",
            lambda: not outbox_entries(tmp_path / "cache-2"),
            timeout=90,
        )
        assert {"new.txt.enc", "new.txt.key.enc"} <= stored_names(b2_spec)
        assert (mnt / "a.txt").read_bytes() == b"stored before the outage\n"
        assert os.listdir(mnt / "d") == ["b.txt"]
    assert "Traceback" not in m.log(), m.log()

    with mounted(b2_spec, mnt, tmp_path / "cache-3", rsa_keys.args()):
        assert (mnt / "new.txt").read_bytes() == b"written during the outage\n"


def test_sync_upload_close_reports_the_outage(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    # Transfers retry for as long as --io-timeout: a short one, so close fails soon.
    args = ["--sync-upload", "--io-timeout", "5"]
    with mounted(b2_spec, mnt, cache, rsa_keys.args(), extra_args=args) as m:
        (mnt / "before.txt").write_bytes(b"uploaded at close\n")
        assert "before.txt.enc" in stored_names(b2_spec)  # close waited for it

        server.inject("upload", "503", 1_000_000)
        with pytest.raises(OSError) as info:
            with open(mnt / "during.txt", "wb") as fh:
                fh.write(b"written during the outage\n")
        assert info.value.errno == errno.EIO
        # The failed close lost nothing: kept in the outbox, uploaded once the store is back.
        assert (mnt / "during.txt").read_bytes() == b"written during the outage\n"
        assert len(outbox_entries(cache)) == 1
        server.clear_faults()
        wait_until("the upload after the outage", lambda: not outbox_entries(cache), timeout=90)
    assert log_lines(m.log(), "ERROR", "during.txt"), m.log()
    assert "during.txt.enc" in stored_names(b2_spec)


def test_bucket_vanishes_then_comes_back(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    with mounted(b2_spec, mnt, tmp_path / "cache-0", rsa_keys.args()):
        (mnt / "a.txt").write_bytes(b"a" * 1000)
        (mnt / "d").mkdir()
        (mnt / "d" / "b.txt").write_bytes(b"b" * 1000)

    with mounted(b2_spec, mnt, cache, rsa_keys.args()) as m:
        assert sorted(os.listdir(mnt)) == ["a.txt", "d"]
        assert os.listdir(mnt / "d") == ["b.txt"]
        # Every version, then the bucket itself, deleted behind the mount's back.
        store = b2_spec.open()
        for obj in list(store.iter_all("")):
            for version in store.versions(obj.name):
                store.delete_version(version)
        store.api.delete_bucket(store.bucket)

        code = errno_of(lambda: (mnt / "a.txt").read_bytes())
        assert code in (errno.EIO, errno.ENOENT)
        # (the content object: a small file's key object comes with the listing)
        assert log_lines(m.log(), "a.txt.enc"), m.log()
        # Written into a directory still cached: kept in the outbox for a later mount.
        (mnt / "d" / "new.txt").write_bytes(b"written while the bucket was gone\n")
        wait_until("the failed upload", lambda: log_lines(m.log(), "ERROR", "upload of d/new.txt"))
        assert (mnt / "d" / "new.txt").read_bytes() == b"written while the bucket was gone\n"
    assert "Traceback" not in m.log(), m.log()
    assert len(outbox_entries(cache)) == 1

    server.create_bucket(b2_spec.bucket)
    with mounted(b2_spec, mnt, cache, rsa_keys.args()):
        wait_until("the upload by the next mount", lambda: not outbox_entries(cache))
        assert os.listdir(mnt) == ["d"]
        assert (mnt / "d" / "new.txt").read_bytes() == b"written while the bucket was gone\n"
    assert stored_names(b2_spec) == {"d/new.txt.enc", "d/new.txt.key.enc"}


def small_tree(root: Path) -> Path:
    rng = random.Random(6)
    src = root / "src"
    for i in range(12):
        d = src / f"dir{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.choice([0, 100, 5000, 70_000, 300_000]))
        (d / f"file{i}.bin").write_bytes(data)
        ns = 1_650_000_000_000_000_000 + rng.randrange(10**15)
        os.utime(d / f"file{i}.bin", ns=(ns, ns))
    return src


def test_transient_faults_during_normal_use(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt = b2_spec.server, tmp_path / "mnt"
    src = small_tree(tmp_path)
    # (kind, fault, how many in a row, after how many requests): spread over the run, each
    # burst within what the mount's retries absorb (b2sdk retries a 503 or 429 itself; a
    # body cut short costs a whole attempt; the outbox retries uploads until they succeed).
    faults = [
        ("upload", "503", 3, 0),
        ("upload", "drop", 1, 3),
        ("upload", "429", 1, 6),
        ("b2_get_upload_url", "expired", 1, 2),
        ("b2_list_file_names", "503", 3, 0),
        ("download", "503", 3, 0),
        ("download", "drop", 1, 3),
        ("download", "429", 3, 6),
    ]

    def sprinkle() -> None:
        server.clear_faults()  # none left over from the previous mount
        for kind, fault, count, after in faults:
            server.inject(kind, fault, count, retry_after=1, after=after)

    with mounted(b2_spec, mnt, tmp_path / "cache-1", rsa_keys.args()):
        sprinkle()
        shutil.copytree(src, mnt / "tree")
        assert tree_snapshot(mnt / "tree") == tree_snapshot(src)
    with mounted(b2_spec, mnt, tmp_path / "cache-2", rsa_keys.args()) as m:
        sprinkle()
        assert tree_snapshot(mnt / "tree") == tree_snapshot(src)
    hit = server.fault_counts()
    assert hit.get("b2_upload_file", 0) >= 5 and hit.get("b2_download_file_by_id", 0) >= 7, hit
    assert "Traceback" not in m.log() and not log_lines(m.log(), "ERROR"), m.log()
