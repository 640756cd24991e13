"""The RSA private key check of a mount, made at the key's first use.

cryptography's own check (OpenSSL's RSA_check_key) costs 50 ms for a 2048-bit key and 290 ms
for a 4096-bit one, holding the GIL: a mount's first read waited for it. Almost all of it is
proving p and q prime. A mount asks for the check to be deferred (:func:`defer_checks`):
the key is loaded without it (a wrong passphrase still fails there: the decryption of the
key file does) and :func:`ensure_checked`, called by the formats before a key's first
decryption, checks that its numbers agree with each other (n = pq, the exponents and the
CRT coefficient), well under a millisecond. That catches a damaged key file, since a change
to any one number breaks one of those equations; primality would only matter for a key
crafted to pass them, which takes someone who can already write the key file. A key that
fails the check is never used: every decryption with it raises KeyFileError. Tools outside
the mount load keys with cryptography's full check.
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
        if not consistent(key.private_numbers()):
            raise KeyFileError(f"{entry[1]}: not a valid RSA private key")
        del _pending[id(key)]


def consistent(numbers: Any) -> bool:
    """Whether an RSA key's private numbers agree with each other and its public ones (the
    equations RSA_check_key checks, without its primality tests)."""
    p, q, d = numbers.p, numbers.q, numbers.d
    e, n = numbers.public_numbers.e, numbers.public_numbers.n
    if min(p, q) < 3 or p == q or p * q != n or not 1 < e < n or not 0 < d < n:
        return False
    # d e = 1 modulo lcm(p - 1, q - 1): modulo each of the two, then.
    if (d * e) % (p - 1) != 1 or (d * e) % (q - 1) != 1:
        return False
    return (
        numbers.dmp1 == d % (p - 1)
        and numbers.dmq1 == d % (q - 1)
        and 0 < numbers.iqmp < p
        and (numbers.iqmp * q) % p == 1
    )
