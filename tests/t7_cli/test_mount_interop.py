"""A mount and the seed's own tools: files made by the seed's commands read through the
mount; files written through the mount decrypt with the seed's decrypt line and with age."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = requires_fuse

# Sizes around the openssl format's edges: empty, one AES block, one base64 line (48 bytes).
SEED_FILES = {
    "empty.txt": 0,
    "one.txt": 1,
    "block.bin": 16,
    "line.bin": 48,
    "line-plus.bin": 49,
    "photos/a.jpg": 100_000,
    "photos/2016/b.raw": 1_234_567,
}

# The seed procedure's commands, verbatim but for the file names.
SEED_ENCRYPT = """
set -e
ONE_TIME_PASSWORD=`openssl rand -base64 180`
echo $ONE_TIME_PASSWORD | openssl aes-256-cbc -a -salt -pass stdin -in "$F" -out "$F.enc"
echo $ONE_TIME_PASSWORD | openssl rsautl -encrypt -pubin -inkey "$PUB" -out "$F.key.enc"
"""
SEED_DECRYPT = """
set -eo pipefail
openssl rsautl -decrypt -inkey "$PRIV" -passin "file:$PF" -in "$F.key.enc" |
    openssl enc -aes-256-cbc -d -a -pass stdin -in "$F.enc" -out "$F"
"""


def bash(script: str, **env: str | Path) -> None:
    res = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **{k: str(v) for k, v in env.items()}},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


def seed_encrypt(work: Path, rel: str, data: bytes, pub: Path) -> tuple[Path, Path]:
    plain = work / rel
    plain.parent.mkdir(parents=True, exist_ok=True)
    plain.write_bytes(data)
    bash(SEED_ENCRYPT, F=plain, PUB=pub)
    plain.unlink()
    return Path(f"{plain}.enc"), Path(f"{plain}.key.enc")


def put_objects(spec: StoreSpec, objects: dict[str, Path]) -> None:
    """Place objects in the store as the seed's `b2 upload_file` would (no file info needed)."""
    if spec.kind == "dir":
        assert spec.root is not None
        for name, local in objects.items():
            dest = spec.root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dest)
        return
    store = spec.open()
    for name, local in objects.items():
        store.upload_file(name, str(local), {})


def get_object(spec: StoreSpec, name: str, dest: Path) -> Path:
    store = spec.open()
    obj = store.stat(name)
    assert obj is not None, f"{name} is not in the store"
    store.download(obj, str(dest))
    return dest


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_seed_written_store_mounts(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    work = tmp_path / "seed"
    contents = {rel: rng.randbytes(size) for rel, size in SEED_FILES.items()}
    objects: dict[str, Path] = {}
    for rel, data in contents.items():
        enc, key = seed_encrypt(work, rel, data, rsa_keys.public)
        objects[f"{rel}.enc"] = enc
        objects[f"{rel}.key.enc"] = key
    put_objects(mount_store, objects)

    mnt = tmp_path / "mnt"
    with mounted(mount_store, mnt, tmp_path / "cache", rsa_keys.args(), extra_args=["--read-only"]):
        assert sorted(os.listdir(mnt)) == [
            "block.bin",
            "empty.txt",
            "line-plus.bin",
            "line.bin",
            "one.txt",
            "photos",
        ]
        for rel, data in contents.items():
            assert os.stat(mnt / rel).st_size == len(data), rel
            assert (mnt / rel).read_bytes() == data, rel
        # A range in the middle of the big file, as a seeking reader asks for it.
        with open(mnt / "photos/2016/b.raw", "rb") as fh:
            fh.seek(777_777)
            assert fh.read(4321) == contents["photos/2016/b.raw"][777_777 : 777_777 + 4321]


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_written_files_decrypt_with_stock_tools(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    if shutil.which("age") is None:
        pytest.skip("age is not installed")
    rng = random.Random(5)
    data_openssl = rng.randbytes(300_001)
    data_age = rng.randbytes(200_003)
    mnt = tmp_path / "mnt"
    cache = tmp_path / "cache"

    with mounted(mount_store, mnt, cache, [*rsa_keys.args(), "--format", "openssl"]):
        (mnt / "docs").mkdir()
        (mnt / "docs" / "seed.bin").write_bytes(data_openssl)
    with mounted(mount_store, mnt, cache, rsa_keys.args()):
        (mnt / "docs" / "age.bin").write_bytes(data_age)

    out = tmp_path / "out"
    out.mkdir()
    # The seed's decrypt line on the objects as they are in the store.
    f = out / "seed.bin"
    get_object(mount_store, "docs/seed.bin.enc", Path(f"{f}.enc"))
    get_object(mount_store, "docs/seed.bin.key.enc", Path(f"{f}.key.enc"))
    assert Path(f"{f}.enc").read_bytes().startswith(b"U2FsdGVkX1")
    bash(SEED_DECRYPT, F=f, PRIV=rsa_keys.private, PF=rsa_keys.passphrase_file)
    assert f.read_bytes() == data_openssl

    # The default format: the stock age tool reads key object + content object.
    g = out / "age.bin"
    get_object(mount_store, "docs/age.bin.enc", Path(f"{g}.enc"))
    get_object(mount_store, "docs/age.bin.key.enc", Path(f"{g}.key.enc"))
    assert Path(f"{g}.key.enc").read_bytes().startswith(b"age-encryption.org/v1\n")
    bash('cat "$G.key.enc" "$G.enc" | age -d -i "$KEY" -o "$G"', G=g, KEY=rsa_keys.plain_private)
    assert g.read_bytes() == data_age
