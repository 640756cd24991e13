"""What reading files back on a fresh mount costs at the loopback server: one download for a
small file (its content; the key object comes from the copy in the listing), two for a bigger
one (the key object and the content's first chunk, requested together), no more."""

from __future__ import annotations

from pathlib import Path

from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import wait_outbox_empty

from b2cryptfs.bucket.keycopy import KEY_COPY_MAX_CONTENT

pytestmark = requires_fuse

FILES = 12
DOWNLOADS = ("b2_download_file_by_id", "b2_download_file_by_name")


def test_reading_a_file_costs_one_download_when_small_two_else(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    # Two 64 KiB chunks and a bit: the first read is served from the opening's range.
    texts = {f"f{i:02d}.txt": bytes([65 + i]) * (1000 + 70000 * (i % 3)) for i in range(FILES)}
    with mounted(spec, mnt, tmp_path / "cache1", rsa_keys.args()):
        (mnt / "d").mkdir()
        for name, data in texts.items():
            (mnt / "d" / name).write_bytes(data)
        wait_outbox_empty(tmp_path / "cache1")
    with mounted(spec, mnt, tmp_path / "cache2", rsa_keys.args()):
        b2_server.reset_stats()
        for name in texts:
            with open(mnt / "d" / name, "rb") as f:
                assert f.read(4096) == texts[name][:4096], name
        stats = b2_server.stats()
        for name, data in texts.items():
            assert (mnt / "d" / name).read_bytes() == data, name
    small = sum(len(data) < KEY_COPY_MAX_CONTENT - 1024 for data in texts.values())
    assert small == FILES // 3
    assert sum(stats.get(k, 0) for k in DOWNLOADS) == 2 * FILES - small, stats


def test_the_root_listing_of_the_mount_check_is_the_first_one(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    """The mount lists its root before it starts (the credentials check): listing the root
    right after costs no list call."""
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache1", rsa_keys.args()):
        (mnt / "top.txt").write_bytes(b"top\n")
        (mnt / "sub").mkdir()
        wait_outbox_empty(tmp_path / "cache1")
    b2_server.reset_stats()
    with mounted(spec, mnt, tmp_path / "cache2", rsa_keys.args()):
        at_mount = b2_server.stats()
        assert sorted(p.name for p in mnt.iterdir()) == ["sub", "top.txt"]
        assert (mnt / "top.txt").read_bytes() == b"top\n"
        after = b2_server.stats()
    lists = sum(after.get(k, 0) for k in ("b2_list_file_names", "b2_list_file_versions"))
    assert lists == sum(at_mount.get(k, 0) for k in ("b2_list_file_names",)), (at_mount, after)
