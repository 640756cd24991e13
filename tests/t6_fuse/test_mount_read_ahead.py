"""The mount's kernel read-ahead (``--read-ahead``): as root the daemon sets the bdi's
``read_ahead_kb`` once the mount is made, and a sequential read then arrives in fewer,
larger READ requests (counted by the daemon, logged at the unmount with --debug)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from mountutil import Keys, dir_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import wait_outbox_empty

pytestmark = [
    *requires_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root may set a bdi's read-ahead"),
    pytest.mark.skipif(
        os.geteuid() == 0 and os.statvfs("/sys").f_flag & os.ST_RDONLY != 0,
        reason="/sys is read-only here",
    ),
]

MIB = 1 << 20
SIZE = 24 * MIB
SERVED = re.compile(r"served (\d+) READ requests, (\d+) bytes asked")


def _bdi_read_ahead(mnt: Path) -> int:
    dev = os.stat(mnt).st_dev
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    return int(Path(path).read_text())


def _read_cold(spec, mnt: Path, cache: Path, keys: Keys, read_ahead: int) -> tuple[int, int]:
    """Read the file in 1 MiB calls on a fresh mount: (bdi read-ahead, READ requests)."""
    args = [*keys.args(), "--debug", "--read-ahead", str(read_ahead)]
    with mounted(spec, mnt, cache, args) as m:
        kib = _bdi_read_ahead(mnt)
        data = bytearray()
        with open(mnt / "big.bin", "rb", buffering=0) as f:
            while chunk := f.read(MIB):
                data += chunk
        assert data == _content()
    found = SERVED.findall(m.log())
    assert len(found) == 1, m.log()[-2000:]
    requests, asked = map(int, found[0])
    assert asked >= SIZE
    return kib, requests


def _content() -> bytes:
    return b"".join(i.to_bytes(4, "big") * (MIB // 4) for i in range(SIZE // MIB))


def test_read_ahead_option_sets_the_bdi_and_widens_read_requests(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache0", rsa_keys.args()):
        (mnt / "big.bin").write_bytes(_content())
        wait_outbox_empty(tmp_path / "cache0")
    wide_kib, wide = _read_cold(spec, mnt, tmp_path / "cache1", rsa_keys, 1024)
    kernel_kib, narrow = _read_cold(spec, mnt, tmp_path / "cache2", rsa_keys, 0)
    assert wide_kib == 1024
    assert kernel_kib < 1024  # 0 left the kernel's value (128 KiB unless changed)
    # 1 MiB requests (a few smaller at the start, while the kernel's window grows)...
    assert wide <= SIZE // MIB + 16, wide
    # ...where the kernel's window cuts the same read into several times as many.
    assert narrow >= 2 * wide, (narrow, wide)
