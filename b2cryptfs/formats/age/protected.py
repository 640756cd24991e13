"""Passphrase-protected age identity files (what ``age -p`` writes around an identity file).

An age file with a single scrypt stanza whose plaintext is an identity file; the key loader
(:mod:`b2cryptfs.keys.loader`) is handed :func:`decrypt_protected` and parses the result.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

from b2cryptfs.errors import FormatError, KeyFileError, NoMatchingIdentity, WrongPassphrase
from b2cryptfs.formats.age import header
from b2cryptfs.formats.age.agefile import decrypt_file
from b2cryptfs.formats.age.scrypt import STANZA_TYPE, ScryptIdentity

ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"


def _dearmor(data: bytes, path: str) -> bytes:
    text = data.strip()
    if not (text.startswith(ARMOR_BEGIN) and text.endswith(ARMOR_END)):
        raise KeyFileError(f"{path}: damaged age armor; check it with age -d {path}")
    body = b"".join(text[len(ARMOR_BEGIN) : -len(ARMOR_END)].split())
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:
        raise KeyFileError(f"{path}: damaged age armor; check it with age -d {path}") from None


def decrypt_protected(data: bytes, path: str, passphrase: Callable[[], bytes] | None) -> bytes:
    """Identities from a file ``age -p`` wrote: an age file, encrypted to a passphrase (one
    scrypt stanza), whose plaintext is an identity file."""
    if ARMOR_BEGIN in data:
        data = _dearmor(data, path)
    try:
        stanzas = header.parse(header.read_header(io.BytesIO(data))).stanzas
    except FormatError as e:
        raise KeyFileError(
            f"{path}: not a readable age file ({e}); check it with age -d {path}"
        ) from None
    if [s.type for s in stanzas] != [STANZA_TYPE]:
        raise KeyFileError(
            f"{path} is an age file encrypted to a key, not to a passphrase; "
            f"decrypt it first (age -d {path})"
        )
    if passphrase is None:
        raise KeyFileError(f"{path} is a passphrase-protected age identity: give its public key")
    try:
        secret = passphrase().decode("utf-8")
    except UnicodeDecodeError:
        raise WrongPassphrase(f"wrong passphrase for {path}") from None
    try:
        plain = b"".join(decrypt_file(io.BytesIO(data), [ScryptIdentity(secret)]))
    except NoMatchingIdentity:
        raise WrongPassphrase(f"wrong passphrase for {path}") from None
    except FormatError as e:
        raise KeyFileError(f"{path}: damaged age file ({e})") from None
    return plain


def protect(plaintext: bytes, passphrase: str, *, armor: bool = False) -> bytes:
    """What ``age -p`` (``age -a -p`` with ``armor``) writes around ``plaintext``: an age
    file encrypted to ``passphrase`` alone (one scrypt stanza, age's default work factor)."""
    import os

    from b2cryptfs.formats.age import stream
    from b2cryptfs.formats.age.scrypt import ScryptRecipient
    from b2cryptfs.formats.age.wrap import FILE_KEY_SIZE, wrap_file_key

    file_key = os.urandom(FILE_KEY_SIZE)
    out = io.BytesIO()
    out.write(header.serialize(wrap_file_key(file_key, [ScryptRecipient(passphrase)]), file_key))
    stream.encrypt(io.BytesIO(plaintext), out, file_key)
    data = out.getvalue()
    if not armor:
        return data
    body = base64.b64encode(data)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + b"\n"
