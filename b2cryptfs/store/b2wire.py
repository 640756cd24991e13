"""B2's data requests (a range download, a one-request upload) straight over http.client.

Through b2sdk, requests and urllib3 one such request costs about 1.5-2 ms of the interpreter
(URL parsing and re-encoding, cookie jars, header merging, settings looked up at every
call), several times what a 4 KiB body costs to move; a mount reading or writing many small
files is bound by it. Here each thread keeps one kept-alive connection per host and a
request is written and read with http.client alone.

Nothing of b2sdk is imported here (a mount that only lists, reads and writes small files
never loads it, a quarter of a second and 26 MB). An error reply or a network failure is a
``WireError``: its status and B2's error code, whether it is worth another try (network,
408, 429, 5xx, with Retry-After) and the errors.py exception it means, the same meanings
b2sdk's ``interpret_b2_error`` and B2Store's ``map_error`` give. It has b2sdk's
``should_retry_http``/``retry_after_seconds`` so one retry loop serves both. The headers
of a one-request upload are built here as b2sdk's raw API builds them (a test compares).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from b2cryptfs.errors import (
    AuthError,
    B2CryptfsError,
    NoSuchBucket,
    NotFound,
    StoreError,
    TransientError,
)

# b2sdk's own read timeout for data calls (B2Http.TIMEOUT).
TIMEOUT = 128.0
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_MAX_LINE = 65536
_MAX_HEADERS = 100
# A file body is sent in blocks of this size (http.client's default, 8 KiB, costs a system
# call and a loop turn of the interpreter per 8 KiB: 8,000 for a 64 MiB upload).
BLOCK = 1 << 20
NETWORK = 0  # WireError.status when no reply came
_BAD_TOKEN = ("bad_auth_token", "expired_auth_token")
_GONE = ("no_such_file", "file_not_present")  # 400s that mean "no such file"
_CAPS = ("storage_cap_exceeded", "transaction_cap_exceeded")


class WireError(Exception):
    """A B2 error reply (``status``, B2's ``code`` and ``message``) or, with status
    ``NETWORK``, a request that got no whole reply (reset, timeout, refused)."""

    def __init__(
        self, status: int, code: str | None, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_seconds = retry_after

    def __str__(self) -> str:
        if self.status == NETWORK:
            return self.message
        return f"{self.status} {self.code}: {self.message}"

    @property
    def bad_token(self) -> bool:
        """B2 refused the account or upload token: authorize (or take a URL) again."""
        return self.status == 401 and self.code in _BAD_TOKEN

    @property
    def transient(self) -> bool:
        """Worth another try: no reply, a timeout, 429, a 5xx, or an expired token (the
        next try re-authorizes)."""
        s = self.status
        return s in (NETWORK, 408, 429) or 500 <= s < 600 or self.code == "expired_auth_token"

    def should_retry_http(self) -> bool:
        """b2sdk's name for it (the same retry loop takes both kinds); not an expired token,
        which b2sdk's calls too renew once, outside their HTTP retries."""
        s = self.status
        return s in (NETWORK, 408, 429) or 500 <= s < 600

    def mapped(self, what: str) -> B2CryptfsError:
        """The errors.py exception (one line) this failure means to the caller."""
        s, code = self.status, self.code
        if self.bad_token:
            return AuthError(f"{what}: B2 rejected the authorization ({self.message})")
        if s == 401 or (s == 403 and code == "access_denied"):
            return AuthError(f"{what}: the application key is not allowed to do this ({self})")
        if s == 403 and code in _CAPS:
            return StoreError(f"{what}: a B2 account cap is exceeded ({self})")
        if s == 400 and code == "bad_bucket_id":
            return NoSuchBucket(f"{what}: no such bucket")
        if s == 404 or (s == 400 and code in _GONE):
            return NotFound(f"{what}: no such object or version")
        if self.transient:
            return TransientError(f"{what}: B2 unreachable or failing after retries ({self})")
        if s == 400:
            return StoreError(f"{what}: B2 refused the request ({self})")
        return StoreError(f"{what}: {self}")


def network_error(message: str) -> WireError:
    return WireError(NETWORK, None, message)


def b2_quote(text: str) -> str:
    """A name or file info value as B2 wants it in a header (b2sdk's b2_url_encode)."""
    return quote(text.encode("utf-8"))


def upload_headers(
    token: str, name: str, length: int, content_type: str, sha1: str, info: dict[str, str]
) -> dict[str, str]:
    """The headers of a b2_upload_file (equal to b2sdk's get_upload_file_headers without
    encryption, retention or legal hold: tests/t2_store/test_b2wire.py compares)."""
    headers = {
        "Authorization": token,
        "Content-Length": str(length),
        "X-Bz-File-Name": b2_quote(name),
        "Content-Type": content_type,
        "X-Bz-Content-Sha1": sha1,
    }
    for k, v in info.items():
        headers["X-Bz-Info-" + k] = b2_quote(v)
    return headers


class _Headers(dict):
    """A reply's headers by lower-case name (repeats joined with ", ")."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def get_all(self, name: str, default: Any = None) -> Any:
        value = super().get(name.lower())
        return default if value is None else [value]


class _Response(http.client.HTTPResponse):
    """http.client's reply with a plain header reader: the standard one parses every
    header block with the email package, a third of a small download's interpreter time
    (B2 sends a dozen headers, the file info among them)."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._status_line()
            headers = self._header_block()
            if status != 100:  # a "100 Continue" is followed by the real reply
                break
        self.code = self.status = status
        self.reason = reason
        self.version = 10 if version in ("HTTP/1.0", "HTTP/0.9") else 11
        self.headers = self.msg = headers  # type: ignore[assignment]
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self.chunk_left = None
        connection = headers.get("connection", "").lower()
        if self.version == 11:
            self.will_close = "close" in connection
        else:
            self.will_close = "keep-alive" not in connection and not headers.get("keep-alive")
        self.length = None
        length = headers.get("content-length")
        if length and not self.chunked and length.strip().isdigit():
            self.length = int(length)
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # the body ends where the connection does

    def _status_line(self) -> tuple[str, int, str]:
        line = self.fp.readline(_MAX_LINE + 1)
        if not line:
            # The server closed the connection before answering (an idle keep-alive).
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("status line")
        parts = line.decode("iso-8859-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise http.client.BadStatusLine(line.decode("iso-8859-1", "replace"))
        if not parts[0].startswith(("HTTP/1.", "HTTP/0.9")):
            raise http.client.UnknownProtocol(parts[0])
        return parts[0], int(parts[1]), parts[2].strip() if len(parts) > 2 else ""

    def _header_block(self) -> _Headers:
        headers = _Headers()
        last = None
        for _ in range(_MAX_HEADERS + 1):
            line = self.fp.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise http.client.LineTooLong("header line")
            if line in (b"\r\n", b"\n", b""):
                return headers
            text = line.decode("iso-8859-1")
            if text[0] in " \t" and last is not None:  # a folded continuation line
                headers[last] = f"{headers[last]} {text.strip()}"
                continue
            name, sep, value = text.partition(":")
            if not sep:
                continue  # not a header: skipped, as the email parser does with defects
            last = name.strip().lower()
            value = value.strip()
            old = dict.get(headers, last)
            headers[last] = value if old is None else f"{old}, {value}"
        raise http.client.HTTPException(f"more than {_MAX_HEADERS} headers")


class Wire:
    """Kept-alive HTTP/1.1 connections, one per host and thread, for B2 data requests."""

    def __init__(self, user_agent: str, cafile: str | None) -> None:
        self.user_agent = user_agent
        self._cafile = cafile
        self._tls: ssl.SSLContext | None = None
        self._local = threading.local()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            cafile = self._cafile
            if cafile is None:
                try:  # requests' bundle (a B2 host is trusted as it was through requests)
                    import certifi

                    cafile = certifi.where()
                except ImportError:
                    pass  # the system's
            self._tls = ssl.create_default_context(cafile=cafile)
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
            conn = http.client.HTTPSConnection(
                netloc, timeout=TIMEOUT, context=self._context(), blocksize=BLOCK
            )
        elif scheme == "http":
            conn = http.client.HTTPConnection(netloc, timeout=TIMEOUT, blocksize=BLOCK)
        else:
            raise network_error(f"unsupported URL scheme {scheme!r}")
        conn.response_class = _Response
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
        self, method: str, url: str, headers: dict[str, str], body: Any = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request; (connection, response) of a 200/206 reply, its body unread.

        ``body``: bytes, or a binary file read from where it stands (its Content-Length in
        ``headers``). An error reply or a failure to get one raises a WireError. A reused
        connection that the server closed meanwhile (idle keep-alive) is replaced once, at
        once."""
        parts = urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        hdrs = {**headers, "User-Agent": self.user_agent}
        start = body.tell() if hasattr(body, "read") else None
        for fresh_try in (False, True):
            conn, reused = self._connection(parts.scheme, parts.netloc)
            if fresh_try and start is not None:
                body.seek(start)  # the stale connection took some of it
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                break
            except _STALE as exc:
                self.forget(conn)
                if reused and not fresh_try:
                    continue
                raise network_error(f"{method} {parts.netloc}: {exc!r}") from None
            except (OSError, http.client.HTTPException) as exc:  # timeouts among them
                self.forget(conn)
                raise network_error(f"{method} {parts.netloc}: {exc!r}") from None
        if resp.status in (200, 206):
            return conn, resp
        raise _error(resp, self.body(conn, resp, f"{method} {parts.netloc}"))

    def body(
        self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, what: str
    ) -> bytes:
        """The whole body of ``resp``; the connection is dropped when it cannot serve again."""
        try:
            content = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.forget(conn)
            raise network_error(f"{what}: reply cut: {exc!r}") from None
        if resp.will_close:
            self.forget(conn)
        return content

    def post_json(self, url: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
        """POST ``body``; the JSON object of the 200 reply."""
        conn, resp = self.request("POST", url, headers, body)
        content = self.body(conn, resp, "POST")
        try:
            return json.loads(content)
        except ValueError:
            raise network_error("POST reply is not JSON") from None


def _error(resp: http.client.HTTPResponse, content: bytes) -> WireError:
    """The WireError of an error reply: B2's JSON ``code`` and ``message`` when it sent
    them (a proxy's or a load balancer's page is "non_json_response")."""
    try:
        error = json.loads(content.decode("utf-8")) if content else {}
        if not isinstance(error, dict):
            raise ValueError("not an object")
    except ValueError:
        error = {
            "message": content.decode("utf-8", errors="replace"),
            "code": "non_json_response",
        }
    code = error.get("code")
    message = error.get("message")
    after = resp.getheader("retry-after")
    try:
        retry_after = int(after) if after is not None else None
    except ValueError:
        retry_after = None  # an HTTP date: the caller's own backoff applies (as b2sdk's)
    return WireError(
        resp.status,
        None if code is None else str(code),
        "" if message is None else " ".join(str(message).split()),
        retry_after,
    )
