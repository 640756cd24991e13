"""Finding, creating and re-wrapping a store's name key; opening a PairStore with it.

A tree's names are encrypted when its root holds the object ``.b2cryptfs-names.age``: a
complete age file whose plaintext is the 64-byte AES-SIV name key, encrypted to the
store's recipients (so ``age -d -i KEY .b2cryptfs-names.age`` recovers it). Encrypting a
name needs that secret key, so a name-encrypted store cannot be used write-only.

The mount opens its store root (one stat). The command-line tools, which address a whole
bucket plus a path, look at the root and at each directory on the way down to the path and
take the first name key found, so that ``b2cryptfs ls b2://BUCKET/PREFIX`` reads the tree a
``mount b2://BUCKET/PREFIX -o encrypt_names`` made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from b2cryptfs.bucket.layout import EMPTY_MARKER, NAME_KEY_OBJECT, dir_prefix, name_key_object
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.errors import (
    AuthError,
    FormatError,
    NoMatchingIdentity,
    NoPrivateKey,
    UsageError,
)
from b2cryptfs.formats.names import NameCipher, unwrap_name_key, wrap_name_key
from b2cryptfs.keys.types import Identity, Recipient
from b2cryptfs.store.base import ObjectInfo, Store

log = logging.getLogger(__name__)

__all__ = [
    "NAME_KEY_OBJECT",
    "create_name_key",
    "find_name_root",
    "load_name_key",
    "name_key_object",
    "open_pair_store",
    "rewrap_name_key",
]


def _where(store: Store, root: str) -> str:
    return f"{store.url.rstrip('/')}/{root}" if root else store.url


def find_name_root(store: Store, path: str = "") -> tuple[str, ObjectInfo] | None:
    """(root, name key object) of the shallowest name-encrypted tree holding ``path``.

    Stats the name key object at the store root, then below each plaintext directory of
    ``path`` (one stat per level). None when the names there are plain.
    """
    parts = [p for p in path.strip("/").split("/") if p]
    for depth in range(len(parts) + 1):
        root = "/".join(parts[:depth])
        try:
            obj = store.stat(name_key_object(root))
        except AuthError:
            # An application key restricted to a name prefix may not look above it: no
            # name key of ours can be there (the mount opens the store at that prefix).
            if depth == len(parts):
                raise
            continue
        if obj is not None:
            return root, obj
    return None


def load_name_key(
    store: Store, obj: ObjectInfo, identities: Sequence[Identity], root: str = ""
) -> NameCipher:
    """Unwrap the name key object ``obj`` of the tree at ``root``."""
    if not identities:
        raise NoPrivateKey(
            f"the file names in {_where(store, root)} are encrypted: give the private key "
            "(--private-key); a store with encrypted names cannot be used write-only"
        )
    try:
        return NameCipher(unwrap_name_key(store.read(obj), identities))
    except NoMatchingIdentity:
        raise NoMatchingIdentity(
            f"none of the private keys opens the name key {obj.name} of {_where(store, root)}"
        ) from None
    except FormatError as exc:
        raise type(exc)(f"{obj.name}: not a valid name key file ({exc})") from None


def create_name_key(
    store: Store,
    root: str,
    recipients: Sequence[Recipient],
    identities: Sequence[Identity],
) -> NameCipher:
    """Turn on name encryption for the tree at ``root``: make, wrap and upload a name key.

    Refused unless the tree is empty (plain-named files there would vanish from view), and
    unless one of ``identities`` can open what was wrapped for ``recipients`` (else the next
    session could not read a single name).
    """
    root = root.strip("/")
    where = _where(store, root)
    if not recipients:
        raise UsageError("--encrypt-names needs a public key to encrypt the name key to")
    if not identities:
        raise NoPrivateKey(
            "--encrypt-names needs the private key too: a store with encrypted names cannot be "
            "used write-only (encrypting a name needs the secret name key)"
        )
    listing = store.list_dir(dir_prefix(root))
    prefix_len = len(dir_prefix(root))
    present = [o for o in listing.objects if o.name[prefix_len:] != EMPTY_MARKER]
    present_dirs = listing.prefixes
    if present or present_dirs:
        raise UsageError(
            f"cannot turn on encrypted names for {where}: it already holds "
            f"{len(present) + len(present_dirs)} object(s) or folder(s) with plain names, "
            "which would vanish from view; use an empty store or prefix"
        )
    cipher = NameCipher.generate()
    data = wrap_name_key(cipher.key, recipients)
    try:
        unwrap_name_key(data, identities)
    except NoMatchingIdentity:
        raise UsageError(
            "--encrypt-names: none of the private keys given can open a name key encrypted to "
            "the public keys given; include your own key among the recipients"
        ) from None
    name = name_key_object(root)
    uploaded = store.upload_bytes(name, data, {})
    # Two sessions turning names on at the same moment: both adopt the newest name key.
    newest = store.stat(name)
    if newest is not None and newest.version_id != uploaded.version_id:
        log.warning("%s: another client created a name key at the same time; using it", name)
        return load_name_key(store, newest, identities, root)
    log.info("created name key %s for %s", name, where)
    return cipher


def open_pair_store(
    store: Store,
    *,
    recipients: Sequence[Recipient] = (),
    identities: Sequence[Identity] = (),
    format: str = "age",
    openssl_md: str = "auto",
    hard_delete: bool = False,
    encrypt_names: bool = False,
    path: str = "",
    found: tuple[str, ObjectInfo] | None | bool = True,
) -> PairStore:
    """A PairStore for ``store`` that honours (or with ``encrypt_names`` creates) a name key.

    ``path`` is the plaintext location the caller works at: a name key at the store root or
    at any directory on the way to ``path`` applies (the mount passes ""). Without one,
    ``encrypt_names`` creates it with ``path`` as the tree's root (see
    :func:`create_name_key`); otherwise names are plain and ``encrypt_names`` is ignored.

    Raises NoPrivateKey when the names are encrypted and ``identities`` is empty (write-only),
    NoMatchingIdentity when no identity opens the name key.

    ``found`` is :func:`find_name_root`'s answer when the caller already has it (the mount
    asks while the keys load); the default ``True`` means "not asked yet".
    """
    if found is True:
        found = find_name_root(store, path)
    names: NameCipher | None = None
    root = ""
    if isinstance(found, tuple):
        root, obj = found
        names = load_name_key(store, obj, identities, root)
    elif encrypt_names:
        root = path.strip("/")
        names = create_name_key(store, root, recipients, identities)
    return PairStore(
        store,
        recipients=recipients,
        identities=identities,
        format=format,
        openssl_md=openssl_md,
        hard_delete=hard_delete,
        names=names,
        name_root=root,
    )


def rewrap_name_key(
    pairs: PairStore,
    recipients: Sequence[Recipient],
    purge: bool = False,
    info: dict[str, str] | None = None,
) -> ObjectInfo | None:
    """Upload the name key again, encrypted to ``recipients``; with ``purge``, delete the
    older versions (still encrypted to the old keys). None for plain names."""
    name = pairs.name_key_object_name()
    if name is None or pairs.names is None:
        return None
    if not recipients:
        raise UsageError("no public key to encrypt the name key to")
    data = wrap_name_key(pairs.names.key, recipients)
    return pairs.rewrap_key(name, data, dict(info or {}), purge=purge)
