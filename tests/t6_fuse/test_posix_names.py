"""NAME_MAX is 255 bytes of UTF-8, as on ext4, and statfs says so (issue 7 item 6)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from mountutil import Keys, dir_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = requires_fuse

# 255 bytes each: ASCII, and two-byte UTF-8 (127 x "é" + "x"); a byte more is refused.
NAMES = ["f" * 255, "é" * 127 + "x"]


@pytest.mark.parametrize("names", ["plain", "encrypted"])
def test_255_byte_names_survive_a_remount(rsa_keys: Keys, tmp_path: Path, names: str) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    spec.extra_args = ["-o", "encrypt_names"] if names == "encrypted" else []
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted(spec, mnt, cache, rsa_keys.args()):
        for n in NAMES:
            assert len(n.encode()) == 255
            (mnt / n).mkdir()
            (mnt / n / n).write_text(n)
            os.symlink(n, mnt / n / ("l" + n[1:]))
        for bad in ("g" * 256, "é" * 128):
            with pytest.raises(OSError) as ei:
                (mnt / bad).write_text("x")
            assert ei.value.errno == errno.ENAMETOOLONG
    with mounted(spec, mnt, cache, rsa_keys.args()):
        assert sorted(os.listdir(mnt)) == sorted(NAMES)
        for n in NAMES:
            assert (mnt / n / n).read_text() == n
            assert os.readlink(mnt / n / ("l" + n[1:])) == n


def test_statfs_reports_name_max_255(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    with mounted(spec, tmp_path / "mnt", tmp_path / "cache", rsa_keys.args()):
        assert os.statvfs(tmp_path / "mnt").f_namemax == 255  # what the names above may have
