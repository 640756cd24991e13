"""Create key files: an RSA pair as the seed procedure's ``openssl genrsa -aes256`` and
``openssl rsa -pubout`` would, or a native age X25519 identity (for example a recovery key).
"""

from __future__ import annotations

import datetime
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from b2cryptfs.errors import KeyFileError, UsageError

MIN_BITS = 2048  # the openssl format's 244-byte password and age's ssh-rsa both need it
MAX_BITS = 16384


def _refuse_existing(*paths: str) -> None:
    for path in paths:
        if os.path.lexists(path):
            raise KeyFileError(f"{path} already exists: refusing to overwrite it")


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never briefly readable by others)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists: refusing to overwrite it") from None
    except OSError as e:
        raise KeyFileError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_keypair(
    private_path: str, public_path: str, passphrase: bytes, bits: int = 2048
) -> None:
    """Write an encrypted RSA private key and its public key; never overwrite a file.

    The private key is encrypted PKCS#8 PEM (PBES2: PBKDF2-HMAC-SHA256 and AES-256-CBC),
    what ``openssl genrsa -aes256`` writes on OpenSSL 3, mode 0600; the public key is an
    SPKI PEM ``PUBLIC KEY``, what ``openssl rsa -pubout`` writes.
    """
    if not MIN_BITS <= bits <= MAX_BITS:
        raise UsageError(f"RSA key size must be {MIN_BITS} to {MAX_BITS} bits, not {bits}")
    if not passphrase:
        raise UsageError("an empty passphrase would leave the private key unprotected")
    if os.path.abspath(private_path) == os.path.abspath(public_path):
        raise UsageError("the private and public key files must differ")
    _refuse_existing(private_path, public_path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except KeyFileError:
        os.unlink(private_path)  # no half-made pair left behind
        raise


def generate_age_identity(path: str) -> str:
    """Write a new age X25519 identity file (as ``age-keygen`` does); return its recipient."""
    from b2cryptfs.keys.agekeys import (
        encode_x25519_identity,
        encode_x25519_recipient,
        generate_x25519_identity,
    )

    _refuse_existing(path)
    identity = generate_x25519_identity()
    recipient = encode_x25519_recipient(identity.recipient())
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    text = f"# created: {created}\n# public key: {recipient}\n{encode_x25519_identity(identity)}\n"
    _write_new(path, text.encode("ascii"), 0o600)
    return recipient


def private_key_pem(key: rsa.RSAPrivateKey, passphrase: bytes | None) -> bytes:
    """The private key as keygen writes it: encrypted PKCS#8 PEM (unencrypted with None)."""
    protection: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection
    )


def replace_key_file(path: str, data: bytes) -> None:
    """Replace the key file ``path`` atomically: a temporary file (mode 0600 from the start)
    in the same directory, fsynced, renamed over it. A crash leaves the old file or the new
    one, never half of one; through a symlink, the file it points to is replaced."""
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise KeyFileError(f"cannot write beside {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise KeyFileError(f"cannot replace {path}: {e.strerror}") from None
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # the rename is done; only its durability across a power cut is less certain
