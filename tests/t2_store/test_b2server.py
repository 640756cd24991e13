"""The loopback B2 server at the HTTP level: what each API version answers, B2's error
shape, listings with delimiter and paging, ranges, checksums, large-file rules, faults."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys

import pytest
import requests
from b2fixtures import SERVER_SCRIPT

MB = 1000 * 1000


class Raw:
    """A minimal B2 client over requests, to check the wire format itself."""

    def __init__(self, server, version: int = 4):
        self.server = server
        self.version = version
        basic = base64.b64encode(f"{server.key_id}:{server.key}".encode()).decode()
        r = requests.get(
            f"{server.realm}/b2api/v{version}/b2_authorize_account",
            headers={"Authorization": f"Basic {basic}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        self.auth = r.json()
        self.token = self.auth["authorizationToken"]
        self.account = self.auth["accountId"]

    def call(self, endpoint: str, **params) -> requests.Response:
        return requests.post(
            f"{self.server.realm}/b2api/v{self.version}/{endpoint}",
            json=params,
            headers={"Authorization": self.token},
            timeout=30,
        )

    def ok(self, endpoint: str, **params) -> dict:
        r = self.call(endpoint, **params)
        assert r.status_code == 200, r.text
        return r.json()

    def bucket_id(self, name: str) -> str:
        return self.ok("b2_list_buckets", accountId=self.account, bucketName=name)["buckets"][0][
            "bucketId"
        ]

    def upload(self, bucket_id: str, name: str, data: bytes, sha1: str | None = None, **info):
        up = self.ok("b2_get_upload_url", bucketId=bucket_id)
        headers = {
            "Authorization": up["authorizationToken"],
            "X-Bz-File-Name": requests.utils.quote(name),
            "Content-Type": "b2/x-auto",
            "X-Bz-Content-Sha1": sha1 or hashlib.sha1(data).hexdigest(),
        }
        if sha1 == "hex_digits_at_end":
            data = data + hashlib.sha1(data).hexdigest().encode()
        for k, v in info.items():
            headers[f"X-Bz-Info-{k}"] = v
        return requests.post(up["uploadUrl"], data=data, headers=headers, timeout=30)


@pytest.fixture
def raw(b2_server):
    return Raw(b2_server)


def assert_b2_error(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["code"] == code and body["message"]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_authorize_shapes(b2_server, version):
    auth = Raw(b2_server, version).auth
    assert auth["accountId"] and auth["authorizationToken"]
    if version <= 2:
        api = auth
        assert set(api["allowed"]) >= {"bucketId", "bucketName", "capabilities", "namePrefix"}
        if version == 1:
            assert api["minimumPartSize"] == api["recommendedPartSize"]
    else:
        api = auth["apiInfo"]["storageApi"]
        caps = api["capabilities"] if version == 3 else api["allowed"]["capabilities"]
        assert "writeFiles" in caps
    assert api["apiUrl"] == api["downloadUrl"] == b2_server.realm
    assert api["absoluteMinimumPartSize"] == 5 * MB  # B2's real limits by default
    assert api["recommendedPartSize"] == 100 * MB


def test_bad_credentials_and_tokens(b2_server):
    r = requests.get(
        f"{b2_server.realm}/b2api/v2/b2_authorize_account",
        headers={"Authorization": "Basic " + base64.b64encode(b"nobody:nothing").decode()},
        timeout=30,
    )
    assert_b2_error(r, 401, "unauthorized")
    r = requests.post(
        f"{b2_server.realm}/b2api/v2/b2_list_buckets",
        json={"accountId": "x"},
        headers={"Authorization": "not-a-token"},
        timeout=30,
    )
    assert_b2_error(r, 401, "bad_auth_token")
    r = requests.post(f"{b2_server.realm}/b2api/v2/b2_no_such_call", json={}, timeout=30)
    assert r.status_code == 404 and r.json()["status"] == 404


def test_create_bucket_rules(raw):
    assert_b2_error(
        raw.call(
            "b2_create_bucket", accountId=raw.account, bucketName="ab", bucketType="allPrivate"
        ),
        400,
        "bad_request",
    )
    name = "dup-bucket-name"
    raw.ok("b2_create_bucket", accountId=raw.account, bucketName=name, bucketType="allPrivate")
    assert_b2_error(
        raw.call(
            "b2_create_bucket", accountId=raw.account, bucketName=name, bucketType="allPrivate"
        ),
        400,
        "duplicate_bucket_name",
    )


def test_upload_checksums(raw, b2_bucket):
    bid = raw.bucket_id(b2_bucket.name)
    r = raw.upload(bid, "ok.txt", b"hello", src_last_modified_millis="123")
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["contentSha1"] == hashlib.sha1(b"hello").hexdigest()
    assert f["contentType"] == "text/plain"  # b2/x-auto
    assert f["fileInfo"] == {"src_last_modified_millis": "123"}
    assert_b2_error(raw.upload(bid, "bad.txt", b"hello", sha1="0" * 40), 400, "bad_request")
    r = raw.upload(bid, "end.txt", b"sha at the end", sha1="hex_digits_at_end")
    assert r.status_code == 200 and r.json()["contentLength"] == len(b"sha at the end")
    assert_b2_error(raw.upload(bid, "a//b", b"x"), 400, "bad_request")
    assert_b2_error(raw.upload(bid, "x" * 1025, b"x"), 400, "bad_request")
    info = {f"k{i}": "v" for i in range(11)}
    assert_b2_error(raw.upload(bid, "info.txt", b"x", **info), 400, "bad_request")
    names = [f["fileName"] for f in raw.ok("b2_list_file_names", bucketId=bid)["files"]]
    assert names == ["end.txt", "ok.txt"]


def test_list_file_names_delimiter_and_paging(raw, b2_bucket):
    b2_bucket.server.seed(
        b2_bucket.name,
        ["a.txt", "d/1", "d/2", "d/e/3", "e/4", "f.txt", "g/h/5", "z"],
        size=1,
    )
    bid = raw.bucket_id(b2_bucket.name)
    page = raw.ok("b2_list_file_names", bucketId=bid, delimiter="/", maxFileCount=10000)
    assert [(f["fileName"], f["action"]) for f in page["files"]] == [
        ("a.txt", "upload"),
        ("d/", "folder"),
        ("e/", "folder"),
        ("f.txt", "upload"),
        ("g/", "folder"),
        ("z", "upload"),
    ]
    assert page["nextFileName"] is None
    sub = raw.ok("b2_list_file_names", bucketId=bid, prefix="d/", delimiter="/")
    assert [f["fileName"] for f in sub["files"]] == ["d/1", "d/2", "d/e/"]
    # paging with delimiter: each folder is one entry; nextFileName resumes exactly there
    seen, start = [], None
    while True:
        p = raw.ok(
            "b2_list_file_names", bucketId=bid, delimiter="/", maxFileCount=2, startFileName=start
        )
        seen += [f["fileName"] for f in p["files"]]
        start = p["nextFileName"]
        if start is None:
            break
    assert seen == ["a.txt", "d/", "e/", "f.txt", "g/", "z"]
    assert_b2_error(
        raw.call("b2_list_file_names", bucketId=bid, maxFileCount=10001), 400, "bad_request"
    )


def test_versions_hide_and_delete(raw, b2_bucket):
    bid = raw.bucket_id(b2_bucket.name)
    ids = [raw.upload(bid, "v.txt", b"%d" % i).json()["fileId"] for i in range(3)]
    hidden = raw.ok("b2_hide_file", bucketId=bid, fileName="v.txt")
    assert hidden["action"] == "hide"
    assert_b2_error(raw.call("b2_hide_file", bucketId=bid, fileName="v.txt"), 400, "already_hidden")
    assert_b2_error(raw.call("b2_hide_file", bucketId=bid, fileName="none"), 400, "no_such_file")
    assert raw.ok("b2_list_file_names", bucketId=bid)["files"] == []
    versions = raw.ok("b2_list_file_versions", bucketId=bid)["files"]
    assert [v["fileId"] for v in versions] == [hidden["fileId"], *reversed(ids)]
    # paging through versions with nextFileId
    p = raw.ok("b2_list_file_versions", bucketId=bid, maxFileCount=2)
    assert p["nextFileName"] == "v.txt" and p["nextFileId"] == ids[1]
    p2 = raw.ok(
        "b2_list_file_versions",
        bucketId=bid,
        startFileName=p["nextFileName"],
        startFileId=p["nextFileId"],
    )
    assert [v["fileId"] for v in p2["files"]] == [ids[1], ids[0]]
    raw.ok("b2_delete_file_version", fileId=hidden["fileId"], fileName="v.txt")
    assert raw.ok("b2_list_file_names", bucketId=bid)["files"][0]["fileId"] == ids[2]
    assert_b2_error(
        raw.call("b2_delete_file_version", fileId=hidden["fileId"], fileName="v.txt"),
        400,
        "file_not_present",
    )


def test_downloads_and_ranges(raw, b2_bucket):
    bid = raw.bucket_id(b2_bucket.name)
    data = bytes(range(256)) * 40
    f = raw.upload(bid, "dir/r a+b.bin", data, color="blue").json()
    auth = {"Authorization": raw.token}
    by_id = f"{raw.server.realm}/b2api/v2/b2_download_file_by_id?fileId={f['fileId']}"
    by_name = f"{raw.server.realm}/file/{b2_bucket.name}/dir/r%20a%2Bb.bin"
    for url in (by_id, by_name):
        r = requests.get(url, headers=auth, timeout=30)
        assert r.status_code == 200 and r.content == data
        assert r.headers["X-Bz-File-Id"] == f["fileId"]
        assert r.headers["X-Bz-Content-Sha1"] == hashlib.sha1(data).hexdigest()
        assert r.headers["X-Bz-Info-color"] == "blue"
        r = requests.get(url, headers={**auth, "Range": "bytes=100-199"}, timeout=30)
        assert r.status_code == 206 and r.content == data[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        r = requests.get(url, headers={**auth, "Range": "bytes=-10"}, timeout=30)
        assert r.content == data[-10:]
        r = requests.get(url, headers={**auth, "Range": "bytes=10000-"}, timeout=30)
        assert r.content == data[10000:]
        r = requests.get(url, headers={**auth, "Range": f"bytes={len(data)}-"}, timeout=30)
        assert_b2_error(r, 416, "range_not_satisfiable")
    head = requests.head(by_name, headers=auth, timeout=30)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    assert_b2_error(requests.get(by_name, timeout=30), 401, "unauthorized")  # private bucket
    missing = f"{raw.server.realm}/file/{b2_bucket.name}/nope"
    assert_b2_error(requests.get(missing, headers=auth, timeout=30), 404, "not_found")
    # a download authorization covers its prefix only
    tok = raw.ok(
        "b2_get_download_authorization",
        bucketId=bid,
        fileNamePrefix="dir/",
        validDurationInSeconds=60,
    )["authorizationToken"]
    assert requests.get(by_name + f"?Authorization={tok}", timeout=30).content == data


def test_large_file_rules(raw, b2_bucket):
    bid = raw.bucket_id(b2_bucket.name)
    start = raw.ok(
        "b2_start_large_file",
        bucketId=bid,
        fileName="large.bin",
        contentType="b2/x-auto",
        fileInfo={"large_file_sha1": "x" * 40},
    )
    fid = start["fileId"]
    parts = [b"a" * (5 * MB), b"b" * 10, b"c" * 7]
    shas = []
    for n, part in enumerate(parts, 1):
        up = raw.ok("b2_get_upload_part_url", fileId=fid)
        h = hashlib.sha1(part).hexdigest()
        shas.append(h)
        r = requests.post(
            up["uploadUrl"],
            data=part,
            headers={
                "Authorization": up["authorizationToken"],
                "X-Bz-Part-Number": str(n),
                "X-Bz-Content-Sha1": h,
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
    # unfinished: not listed, but its parts are
    assert raw.ok("b2_list_file_names", bucketId=bid)["files"] == []
    listed = raw.ok("b2_list_parts", fileId=fid)["parts"]
    assert [p["contentLength"] for p in listed] == [5 * MB, 10, 7]
    assert raw.ok("b2_list_unfinished_large_files", bucketId=bid)["files"][0]["fileId"] == fid
    # part 2 is under the 5 MB minimum and is not the last one
    assert_b2_error(
        raw.call("b2_finish_large_file", fileId=fid, partSha1Array=shas), 400, "bad_request"
    )
    raw.ok("b2_cancel_large_file", fileId=fid)
    assert raw.ok("b2_list_file_versions", bucketId=bid)["files"] == []


def test_copy_file_and_part(raw, b2_bucket):
    bid = raw.bucket_id(b2_bucket.name)
    data = b"0123456789" * 1000
    src = raw.upload(bid, "src", data, k="v").json()
    c = raw.ok("b2_copy_file", sourceFileId=src["fileId"], fileName="dst")
    assert c["action"] == "copy" and c["fileInfo"] == {"k": "v"} and c["contentLength"] == len(data)
    c = raw.ok(
        "b2_copy_file",
        sourceFileId=src["fileId"],
        fileName="part",
        range="bytes=10-19",
        metadataDirective="REPLACE",
        contentType="text/plain",
        fileInfo={},
    )
    assert c["contentLength"] == 10 and c["fileInfo"] == {}
    r = requests.get(
        f"{raw.server.realm}/file/{b2_bucket.name}/part",
        headers={"Authorization": raw.token},
        timeout=30,
    )
    assert r.content == data[10:20]


def test_capabilities_are_enforced(b2_server, b2_bucket):
    key_id, key = b2_server.create_key(["listBuckets", "listFiles"])
    basic = base64.b64encode(f"{key_id}:{key}".encode()).decode()
    auth = requests.get(
        f"{b2_server.realm}/b2api/v4/b2_authorize_account",
        headers={"Authorization": f"Basic {basic}"},
        timeout=30,
    ).json()
    r = requests.post(
        f"{b2_server.realm}/b2api/v4/b2_get_upload_url",
        json={"bucketId": Raw(b2_server).bucket_id(b2_bucket.name)},
        headers={"Authorization": auth["authorizationToken"]},
        timeout=30,
    )
    assert_b2_error(r, 401, "unauthorized")


@pytest.mark.parametrize(
    "fault, status, code",
    [
        ("503", 503, "service_unavailable"),
        ("429", 429, "too_many_requests"),
        ("expired", 401, "expired_auth_token"),
    ],
)
def test_fault_injection_answers(raw, b2_bucket, fault, status, code):
    bid = raw.bucket_id(b2_bucket.name)
    b2_bucket.server.inject("list_file_names", fault, 1, retry_after=3)
    r = raw.call("b2_list_file_names", bucketId=bid)
    assert_b2_error(r, status, code)
    if fault == "429":
        assert r.headers["Retry-After"] == "3"
    if fault == "expired":  # the token stays expired, as a real one would
        assert_b2_error(raw.call("b2_list_file_names", bucketId=bid), 401, "expired_auth_token")
    else:
        assert raw.call("b2_list_file_names", bucketId=bid).status_code == 200
    assert b2_bucket.server.fault_counts() == {"b2_list_file_names": 1}


def test_drop_cuts_a_download_short(raw, b2_bucket):
    bid = raw.bucket_id(b2_bucket.name)
    f = raw.upload(bid, "d", b"x" * 100_000).json()
    b2_bucket.server.inject("download", "drop", 1)
    url = f"{raw.server.realm}/b2api/v4/b2_download_file_by_id?fileId={f['fileId']}"
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, headers={"Authorization": raw.token}, timeout=30).raise_for_status()
    assert (
        requests.get(url, headers={"Authorization": raw.token}, timeout=30).content
        == b"x" * 100_000
    )


def test_stats_count_per_endpoint(raw, b2_bucket):
    bid = raw.bucket_id(b2_bucket.name)
    b2_bucket.server.reset_stats()
    raw.ok("b2_list_file_names", bucketId=bid)
    raw.ok("b2_list_file_names", bucketId=bid)
    raw.upload(bid, "s", b"s")
    assert b2_bucket.server.stats() == {
        "b2_list_file_names": 2,
        "b2_get_upload_url": 1,
        "b2_upload_file": 1,
    }


def test_shaping_config_is_accepted(b2_server, raw, b2_bucket):
    try:
        conf = b2_server.configure(latency_ms=5, bandwidth_mbps=500)
        assert conf == {"latency_ms": 5.0, "bandwidth_mbps": 500.0}
        bid = raw.bucket_id(b2_bucket.name)
        data = b"y" * 300_000
        f = raw.upload(bid, "shaped", data).json()
        r = requests.get(
            f"{raw.server.realm}/b2api/v4/b2_download_file_by_id?fileId={f['fileId']}",
            headers={"Authorization": raw.token},
            timeout=30,
        )
        assert r.content == data
    finally:
        b2_server.configure(latency_ms=0, bandwidth_mbps=0)


def test_runs_alone_and_prints_its_environment(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SERVER_SCRIPT),
            "--port",
            "0",
            "--latency-ms",
            "1",
            "--bucket",
            "alone-bucket",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().split()
        fields = dict(kv.split("=", 1) for kv in line)
        assert list(fields) == [
            "B2_ENVIRONMENT",
            "B2_APPLICATION_KEY_ID",
            "B2_APPLICATION_KEY",
            "BUCKET",
        ]
        assert fields["B2_ENVIRONMENT"].startswith("http://127.0.0.1:")
        assert fields["BUCKET"] == "alone-bucket"
        basic = base64.b64encode(
            f"{fields['B2_APPLICATION_KEY_ID']}:{fields['B2_APPLICATION_KEY']}".encode()
        ).decode()
        r = requests.get(
            f"{fields['B2_ENVIRONMENT']}/b2api/v2/b2_authorize_account",
            headers={"Authorization": f"Basic {basic}"},
            timeout=30,
        )
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
