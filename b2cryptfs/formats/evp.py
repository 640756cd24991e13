"""The password side of the openssl format: the one-time password, its shape, OpenSSL's
``EVP_BytesToKey`` key derivation and our key check value.

``openssl enc`` without ``-pbkdf2`` derives key and IV as D1 = H(password || salt),
Di = H(D(i-1) || password || salt), concatenated; one round; H is SHA-256 since OpenSSL
1.1.0 and MD5 before (``-md md5``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

MDS = ("sha256", "md5")
SALT_LEN = 8
KEY_LEN = 32  # AES-256
IV_LEN = 16

# `openssl rand -base64 180` prints 240 characters in lines of 64, 64, 64 and 48; the
# sample's unquoted `echo $ONE_TIME_PASSWORD` joins those lines with single spaces.
PASSWORD_RANDOM_BYTES = 180
_CANONICAL = re.compile(rb"[A-Za-z0-9+/]{64} [A-Za-z0-9+/]{64} [A-Za-z0-9+/]{64} [A-Za-z0-9+/]{48}")

# Shape rules for passwords written by other scripts. A wrong RSA key yields random bytes
# (PKCS#1 v1.5 implicit rejection) rather than an error, so an all-printable plaintext with a
# reasonably long first line is what tells a real password from garbage.
MIN_PASSWORD_LEN = 16
# `-pass stdin` reads one line into a 1024-byte buffer.
MAX_PASSWORD_LEN = 1023
PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}

_KCV_LABEL = b"b2cryptfs openssl key check v1\0"
KCV_BYTES = 12


def new_password() -> bytes:
    """A fresh one-time password exactly as the sample's shell lines produce it."""
    text = base64.b64encode(os.urandom(PASSWORD_RANDOM_BYTES))
    return b" ".join(text[i : i + 64] for i in range(0, len(text), 64))


def is_canonical(password: bytes) -> bool:
    """True for a password of the sample's exact shape (what we write)."""
    if not _CANONICAL.fullmatch(password):
        return False
    try:
        raw = binascii.a2b_base64(password.replace(b" ", b""), strict_mode=True)
    except binascii.Error:
        return False
    return len(raw) == PASSWORD_RANDOM_BYTES


def password_from_plaintext(plaintext: bytes, *, strict: bool) -> bytes | None:
    """The password inside an unwrapped key object, or None if it does not look like one.

    ``-pass stdin`` uses the first line, without its ``\\n``. ``strict`` demands exactly the
    sample's shape followed by one newline (our own writes); otherwise any printable text whose
    first line is 16 to 1023 characters long is accepted.
    """
    password, nl, rest = plaintext.partition(b"\n")
    if strict:
        return password if nl and not rest and is_canonical(password) else None
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        return None
    if not set(plaintext) <= PRINTABLE:
        return None
    return password


def evp_bytes_to_key(md: str, password: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """(key, iv) for AES-256-CBC as ``openssl enc`` derives them (one round)."""
    if md not in MDS:
        raise ValueError(f"unknown digest {md!r}")
    out = b""
    block = b""
    while len(out) < KEY_LEN + IV_LEN:
        h = hashlib.new(md, usedforsecurity=False)
        h.update(block + password + salt)
        block = h.digest()
        out += block
    return out[:KEY_LEN], out[KEY_LEN : KEY_LEN + IV_LEN]


def key_check_value(password: bytes, salt: bytes, md: str) -> str:
    """Short proof that ``password`` belongs to the content with ``salt``, derived with ``md``.

    An HMAC keyed with the password reveals nothing about it; binding the salt makes a key
    object from another write mismatch, and binding the digest name tells readers which
    derivation the writer used.
    """
    mac = hmac.new(password, _KCV_LABEL + md.encode() + b"\0" + salt, hashlib.sha256)
    return mac.hexdigest()[: 2 * KCV_BYTES]


def kcv_matches(kcv: str, password: bytes, salt: bytes, md: str) -> bool:
    given = kcv.strip().lower().encode("ascii", "replace")
    return hmac.compare_digest(given, key_check_value(password, salt, md).encode("ascii"))
