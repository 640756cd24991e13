"""Object stores: B2 and a local directory with the same layout.

``open_store`` turns a store URL into a Store. b2sdk is imported only inside this package,
and only when a B2 store needs it (store/b2sdkpart.py).
"""

from __future__ import annotations

import re
from typing import Any

from b2cryptfs.errors import UsageError
from b2cryptfs.store.base import Listing, ObjectInfo, Store

__all__ = ["Listing", "ObjectInfo", "Store", "open_store", "split_b2_url"]


def split_b2_url(url: str) -> tuple[str, str]:
    """``b2://BUCKET[/PREFIX]`` -> (bucket, prefix); prefix is "" or ends with "/"."""
    rest = url[len("b2://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UsageError(f"no bucket name in {url!r} (expected b2://BUCKET[/PREFIX])")
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def open_store(url: str, *, realm: str | None = None, **b2_options: Any) -> Store:
    """Open ``b2://BUCKET[/PREFIX]``, ``file://PATH`` or a plain directory path.

    ``realm`` (a B2 realm name or URL) applies to b2:// only; without it B2_ENVIRONMENT or
    production is used. ``b2_options`` go to B2Store (retry budget, part sizes).
    """
    if url.startswith("b2://"):
        from b2cryptfs.store.b2store import B2Store

        bucket, prefix = split_b2_url(url)
        return B2Store(bucket, prefix, realm=realm, **b2_options)
    from b2cryptfs.store.dirstore import DirStore

    if url.startswith("file://"):
        path = url[len("file://") :]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        if not path:
            raise UsageError(f"no path in {url!r}")
        return DirStore(path, url=url)
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", url):
        raise UsageError(f"unknown store scheme in {url!r} (use b2://, file:// or a directory)")
    return DirStore(url)
