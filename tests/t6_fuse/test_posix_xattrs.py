"""Extended attributes outside user.*: the mount has none and says "not supported" (issue 11).

``ls -l`` asks every file for security.selinux and system.posix_acl_access; answered with
EOPNOTSUPP it stops asking for the rest of the device (with ENODATA it asks 2 x N times, two
FUSE requests per file). The copy tools must take that answer as "no label, no ACL" silently.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = requires_fuse

FILES = 30


def _tree(mnt: Path) -> Path:
    top = mnt / "d"
    top.mkdir()
    for i in range(FILES):
        (top / f"f{i:02d}").write_text(f"file {i}\n")
    os.symlink("f00", top / "link")
    return top


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_ls_l_asks_for_labels_and_acls_once(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    mnt = tmp_path / "mnt"
    trace = tmp_path / "ls.trace"
    with mounted(mount_store, mnt, tmp_path / "cache", rsa_keys.args()):
        top = _tree(mnt)
        res = subprocess.run(
            ["strace", "-f", "-e", "trace=getxattr,lgetxattr,listxattr,llistxattr", "-o", str(trace), "ls", "-l", str(top)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        with pytest.raises(OSError) as ei:
            os.getxattr(top / "f01", "security.selinux")
        assert ei.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError) as ei:
            os.getxattr(top / "f01", "user.not.there")
        assert ei.value.errno == errno.ENODATA
        assert os.getxattr(top / "f01", "user.b2cryptfs.format") == b"age"
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert len(res.stdout.splitlines()) == FILES + 2  # "total" and the link
    calls = [line for line in trace.read_text().splitlines() if "xattr(" in line]
    asked = [c for c in calls if str(top) in c]
    # Once per name (security.selinux, system.posix_acl_access) for the whole mount (here
    # for the directory named on the command line), not once per file.
    assert 1 <= len(asked) <= 2, calls
    assert all("EOPNOTSUPP" in c for c in asked), asked


@pytest.mark.parametrize("mount_store", ["dir"], indirect=True)
def test_copy_tools_take_not_supported_quietly(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """cp -a, tar with labels and ACLs and rsync -A copy out of the mount without a word."""
    mnt = tmp_path / "mnt"
    with mounted(mount_store, mnt, tmp_path / "cache", rsa_keys.args()):
        top = _tree(mnt)
        runs = [["cp", "-a", str(top), str(tmp_path / "cp")]]
        if shutil.which("tar"):
            runs.append(["tar", "--acls", "--selinux", "-C", str(mnt), "-cf",
                         str(tmp_path / "d.tar"), "d"])  # fmt: skip
        if shutil.which("rsync"):
            runs.append(["rsync", "-aA", f"{top}/", f"{tmp_path / 'rsync'}/"])
        for argv in runs:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert (res.returncode, res.stderr) == (0, ""), (argv, res.stderr)
    assert (tmp_path / "cp" / "f07").read_text() == "file 7\n"
    assert os.readlink(tmp_path / "cp" / "link") == "f00"
