"""``passwd``: a new passphrase for the same private key.

The key itself does not change, so neither does anything in the bucket: every file key
stays wrapped for the same public key. The file is rewritten in place atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from b2cryptfs.errors import KeyFileError, UsageError

MIN_PASSPHRASE = 4  # as keygen (and openssl genrsa) require


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "passwd",
        help="change the passphrase of a private key file (the bucket is untouched)",
        description="Decrypt KEY with its current passphrase (--passphrase-file, "
        "--passphrase-command, $B2CRYPTFS_PASSPHRASE or a prompt) and write it again, "
        "encrypted with a new one (--new-passphrase-file, or typed twice on the terminal). "
        "RSA keys are written as keygen writes them (encrypted PKCS#8 PEM); age identity "
        "files as age -p writes them. The key, and so every file in the store, stays the same.",
    )
    p.add_argument("key", metavar="KEY", help="the private key file to change")
    p.add_argument(
        "--passphrase-file", metavar="FILE", help="read the current passphrase from FILE"
    )
    p.add_argument(
        "--passphrase-command",
        metavar="CMD",
        help="run CMD with the shell; its first line is the current passphrase",
    )
    p.add_argument(
        "--new-passphrase-file",
        metavar="FILE",
        help="read the new passphrase from FILE (else it is asked twice on the terminal)",
    )
    p.add_argument(
        "--no-passphrase",
        action="store_true",
        help="write the key unencrypted (anyone who can read the file then has the key)",
    )
    p.set_defaults(func=cmd_passwd)


def _open_rsa(path: str, data: bytes, old: Callable[[], bytes]) -> Callable[[bytes | None], bytes]:
    from b2cryptfs.keys.keygen import private_key_pem
    from b2cryptfs.keys.loader import load_identities
    from b2cryptfs.keys.types import RsaIdentity

    if b"OPENSSH PRIVATE KEY" in data:
        raise KeyFileError(f"{path}: an OpenSSH-format key: change it with ssh-keygen -p -f {path}")
    (identity,) = load_identities(path, old)
    assert isinstance(identity, RsaIdentity)
    return lambda new: private_key_pem(identity.private_key, new)


def _open_age(path: str, data: bytes, old: Callable[[], bytes]) -> Callable[[bytes | None], bytes]:
    from b2cryptfs.formats.age.protected import ARMOR_BEGIN, decrypt_protected, protect

    protected = data.startswith(b"age-encryption.org/") or ARMOR_BEGIN in data
    plain = decrypt_protected(data, path, old) if protected else data
    if b"AGE-SECRET-KEY-1" not in plain:
        raise KeyFileError(f"{path}: the decrypted file holds no age identity")

    def encode(new: bytes | None) -> bytes:
        if new is None:
            return plain
        try:
            secret = new.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("an age passphrase must be UTF-8 text") from None
        return protect(plain, secret, armor=ARMOR_BEGIN in data)

    return encode


def cmd_passwd(args: argparse.Namespace) -> int:
    from b2cryptfs.keys.keygen import replace_key_file
    from b2cryptfs.keys.loader import _read
    from b2cryptfs.keys.passphrase import new_passphrase, passphrase_source

    if args.passphrase_file is not None and args.passphrase_command is not None:
        raise UsageError("give --passphrase-file or --passphrase-command, not both")
    if args.no_passphrase and args.new_passphrase_file is not None:
        raise UsageError("give --new-passphrase-file or --no-passphrase, not both")
    path = args.key
    data = _read(path, "private key")
    source = passphrase_source(args.passphrase_file, command=args.passphrase_command)

    def old() -> bytes:
        return source(path)

    is_age = (
        data.startswith(b"age-encryption.org/")
        or b"-----BEGIN AGE ENCRYPTED FILE-----" in data
        or (b"AGE-SECRET-KEY-1" in data and b"-----BEGIN" not in data)
    )
    # The old passphrase is proved before the new one is asked for.
    encode = (_open_age if is_age else _open_rsa)(path, data, old)
    new = None
    if not args.no_passphrase:
        new = new_passphrase(args.new_passphrase_file, min_len=MIN_PASSPHRASE, environment=False)
    replace_key_file(path, encode(new))
    state = "unencrypted (no passphrase)" if new is None else "with the new passphrase"
    print(f"wrote {path} {state}; the key and the store are unchanged", file=sys.stderr)
    return 0
