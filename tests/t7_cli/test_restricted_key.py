"""Every command with an application key restricted to ``b2://BUCKET/restricted/`` and
without deleteFiles (loopback B2 enforces both, as B2 does)."""

from __future__ import annotations

import os
import subprocess

from mountutil import B2CRYPTFS, Keys, StoreSpec, base_env, mounted, rsa_keys  # noqa: F401
from reliability_util import fuse_test, outbox_entries, wait_until


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*B2CRYPTFS, *args], env=env, capture_output=True, text=True, timeout=180)


def ok(env: dict[str, str], *args: str) -> str:
    res = run(env, *args)
    assert res.returncode == 0, f"b2cryptfs {args}: {res.returncode}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    return res.stdout


def test_the_server_enforces_the_restrictions(b2_bucket, b2_restricted):
    from b2cryptfs.errors import AuthError
    from b2cryptfs.store.b2store import B2Store

    url, env = b2_restricted
    kw = dict(realm=env["B2_ENVIRONMENT"], key_id=env["B2_APPLICATION_KEY_ID"], retry_time=5.0)
    inside = B2Store(b2_bucket.name, "restricted", key=env["B2_APPLICATION_KEY"], **kw)
    obj = inside.upload_bytes("a.enc", b"a", {})
    assert inside.read(obj) == b"a" and [o.name for o in inside.list_dir("").objects] == ["a.enc"]
    try:
        inside.delete_version(obj)
        raise AssertionError("deleteFiles was not enforced")
    except AuthError as exc:
        assert "deleteFiles" in str(exc)
    outside = B2Store(b2_bucket.name, "", key=env["B2_APPLICATION_KEY"], **kw)
    # Above the prefix, the store answers what the key can see: the way down to it.
    assert outside.list_dir("").prefixes == ["restricted/"]
    assert outside.stat(".b2cryptfs-names.age") is None
    assert [o.name for o in outside.iter_all()] == ["restricted/a.enc"]
    calls = (lambda: outside.list_dir("other/"), lambda: outside.upload_bytes("x.enc", b"x", {}))
    for call in calls:
        try:
            call()
            raise AssertionError("the name prefix was not enforced")
        except AuthError as exc:
            assert "name prefix" in str(exc)


def test_every_command_with_a_restricted_key(b2_restricted, rsa_keys, cli_env, tmp_path):  # noqa: F811
    url, creds = b2_restricted
    env = {**cli_env, **creds}
    keys = rsa_keys.args()
    src = tmp_path / "a.txt"
    src.write_bytes(b"restricted content\n")
    ok(env, "put", *keys, str(src), f"{url}/dir/")
    assert "a.txt" in ok(env, "ls", *keys, "-R", url)
    ok(env, "get", *keys, f"{url}/dir/a.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_bytes() == b"restricted content\n"
    assert ok(env, "cat", *keys, f"{url}/dir/a.txt") == "restricted content\n"
    ok(env, "rotate", *keys, "--public-key", str(rsa_keys.public), url)
    ok(env, "fsck", *keys, url)
    assert ok(env, "cat", *keys, f"{url}/dir/a.txt") == "restricted content\n"

    # --b2-credentials instead of the environment, on a command that is not mount.
    cred_file = tmp_path / "b2.cred"
    cred_file.write_text("".join(f"{k}={v}\n" for k, v in creds.items()))
    cred_file.chmod(0o600)
    assert "a.txt" in ok(cli_env, "ls", *keys, "-R", "--b2-credentials", str(cred_file), url)

    # Above the prefix, ls shows the way down; outside it, one clear line, no traceback.
    bucket_url = url.rsplit("/", 1)[0]
    assert ok(env, "ls", *keys, bucket_url).split() == ["restricted/"]
    res = run(env, "put", *keys, str(src), f"{bucket_url}/other/")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "name prefix" in res.stderr


@fuse_test
def test_mount_with_a_restricted_key(b2_bucket, b2_restricted, rsa_keys, tmp_path):  # noqa: F811
    url, creds = b2_restricted
    env = base_env(tmp_path / "home")
    env.update(creds)
    spec = StoreSpec(kind="b2", url=url, env=env, server=b2_bucket.server, bucket=b2_bucket.name)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted(spec, mnt, cache, rsa_keys.args()):
        (mnt / "d").mkdir()
        (mnt / "d" / "f.txt").write_bytes(b"mounted\n")
        (mnt / "g.txt").write_bytes(b"gone soon\n")
        wait_until("the uploads", lambda: not outbox_entries(cache), timeout=120)
        os.unlink(mnt / "g.txt")
        assert sorted(os.listdir(mnt)) == ["d"]
    with mounted(spec, mnt, tmp_path / "cache-2", rsa_keys.args()):
        assert sorted(os.listdir(mnt)) == ["d"]
        assert (mnt / "d" / "f.txt").read_bytes() == b"mounted\n"
    live = {v["fileName"] for v in b2_bucket.versions() if v["action"] == "upload"}
    assert all(n.startswith("restricted/") for n in live) and live
