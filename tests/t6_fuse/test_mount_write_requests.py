"""What storing many small files costs at the loopback server: two uploads per file (key
object, then content) and upload URLs reused across them, not one b2_get_upload_url each."""

from __future__ import annotations

from pathlib import Path

from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import wait_outbox_empty

from b2cryptfs.bucket.keycopy import KEY_COPY_INFO

pytestmark = requires_fuse

FILES = 40


def test_small_files_cost_two_uploads_each_and_few_upload_urls(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache1", rsa_keys.args()):
        (mnt / "d").mkdir()
        wait_outbox_empty(tmp_path / "cache1")
        b2_server.reset_stats()
        for i in range(FILES):
            (mnt / "d" / f"s{i:03d}").write_bytes(bytes([i]) * 4096)
        wait_outbox_empty(tmp_path / "cache1")
        stats = b2_server.stats()
    uploads = stats.get("b2_upload_file", 0)
    # (the directory's new mtime may add an upload of its own)
    assert 2 * FILES <= uploads <= 2 * FILES + 2, stats
    assert stats.get("b2_get_upload_url", 0) <= 8, stats
    assert not any(k.startswith("b2_list") for k in stats), stats
    versions = [
        v
        for v in b2_server.file_versions(spec.bucket)
        if v["fileName"].startswith("d/s") and v["action"] == "upload"
    ]
    contents = [v for v in versions if not v["fileName"].endswith(".key.enc")]
    assert len(versions) == 2 * FILES and len(contents) == FILES
    # Each small content object carries its key object's copy (one download to read back).
    assert all(KEY_COPY_INFO in v["fileInfo"] for v in contents)
