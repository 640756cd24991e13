"""The seed's exact shell procedure against OpensslCodec, in both directions.

Files written by Backblaze's sample commands must open and read byte for byte (whole and at
random ranges), and files sealed by the codec must come back through the sample's own
decrypt line, for the SHA-256 (OpenSSL >= 1.1) and MD5 (`-md md5`, the 2016 era) variants.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from openssl_testutil import BytesSource, FileSource, needs_openssl, openssl_keypair, run

from b2cryptfs.formats.openssl import CHUNK_SIZE, OpensslCodec
from b2cryptfs.keys.loader import load_identities, load_recipients
from b2cryptfs.keys.passphrase import passphrase_source

pytestmark = needs_openssl

SIZES = [0, 1, 15, 16, 17, 47, 48, 49, 65535, 65536, 65537, 3 * 1024 * 1024 + 7]
MDS = ["sha256", "md5"]
RANGES_PER_FILE = 1000 // (len(SIZES) * len(MDS)) + 1  # 1,008 random ranges in all

# The sample's encrypt commands, verbatim but for variables; MD is "" or "-md md5".
SEED_ENCRYPT = r"""
set -eo pipefail
ONE_TIME_PASSWORD=`openssl rand -base64 180`
echo $ONE_TIME_PASSWORD | openssl aes-256-cbc -a -salt $MD -pass stdin -in $F -out $F.enc
echo $ONE_TIME_PASSWORD | openssl rsautl -encrypt -pubin -inkey $PUB -out $F.key.enc
"""
# The sample's decrypt line; -passin stands in for typing the passphrase.
SEED_DECRYPT = r"""
set -eo pipefail
openssl rsautl -decrypt -inkey $PRIV -passin file:$PWFILE -in $F.key.enc |
    openssl enc -aes-256-cbc -d -a $MD -pass stdin -in $F.enc -out $F
"""


def _plaintext(size: int) -> bytes:
    """Text, then random bytes: deterministic per size.

    The first block is text so that `md auto` is never ambiguous here: with a random key
    derivation guess the padding check passes by chance about once in 256 files, and then
    the first block's look decides (see test_openssl_format for the ambiguous cases).
    """
    rnd = random.Random(size)
    text = b"".join(b"line %d of the seed interop file\n" % i for i in range(size // 30 + 1))
    head = max(16, size // 2)
    return (text[:head] + rnd.randbytes(max(0, size - head)))[:size]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    priv, pub, pwfile = openssl_keypair(tmp_path_factory.mktemp("seedkeys"))
    identities = load_identities(str(priv), passphrase_source(str(pwfile)))
    return {"priv": priv, "pub": pub, "pwfile": pwfile, "identities": identities}


def _md_flag(md: str) -> str:
    return "-md md5" if md == "md5" else ""


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory, keys):
    """Every size encrypted by the seed's commands, with both digests."""
    folder = tmp_path_factory.mktemp("seedfiles")
    out = {}
    for md in MDS:
        for size in SIZES:
            f = folder / f"{md}-{size}.bin"
            f.write_bytes(_plaintext(size))
            env = dict(os.environ, F=str(f), PUB=str(keys["pub"]), MD=_md_flag(md))
            run(SEED_ENCRYPT, env=env)
            out[md, size] = f
    return out


def test_seed_password_shape(tmp_path):
    """The fact the format rests on: the echoed password is one 243-character line."""
    p = run("ONE_TIME_PASSWORD=`openssl rand -base64 180`; echo $ONE_TIME_PASSWORD").stdout
    assert len(p) == 244 and p.endswith(b"\n") and p.count(b" ") == 3
    assert [len(g) for g in p[:-1].split(b" ")] == [64, 64, 64, 48]


@pytest.mark.parametrize("md", MDS)
@pytest.mark.parametrize("setting", ["auto", "explicit"])
def test_codec_reads_seed_files(seed_files, keys, md, setting):
    codec = OpensslCodec(md="auto" if setting == "auto" else md)
    rnd = random.Random(f"{md}-{setting}")
    for size in SIZES:
        f = seed_files[md, size]
        plain = f.read_bytes()
        key_object = Path(f"{f}.key.enc").read_bytes()
        assert len(key_object) == 256
        source = BytesSource(Path(f"{f}.enc").read_bytes())
        reader = codec.open(key_object, keys["identities"], source, {})
        assert reader.plaintext_size == size
        assert reader.md == md
        # Opening fetched only the two ends of the object, not the content.
        assert source.fetched_bytes <= min(source.size, 16384), source.fetches
        assert reader.read(0, size + 100) == plain
        for _ in range(RANGES_PER_FILE):
            offset = rnd.randrange(0, size + 2)
            length = rnd.choice([1, 15, 16, 17, 48, CHUNK_SIZE, rnd.randrange(0, 3 * CHUNK_SIZE)])
            assert reader.read(offset, length) == plain[offset : offset + length], (size, offset)


def test_chunks_of_a_seed_file_decrypt_alone(seed_files, keys):
    """A cache-driven caller fetches exactly chunk_span(i) and decrypts chunk i alone."""
    f = seed_files["sha256", SIZES[-1]]
    plain = f.read_bytes()
    source = FileSource(Path(f"{f}.enc"))
    reader = OpensslCodec().open(Path(f"{f}.key.enc").read_bytes(), keys["identities"], source)
    assert reader.chunk_count == -(-len(plain) // CHUNK_SIZE)
    for i in reversed(range(reader.chunk_count)):
        start, end = reader.chunk_span(i)
        chunk = reader.decrypt_chunk(i, source.fetch(start, end))
        assert chunk == plain[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]


@pytest.mark.parametrize("md", MDS)
def test_seed_decrypt_line_reads_codec_output(tmp_path, keys, md):
    codec = OpensslCodec(md=md)
    (recipient,) = load_recipients(str(keys["pub"]))
    for size in SIZES:
        plain = _plaintext(size)
        f = tmp_path / f"out-{size}"
        with open(tmp_path / "plain", "wb") as w:
            w.write(plain)
        with open(tmp_path / "plain", "rb") as src, open(f"{f}.enc", "wb") as dst:
            sealed = codec.seal(src, dst, [recipient])
        Path(f"{f}.key.enc").write_bytes(sealed.key_object)
        assert sealed.plaintext_size == size
        assert sealed.content_size == os.path.getsize(f"{f}.enc")
        env = dict(
            os.environ,
            F=str(f),
            PRIV=str(keys["priv"]),
            PWFILE=str(keys["pwfile"]),
            MD=_md_flag(md),
        )
        run(SEED_DECRYPT, env=env)
        assert f.read_bytes() == plain, size
