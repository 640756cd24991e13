"""The RSA private key check (cryptography's RSA_check_key), made at the key's first use.

The check costs 50-200 ms of the interpreter (it holds the GIL), most of a mount's key
loading. A mount asks for it to be deferred (:func:`defer_checks`): the key is loaded
without it (a wrong passphrase still fails there: the decryption of the key file does) and
checked before its first decryption (:func:`ensure_checked`, called by the formats), which
for a store with plain names comes after the root is listed. A key that fails the check
is never used: every decryption with it raises KeyFileError.
"""

from __future__ import annotations

import threading
from typing import Any

from b2cryptfs.errors import KeyFileError

_deferring = False
_lock = threading.Lock()
_pending: dict[int, tuple[Any, str]] = {}  # id(key) -> (key, key file), not yet checked


def defer_checks() -> None:
    """Keys loaded from now on in this process are checked at their first use."""
    global _deferring
    _deferring = True


def deferring() -> bool:
    return _deferring


def defer(key: Any, path: str) -> None:
    """``key`` was loaded without the check: it is made by :func:`ensure_checked`."""
    with _lock:
        _pending[id(key)] = (key, path)


def ensure_checked(key: Any) -> None:
    """Check ``key`` now if its check was deferred (once); KeyFileError if it fails."""
    if not _pending:
        return
    with _lock:
        entry = _pending.get(id(key))
        if entry is None or entry[0] is not key:
            return
        from cryptography.hazmat.primitives import serialization

        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            serialization.load_der_private_key(der, None)  # with the check
        except ValueError:
            raise KeyFileError(f"{entry[1]}: not a valid RSA private key") from None
        del _pending[id(key)]
