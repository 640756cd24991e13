"""``ls -l`` of a directory of symbolic links on a fresh mount (issue 7): what each target
costs, counted at the loopback B2 server, and that every target reads back, links written
before targets were kept in the listing included."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401

from b2cryptfs.bucket.meta import Meta
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.keys.loader import load_recipients

pytestmark = requires_fuse

LINKS = 50
DOWNLOADS = ("b2_download_file_by_id", "b2_download_file_by_name")


def _targets() -> dict[str, str]:
    out = {f"l{i:02d}": f"../some/where/target-{i}" for i in range(LINKS - 3)}
    out["abs"] = "/etc/hostname"
    out["long"] = "/".join(f"{i:02d}" + "t" * 248 for i in range(16))  # 4 KB: content only
    return out


def _ls(mnt: Path) -> dict[str, str]:
    res = subprocess.run(
        ["ls", "-l", "--time-style=+%s", str(mnt / "links")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    rows = [r for r in res.stdout.splitlines()[1:] if r.startswith("l")]
    return dict(r.split(None, 6)[-1].split(" -> ", 1) for r in rows)


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_ls_l_of_links_on_a_fresh_mount(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    targets = _targets()
    mnt = tmp_path / "mnt"
    with mounted(mount_store, mnt, tmp_path / "cache-1", rsa_keys.args()):
        (mnt / "links").mkdir()
        for name, target in targets.items():
            os.symlink(target, mnt / "links" / name)
    # A link as stored before the copies in the file info: its target in the content only.
    writer = PairStore(mount_store.open(), recipients=load_recipients(str(rsa_keys.public)))
    writer.put_bytes("links/old", b"stored/before", Meta(mode=stat.S_IFLNK | 0o777))
    targets["old"] = "stored/before"
    server = mount_store.server
    with mounted(mount_store, mnt, tmp_path / "cache-2", rsa_keys.args()):
        if server is not None:
            server.reset_stats()
        shown = _ls(mnt)
        calls = server.stats() if server is not None else {}
        st = os.lstat(mnt / "links" / "l07")
    assert shown == targets
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len(targets["l07"])
    if server is not None:
        downloads = sum(calls.get(c, 0) for c in DOWNLOADS)
        # Short targets come with the listing; the 4 KB one and the old one cost their key
        # object and content, downloaded side by side (one round trip), never a third time.
        assert downloads <= 2 * 2, calls
        assert calls.get("b2_list_file_names", 0) <= 2, calls
