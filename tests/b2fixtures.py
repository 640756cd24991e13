"""pytest fixtures around the loopback B2 server (tests/b2server.py).

conftest.py re-exports them with ``from b2fixtures import *  # noqa``. Names:

- ``b2_server`` (session): the server, running in its own process (as a real service
  would be: the mount daemon and the ``b2``/``rclone`` tools reach it over TCP). A
  :class:`B2ServerHandle` with ``.realm .key_id .key .bucket .env``, ``.stats()``,
  ``.reset_stats()``, ``.inject(kind, fault, count=1, **params)``, ``.clear_faults()``,
  ``.create_bucket(name)``, ``.create_key(...)``, ``.file_versions(bucket)``,
  ``.seed(bucket, names, size)``.
- ``b2_bucket`` (function): a fresh, empty bucket for one test (a :class:`B2Bucket` with
  ``.name .url .env .server`` and ``.store(**kw)`` for a B2Store on it); pending faults are
  cleared when the test ends.
- ``b2_cli_env`` (function): ``cli_env`` plus the server's credentials, ``BUCKET`` and a
  private ``B2_ACCOUNT_INFO`` under the test's HOME, for running ``b2cryptfs``, ``b2`` and
  ``rclone`` in subprocesses.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
SERVER_SCRIPT = TESTS / "b2server.py"
START_TIMEOUT = 30

__all__ = [
    "B2Bucket",
    "B2ServerHandle",
    "b2_bucket",
    "b2_cli_env",
    "b2_restricted",
    "b2_server",
    "start_b2_server",
]


class B2ServerHandle:
    """Talks to a loopback server (any process) through HTTP, the real API and /test/."""

    def __init__(self, realm: str, key_id: str, key: str, bucket: str, proc=None, log=None):
        self.realm = realm
        self.key_id = key_id
        self.key = key
        self.bucket = bucket
        self.proc = proc
        self.log_path = log
        self._token: str | None = None
        self._lock = threading.Lock()

    @property
    def env(self) -> dict[str, str]:
        return {
            "B2_ENVIRONMENT": self.realm,
            "B2_APPLICATION_KEY_ID": self.key_id,
            "B2_APPLICATION_KEY": self.key,
        }

    # --- HTTP --------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, headers=None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.realm + path, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path}: {exc.code} {detail}") from None

    def _api(self, endpoint: str, body: dict) -> Any:
        with self._lock:
            if self._token is None:
                basic = base64.b64encode(f"{self.key_id}:{self.key}".encode()).decode()
                auth = self._request(
                    "GET",
                    "/b2api/v4/b2_authorize_account",
                    headers={"Authorization": f"Basic {basic}"},
                )
                self._token = auth["authorizationToken"]
                self._account = auth["accountId"]
        body = {"accountId": self._account, **body}
        return self._request(
            "POST", f"/b2api/v4/{endpoint}", body, headers={"Authorization": self._token}
        )

    # --- test controls -----------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Requests per endpoint (b2_list_file_names, b2_upload_file, ...) since the reset."""
        return self._request("GET", "/test/stats")["requests"]

    def connections(self) -> int:
        """TCP connections the server accepted since the reset (this call's own included)."""
        return self._request("GET", "/test/stats")["connections"]

    def fault_counts(self) -> dict[str, int]:
        return self._request("GET", "/test/stats")["faults"]

    def reset_stats(self) -> None:
        self._request("POST", "/test/reset", {})

    def inject(self, kind: str, fault: str, count: int = 1, **params: Any) -> None:
        """Fail the next ``count`` requests of ``kind``: fault is 503, 429, expired or drop."""
        self._request(
            "POST", "/test/faults", {"kind": kind, "fault": fault, "count": count, **params}
        )

    def clear_faults(self) -> None:
        self._request("POST", "/test/faults", {"clear": True})

    def configure(self, latency_ms: float | None = None, bandwidth_mbps: float | None = None):
        body = {}
        if latency_ms is not None:
            body["latency_ms"] = latency_ms
        if bandwidth_mbps is not None:
            body["bandwidth_mbps"] = bandwidth_mbps
        return self._request("POST", "/test/config", body)

    def create_bucket(self, name: str, bucket_type: str = "allPrivate") -> str:
        """Create a bucket through the real b2_create_bucket call; returns its id."""
        return self._api("b2_create_bucket", {"bucketName": name, "bucketType": bucket_type})[
            "bucketId"
        ]

    def create_key(
        self,
        capabilities: list[str] | None = None,
        bucket: str | None = None,
        name_prefix: str | None = None,
    ) -> tuple[str, str]:
        """A restricted application key: (key id, key)."""
        body: dict[str, Any] = {"capabilities": capabilities, "bucket": bucket}
        if name_prefix is not None:
            body["name_prefix"] = name_prefix
        k = self._request("POST", "/test/create_key", body)
        return k["applicationKeyId"], k["applicationKey"]

    def file_versions(self, bucket: str) -> list[dict]:
        """Every stored version in a bucket (name, id, action, length, sha1, info, parts)."""
        q = urllib.parse.urlencode({"bucket": bucket})
        return self._request("GET", f"/test/file_versions?{q}")

    def seed(
        self,
        bucket: str,
        names: list[str],
        size: int = 0,
        *,
        data: bytes | None = None,
        info: dict[str, str] | None = None,
    ) -> None:
        """Store many objects at once: ``data`` under every name, else ``size`` filler bytes."""
        body: dict[str, Any] = {"bucket": bucket, "names": names, "size": size}
        if data is not None:
            body["data_b64"] = base64.b64encode(data).decode()
        if info is not None:
            body["info"] = info
        self._request("POST", "/test/seed", body)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_b2_server(*args: str, log_dir: str | None = None) -> B2ServerHandle:
    """Start ``tests/b2server.py`` in a subprocess and wait for its banner line."""
    log_dir = log_dir or tempfile.mkdtemp(prefix="b2server-")
    log_path = os.path.join(log_dir, "b2server.log")
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    if not line or not line[0].strip():
        proc.kill()
        proc.wait()
        log.close()
        raise RuntimeError(f"b2server did not start; see {log_path}")
    fields = dict(kv.split("=", 1) for kv in line[0].decode().split())
    # keep draining stdout so the server can never block on a full pipe
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return B2ServerHandle(
        fields["B2_ENVIRONMENT"],
        fields["B2_APPLICATION_KEY_ID"],
        fields["B2_APPLICATION_KEY"],
        fields["BUCKET"],
        proc=proc,
        log=log_path,
    )


class B2Bucket:
    """A per-test bucket on the loopback server."""

    def __init__(self, server: B2ServerHandle, name: str) -> None:
        self.server = server
        self.name = name
        self.url = f"b2://{name}"

    @property
    def env(self) -> dict[str, str]:
        return {**self.server.env, "BUCKET": self.name}

    def store(self, prefix: str = "", **kw: Any):
        """A B2Store on this bucket with test-friendly retry settings (override with kw)."""
        from b2cryptfs.store.b2store import B2Store

        settings: dict[str, Any] = dict(
            realm=self.server.realm,
            key_id=self.server.key_id,
            key=self.server.key,
            max_tries=3,
            backoff=0.2,
            retry_time=5.0,  # a persistent fault fails in seconds
        )
        settings.update(kw)
        return B2Store(self.name, prefix, **settings)

    def versions(self) -> list[dict]:
        return self.server.file_versions(self.name)


_bucket_counter = itertools.count(1)


@pytest.fixture(scope="session")
def b2_server(tmp_path_factory: pytest.TempPathFactory):
    handle = start_b2_server(log_dir=str(tmp_path_factory.mktemp("b2server")))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def b2_bucket(b2_server: B2ServerHandle, request: pytest.FixtureRequest):
    slug = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()
    name = f"t{next(_bucket_counter):04d}-{slug}"[:50].rstrip("-")
    b2_server.create_bucket(name)
    b2_server.reset_stats()  # counters are per test (tests using the server run one at a time)
    bucket = B2Bucket(b2_server, name)
    try:
        yield bucket
    finally:
        b2_server.clear_faults()


@pytest.fixture
def b2_cli_env(cli_env: dict[str, str], b2_bucket: B2Bucket) -> dict[str, str]:
    env = dict(cli_env)
    env.update(b2_bucket.env)
    env["B2_ACCOUNT_INFO"] = os.path.join(env["HOME"], ".b2_account_info")
    env.pop("XDG_CONFIG_HOME", None)
    return env


# Everything a b2cryptfs session needs, without deleteFiles (nothing it does must need it).
RESTRICTED_CAPABILITIES = ["listBuckets", "listFiles", "readFiles", "writeFiles"]


@pytest.fixture
def b2_restricted(b2_bucket: B2Bucket) -> tuple[str, dict[str, str]]:
    """(store url, credentials env) for a key restricted to ``b2://BUCKET/restricted/``,
    made through the server's ``/test/create_key``, without deleteFiles."""
    key_id, key = b2_bucket.server.create_key(
        RESTRICTED_CAPABILITIES, bucket=b2_bucket.name, name_prefix="restricted/"
    )
    env = {
        "B2_ENVIRONMENT": b2_bucket.server.realm,
        "B2_APPLICATION_KEY_ID": key_id,
        "B2_APPLICATION_KEY": key,
    }
    return f"{b2_bucket.url}/restricted", env
