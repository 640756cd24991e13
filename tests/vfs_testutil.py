"""Helpers for tests that drive the vfs core directly (no kernel): a Vfs over a DirStore in a
temporary directory, and path-based shortcuts for the inode-based calls."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import trio

from b2cryptfs.bucket.factory import make_pairs
from b2cryptfs.cache.cachedir import CacheDir
from b2cryptfs.keys.types import X25519Identity
from b2cryptfs.store.base import Store
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.config import MountConfig
from b2cryptfs.vfs.core import Vfs
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.namespace import ROOT_INO


def run(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    return trio.run(fn, *args)


def x25519_identity() -> X25519Identity:
    return X25519Identity(os.urandom(32))


def make_config(tmp: Path, store: Store, **kw: Any) -> MountConfig:
    ident = kw.pop("identity", None)
    if ident is not None:
        kw.setdefault("identities", [ident])
        kw.setdefault("recipients", [ident.recipient()])
    return MountConfig(
        store_url=store.url,
        mountpoint=str(tmp / "mnt"),
        cache_dir=str(tmp / "cache"),
        **kw,
    )


@contextlib.asynccontextmanager
async def open_vfs(
    tmp: Path,
    *,
    store: Store | None = None,
    settle: float = 0.0,
    retry_base: float = 0.01,
    drain: bool = True,
    **config: Any,
) -> AsyncIterator[Vfs]:
    """A started Vfs; on exit it is shut down like an unmount (outbox drained)."""
    if store is None:
        store = DirStore(str(tmp / "store"), create=True)
    cfg = make_config(tmp, store, **config)
    cache = CacheDir(cfg.cache_dir, store.url)
    try:
        vfs = Vfs(make_pairs(cfg, store), cfg, cache, settle=settle, retry_base=retry_base)
        async with trio.open_nursery() as nursery:
            await vfs.start(nursery)
            try:
                yield vfs
                if drain:
                    await vfs.shutdown()
            finally:
                nursery.cancel_scope.cancel()
    finally:
        cache.close()


async def ino_of(vfs: Vfs, path: str) -> int:
    ino = ROOT_INO
    for leaf in [p for p in path.split("/") if p]:
        ino = (await vfs.lookup(ino, leaf)).ino
    return ino


async def parent_and_leaf(vfs: Vfs, path: str) -> tuple[int, str]:
    parent, _, leaf = path.rpartition("/")
    return await ino_of(vfs, parent), leaf


async def write_file(vfs: Vfs, path: str, data: bytes, *, chunk: int = 128 * 1024) -> int:
    """Create (or replace) a file the way ``cat > path`` does; returns its inode."""
    parent, leaf = await parent_and_leaf(vfs, path)
    try:
        ino = (await vfs.lookup(parent, leaf)).ino
        fh, _ = await vfs.open(ino, os.O_WRONLY | os.O_TRUNC)
    except OpError as exc:
        if exc.errno != errno.ENOENT:
            raise
        fh, attr = await vfs.create(parent, leaf, 0o644, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        ino = attr.ino
    for off in range(0, len(data), chunk):
        await vfs.write(fh, off, data[off : off + chunk])
    await vfs.flush(fh)
    await vfs.release(fh)
    return ino


async def read_file(vfs: Vfs, path: str, *, chunk: int = 128 * 1024) -> bytes:
    ino = await ino_of(vfs, path)
    fh, _ = await vfs.open(ino, os.O_RDONLY)
    try:
        out = []
        off = 0
        while True:
            data = await vfs.read(fh, off, chunk)
            if not data:
                break
            out.append(data)
            off += len(data)
        return b"".join(out)
    finally:
        await vfs.release(fh)


async def listdir(vfs: Vfs, path: str = "") -> list[str]:
    fh = await vfs.opendir(await ino_of(vfs, path))
    try:
        return [name for name, _ in await vfs.readdir(fh, 0)]
    finally:
        await vfs.releasedir(fh)


def all_bytes_under(root: Path) -> bytes:
    """Every byte of every regular file below ``root`` (to look for leaked plaintext)."""
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with contextlib.suppress(OSError), open(p, "rb") as f:
                out.append(f.read())
    return b"".join(out)
