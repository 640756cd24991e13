"""B2Store's authorization, bucket look-up and upload URLs over b2wire (store/b2account.py):
the account data kept, a token renewed when B2 says it expired, an upload URL fetched ahead
so that the first upload costs one request."""

from __future__ import annotations

import time


def _wait_for(what, cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_opening_authorizes_and_looks_the_bucket_up_once(b2_bucket):
    server = b2_bucket.server
    server.reset_stats()
    store = b2_bucket.store()
    stats = server.stats()
    assert (stats.get("b2_authorize_account"), stats.get("b2_list_buckets")) == (1, 1), stats
    account = store.account
    # What b2sdk's own authorization keeps, the token aside.
    from b2sdk.v2 import B2Api, InMemoryAccountInfo

    api = B2Api(InMemoryAccountInfo())
    api.authorize_account(server.realm, server.key_id, server.key)
    info = api.account_info
    got = account.sdk_auth_data()
    assert got.pop("auth_token") == account.token != info.get_account_auth_token()
    assert got == dict(
        account_id=info.get_account_id(),
        api_url=info.get_api_url(),
        download_url=info.get_download_url(),
        recommended_part_size=info.get_recommended_part_size(),
        absolute_minimum_part_size=info.get_absolute_minimum_part_size(),
        application_key=info.get_application_key(),
        realm=info.get_realm(),
        s3_api_url=info.get_s3_api_url(),
        allowed=info.get_allowed(),
        application_key_id=info.get_application_key_id(),
    )
    assert "listFiles" in account.allowed["capabilities"]
    assert account.key not in repr(account) and account.token not in repr(account)


def test_an_expired_token_is_renewed_once_and_the_call_made_again(b2_bucket):
    store = b2_bucket.store()
    store.upload_bytes("a.enc", b"a", {})
    server = b2_bucket.server
    old = store.account.token
    server.reset_stats()
    server.inject("b2_list_file_names", "expired", 1)
    assert [o.name for o in store.list_dir("").objects] == ["a.enc"]
    assert server.stats().get("b2_authorize_account") == 1
    assert store.account.token != old
    # b2sdk, where it is used, has the new token too (it does not authorize again).
    assert store.api.account_info.get_account_auth_token() == store.account.token


def test_a_prefetched_upload_url_serves_the_first_upload(b2_bucket):
    store = b2_bucket.store()
    server = b2_bucket.server
    server.reset_stats()
    store.prefetch_upload_url()
    _wait_for("the upload URL", lambda: server.stats().get("b2_get_upload_url") == 1)
    _wait_for("the pool", lambda: store._upload_urls._free)
    server.reset_stats()
    store.upload_bytes("first.enc", b"x" * 100, {})
    store.upload_bytes("second.enc", b"y" * 100, {})
    assert server.stats() == {"b2_upload_file": 2}
