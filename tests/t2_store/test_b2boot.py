"""The b2sdk-free first calls of a mount (store/b2boot.py) against the loopback server:
the same listing and stat answers as B2Store, b2sdk taking over the authorization without a
second b2_authorize_account, and None (b2sdk's path) for whatever it does not handle."""

from __future__ import annotations

from b2cryptfs.store import open_store
from b2cryptfs.store.b2boot import LazyB2Store, boot


def _boot(server, bucket: str, prefix: str = "", key_id=None, key=None, realm=None):
    def calls(lister):
        return lister.list_dir(""), lister.stat("a.enc"), lister.stat("none.enc"), lister

    return boot(
        bucket, prefix, realm or server.realm, key_id or server.key_id, key or server.key, calls
    )


def _seed(b2_bucket) -> None:
    b2_bucket.server.seed(b2_bucket.name, ["a.enc", "b.key.enc"], size=5, info={"x": "1"})
    b2_bucket.server.seed(
        b2_bucket.name, ["c.enc"], size=2, info={"src_last_modified_millis": "1234"}
    )
    b2_bucket.server.seed(b2_bucket.name, ["dir/d.enc", "p/q/e.enc"], size=1)


def test_boot_answers_as_b2store(b2_bucket):
    _seed(b2_bucket)
    store = b2_bucket.store()
    auth, (root, a, none, lister) = _boot(b2_bucket.server, b2_bucket.name)
    assert root == store.list_dir("")
    assert sorted(root.prefixes) == ["dir/", "p/"]
    assert a == store.stat("a.enc") and a is not None and a.info == {"x": "1"}
    assert none is None
    assert lister.list_dir("p/") == store.list_dir("p/")  # (a closed client reconnects)
    assert auth.bucket_id == store.bucket_id


def test_b2sdk_takes_the_authorization_without_authorizing_again(b2_bucket):
    _seed(b2_bucket)
    auth, _ = _boot(b2_bucket.server, b2_bucket.name)
    made = []

    def make(a):
        made.append(a)
        return open_store(b2_bucket.url, realm=a.realm, key_id=a.key_id, key=a.key, authorized=a)

    lazy = LazyB2Store(auth, "", make)
    assert not made  # b2sdk is not made before it is needed
    b2_bucket.server.reset_stats()
    assert {o.name for o in lazy.list_dir("").objects} == {"a.enc", "b.key.enc", "c.enc"}
    assert lazy.read(lazy.stat("c.enc")) == lazy.real().read(lazy.stat("c.enc"))
    info = lazy.upload_bytes("new.enc", b"data", {})
    assert lazy.read(info) == b"data"
    stats = b2_bucket.server.stats()
    assert stats.get("b2_authorize_account", 0) == 0
    assert stats.get("b2_list_buckets", 0) == 0
    assert len(made) == 1


def test_prefix_and_restricted_key(b2_bucket, b2_restricted):
    b2_bucket.server.seed(b2_bucket.name, ["restricted/a.enc", "restricted/s/x.enc"], size=3)
    url, env = b2_restricted
    got = boot(
        b2_bucket.name,
        "restricted/",
        env["B2_ENVIRONMENT"],
        env["B2_APPLICATION_KEY_ID"],
        env["B2_APPLICATION_KEY"],
        lambda lister: (lister.list_dir(""), lister.stat("a.enc")),
    )
    assert got is not None
    auth, (root, a) = got
    store = open_store(
        url,
        realm=env["B2_ENVIRONMENT"],
        key_id=env["B2_APPLICATION_KEY_ID"],
        key=env["B2_APPLICATION_KEY"],
    )
    assert root == store.list_dir("") and a == store.stat("a.enc")
    assert auth.allowed["namePrefix"] == "restricted/"


def test_failures_are_left_to_b2sdk(b2_bucket, b2_server, monkeypatch):
    server = b2_bucket.server
    assert _boot(server, b2_bucket.name, key="wrong") is None  # rejected key
    assert _boot(server, "no-such-bucket") is None
    assert _boot(server, b2_bucket.name, realm="http://127.0.0.1:1") is None  # unreachable
    assert _boot(server, b2_bucket.name, realm="s3.us-west-000.example") is None  # not a URL
    key_id, key = server.create_key(["listBuckets", "listFiles"], bucket=b2_bucket.name)
    other = "other-" + b2_bucket.name[:40]
    server.create_bucket(other)
    assert _boot(server, other, key_id=key_id, key=key) is None  # restricted to another
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    assert _boot(server, b2_bucket.name) is None  # requests would use the proxy
