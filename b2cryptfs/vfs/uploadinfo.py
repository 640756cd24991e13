"""Read-only xattrs that show uploads: the mount's status on its root, a file's upload state.

``user.b2cryptfs.status`` (root directory): JSON, the outbox statistics
(:meth:`b2cryptfs.vfs.outboxstats.OutboxStats.snapshot`) plus what identifies the mount; ``b2cryptfs
status`` and ``b2cryptfs umount --wait`` read it, so no control socket is needed.
``user.b2cryptfs.upload`` (a file): ``writing`` (open, changed, not sealed yet), ``pending``,
``uploading`` or ``stored``. ``user.b2cryptfs.version``: the stored version's id (B2's fileId).
They are not listed by listxattr: copy tools would copy them as if they were the file's own.
"""

from __future__ import annotations

import errno
import json
import os
from typing import TYPE_CHECKING

from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.namespace import ROOT_INO

if TYPE_CHECKING:
    from b2cryptfs.vfs.core import Vfs

XATTR_STATUS = "user.b2cryptfs.status"
XATTR_UPLOAD = "user.b2cryptfs.upload"
XATTR_VERSION = "user.b2cryptfs.version"
UPLOAD_XATTRS = (XATTR_STATUS, XATTR_UPLOAD, XATTR_VERSION)

STATUS_VERSION = 1


def mount_status(vfs: Vfs) -> dict[str, object]:
    """The whole mount's upload status (JSON-able)."""
    writing = sum(1 for node in vfs.table.staged() if node.dirty)
    return {
        "version": STATUS_VERSION,
        "pid": os.getpid(),
        "store": vfs.config.fsname or vfs.config.store_url,
        "read_only": vfs.config.read_only,
        "outbox": vfs.ctx.cache.outbox,
        "writing_files": writing,
        # Paths a cut-short delete, rename or upload may have left an orphan key object at,
        # still to be cleaned (vfs/tidy.py).
        "tidy_pending": vfs.outbox.tidier.due_count(),
        **vfs.outbox.stats.snapshot(vfs.outbox.pending()),
    }


async def upload_xattr(vfs: Vfs, ino: int, name: str) -> bytes:
    """The value of one of :data:`UPLOAD_XATTRS` (ENODATA where it does not apply)."""
    node = vfs.table.get(ino)
    if name == XATTR_STATUS:
        if ino != ROOT_INO:
            raise OpError(errno.ENODATA)
        return json.dumps(mount_status(vfs), sort_keys=True).encode()
    if node.is_dir or node.unlinked:
        raise OpError(errno.ENODATA)
    view = await vfs.overlay.view(node.path)
    if view is None:
        raise OpError(errno.ENOENT)
    if name == XATTR_VERSION:
        if view.remote is None:
            raise OpError(errno.ENODATA, "not stored yet")
        return view.remote.content.version_id.encode()
    if view.staged is not None and view.staged.dirty:
        return b"writing"
    pending = vfs.outbox.stats.upload_state(vfs.outbox.entries_for(node.path))
    if pending is not None:
        return str(pending["state"]).encode()
    return b"stored" if view.remote is not None else b"writing"
