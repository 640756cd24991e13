"""Load private keys (identities) and public keys (recipients) from files and strings.

Identities: RSA keys in PEM as ``openssl genrsa`` writes them (encrypted PKCS#8 on OpenSSL 3,
traditional ``Proc-Type: 4,ENCRYPTED`` PEM before, or unencrypted), OpenSSH-format RSA keys,
and age identity files (``AGE-SECRET-KEY-1…`` lines), also passphrase-protected by ``age -p``. Recipients: SPKI or PKCS#1 PEM public
keys, ``ssh-rsa`` lines, ``age1…`` strings, or an unencrypted private key's public half.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Iterator

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from b2cryptfs.errors import KeyFileError, WrongPassphrase
from b2cryptfs.keys.types import Identity, Recipient, RsaIdentity, RsaRecipient

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_AGE_IDENTITY = "AGE-SECRET-KEY-1"
_AGE_RECIPIENT = "age1"
_AGE_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"

# Anything bigger is not a key file; reading it whole would only waste memory.
_MAX_KEY_FILE = 1 << 20


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{path} is too large to be a {what}")
    return data


def _pem_blocks(data: bytes) -> Iterator[tuple[str, bytes]]:
    for m in _PEM_BLOCK.finditer(data):
        yield m.group(1).decode("ascii"), m.group(0)


def _key_type_name(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519

    kinds = {
        "EC": (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey),
        "Ed25519": (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey),
        "Ed448": (ed448.Ed448PrivateKey, ed448.Ed448PublicKey),
        "DSA": (dsa.DSAPrivateKey, dsa.DSAPublicKey),
    }
    for name, classes in kinds.items():
        if isinstance(key, classes):
            return name
    return "these"


def _require_rsa_private(key: object, path: str) -> RsaIdentity:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path}: {_key_type_name(key)} keys are not supported (RSA only)")
    return RsaIdentity(key)


def _require_rsa_public(key: object, where: str) -> RsaRecipient:
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"{where}: {_key_type_name(key)} keys are not supported (RSA only)")
    return RsaRecipient(key)


def _load_private(
    load: Callable[[bytes | None], object],
    path: str,
    passphrase: Callable[[], bytes] | None,
    check_encrypted: Callable[[], None] | None = None,
) -> object:
    """Call ``load(password)``: first without a password (most files say whether they are
    encrypted only by failing), then with the passphrase if the key turned out encrypted;
    ``check_encrypted`` may refuse an encrypted key before the passphrase is asked for."""
    try:
        return load(None)
    except TypeError:
        pass  # encrypted
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{path}: not a readable private key ({e})") from None
    if passphrase is None:
        raise KeyFileError(
            f"{path} is an encrypted private key: give its public key instead "
            f"(openssl rsa -in {path} -pubout)"
        )
    if check_encrypted is not None:
        check_encrypted()
    try:
        return load(passphrase())
    except (ValueError, TypeError):  # TypeError: an empty passphrase counts as none
        raise WrongPassphrase(f"wrong passphrase for {path}") from None
    except UnsupportedAlgorithm as e:
        raise KeyFileError(f"{path}: unsupported key encryption ({e})") from None


def _load_pem_private(block: bytes, path: str, passphrase: Callable[[], bytes] | None) -> object:
    from b2cryptfs.keys import rsacheck

    if not rsacheck.deferring():
        return _load_private(
            lambda pw: serialization.load_pem_private_key(block, pw), path, passphrase
        )
    key = _load_private(
        lambda pw: serialization.load_pem_private_key(
            block, pw, unsafe_skip_rsa_key_validation=True
        ),
        path,
        passphrase,
    )
    rsacheck.defer(key, path)  # checked before its first decryption
    return key


def _load_openssh_private(
    block: bytes, path: str, passphrase: Callable[[], bytes] | None
) -> object:
    def need_bcrypt() -> None:
        # cryptography needs the bcrypt package for the OpenSSH format's key derivation.
        if importlib.util.find_spec("bcrypt") is None:
            raise KeyFileError(
                f"{path}: encrypted OpenSSH-format keys need the Python 'bcrypt' package; "
                f"or convert the key to PEM: ssh-keygen -p -m PEM -f {path}"
            )

    return _load_private(
        lambda pw: serialization.load_ssh_private_key(block, pw), path, passphrase, need_bcrypt
    )


def _age_lines(data: bytes, path: str) -> Iterator[tuple[int, str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a key file (binary data)") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield n, line


def _age_identities(data: bytes, path: str) -> list[Identity]:
    from b2cryptfs.keys.agekeys import parse_x25519_identity

    out: list[Identity] = []
    for n, line in _age_lines(data, path):
        if not line.startswith(_AGE_IDENTITY):
            raise KeyFileError(f"{path}:{n}: not an age identity (AGE-SECRET-KEY-1…)")
        try:
            out.append(parse_x25519_identity(line))
        except KeyFileError as e:
            raise KeyFileError(f"{path}:{n}: {e}") from None
    if not out:
        raise KeyFileError(f"{path}: no key in this file")
    return out


# Decrypts a passphrase-protected age file (``age -p``) to its plaintext: an age format
# matter, so the caller (the CLI) passes formats.age.protected.decrypt_protected in; keys
# does not import formats.
Unprotect = Callable[[bytes, str, Callable[[], bytes] | None], bytes]


def load_identities(
    path: str, passphrase: Callable[[], bytes], unprotect: Unprotect | None = None
) -> list[Identity]:
    """The private key(s) in ``path``; ``passphrase()`` is called only for an encrypted key.
    ``unprotect`` opens passphrase-protected age identity files (see :data:`Unprotect`).

    Raises KeyFileError for a missing or unsupported file, WrongPassphrase when the
    passphrase does not decrypt the key.
    """
    data = _read(path, "private key")
    for label, block in _pem_blocks(data):
        if label == "OPENSSH PRIVATE KEY":
            return [_require_rsa_private(_load_openssh_private(block, path, passphrase), path)]
        if label.endswith("PRIVATE KEY"):
            return [_require_rsa_private(_load_pem_private(block, path, passphrase), path)]
    if data.startswith(b"age-encryption.org/") or _AGE_ARMOR_BEGIN in data:
        if unprotect is None:
            raise KeyFileError(f"{path}: passphrase-protected age identities are not read here")
        return _age_identities(unprotect(data, path, passphrase), path)
    if _AGE_IDENTITY.encode() in data:
        return _age_identities(data, path)
    if b"-----BEGIN" in data or b"ssh-rsa " in data or _AGE_RECIPIENT.encode() in data:
        raise KeyFileError(f"{path} holds a public key; decrypting needs the private key")
    if data[:1] == b"\x30":  # a DER SEQUENCE: PKCS#1 or PKCS#8 without the PEM armour
        der = data
        key = _load_private(
            lambda pw: serialization.load_der_private_key(der, pw), path, passphrase
        )
        return [_require_rsa_private(key, path)]
    raise KeyFileError(
        f"{path}: not a private key (expected a PEM or OpenSSH RSA key, or an age identity file)"
    )


def _parse_line(line: str, where: str) -> Recipient:
    """One recipient string: ``age1…`` or ``ssh-rsa AAAA… [comment]``."""
    if line.startswith(_AGE_RECIPIENT):
        from b2cryptfs.keys.agekeys import parse_x25519_recipient

        try:
            return parse_x25519_recipient(line)
        except KeyFileError as e:
            raise KeyFileError(f"{where}: {e}") from None
    if line.startswith("ssh-rsa "):
        try:
            key = serialization.load_ssh_public_key(line.encode("ascii", "replace"))
        except (ValueError, UnsupportedAlgorithm) as e:
            raise KeyFileError(f"{where}: invalid ssh-rsa public key ({e})") from None
        return _require_rsa_public(key, where)
    if line.upper().startswith(_AGE_IDENTITY):
        # As age -R: a secret key does not belong where only the public key is needed.
        raise KeyFileError(
            f"{where}: this is an age secret key (AGE-SECRET-KEY-1…); give the public key "
            "instead (age-keygen -y FILE prints it)"
        )
    if line.startswith(("ssh-", "ecdsa-", "sk-")):
        kind = line.split()[0]
        raise KeyFileError(f"{where}: {kind} keys are not supported (ssh-rsa or age1… only)")
    raise KeyFileError(f"{where}: not a public key (expected age1…, ssh-rsa … or a PEM key)")


def _recipients_from_file(path: str) -> list[Recipient]:
    data = _read(path, "public key file")
    blocks = list(_pem_blocks(data))
    if blocks:
        out: list[Recipient] = []
        for label, block in blocks:
            if label in ("PUBLIC KEY", "RSA PUBLIC KEY"):
                try:
                    key = serialization.load_pem_public_key(block)
                except (ValueError, UnsupportedAlgorithm) as e:
                    raise KeyFileError(f"{path}: not a readable public key ({e})") from None
                out.append(_require_rsa_public(key, path))
            elif label == "OPENSSH PRIVATE KEY":
                key = _load_openssh_private(block, path, None)
                out.append(_require_rsa_private(key, path).recipient())
            elif label.endswith("PRIVATE KEY"):
                key = _load_pem_private(block, path, None)
                out.append(_require_rsa_private(key, path).recipient())
            else:
                raise KeyFileError(f"{path}: a PEM '{label}' block is not a public key")
        return out
    if data[:1] == b"\x30":
        try:
            return [_require_rsa_public(serialization.load_der_public_key(data), path)]
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path}: not a readable public key") from None
    out = [_parse_line(line, f"{path}:{n}") for n, line in _age_lines(data, path)]
    if not out:
        raise KeyFileError(f"{path}: no key in this file")
    return out


def load_recipients(spec: str) -> list[Recipient]:
    """Recipients from a file path or a literal ``age1…`` / ``ssh-rsa AAAA…`` string."""
    literal = spec.strip()
    if literal.startswith((_AGE_RECIPIENT, "ssh-")) and not os.path.exists(spec):
        return [_parse_line(literal, "public key argument")]
    if not os.path.exists(spec):
        raise KeyFileError(
            f"{spec}: no such file (expected a public key file, an age1… or ssh-rsa … key)"
        )
    seen: list[Recipient] = []
    for r in _recipients_from_file(spec):
        if r not in seen:
            seen.append(r)
    return seen
