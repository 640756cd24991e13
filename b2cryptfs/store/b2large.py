"""A large file (b2_start_large_file, parts in parallel, b2_finish_large_file) over b2wire.

A file of at least a part and a minimum part is uploaded in parts of the part size (a tail
under the minimum joins the last one), ``workers`` at a time, each streamed from its range
of the file in one read: its SHA-1 is taken on the way and sent after it
(``hex_digits_at_end``, as b2sdk does for streams), not in a read of its own first. The
whole file's SHA-1 goes into the file info as ``large_file_sha1`` (what b2sdk's emerger
writes). Each part is a transfer of its own (retried until the caller's deadline, from its
start, with another part URL); when one fails for good the others stop and the large file
is cancelled, so no parts stay billed.
Nothing of b2sdk is imported: a mount writing big files does not load it either.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from b2cryptfs.errors import StoreError
from b2cryptfs.store.b2wire import Wire

log = logging.getLogger(__name__)

T = TypeVar("T")
LARGE_FILE_SHA1 = "large_file_sha1"


def part_sizes(size: int, part: int, minimum: int) -> list[int]:
    """Sizes of the parts of a ``size``-byte file: ``part`` each, the tail joined to the last
    part when it is under ``minimum`` (B2 refuses such a part unless it is the last)."""
    sizes = [part] * (size // part)
    tail = size - part * len(sizes)
    if tail and (tail >= minimum or not sizes):
        sizes.append(tail)
    elif tail:
        sizes[-1] += tail
    return sizes


_HEX_DIGITS_AT_END = "hex_digits_at_end"
_DIGITS = 40  # a SHA-1 in hex, after the part's bytes
_BLOCK = 1 << 20


class _HashedRange:
    """``length`` bytes of an open file from where it stands, then their SHA-1 in hex: the
    body of a part sent with ``hex_digits_at_end``, read by http.client. Each block of the
    file read is reported to ``sent``; going back to the start (a stale connection's second
    try) starts the hash again."""

    def __init__(self, f: Any, length: int, sent: Callable[[int], None]) -> None:
        self._f = f
        self._start = f.tell()
        self._length = length
        self._sent = sent
        # One buffer read into again and again (http.client sends each block before it
        # reads the next): a fresh block per read faulted in a part's worth of new pages.
        self._buf = memoryview(bytearray(_BLOCK))
        self._rewind()

    def _rewind(self) -> None:
        self._left = self._length
        self._sha = hashlib.sha1()
        self._tail = b""
        self.sha1 = ""

    def read(self, n: int = -1) -> bytes | memoryview:
        if n == 0:
            return b""
        if self._left:
            want = min(self._left, len(self._buf), n if n > 0 else len(self._buf))
            got = self._f.readinto(self._buf[:want])
            if not got:
                raise StoreError(f"{self._f.name} got shorter while it was uploaded")
            data = self._buf[:got]
            self._left -= got
            self._sha.update(data)
            self._sent(got)
            if not self._left:
                self.sha1 = self._sha.hexdigest()
                self._tail = self.sha1.encode("ascii")
            return data
        data, self._tail = self._tail, b""
        return data

    def tell(self) -> int:
        return self._start

    def seek(self, pos: int) -> int:
        if pos != self._start:
            raise ValueError("a part is sent again only from its start")
        self._rewind()
        return self._f.seek(pos)


class _Stopped(Exception):
    """Another part failed: this one is not sent."""


def upload_large(
    wire: Wire,
    api: Callable[[str, dict[str, Any]], dict[str, Any]],
    retry: Callable[[Callable[[], T], str], T],
    *,
    bucket_id: str,
    full: str,
    path: str,
    sizes: list[int],
    sha1: str,
    info: dict[str, str],
    content_type: str,
    workers: int,
    progress: Callable[[int], None] | None,
    what: str,
) -> dict[str, Any]:
    """Upload ``path`` as the large file ``full``; B2's record of the finished file.

    ``api(endpoint, params)`` makes an authorized API call with its retries, ``retry(fn,
    what)`` runs a transfer until its deadline (B2Store's)."""
    started = api(
        "b2_start_large_file",
        {
            "bucketId": bucket_id,
            "fileName": full,
            "contentType": content_type,
            "fileInfo": {**info, LARGE_FILE_SHA1: sha1},
        },
    )
    file_id = started["fileId"]
    urls: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    total = [0] * len(sizes)

    def take_url() -> tuple[str, str]:
        with lock:
            if urls:
                return urls.pop()
        got = api("b2_get_upload_part_url", {"fileId": file_id})
        return got["uploadUrl"], got["authorizationToken"]

    def send(k: int) -> str:
        if stop.is_set():
            raise _Stopped()
        offset, length = sum(sizes[:k]), sizes[k]

        def sent(n: int) -> None:
            if progress is not None:
                with lock:
                    total[k] += n
                    done = sum(total)
                progress(done)

        def once() -> str:
            if stop.is_set():
                raise _Stopped()
            url, token = take_url()
            total[k] = 0  # a try sends the part from its start
            headers = {
                "Authorization": token,
                "X-Bz-Part-Number": str(k + 1),
                "Content-Length": str(length + _DIGITS),
                "X-Bz-Content-Sha1": _HEX_DIGITS_AT_END,
            }
            with open(path, "rb") as f:
                f.seek(offset)
                body = _HashedRange(f, length, sent)
                # B2 checks the digits that end the body: a part it took has this SHA-1.
                wire.post_json(url, headers, body)
            with lock:
                urls.append((url, token))  # only a URL that served (as b2sdk's pool)
            return body.sha1

        try:
            return retry(once, f"{what} (part {k + 1} of {len(sizes)})")
        except BaseException:
            stop.set()
            raise

    try:
        with ThreadPoolExecutor(max(1, min(workers, len(sizes))), "b2-part") as pool:
            futures = [pool.submit(send, k) for k in range(len(sizes))]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None and not isinstance(e, _Stopped)]
        if failed:
            raise failed[0]
        part_sha1s = [f.result() for f in futures]
        return api("b2_finish_large_file", {"fileId": file_id, "partSha1Array": part_sha1s})
    except BaseException:
        try:
            api("b2_cancel_large_file", {"fileId": file_id})
        except Exception as exc:
            log.warning("could not cancel the unfinished upload of %s: %s", full, exc)
        raise
