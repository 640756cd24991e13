"""``keygen``: make the key pair the seed procedure uses, or an age recovery identity."""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_PRIVATE = "priv-key.pem"
DEFAULT_AGE = "age-key.txt"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "keygen",
        help="create an RSA key pair (or an age identity)",
        description="Create a passphrase-protected RSA private key and its public key, "
        "interchangeable with 'openssl genrsa -aes256' and 'openssl rsa -pubout'. "
        "With --age, create an age X25519 identity file instead (for example an offline "
        "recovery key) and print its age1… recipient.",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="PRIV",
        help=f"private key file to create (default: {DEFAULT_PRIVATE}; with --age: {DEFAULT_AGE})",
    )
    p.add_argument(
        "--public-out",
        metavar="PUB",
        help="public key file to create (default: pub-key.pem next to the private key)",
    )
    p.add_argument("--bits", type=int, default=2048, help="RSA key size (default: 2048)")
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the new passphrase from FILE (else $B2CRYPTFS_PASSPHRASE, else it is "
        "asked twice on the terminal)",
    )
    p.add_argument(
        "--age",
        action="store_true",
        help="create an age X25519 identity (AGE-SECRET-KEY-1…, unencrypted like age-keygen)",
    )
    p.set_defaults(func=cmd_keygen)


def default_public_path(private_path: str) -> str:
    """``pub-key.pem`` beside ``priv-key.pem``; ``x-priv.pem`` → ``x-pub.pem``; else ``.pub``."""
    folder, name = os.path.split(private_path)
    if name == DEFAULT_PRIVATE:
        pub = "pub-key.pem"
    elif "priv" in name:
        pub = name.replace("priv", "pub", 1)
    else:
        stem, ext = os.path.splitext(name)
        pub = f"{stem}.pub{ext}"
    return os.path.join(folder, pub)


def cmd_keygen(args: argparse.Namespace) -> int:
    from b2cryptfs.errors import KeyFileError, UsageError
    from b2cryptfs.keys.keygen import MAX_BITS, MIN_BITS, generate_age_identity, generate_keypair
    from b2cryptfs.keys.passphrase import new_passphrase

    if args.age:
        if args.public_out or args.passphrase_file:
            raise UsageError(
                "--age writes one unencrypted identity file: "
                "--public-out and --passphrase-file do not apply"
            )
        path = args.output or DEFAULT_AGE
        recipient = generate_age_identity(path)
        print(f"wrote age identity {path}; its recipient (public key):", file=sys.stderr)
        print(recipient)
        return 0
    private = args.output or DEFAULT_PRIVATE
    public = args.public_out or default_public_path(private)
    # Checked before asking for a passphrase that would then be wasted.
    if not MIN_BITS <= args.bits <= MAX_BITS:
        raise UsageError(f"--bits must be {MIN_BITS} to {MAX_BITS}")
    for path in (private, public):
        if os.path.lexists(path):
            raise KeyFileError(f"{path} already exists: refusing to overwrite it")
    passphrase = new_passphrase(args.passphrase_file)
    generate_keypair(private, public, passphrase, bits=args.bits)
    print(
        f"wrote private key {private} (RSA {args.bits}, encrypted) and public key {public}",
        file=sys.stderr,
    )
    return 0
