"""How a path is seen: the cached listings overlaid with what exists only locally, as
:class:`FileView` records and attributes.

Where a file's content comes from, newest first: the node's staging file (open for writing),
the newest pending outbox entry of its path (sealed, not yet uploaded), the remote pair in
the cached listing.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Container
from stat import S_IFDIR, S_IFREG

from b2cryptfs.bucket.meta import UNKNOWN, Meta
from b2cryptfs.errors import AlreadyExists, B2CryptfsError, InvalidName, NameTooLong
from b2cryptfs.vfs.context import BLKSIZE
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.metadata import shown
from b2cryptfs.vfs.namespace import DirState, Node, is_under, join, split
from b2cryptfs.vfs.parts import Part, Shared
from b2cryptfs.vfs.versions import Versions
from b2cryptfs.vfs.views import Attr, FileView

log = logging.getLogger("b2cryptfs.vfs.state")


class Overlay(Part):
    """Views and attributes of paths and nodes, and the checks on new names."""

    def __init__(self, shared: Shared, versions: Versions) -> None:
        super().__init__(shared)
        self.versions = versions

    def local_names(self, dirpath: str) -> tuple[set[str], set[str]]:
        """Files and subdirectories of ``dirpath`` that exist only locally so far."""
        files = self.outbox.index.files(dirpath)
        dirs = self.outbox.index.dirs(dirpath)
        cut = len(dirpath) + 1 if dirpath else 0
        for path in [n.path for n in self.table.staged()]:  # open files: few
            if not is_under(path, dirpath):
                continue
            head, sep, _ = path[cut:].partition("/")
            (dirs if sep else files).add(head)
        return files, dirs

    def view_sync(self, path: str, ds: DirState | None) -> FileView | None:
        remote = ds.files.get(split(path)[1]) if ds is not None else None
        node = self.table.by_path.get(path)
        if node is not None and not node.is_dir and node.staging is not None:
            st = node.staging
            meta = node.meta or UNKNOWN
            return FileView(st.size, node.content_mtime_ns, True, remote, None, node, meta)
        pending = self.outbox.latest(path)
        if pending is not None:
            meta = pending.meta or UNKNOWN
            mtime = meta.mtime_ns if meta.mtime_ns is not None else pending.mtime_ms * 1_000_000
            return FileView(pending.plaintext_size, mtime, True, remote, pending, None, meta)
        if remote is None:
            return None
        size = remote.size
        if size is None:
            size = self.versions.exact_sizes.get(remote.content.version_id)
        exact = size is not None
        meta = remote.meta
        mtime = meta.mtime_ns if meta.mtime_ns is not None else remote.mtime_ms * 1_000_000
        estimate = size if size is not None else remote.size_estimate
        return FileView(estimate, mtime, exact, remote, None, None, meta)

    async def view(self, path: str) -> FileView | None:
        if not path:
            return None
        return self.view_sync(path, await self.listings.get(split(path)[0]))

    async def existing_kind(self, path: str) -> str:
        """Kind of a path that must exist: "dir" or "file", else ENOENT."""
        kind = await self.kind(path)
        if kind is None:
            raise OpError(errno.ENOENT)
        return kind

    async def kind(self, path: str) -> str | None:
        """Kind of a path: "dir", "file" or None (a name both ways shows as a directory)."""
        if path == "":
            return "dir"
        parent, leaf = split(path)
        ds = await self.listings.get(parent)
        if (
            leaf in ds.dirs
            or self.outbox.index.has_dir(parent, leaf)
            or any(is_under(n.path, path) for n in self.table.staged())
        ):
            return "dir"
        if self.view_sync(path, ds) is not None:
            return "file"
        return None

    async def children(self, dirpath: str) -> tuple[dict[str, FileView], set[str]]:
        ds = await self.listings.get(dirpath)
        ofiles, odirs = self.local_names(dirpath)
        dirs = set(ds.dirs) | odirs
        files: dict[str, FileView] = {}
        for leaf in set(ds.files) | ofiles:
            if leaf in dirs:
                self.ctx.warn_once(
                    f"both:{join(dirpath, leaf)}",
                    "%s is both a file and a directory in the store; showing the directory",
                    join(dirpath, leaf),
                )
                continue
            view = self.view_sync(join(dirpath, leaf), ds)
            if view is not None:
                files[leaf] = view
        return files, dirs

    def dir_meta(self, node: Node) -> Meta:
        """A directory's metadata from its parent's listing (kept on the node meanwhile);
        the root's from its own listing (its root object)."""
        if node.path:
            parent, leaf = split(node.path)
            ds = self.listings.cached(parent)
            if ds is not None:
                node.meta = ds.dir_metas.get(leaf)
        elif not node.unlinked:
            ds = self.listings.cached("")
            if ds is not None:
                node.meta = ds.own_meta
        return node.meta or UNKNOWN

    def dir_attr(self, node: Node) -> Attr:
        meta = self.dir_meta(node)
        # A pending implicit mtime (not stored yet, vfs/dirtimes.py) is the newest.
        mtime = node.dir_mtime_ns or meta.mtime_ns or self.ctx.mount_time_ns
        mode, uid, gid = shown(meta, self.ctx.dir_perm, self.ctx.uid, self.ctx.gid, S_IFDIR)
        return Attr(
            ino=node.ino,
            mode=S_IFDIR | stat.S_IMODE(mode),
            nlink=1,  # "unknown": tools must not count subdirectories from it
            uid=uid,
            gid=gid,
            size=4096,
            mtime_ns=mtime,
            ctime_ns=meta.shown_ctime(max(mtime, node.dir_ctime_ns or 0)),
            blocks=8,
            blksize=BLKSIZE,
            attr_timeout=self.ctx.timeout,
            entry_timeout=self.ctx.timeout,
            atime_ns=meta.atime_ns,
        )

    def file_attr(self, node: Node, view: FileView) -> Attr:
        node.last_size = view.size
        node.last_mtime_ns = view.mtime_ns
        node.last_meta = view.meta
        node.kernel_size = view.size if view.exact else None
        timeout = self.ctx.timeout if view.exact else 0.0
        meta = view.meta
        mode, uid, gid = shown(meta, self.ctx.file_perm, self.ctx.uid, self.ctx.gid, S_IFREG)
        if stat.S_ISDIR(mode):
            mode = S_IFREG | stat.S_IMODE(mode)  # a file never shows as a directory
        return Attr(
            ino=node.ino,
            mode=mode,
            nlink=0 if node.unlinked else 1,
            uid=uid,
            gid=gid,
            size=view.size,
            mtime_ns=view.mtime_ns,
            ctime_ns=meta.shown_ctime(view.mtime_ns),
            blocks=(view.size + 511) // 512,
            blksize=BLKSIZE,
            attr_timeout=timeout,
            entry_timeout=self.ctx.timeout,
            atime_ns=meta.atime_ns,
            rdev=meta.rdev or 0,
        )

    def stale_attr(self, node: Node) -> Attr:
        """Attributes of a node whose name is gone (still open, or not yet forgotten)."""
        if node.is_dir:
            return self.dir_attr(node)
        size = node.staging.size if node.staging is not None else node.last_size
        meta = node.meta if node.staging is not None and node.meta else node.last_meta
        mtime = node.content_mtime_ns or node.last_mtime_ns
        view = FileView(size, mtime, True, None, None, None, meta)
        return self.file_attr(node, view)

    async def exact(self, view: FileView) -> FileView:
        """Make a size exact by opening the pair (seed files carry no size), if we can."""
        if view.exact or view.remote is None or not self.ctx.pairs.can_read:
            return view
        try:
            rc = await self.versions.remote(view.remote)
        except B2CryptfsError as exc:
            self.ctx.warn_once(
                f"size:{view.remote.content.version_id}",
                "%s: cannot read its exact size (%s); showing an estimate",
                view.remote.path,
                exc,
            )
            return view
        view.size = rc.size
        view.exact = True
        return view

    async def attr_of(self, node: Node) -> Attr:
        if node.is_dir:
            if not node.path and self.listings.cached("") is None:
                await self._list_root()
            return self.dir_attr(node)
        if node.unlinked:
            return self.stale_attr(node)
        view = await self.view(node.path)
        if view is None:
            raise OpError(errno.ENOENT, f"{node.path}: no longer exists")
        return self.file_attr(node, await self.exact(view))

    async def _list_root(self) -> None:
        """The root's metadata comes with its listing: list it before showing the root
        (the mount's start usually made that listing already)."""
        try:
            await self.listings.get("")
        except B2CryptfsError as exc:
            self.ctx.warn_once("root-meta", "cannot list the root (%s): showing defaults", exc)

    def dir_node(self, ino: int) -> Node:
        node = self.table.get(ino)
        if not node.is_dir:
            raise OpError(errno.ENOTDIR, f"{node.path}: not a directory")
        if node.unlinked:
            raise OpError(errno.ENOENT, f"{node.path}: directory was removed")
        return node

    async def keep_dir(self, dirpath: str) -> None:
        """A directory left empty keeps existing in the store through a marker object."""
        if not dirpath or self.ctx.config.read_only:
            return
        ds = self.listings.cached(dirpath)
        if ds is None or ds.files or ds.dirs or ds.has_marker:
            return
        ofiles, odirs = self.local_names(dirpath)
        if ofiles or odirs:
            return
        try:
            await self.ctx.store(self.ctx.pairs.mkdir, dirpath)
        except AlreadyExists:
            pass
        except B2CryptfsError as exc:
            log.warning("%s: could not keep the empty directory (%s)", dirpath, exc)
            return
        self.listings.set_marker(dirpath)

    async def files_among(self, path: str) -> set[str]:
        """The leaves of the files ``path`` could collide with that exist (check_collision)."""
        return {
            split(other)[1]
            for _, other in self.ctx.pairs.collision_names(path)
            if await self.kind(other) == "file"
        }

    def check_collision(self, path: str, files: Container[str], ignore: str = "") -> None:
        """Refuse ``P.key`` next to ``P`` and the reverse (they would share an object);
        ``files``: the leaves of the files in ``path``'s directory (or those that matter)."""
        for obj, other in self.ctx.pairs.collision_names(path):
            if other != ignore and split(other)[1] in files:
                log.warning(
                    "refusing to create %s: %s exists and the two would share the object %s",
                    path,
                    other,
                    obj,
                )
                raise OpError(errno.EEXIST, f"{path}: collides with {other}")

    def check_name(self, parent: str, leaf: str, *, is_dir: bool) -> str:
        """A new name's path, or ENAMETOOLONG/EINVAL if the store would refuse it."""
        try:
            return self.ctx.pairs.check_new_name(parent, leaf, is_dir=is_dir)
        except NameTooLong as exc:
            raise OpError(errno.ENAMETOOLONG, str(exc)) from None
        except InvalidName as exc:
            raise OpError(errno.EINVAL, str(exc)) from None
