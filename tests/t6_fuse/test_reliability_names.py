"""Names B2 would refuse are refused by the mount at once, with the right errno (never EIO
after close), and the mount goes on working."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    Keys,
    StoreSpec,
    b2_store,
    dir_store,
    mounted,
    requires_fuse,
    rsa_keys,
)
from reliability_util import log_lines

pytestmark = requires_fuse


def refused(fn) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn()
    return info.value.errno


@pytest.fixture(params=["dir", "b2-prefix"])
def names_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    if request.param == "dir":
        return dir_store(tmp_path)
    spec = b2_store(tmp_path, request.getfixturevalue("b2_server"))
    # A bucket prefix counts against B2's limit on object names too.
    spec.url += "/some/prefix"
    return spec


def test_names_b2_refuses(names_store: StoreSpec, rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    mnt = tmp_path / "mnt"
    prefix = len("some/prefix/") if names_store.kind == "b2" else 0
    with mounted(names_store, mnt, tmp_path / "cache", rsa_keys.args()) as m:
        # Up to NAME_MAX (255 bytes) names are stored under long-name stand-ins (t3_bucket
        # tests); past it the name is refused as ext4 does.
        long_leaf = "n" * 256
        assert refused(lambda: (mnt / long_leaf).write_bytes(b"x")) == errno.ENAMETOOLONG
        assert refused(lambda: os.mkdir(mnt / ("d" * 256))) == errno.ENAMETOOLONG
        # Control characters: B2 refuses them in any name.
        assert refused(lambda: (mnt / "bad\x01name").write_bytes(b"x")) == errno.EINVAL
        assert refused(lambda: os.mkdir(mnt / "tab\tdir")) == errno.EINVAL
        # A path over B2's 1,024 bytes, through directories that each fit.
        deep = mnt
        for i in range(4):
            deep = deep / (str(i) * 200)
            deep.mkdir()
        used = len(str(deep.relative_to(mnt)).encode()) + 1 + prefix
        leaf = "f" * (1024 - used - len(".key.enc") + 1)  # one byte too many
        assert len(leaf) <= 242
        assert refused(lambda: (deep / leaf).write_bytes(b"x")) == errno.ENAMETOOLONG
        (deep / "fits.txt").write_bytes(b"a long path that fits\n")
        # Renaming to a refused name is refused too; the file keeps its name.
        (mnt / "ok.txt").write_bytes(b"fine\n")
        assert refused(lambda: os.rename(mnt / "ok.txt", mnt / long_leaf)) == errno.ENAMETOOLONG
        assert refused(lambda: os.rename(mnt / "ok.txt", mnt / "c\x7f")) == errno.EINVAL

        # Nothing became EIO and the mount goes on working.
        assert sorted(os.listdir(mnt)) == ["0" * 200, "ok.txt"]
        assert (mnt / "ok.txt").read_bytes() == b"fine\n"
        assert (deep / "fits.txt").read_bytes() == b"a long path that fits\n"
        (mnt / "after.txt").write_bytes(b"after\n")
        assert not log_lines(m.log(), "ERROR"), m.log()

    with mounted(names_store, mnt, tmp_path / "cache-2", rsa_keys.args()):
        assert sorted(os.listdir(mnt)) == ["0" * 200, "after.txt", "ok.txt"]
        assert (deep / "fits.txt").read_bytes() == b"a long path that fits\n"


def test_the_longest_path_that_fits_is_stored(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    store, mnt = dir_store(tmp_path), tmp_path / "mnt"
    with mounted(store, mnt, tmp_path / "cache", rsa_keys.args()):
        deep = mnt / ("d" * 250) / ("e" * 250) / ("f" * 250) / ("h" * 250)
        deep.mkdir(parents=True)
        leaf = "g" * (1024 - len(".key.enc") - 4 * 251)  # the object name is 1,024 bytes
        assert refused(lambda: (deep / (leaf + "g")).write_bytes(b"x")) == errno.ENAMETOOLONG
        (deep / leaf).write_bytes(b"the longest path that fits\n")
    with mounted(store, mnt, tmp_path / "cache-2", rsa_keys.args()):
        assert (deep / leaf).read_bytes() == b"the longest path that fits\n"
