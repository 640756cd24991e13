"""Helpers for the reliability tests (tests/t6_fuse/test_reliability_*.py).

A small tmpfs (a cache disk that fills up), a loopback-B2 store whose faults and link
shaping are always reset, polling for a condition, and the command-line tool.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mountutil import B2CRYPTFS, StoreSpec, b2_store, requires_fuse

HEAVY = os.environ.get("B2CRYPTFS_HEAVY") == "1"
MB = 1 << 20


F = TypeVar("F", bound=Callable[..., Any])


def fuse_test(fn: F) -> F:
    """Mark one test as needing real FUSE mounts (``requires_fuse`` for a whole module)."""
    for mark in requires_fuse:
        fn = mark(fn)
    return fn


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``8m``) on ``path``, always unmounted again; skips if impossible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def b2_spec(tmp_path: Path, b2_server: Any) -> Iterator[StoreSpec]:
    """A fresh bucket for a mount; injected faults and a slowed link end with the test."""
    spec = b2_store(tmp_path, b2_server)
    b2_server.reset_stats()
    try:
        yield spec
    finally:
        b2_server.clear_faults()
        b2_server.configure(latency_ms=0, bandwidth_mbps=0)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def outbox_entries(cache: Path) -> list[Path]:
    """Manifests of queued uploads (CacheDir layout: ROOT/<store id>/outbox/<seq>.json)."""
    return sorted(cache.glob("*/outbox/*.json"))


def wait_outbox_empty(cache: Path, timeout: float = 120) -> None:
    """Wait until every upload of the mount using ``cache`` is stored."""
    wait_until("an empty outbox", lambda: not outbox_entries(cache), timeout=timeout)


def cli(
    spec: StoreSpec, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``b2cryptfs ARGS`` with the store's environment (credentials, no user config)."""
    res = subprocess.run(
        [*B2CRYPTFS, *args], env=spec.env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert res.returncode == 0, f"b2cryptfs {args} exited {res.returncode}:\n{res.stderr}"
    return res


def versions(spec: StoreSpec) -> list[dict]:
    """Every stored version in the spec's bucket (loopback B2 only)."""
    return spec.server.file_versions(spec.bucket)


def log_lines(log: str, *needles: str) -> list[str]:
    """Lines of a daemon log that contain every one of ``needles``."""
    return [line for line in log.splitlines() if all(n in line for n in needles)]
