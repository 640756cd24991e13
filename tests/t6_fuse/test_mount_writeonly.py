"""A mount with only the public key: it writes, lists, renames and deletes, but cannot read."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = requires_fuse


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_write_only_mount(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    mnt = tmp_path / "mnt"
    with mounted(mount_store, mnt, tmp_path / "cache", rsa_keys.args()):
        (mnt / "existing.txt").write_text("written with the private key at hand\n")
        (mnt / "keep.txt").write_text("keep me\n")

    with mounted(mount_store, mnt, tmp_path / "cache-wo", rsa_keys.args(write_only=True)) as m:
        # Listing and sizes work without the private key.
        assert sorted(os.listdir(mnt)) == ["existing.txt", "keep.txt"]
        assert os.stat(mnt / "keep.txt").st_size == len("keep me\n")
        # Reading existing content does not.
        with pytest.raises(PermissionError) as info:
            (mnt / "keep.txt").read_bytes()
        assert info.value.errno == errno.EACCES
        res = subprocess.run(["cat", str(mnt / "keep.txt")], capture_output=True, text=True)
        assert res.returncode != 0 and "Permission denied" in res.stderr

        # Create, overwrite, rename, delete, mkdir.
        (mnt / "new.txt").write_text("new file\n")
        (mnt / "gone.txt").write_text("to be deleted\n")
        (mnt / "existing.txt").write_text("overwritten without the private key\n")
        os.rename(mnt / "new.txt", mnt / "renamed.txt")
        os.unlink(mnt / "gone.txt")
        (mnt / "sub").mkdir()
        (mnt / "sub" / "deep.txt").write_text("deep\n")
        assert sorted(os.listdir(mnt)) == ["existing.txt", "keep.txt", "renamed.txt", "sub"]
        assert os.stat(mnt / "existing.txt").st_size == len("overwritten without the private key\n")
    # The log says why, once (a warning naming the file), however often it is tried.
    why = [line for line in m.log().splitlines() if "WARNING" in line and "keep.txt" in line]
    assert len(why) == 1 and "private key" in why[0], m.log()

    with mounted(mount_store, mnt, tmp_path / "cache", rsa_keys.args()):
        assert sorted(os.listdir(mnt)) == ["existing.txt", "keep.txt", "renamed.txt", "sub"]
        assert (mnt / "existing.txt").read_text() == "overwritten without the private key\n"
        assert (mnt / "renamed.txt").read_text() == "new file\n"
        assert (mnt / "keep.txt").read_text() == "keep me\n"
        assert (mnt / "sub" / "deep.txt").read_text() == "deep\n"
