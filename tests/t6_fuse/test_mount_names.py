"""Mounting a store with encrypted names: the name key is checked before the fork."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mountutil import B2CRYPTFS, Keys, dir_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = requires_fuse


def test_encrypted_names_mount(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted(spec, mnt, cache, rsa_keys.args(), extra_args=["-o", "encrypt_names"]):
        (mnt / "tax returns").mkdir()
        (mnt / "tax returns" / "2025.pdf").write_bytes(b"%PDF- private\n")
    stored = [str(p.relative_to(spec.root)) for p in spec.root.rglob("*")]
    assert not [s for s in stored if "tax" in s or "2025" in s], stored

    # A store with encrypted names is used that way without the option.
    with mounted(spec, mnt, cache, rsa_keys.args()):
        assert (mnt / "tax returns" / "2025.pdf").read_bytes() == b"%PDF- private\n"

    # Write-only cannot work (names need the private key): one line, before any fork.
    res = subprocess.run(
        [*B2CRYPTFS, "mount", spec.url, str(mnt), *rsa_keys.args(write_only=True),
         "--cache-dir", str(cache)],
        env=spec.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 3 and len(lines) == 1 and "private key" in lines[0], res.stderr
