"""setattr: truncate, chmod, chown and utimens of files and directories.

A metadata change never moves content: a closed, uploaded file gets a new version of its
content object's file info (``PairStore.set_meta``, server-side); a pending upload carries
the new metadata (its outbox entry); a file being written seals with it; a directory gets a
new directory object (``PairStore.set_dir_meta``), the root a new root object. A directory's
implicit mtime (a name came or went) is stored later, once the directory is quiet
(vfs/dirtimes.py).
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from collections.abc import Callable

import trio

from b2cryptfs.bucket.meta import UNKNOWN, Meta
from b2cryptfs.errors import B2CryptfsError
from b2cryptfs.vfs.content import Content
from b2cryptfs.vfs.dirtimes import DirTimes
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.metadata import (
    Caller,
    after_chown,
    check_chmod,
    check_chown,
    chmod_mode,
    killed_privs,
)
from b2cryptfs.vfs.namespace import Node, split
from b2cryptfs.vfs.overlay import Overlay
from b2cryptfs.vfs.parts import Part, Shared
from b2cryptfs.vfs.pathuploads import settle_path
from b2cryptfs.vfs.views import Attr

Change = Callable[[Meta], Meta]

log = logging.getLogger(__name__)


class Attrs(Part):
    """What a setattr changes, and where that change is kept."""

    def __init__(self, shared: Shared, overlay: Overlay, content: Content) -> None:
        super().__init__(shared)
        self.overlay = overlay
        self.content = content
        # The namespace lock (vfs/tree.py takes it too): no directory moves while its
        # pending mtime is written.
        self.dir_times = DirTimes(self._store_pending_mtime, trio.Lock())

    async def setattr(
        self,
        ino: int,
        *,
        size: int | None = None,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        caller: Caller | None = None,
    ) -> Attr:
        node = self.table.get(ino)
        privileged = caller is None or caller.root
        if size is not None and not node.is_dir:
            changed = await self.content.truncate(node, size)
            if not changed and mtime_ns is None:
                mtime_ns = time.time_ns()  # ext4 sets the mtime even when the size stays
        if mode is None and uid is None and gid is None and mtime_ns is None and atime_ns is None:
            if size is not None and not privileged:
                return await self._kill_privs(node)
            return await self.overlay.attr_of(node)
        self.ctx.check_writable()
        cur = await self.overlay.attr_of(node)
        new_mode = None
        if mode is not None:
            check_chmod(caller, cur.mode, cur.uid, mode)
            new_mode = chmod_mode(caller, cur.mode, cur.gid, mode)
        if uid is not None or gid is not None:
            check_chown(caller, cur.uid, cur.gid, uid, gid)

        def change(meta: Meta) -> Meta:
            m = meta.updated(
                mode=cur.mode if meta.mode is None else meta.mode,
                uid=cur.uid if meta.uid is None else meta.uid,
                gid=cur.gid if meta.gid is None else meta.gid,
            )
            if new_mode is not None:
                m = m.updated(mode=stat.S_IFMT(m.mode or cur.mode) | stat.S_IMODE(new_mode))
            if uid is not None or gid is not None:
                m = m.updated(
                    uid=m.uid if uid is None else uid,
                    gid=m.gid if gid is None else gid,
                    mode=after_chown(m.mode or cur.mode),
                )
            if size is not None and not privileged:
                m = m.updated(mode=killed_privs(m.mode or cur.mode))
            if mtime_ns is not None:
                m = m.updated(mtime_ns=mtime_ns)
            if atime_ns is not None:
                m = m.updated(atime_ns=atime_ns)
            return m

        await self.apply(node, change, mtime_ns)
        return await self.overlay.attr_of(node)

    async def _kill_privs(self, node: Node) -> Attr:
        cur = await self.overlay.attr_of(node)
        if cur.mode & stat.S_ISUID or (cur.mode & stat.S_ISGID and cur.mode & stat.S_IXGRP):
            mode = killed_privs(cur.mode)
            await self.apply(node, lambda m: m.updated(mode=mode), None)
            return await self.overlay.attr_of(node)
        return cur

    async def apply(self, node: Node, change: Change, mtime_ns: int | None) -> None:
        change = _stamped(change, time.time_ns())
        if node.is_dir:
            await self._dir(node, change)
        elif node.unlinked:
            # Kept for the open descriptors only: the name and its objects are gone.
            if node.staging is not None:
                node.meta = change(node.meta or UNKNOWN)
            node.last_meta = change(node.last_meta)
            if mtime_ns is not None:
                node.content_mtime_ns = node.last_mtime_ns = mtime_ns
        else:
            await self._file(node, change, mtime_ns)

    async def _file(self, node: Node, change: Change, mtime_ns: int | None) -> None:
        if node.staging is not None:
            # Not under the node's lock: a seal in progress (dirty until it ends) takes the
            # change into its entry, and rm right after chmod must not wait for the seal.
            node.meta = change(node.meta or UNKNOWN)
            if mtime_ns is not None:
                node.content_mtime_ns = mtime_ns
            if node.dirty:
                return  # sealed with its content
        entry = await settle_path(self.outbox, node.path)
        if entry is not None:
            try:
                self.outbox.set_meta(entry, change(entry.meta or UNKNOWN))
            except OSError as exc:
                raise OpError(exc.errno or errno.EIO, f"outbox: {exc}") from None
            return
        view = await self.overlay.view(node.path)
        if view is None or view.remote is None:
            raise OpError(errno.ENOENT, f"{node.path}: no longer exists")
        remote = view.remote
        meta = change(remote.checked_meta())
        if meta == remote.meta:
            return
        updated = await self.ctx.store(self.ctx.pairs.set_meta, remote, meta)
        parent, leaf = split(node.path)
        self.listings.set_file(parent, leaf, updated)

    async def dir_changed(self, node: Node, now: int | None = None) -> None:
        """A name in directory ``node`` came or went (or ``node`` was made): its mtime becomes
        now, as on ext4. Shown from memory at once; stored once the directory is quiet, one
        small upload however many names changed (vfs/dirtimes.py)."""
        node.dir_mtime_ns = time.time_ns() if now is None else now
        self.dir_times.changed(node)

    async def _store_pending_mtime(self, node: Node) -> None:
        """Store the pending mtime of ``node`` (with the metadata it has: its listing first)."""
        try:
            await self.listings.get(split(node.path)[0] if node.path else "")
        except B2CryptfsError:
            pass  # the last listing (or none) serves; the write below reports the store
        await self._dir(node, lambda m: m)

    async def _dir(self, node: Node, change: Change) -> None:
        pending, pending_c = node.dir_mtime_ns, node.dir_ctime_ns
        meta = self.overlay.dir_meta(node)
        # Pending times are written with any change of its own.
        if pending is not None:
            meta = meta.updated(mtime_ns=pending)
        if pending_c is not None:
            meta = meta.updated(ctime_ns=max(pending_c, meta.ctime_ns or 0))
        meta = change(meta)
        await self.ctx.store(self.ctx.pairs.set_dir_meta, node.path, meta)
        if node.path:
            parent, leaf = split(node.path)
            self.listings.set_dir_meta(parent, leaf, meta)
        else:
            self.listings.set_own_meta("", meta)
        node.meta = meta
        # (A newer change made meanwhile waits for its own write.)
        if node.dir_mtime_ns == pending:
            node.dir_mtime_ns = None
        if node.dir_ctime_ns == pending_c:
            node.dir_ctime_ns = None
        if node.dir_mtime_ns is None and node.dir_ctime_ns is None:
            self.dir_times.stored(node)

    def renamed_dir(self, node: Node) -> None:
        """Directory ``node`` was renamed: its change time becomes now (stored later)."""
        node.dir_ctime_ns = time.time_ns()
        self.dir_times.changed(node)


def _stamped(change: Change, now: int) -> Change:
    """``change`` that also sets the change time to ``now`` when it changes anything (a
    chmod to the mode already there stays free: no request)."""

    def stamped(meta: Meta) -> Meta:
        new = change(meta)
        return new if new == meta else new.updated(ctime_ns=now)

    return stamped
