"""B2's data requests (a range download, a one-request upload) straight over http.client.

Through b2sdk, requests and urllib3 one such request costs about 1.5-2 ms of the interpreter
(URL parsing and re-encoding, cookie jars, header merging, settings looked up at every
call), several times what a 4 KiB body costs to move; a mount reading or writing many small
files is bound by it. Here each thread keeps one kept-alive connection per host and a
request is written and read with http.client alone. Everything else stays b2sdk's: the
headers of an upload (its raw API builds them), the URLs and tokens (its account info and
upload URL pool) and the meaning of an error reply (its ``interpret_b2_error``), so callers
see the same b2sdk exceptions as on its own path. Network failures come out as b2sdk's
connection and timeout errors (transient to B2Store's retries).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from b2sdk.v2 import exception as b2exc
from b2sdk.v2.exception import interpret_b2_error

# b2sdk's own read timeout for data calls (B2Http.TIMEOUT).
TIMEOUT = 128.0
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Wire:
    """Kept-alive HTTP/1.1 connections, one per host and thread, for B2 data requests."""

    def __init__(self, user_agent: str, cafile: str | None) -> None:
        self.user_agent = user_agent
        self._cafile = cafile
        self._tls: ssl.SSLContext | None = None
        self._local = threading.local()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self._cafile)
        return self._tls

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """(this thread's connection to ``netloc``, whether it served a request before)."""
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault(
            "pool", {}
        )
        conn = pool.get((scheme, netloc))
        if conn is not None:
            return conn, True
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=TIMEOUT, context=self._context())
        elif scheme == "http":
            conn = http.client.HTTPConnection(netloc, timeout=TIMEOUT)
        else:
            raise b2exc.B2ConnectionError(f"unsupported URL scheme {scheme!r}")
        pool[(scheme, netloc)] = conn
        return conn, False

    def forget(self, conn: http.client.HTTPConnection) -> None:
        """Close ``conn`` and drop it (a reply not read to its end leaves it unusable)."""
        pool = self._local.__dict__.get("pool", {})
        for k, c in list(pool.items()):
            if c is conn:
                del pool[k]
        conn.close()

    def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request; (connection, response) of a 200/206 reply, its body unread.

        An error reply raises b2sdk's exception for it. A reused connection that the
        server closed meanwhile (idle keep-alive) is replaced once, at once."""
        parts = urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        hdrs = {**headers, "User-Agent": self.user_agent}
        for fresh_try in (False, True):
            conn, reused = self._connection(parts.scheme, parts.netloc)
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                break
            except _STALE as exc:
                self.forget(conn)
                if reused and not fresh_try:
                    continue
                raise b2exc.B2ConnectionError(f"{method} {parts.netloc}: {exc!r}") from None
            except TimeoutError as exc:
                self.forget(conn)
                raise b2exc.B2RequestTimeout(f"{method} {parts.netloc}: {exc!r}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.forget(conn)
                raise b2exc.B2ConnectionError(f"{method} {parts.netloc}: {exc!r}") from None
        if resp.status in (200, 206):
            return conn, resp
        try:
            content = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.forget(conn)
            raise b2exc.B2ConnectionError(f"{method} {parts.netloc}: {exc!r}") from None
        if resp.will_close:
            self.forget(conn)
        raise _error(resp, content)

    def post_json(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """POST ``body``; the JSON object of the 200 reply."""
        conn, resp = self.request("POST", url, headers, body)
        try:
            content = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.forget(conn)
            raise b2exc.B2ConnectionError(f"POST reply cut: {exc!r}") from None
        if resp.will_close:
            self.forget(conn)
        try:
            return json.loads(content)
        except ValueError:
            raise b2exc.B2ConnectionError("POST reply is not JSON") from None


def _error(resp: http.client.HTTPResponse, content: bytes) -> b2exc.B2Error:
    """b2sdk's exception for an error reply (as its B2Http reads one)."""
    try:
        error = json.loads(content.decode("utf-8")) if content else {}
        if not isinstance(error, dict):
            raise ValueError("not an object")
    except ValueError:
        error = {
            "message": content.decode("utf-8", errors="replace"),
            "code": "non_json_response",
        }
    try:
        status = int(error.get("status", resp.status))
    except (TypeError, ValueError):
        status = resp.status
    if status != resp.status:
        status = resp.status
    return interpret_b2_error(
        status,
        str(error["code"]) if "code" in error else None,
        str(error["message"]) if "message" in error else None,
        {k.lower(): v for k, v in resp.getheaders()},  # b2sdk looks up 'retry-after'
        None,
    )
