"""FUSE requests that arrive before the store is open wait for it.

The mount is made while the store still opens (b2sdk's import, authorization, the bucket's
look-up and the root's listing): the FUSE side is ready much earlier. Until the store is
open every request waits here, so that nothing is answered from an empty tree (no ENOENT,
no empty listing); if opening fails, the waiting requests get EIO and the mount ends.
"""

from __future__ import annotations

import errno
from typing import cast

import pyfuse3
import trio

from b2cryptfs.fs.operations import Operations
from b2cryptfs.vfs.core import Vfs

_CO_COROUTINE = 0x80  # code flag of an ``async def`` (inspect.CO_COROUTINE)


def _request_names() -> tuple[str, ...]:
    """Every request handler of Operations (the async methods; init is not one)."""
    return tuple(
        name
        for name, fn in vars(Operations).items()
        if getattr(getattr(fn, "__code__", None), "co_flags", 0) & _CO_COROUTINE
    )


REQUESTS = _request_names()


class GatedOperations(Operations):
    """Operations whose requests wait for :meth:`open_gate` (or fail after
    :meth:`fail_gate`).

    The waiting versions are instance attributes that shadow the class's handlers; opening
    the gate deletes them, so that once the store is open a request costs nothing extra.
    """

    def __init__(self) -> None:
        super().__init__(cast(Vfs, None))  # the vfs comes with open_gate()
        self._opened = trio.Event()
        self._failed = False
        for name in REQUESTS:
            setattr(self, name, self._waiting(name))

    def _waiting(self, name: str):  # type: ignore[no-untyped-def]
        async def wait_then_serve(*args):  # type: ignore[no-untyped-def]
            await self._opened.wait()
            if self._failed:
                raise pyfuse3.FUSEError(errno.EIO)
            return await getattr(Operations, name)(self, *args)

        return wait_then_serve

    @property
    def is_open(self) -> bool:
        return self._opened.is_set() and not self._failed

    def open_gate(self, vfs: Vfs) -> None:
        """The store is open: serve every request, waiting or new, from ``vfs``."""
        self.vfs = vfs
        for name in REQUESTS:
            self.__dict__.pop(name, None)
        self._opened.set()

    def fail_gate(self) -> None:
        """The store cannot be opened (or the mount stops first): the waiting requests, and
        new ones, get EIO. Nothing changes once the gate is open."""
        if not self._opened.is_set():
            self._failed = True
            self._opened.set()
