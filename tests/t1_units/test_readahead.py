"""The mount's read-ahead (fs/readahead.py): its device found in a mountinfo file and the write
into a bdi directory made here (the FUSE test sets the real one as root), and the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2cryptfs.fs import readahead

MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 0:41 / /mnt/my\\040files rw,nosuid,nodev - fuse.b2cryptfs /store rw,user_id=0
41 22 0:42 / /mnt/other rw,nosuid,nodev - fuse.sshfs host: rw,user_id=0
42 40 0:43 / /mnt/my\\040files rw,nosuid,nodev - fuse.b2cryptfs /store2 rw,user_id=0
43 22 0:44 / /mnt/other rw,nosuid - fuse.b2cryptfs - rw
"""


def test_the_newest_b2cryptfs_mount_on_the_path_is_found(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert readahead.mount_device("/mnt/my files", str(info)) == "0:43"  # on top of 0:41
    assert readahead.mount_device("/mnt/other", str(info)) == "0:44"  # not the sshfs one
    assert readahead.mount_device("/mnt/my\\040files", str(info)) is None
    assert readahead.mount_device("/", str(info)) is None
    assert readahead.mount_device("/mnt/x", str(tmp_path / "missing")) is None


def test_set_read_ahead_writes_the_bdi_file_or_gives_up_quietly(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    bdi = str(tmp_path / "bdi")
    (tmp_path / "bdi" / "0:44").mkdir(parents=True)
    assert readahead.set_read_ahead("/mnt/other", 1024, bdi, str(info))
    assert (tmp_path / "bdi" / "0:44" / "read_ahead_kb").read_text() == "1024\n"
    # No such bdi (or /sys read-only, or not root): False, no exception.
    assert not readahead.set_read_ahead("/mnt/my files", 1024, bdi, str(info))
    assert not readahead.set_read_ahead("/mnt/none", 1024, bdi, str(info))


def test_the_option_in_both_spellings() -> None:
    from b2cryptfs.cli.mount import _parser, apply_o_options
    from b2cryptfs.errors import UsageError

    parse = _parser("mount.b2cryptfs").parse_args
    assert parse(["s", "m"]).read_ahead == 1024
    assert parse(["s", "m", "--read-ahead", "0"]).read_ahead == 0
    args = parse(["s", "m", "-o", "read_ahead=2048,ro"])
    apply_o_options(args)
    assert args.read_ahead == 2048 and args.read_only
    with pytest.raises(UsageError, match="KiB"):
        parse(["s", "m", "--read-ahead", "1M"])


# --- the vfs's read-ahead policy (vfs/reader.py topup) -------------------------------------

UNIT = 64  # chunks per read-ahead request (4 MiB of 64 KiB chunks)


def test_a_full_window_is_kept_full_one_request_at_a_time() -> None:
    from b2cryptfs.vfs.reader import topup

    window = 4 * UNIT
    upto = 100 + window + 1  # the window just topped up after a read ending in chunk 100
    reads_end = [100 + 16 * k for k in range(1, 40)]  # then 1 MiB reads, one after another
    asked = []
    for last in reads_end:
        top = topup(last, upto, window, UNIT)
        if top is not None:
            first, count = top
            assert first == upto and count == UNIT  # whole requests, back to back
            # Each request goes out with three quarters of the window still ahead of the
            # reader: it has that long to arrive (a top-up of half the window had half).
            assert first - last > window * 3 // 4 - 16
            upto += count
            asked.append(last)
    assert len(asked) >= 8
    assert all(b - a == UNIT for a, b in zip(asked, asked[1:], strict=False))


def test_a_small_window_is_topped_up_by_halves_in_whole_requests() -> None:
    from b2cryptfs.vfs.reader import topup

    assert topup(10, 30, 32, UNIT) is None  # more than half of it still ahead
    assert topup(20, 30, 32, UNIT) == (30, UNIT)  # rounded up to one whole request
    assert topup(40, 30, 32, UNIT) == (41, UNIT)  # the reader went past it: from the reader
