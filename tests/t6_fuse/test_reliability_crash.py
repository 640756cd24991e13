"""kill -9 of the mount daemon while an upload is on the wire (slowed loopback B2).

At every moment a fresh reader (``b2cryptfs ls``/``cat``, another mount) sees a whole file:
nothing or the old content until the new pair is complete, never half a pair. The next
mount with the same cache directory uploads what was left, and the file is then complete.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mountutil import B2CRYPTFS, Keys, Mount, StoreSpec, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import (  # noqa: F401
    HEAVY,
    MB,
    b2_spec,
    cli,
    outbox_entries,
    versions,
    wait_until,
)

from b2cryptfs.bucket.pairs import PairStore

pytestmark = requires_fuse

SIZE = (20 if HEAVY else 3) * MB
# Slow enough that the content upload is still running while the test looks around.
MBPS = 2.0 * SIZE / (3 * MB)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uploads_of(spec: StoreSpec, name: str) -> int:
    return sum(1 for v in versions(spec) if v["fileName"] == name and v["action"] == "upload")


def listed(spec: StoreSpec) -> dict[str, int]:
    """``b2cryptfs ls -l`` of the store root: name -> size."""
    out = cli(spec, "ls", "-l", spec.url + "/").stdout
    sizes = {}
    for line in out.splitlines():
        fields = line.split()
        sizes[fields[-1]] = int(fields[1])  # format, size, date, time, name
    return sizes


class Watcher:
    """Lists the store over and over in a thread, recording every state it sees."""

    def __init__(self, spec: StoreSpec) -> None:
        self.pairs = PairStore(spec.open())
        self.seen: list[dict[str, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _observe(self) -> None:
        files = self.pairs.list_dir("").files
        state = {name: e.size for name, e in files.items() if e.key is not None}
        if not self.seen or self.seen[-1] != state:
            self.seen.append(state)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._observe()
            time.sleep(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, after one last look (the final state is recorded even if it came
        about between two polls)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.ident is None:
            return  # never started
        self._thread.join(30)
        self._observe()


@pytest.fixture
def watcher(b2_spec: StoreSpec) -> Iterator[Watcher]:  # noqa: F811
    w = Watcher(b2_spec)
    try:
        yield w
    finally:
        w.stop()


def cat(spec: StoreSpec, keys: Keys, path: str) -> bytes:
    res = subprocess.run(
        [*B2CRYPTFS, "cat", *keys.args(), f"{spec.url}/{path}"],
        env=spec.env,
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def test_kill9_mid_upload_of_a_new_file(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    data = random.Random(31).randbytes(SIZE)
    m = Mount(b2_spec, mnt, cache, rsa_keys.args())
    try:
        m.start()
        (mnt / "keep.txt").write_bytes(b"keep\n")
        wait_until("keep.txt uploaded", lambda: not outbox_entries(cache))
        watcher.start()
        server.configure(bandwidth_mbps=MBPS)
        (mnt / "big.bin").write_bytes(data)
        # Key object first: once it is stored, the content object is on the wire.
        wait_until("the key object", lambda: uploads_of(b2_spec, "big.bin.key.enc"))
        assert uploads_of(b2_spec, "big.bin.enc") == 0, "the upload was not slow enough"
        assert listed(b2_spec) == {"keep.txt": 5}  # the lone key object is invisible
        m.kill9()
    finally:
        m.close(expect_exit=None)
        server.configure(bandwidth_mbps=0)

    # What the daemon had already handed to the kernel may still reach the server after
    # its death: either way, never half a file.
    assert listed(b2_spec) in ({"keep.txt": 5}, {"big.bin": SIZE, "keep.txt": 5})
    assert len(outbox_entries(cache)) == 1

    with mounted(b2_spec, mnt, cache, rsa_keys.args()):
        wait_until("the outbox to drain", lambda: not outbox_entries(cache), timeout=120)
        watcher.stop()
        assert sha((mnt / "big.bin").read_bytes()) == sha(data)
    assert listed(b2_spec) == {"big.bin": SIZE, "keep.txt": 5}
    # Whenever the store was looked at: without the file, then with all of it.
    assert watcher.seen == [{"keep.txt": 5}, {"big.bin": SIZE, "keep.txt": 5}], watcher.seen


def test_kill9_mid_upload_of_an_overwrite(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    old = b"the old content\n" * 4000
    new = random.Random(32).randbytes(SIZE)

    def whole(got: bytes) -> bool:
        """The old content, or the new one once its pair is complete in the store."""
        if got == old:
            return True
        return sha(got) == sha(new) and uploads_of(b2_spec, "f.bin.enc") == 2

    m = Mount(b2_spec, mnt, cache, rsa_keys.args())
    try:
        m.start()
        (mnt / "f.bin").write_bytes(old)
        wait_until("the old version uploaded", lambda: not outbox_entries(cache))
        watcher.start()
        server.configure(bandwidth_mbps=MBPS)
        (mnt / "f.bin").write_bytes(new)
        # The new key object is stored, the new content is on the wire: the newest key
        # no longer matches the stored content, and readers must still get the old file.
        wait_until("the new key object", lambda: uploads_of(b2_spec, "f.bin.key.enc") == 2)
        assert uploads_of(b2_spec, "f.bin.enc") == 1, "the upload was not slow enough"
        assert whole(cat(b2_spec, rsa_keys, "f.bin"))
        m.kill9()
    finally:
        m.close(expect_exit=None)
        server.configure(bandwidth_mbps=0)

    # (What the daemon had handed to the kernel may still reach the server after its death.)
    assert whole(cat(b2_spec, rsa_keys, "f.bin"))
    with mounted(
        b2_spec, mnt, tmp_path / "other-cache", rsa_keys.args(), extra_args=["--read-only"]
    ):
        assert whole((mnt / "f.bin").read_bytes())

    with mounted(b2_spec, mnt, cache, rsa_keys.args()):
        wait_until("the outbox to drain", lambda: not outbox_entries(cache), timeout=120)
        watcher.stop()
        assert sha((mnt / "f.bin").read_bytes()) == sha(new)
    assert listed(b2_spec) == {"f.bin": SIZE}
    # Whenever the store was looked at: the old file whole, then the new one whole.
    assert watcher.seen == [{"f.bin": len(old)}, {"f.bin": SIZE}], watcher.seen
    assert sha(cat(b2_spec, rsa_keys, "f.bin")) == sha(new)
