"""Restricted application keys on the loopback server: made with the real b2_create_key
(``b2 key create``), reported in b2_authorize_account's ``allowed`` block, enforced."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request

import pytest


def b2(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["b2", *args], env=env, capture_output=True, text=True, timeout=120)


def authorize(realm: str, key_id: str, key: str, version: int) -> dict:
    basic = base64.b64encode(f"{key_id}:{key}".encode()).decode()
    req = urllib.request.Request(f"{realm}/b2api/v{version}/b2_authorize_account")
    req.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("version", [2, 3])
def test_allowed_block(b2_bucket, version):
    server = b2_bucket.server
    key_id, key = server.create_key(["listFiles", "readFiles"], b2_bucket.name, "p/")
    auth = authorize(server.realm, key_id, key, version)
    allowed = auth["allowed"] if version == 2 else auth["apiInfo"]["storageApi"]
    assert allowed["bucketName"] == b2_bucket.name
    assert allowed["bucketId"]
    assert allowed["namePrefix"] == "p/"
    assert sorted(allowed["capabilities"]) == ["listFiles", "readFiles"]


def test_b2_key_create_makes_an_enforced_restricted_key(b2_cli_env, b2_bucket):
    env = dict(b2_cli_env)
    caps = "listBuckets,listFiles,readFiles,writeFiles"
    made = b2(env, "key", "create", "--bucket", b2_bucket.name, "--name-prefix", "p/", "k", caps)
    assert made.returncode == 0, made.stderr
    key_id, key = made.stdout.split()
    env.update(B2_APPLICATION_KEY_ID=key_id, B2_APPLICATION_KEY=key)
    env["B2_ACCOUNT_INFO"] = os.path.join(env["HOME"], "restricted.sqlite")
    b2_bucket.server.seed(b2_bucket.name, ["p/in.txt", "q/out.txt"], size=3)
    inside = b2(env, "ls", f"b2://{b2_bucket.name}/p/")
    assert inside.returncode == 0 and "p/in.txt" in inside.stdout, inside.stderr
    outside = b2(env, "ls", f"b2://{b2_bucket.name}/q/")
    assert outside.returncode != 0 and "out.txt" not in outside.stdout
    gone = b2(env, "rm", f"b2://{b2_bucket.name}/p/in.txt")
    assert gone.returncode != 0  # no deleteFiles
