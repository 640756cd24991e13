"""ChaCha20-Poly1305 over runs of chunks, with the GIL released while a chunk is processed.

cryptography's AEAD keeps the GIL for the whole call, so a thread sealing or opening data
stops the event loop for as long (about 0.55 ms per MiB). The same cipher reached through
ctypes in the system's libcrypto (the library Python's own ``_hashlib`` links) runs as fast
and lets other threads go on: a reader's fetch thread can decrypt while the loop answers
FUSE, and a writer's thread can seal while the loop takes the next WRITE.

:class:`RunAead` seals or opens consecutive chunks of one buffer into another, one nonce
(and optional AAD) per chunk; where libcrypto cannot be loaded it does the same through
cryptography, with the GIL held. :data:`NOGIL` says which one is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

TAG_SIZE = 16
KEY_SIZE = 32
NONCE_SIZE = 12

_GET_TAG = 0x10  # EVP_CTRL_AEAD_GET_TAG
_SET_TAG = 0x11  # EVP_CTRL_AEAD_SET_TAG
_PyBUF_WRITABLE = 0x0001


class _PyBuffer(ctypes.Structure):
    # CPython's Py_buffer: the address of any buffer (bytes, memoryview slices) without a copy.
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


@contextmanager
def _address(obj: Any, writable: bool) -> Iterator[tuple[int, int]]:
    """(address, length) of a contiguous buffer, held for the block's duration."""
    view = _PyBuffer()
    _get_buffer(obj, ctypes.byref(view), _PyBUF_WRITABLE if writable else 0)  # raises if not
    try:
        yield view.buf or 0, view.len
    finally:
        _release_buffer(ctypes.byref(view))


def _load() -> Any:
    if os.environ.get("B2CRYPTFS_NO_NOGIL"):  # (tests compare both paths)
        return None
    for name in ("libcrypto.so.3", ctypes.util.find_library("crypto")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)  # CDLL, not PyDLL: every call releases the GIL
            lib.EVP_chacha20_poly1305.restype = ctypes.c_void_p
            if not lib.EVP_chacha20_poly1305():
                continue
        except (OSError, AttributeError):
            continue
        vp, ip, i = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int
        signatures = {
            "EVP_CIPHER_CTX_new": ([], vp),
            "EVP_CIPHER_CTX_free": ([vp], None),
            "EVP_EncryptInit_ex": ([vp, vp, vp, vp, vp], i),
            "EVP_EncryptUpdate": ([vp, vp, ip, vp, i], i),
            "EVP_EncryptFinal_ex": ([vp, vp, ip], i),
            "EVP_DecryptInit_ex": ([vp, vp, vp, vp, vp], i),
            "EVP_DecryptUpdate": ([vp, vp, ip, vp, i], i),
            "EVP_DecryptFinal_ex": ([vp, vp, ip], i),
            "EVP_CIPHER_CTX_ctrl": ([vp, i, i, vp], i),
        }
        try:
            for fn, (args, res) in signatures.items():
                f = getattr(lib, fn)
                f.argtypes, f.restype = args, res
        except AttributeError:
            continue
        return lib
    return None


_lib = _load()
NOGIL = _lib is not None


class ChunkAuthError(Exception):
    """Chunk ``index`` (position in the run) failed authentication."""

    def __init__(self, index: int) -> None:
        super().__init__(f"chunk {index} of the run fails authentication")
        self.index = index


def _spans(total: int, chunk: int, count: int) -> list[tuple[int, int]]:
    # Chunk k is [k * chunk, min(total, (k + 1) * chunk)); only the last may be short.
    if count < 1 or total > count * chunk or (count > 1 and total <= (count - 1) * chunk):
        raise ValueError(f"{total} bytes are not {count} chunks of {chunk}")
    return [(k * chunk, min(total, (k + 1) * chunk) - k * chunk) for k in range(count)]


class RunAead:
    """ChaCha20-Poly1305 under one key for runs of chunks (thread-safe: no shared state)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("ChaCha20-Poly1305 key must be 32 bytes")
        self._key = bytes(key)
        self._fallback = None if NOGIL else ChaCha20Poly1305(self._key)

    def seal_into(
        self,
        nonces: Sequence[bytes],
        src: Any,
        out: Any,
        chunk: int,
        aads: Sequence[bytes | None] | None = None,
    ) -> None:
        """Seal ``src`` as ``len(nonces)`` chunks of ``chunk`` bytes (the last may be
        shorter) into ``out``: each chunk's ciphertext then its tag, back to back, so ``out``
        is ``len(src) + len(nonces) * TAG_SIZE`` bytes."""
        spans = _spans(len(memoryview(src)), chunk, len(nonces))
        if len(memoryview(out)) != spans[-1][0] + spans[-1][1] + len(spans) * TAG_SIZE:
            raise ValueError("output buffer is not the sealed run's size")
        if self._fallback is not None:
            s, o = memoryview(src), memoryview(out)
            for k, (start, n) in enumerate(spans):
                at = start + k * TAG_SIZE
                aad = aads[k] if aads else None
                self._fallback.encrypt_into(
                    nonces[k], s[start : start + n], aad, o[at : at + n + TAG_SIZE]
                )
            return
        lib, outl = _lib, ctypes.c_int()
        with (
            _address(src, False) as (sa, _),
            _address(out, True) as (oa, _),
            self._context(lib.EVP_EncryptInit_ex) as ctx,
        ):
            for k, (start, n) in enumerate(spans):
                at = oa + start + k * TAG_SIZE
                ok = lib.EVP_EncryptInit_ex(ctx, None, None, None, _checked_nonce(nonces[k]))
                aad = aads[k] if aads else None
                if aad:
                    ok &= lib.EVP_EncryptUpdate(ctx, None, ctypes.byref(outl), aad, len(aad))
                ok &= lib.EVP_EncryptUpdate(ctx, at, ctypes.byref(outl), sa + start, n)
                ok &= lib.EVP_EncryptFinal_ex(ctx, at + n, ctypes.byref(outl))
                ok &= lib.EVP_CIPHER_CTX_ctrl(ctx, _GET_TAG, TAG_SIZE, at + n)
                if ok != 1:
                    raise RuntimeError("libcrypto: ChaCha20-Poly1305 seal failed")

    @contextmanager
    def _context(self, init: Any) -> Iterator[int]:
        """A cipher context keyed for sealing or opening (``init``), freed afterwards."""
        ctx = _lib.EVP_CIPHER_CTX_new()
        if not ctx:
            raise MemoryError("libcrypto: no cipher context")
        try:
            if init(ctx, _lib.EVP_chacha20_poly1305(), None, self._key, None) != 1:
                raise RuntimeError("libcrypto: ChaCha20-Poly1305 init failed")
            yield ctx
        finally:
            _lib.EVP_CIPHER_CTX_free(ctx)

    def open_into(
        self,
        nonces: Sequence[bytes],
        src: Any,
        out: Any,
        chunk: int,
        aads: Sequence[bytes | None] | None = None,
    ) -> None:
        """Open ``len(nonces)`` sealed chunks of ``chunk`` plaintext bytes (the last may be
        shorter) from ``src`` into ``out`` (``len(src) - len(nonces) * TAG_SIZE`` bytes).
        Raises :class:`ChunkAuthError` for the first chunk that fails; ``out`` then holds
        nothing usable (what was written is zeroed)."""
        count = len(nonces)
        total = len(memoryview(src)) - count * TAG_SIZE
        if total < 0:
            raise ChunkAuthError(0)
        spans = _spans(total, chunk, count)
        if len(memoryview(out)) != total:
            raise ValueError("output buffer is not the opened run's size")
        if self._fallback is not None:
            s, o = memoryview(src), memoryview(out)
            for k, (start, n) in enumerate(spans):
                at = start + k * TAG_SIZE
                aad = aads[k] if aads else None
                try:
                    self._fallback.decrypt_into(
                        nonces[k], s[at : at + n + TAG_SIZE], aad, o[start : start + n]
                    )
                except InvalidTag:
                    o[:] = bytes(len(o))
                    raise ChunkAuthError(k) from None
            return
        lib, outl = _lib, ctypes.c_int()
        with (
            _address(src, False) as (sa, _),
            _address(out, True) as (oa, _),
            self._context(lib.EVP_DecryptInit_ex) as ctx,
        ):
            for k, (start, n) in enumerate(spans):
                at = sa + start + k * TAG_SIZE
                ok = lib.EVP_DecryptInit_ex(ctx, None, None, None, _checked_nonce(nonces[k]))
                ok &= lib.EVP_CIPHER_CTX_ctrl(ctx, _SET_TAG, TAG_SIZE, at + n)
                aad = aads[k] if aads else None
                if aad:
                    ok &= lib.EVP_DecryptUpdate(ctx, None, ctypes.byref(outl), aad, len(aad))
                ok &= lib.EVP_DecryptUpdate(ctx, oa + start, ctypes.byref(outl), at, n)
                final = ok == 1 and lib.EVP_DecryptFinal_ex(ctx, oa + start + n, ctypes.byref(outl))
                if final != 1:
                    ctypes.memset(oa, 0, total)  # never leave unauthenticated plaintext
                    raise ChunkAuthError(k)


def _checked_nonce(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise ValueError("ChaCha20-Poly1305 nonce must be 12 bytes")
    return nonce
