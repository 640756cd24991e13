"""getxattr answers a name outside the mount's own prefix without asking the vfs: every
attribute the mount has must therefore be under that prefix."""

from __future__ import annotations

from b2cryptfs.fs.operations import OWN_XATTR_PREFIX
from b2cryptfs.vfs.core import XATTR_FORMAT, XATTR_RECIPIENTS
from b2cryptfs.vfs.uploadinfo import UPLOAD_XATTRS


def test_every_attribute_of_the_mount_is_under_the_fast_path_prefix() -> None:
    names = [XATTR_FORMAT, XATTR_RECIPIENTS, *UPLOAD_XATTRS]
    assert len(names) == 5
    for name in names:
        assert name.encode().startswith(OWN_XATTR_PREFIX), name
