"""The C2SP CCTV age test vectors (tests/age-testkit), for the features we implement.

Every vector is decrypted twice: as one sequential age file (``agefile.decrypt_file``) and
as our object pair (header → key object, rest → content object, through ``AgeCodec``).
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from b2cryptfs.errors import (
    FormatError,
    IntegrityError,
    KeyFileError,
    NoMatchingIdentity,
    PairMismatch,
)
from b2cryptfs.formats.age import ScryptIdentity, header, parse_x25519_identity, stream
from b2cryptfs.formats.age.agefile import decrypt_file, split_file
from b2cryptfs.formats.age.codec import AgeCodec

KIT = Path(__file__).resolve().parents[1] / "age-testkit"
NOT_VECTORS = {"README.md", "LICENSE"}


@dataclass
class Vector:
    name: str
    expect: str
    data: bytes
    payload_sha256: str | None = None
    file_key: bytes | None = None
    identities: list[str] = field(default_factory=list)
    passphrases: list[str] = field(default_factory=list)
    armored: bool = False
    unknown_keys: bool = False


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    meta, _, body = raw.partition(b"\n\n")
    v = Vector(path.name, "", body)
    compressed = False
    for line in meta.decode().splitlines():
        key, _, value = line.partition(": ")
        if key == "expect":
            v.expect = value
        elif key == "payload":
            v.payload_sha256 = value
        elif key == "file key":
            v.file_key = bytes.fromhex(value)
        elif key == "identity":
            v.identities.append(value)
        elif key == "passphrase":
            v.passphrases.append(value)
        elif key == "armored":
            v.armored = value == "yes"
        elif key == "compressed":
            assert value == "zlib", value
            compressed = True
        elif key != "comment":
            v.unknown_keys = True
    if compressed:
        v.data = zlib.decompress(body)
    return v


def identities(v: Vector) -> list:
    out: list = [ScryptIdentity(p) for p in v.passphrases]
    for s in v.identities:
        try:
            out.append(parse_x25519_identity(s))
        except KeyFileError:
            pytest.skip("post-quantum hybrid (mlkem768x25519) identities are not supported")
    return out


def skip_reason(v: Vector) -> str | None:
    if v.unknown_keys:
        return "vector uses header keys this runner does not know (README: ignore)"
    if v.armored:
        return "ASCII armor is not supported: our key/content objects are binary"
    if v.name.startswith("hybrid"):
        return "post-quantum hybrid (mlkem768x25519) recipients are not supported"
    return None


VECTORS = sorted(p for p in KIT.iterdir() if p.name not in NOT_VECTORS)


def test_kit_is_complete() -> None:
    # Guards against a partial copy silently shrinking the parametrized set below.
    assert len(VECTORS) >= 140
    runnable = [p for p in VECTORS if skip_reason(load(p)) is None]
    assert len(runnable) >= 90


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def fetch(self, start: int, end: int) -> bytes:
        return self.data[start:end]


def decrypt_sequentially(v: Vector, ids: list) -> tuple[str, int, Exception | None]:
    """(SHA-256 of the plaintext released, its length, the error that stopped it)."""
    released = hashlib.sha256()
    n = 0
    try:
        for chunk in decrypt_file(io.BufferedReader(io.BytesIO(v.data)), ids):
            released.update(chunk)
            n += len(chunk)
    except Exception as e:  # classified by the caller, whatever it is
        return released.hexdigest(), n, e
    return released.hexdigest(), n, None


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.name)
def test_sequential(path: Path) -> None:
    v = load(path)
    if reason := skip_reason(v):
        pytest.skip(reason)
    digest, released, err = decrypt_sequentially(v, identities(v))
    if v.expect == "success":
        assert err is None
        assert digest == v.payload_sha256
    elif v.expect == "no match":
        assert isinstance(err, NoMatchingIdentity), err
    elif v.expect == "HMAC failure":
        assert type(err) is IntegrityError, err
        assert released == 0
    elif v.expect == "header failure":
        assert isinstance(err, FormatError) and not isinstance(err, IntegrityError), err
        assert released == 0
    elif v.expect == "payload failure":
        assert isinstance(err, IntegrityError), err
        # Everything released before the failure must be what the reference released.
        assert digest == v.payload_sha256
    else:
        pytest.fail(f"unknown expectation {v.expect!r}")


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.name)
def test_as_object_pair(path: Path) -> None:
    v = load(path)
    if reason := skip_reason(v):
        pytest.skip(reason)
    ids = identities(v)
    codec = AgeCodec()
    if v.expect == "success":
        key_object, content = split_file(v.data)
        reader = codec.open(key_object, ids, BytesSource(content))
        assert reader.plaintext_size == codec.plaintext_size_hint(len(content), {})
        data = b"".join(
            reader.decrypt_chunk(i, content[slice(*reader.chunk_span(i))])
            for i in range(reader.chunk_count)
        )
        assert len(data) == reader.plaintext_size
        assert hashlib.sha256(data).hexdigest() == v.payload_sha256
        assert reader.read(0, len(data) + 10) == data
        return
    expected = {
        "no match": NoMatchingIdentity,
        "HMAC failure": IntegrityError,
        "header failure": FormatError,
        "payload failure": IntegrityError,
    }[v.expect]
    with pytest.raises(expected) as failure:
        key_object, content = split_file(v.data)
        reader = codec.open(key_object, ids, BytesSource(content))
        reader.read(0, reader.plaintext_size)
    if v.expect == "HMAC failure":
        assert not isinstance(failure.value, PairMismatch)


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.name)
def test_round_trips(path: Path) -> None:
    """Headers re-encode byte for byte; success payloads re-encrypt to the same bytes."""
    v = load(path)
    if reason := skip_reason(v):
        pytest.skip(reason)
    if v.expect == "header failure":
        pytest.skip("no header to round-trip")
    hdr, payload = header.split(v.data)
    assert hdr.encode() == v.data[: len(v.data) - len(payload)]
    assert header.parse(hdr.encode()) == hdr
    if v.expect != "success":
        return
    assert v.file_key is not None
    hdr.verify_mac(v.file_key)
    plaintext = b"".join(stream.decrypt(io.BytesIO(payload), v.file_key))
    out = io.BytesIO()
    sizes = stream.encrypt(
        io.BytesIO(plaintext), out, v.file_key, nonce=payload[: stream.NONCE_SIZE]
    )
    assert out.getvalue() == payload
    assert sizes == (len(plaintext), len(payload))
    assert stream.plaintext_size(len(payload)) == len(plaintext)
