"""AgeCodec: sealing, opening, random access, rewrap and every kind of tampering."""

from __future__ import annotations

import io
import os
import random
import tracemalloc

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from b2cryptfs.errors import (
    B2CryptfsError,
    FormatError,
    IntegrityError,
    KeyFileError,
    NoMatchingIdentity,
    PairMismatch,
    UsageError,
)
from b2cryptfs.formats import detect_format, get_codec
from b2cryptfs.formats.age import (
    ScryptIdentity,
    ScryptRecipient,
    generate_x25519_identity,
    ssh_fingerprint,
    stream,
)
from b2cryptfs.formats.age.codec import AgeCodec
from b2cryptfs.keys.types import RsaIdentity

CHUNK = stream.CHUNK_SIZE
ENC = stream.ENC_CHUNK_SIZE


class BytesSource:
    """A content object held in memory; records what was fetched."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.fetched: list[tuple[int, int]] = []

    def fetch(self, start: int, end: int) -> bytes:
        self.fetched.append((start, end))
        return self.data[start:end]


@pytest.fixture(scope="module")
def rsa_id() -> RsaIdentity:
    return RsaIdentity(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def rsa_other() -> RsaIdentity:
    return RsaIdentity(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture
def x_id():
    return generate_x25519_identity()


def seal(data: bytes, recipients: list) -> tuple[bytes, bytes]:
    out = io.BytesIO()
    sealed = AgeCodec().seal(io.BytesIO(data), out, recipients)
    content = out.getvalue()
    assert sealed.plaintext_size == len(data)
    assert sealed.content_size == len(content)
    return sealed.key_object, content


def open_all(key_object: bytes, identities: list, content: bytes) -> bytes:
    reader = AgeCodec().open(key_object, identities, BytesSource(content))
    return reader.read(0, reader.plaintext_size)


SIZES = [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK, 3 * CHUNK + 1, 200_000]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size: int, x_id) -> None:
    data = os.urandom(size)
    key_object, content = seal(data, [x_id.recipient()])
    assert detect_format(key_object[:32]) == "age"
    assert len(content) == stream.payload_size(size)
    codec = AgeCodec()
    assert codec.plaintext_size_hint(len(content), {}) == size
    reader = codec.open(key_object, [x_id], BytesSource(content))
    assert reader.plaintext_size == size
    assert reader.chunk_size == CHUNK
    assert reader.chunk_count == (size + CHUNK - 1) // CHUNK
    assert reader.read(0, size + 5) == data
    # Each chunk alone, from exactly its span.
    for i in range(reader.chunk_count):
        s, e = reader.chunk_span(i)
        assert reader.decrypt_chunk(i, content[s:e]) == data[i * CHUNK : (i + 1) * CHUNK]
    # The final chunk's span ends exactly at the end of the object.
    assert reader.chunk_span(max(0, reader.chunk_count - 1))[1] == len(content)


def test_get_codec_gives_age() -> None:
    assert isinstance(get_codec("age"), AgeCodec)
    assert get_codec("age").name == "age"


def test_empty_file_has_one_empty_final_chunk(x_id) -> None:
    key_object, content = seal(b"", [x_id.recipient()])
    assert len(content) == 32
    reader = AgeCodec().open(key_object, [x_id], BytesSource(content))
    assert reader.chunk_count == 0 and reader.read(0, 10) == b""
    assert reader.chunk_span(0) == (16, 32)
    assert reader.decrypt_chunk(0, content[16:]) == b""


class ShortReads(io.RawIOBase):
    """A pipe-like source whose reads return at most ``step`` bytes."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def test_seal_from_short_reads_still_fills_chunks(x_id) -> None:
    data = os.urandom(2 * CHUNK + 7)
    out = io.BytesIO()
    sealed = AgeCodec().seal(ShortReads(data, 1000), out, [x_id.recipient()])
    assert sealed.content_size == stream.payload_size(len(data)) == len(out.getvalue())
    assert open_all(sealed.key_object, [x_id], out.getvalue()) == data


class Pattern(io.RawIOBase):
    """``total`` bytes of a repeated random block, generated on demand."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.block = os.urandom(CHUNK + 1)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = min(self.left, len(self.block) if n < 0 else n, len(self.block))
        self.left -= n
        return self.block[:n]


class Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.written += len(b)
        return len(b)


def test_seal_memory_is_bounded(x_id) -> None:
    total = 12 * 1024 * 1024
    src, dst = Pattern(total), Sink()
    tracemalloc.start()
    try:
        sealed = AgeCodec().seal(src, dst, [x_id.recipient()])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sealed.plaintext_size == total
    assert dst.written == sealed.content_size == stream.payload_size(total)
    # Two plaintext chunks and one ciphertext chunk in flight, plus change.
    assert peak < 1024 * 1024


def test_several_recipients_and_description(rsa_id, x_id) -> None:
    x2 = generate_x25519_identity()
    data = os.urandom(CHUNK + 10)
    key_object, content = seal(data, [rsa_id.recipient(), x_id.recipient(), x2.recipient()])
    for ident in (rsa_id, x_id, x2):
        assert open_all(key_object, [ident], content) == data
    described = AgeCodec().describe_recipients(key_object)
    fingerprint = ssh_fingerprint(rsa_id.private_key.public_key())
    assert described == ["ssh-rsa " + fingerprint[:12] + "...", "X25519", "X25519"]


def test_describe_rsa_prefix_is_fingerprint_prefix(rsa_id) -> None:
    key_object, _ = seal(b"x", [rsa_id.recipient()])
    (described,) = AgeCodec().describe_recipients(key_object)
    fingerprint = ssh_fingerprint(rsa_id.private_key.public_key())
    assert described == "ssh-rsa " + fingerprint[:12] + "..."


def test_wrong_identity(rsa_id, rsa_other, x_id) -> None:
    key_object, content = seal(b"secret", [rsa_id.recipient(), x_id.recipient()])
    codec = AgeCodec()
    for wrong in ([rsa_other], [generate_x25519_identity()], [], [ScryptIdentity("pw")]):
        with pytest.raises(NoMatchingIdentity) as e:
            codec.open(key_object, wrong, BytesSource(content))
        assert "ssh-rsa SHA256:" in str(e.value) and "\n" not in str(e.value)
    # A matching identity anywhere in the list is enough.
    assert open_all(key_object, [rsa_other, generate_x25519_identity(), x_id], content) == b"secret"


def test_rewrap_keeps_content(rsa_id, x_id) -> None:
    data = os.urandom(3 * CHUNK + 5)
    key_object, content = seal(data, [x_id.recipient()])
    codec = AgeCodec()
    new_key = codec.rewrap(key_object, [x_id], [rsa_id.recipient()])
    assert new_key != key_object
    assert open_all(new_key, [rsa_id], content) == data
    with pytest.raises(NoMatchingIdentity):
        codec.open(new_key, [x_id], BytesSource(content))
    with pytest.raises(NoMatchingIdentity):
        codec.rewrap(key_object, [rsa_id], [rsa_id.recipient()])
    # The old key object is untouched and still opens the same content.
    assert open_all(key_object, [x_id], content) == data


def test_random_ranges(x_id) -> None:
    rng = random.Random(20240607)
    data = rng.randbytes(5 * CHUNK + 1234)
    key_object, content = seal(data, [x_id.recipient()])
    source = BytesSource(content)
    reader = AgeCodec().open(key_object, [x_id], source)
    cases = [(0, 0), (0, 1), (CHUNK - 1, 2), (CHUNK, CHUNK), (len(data) - 1, 10), (len(data), 5)]
    cases += [(len(data) + 100, 5), (0, len(data))]
    for _ in range(300):
        offset = rng.randrange(len(data) + 10)
        length = rng.choice([rng.randrange(1, 100), rng.randrange(1, 3 * CHUNK)])
        cases.append((offset, length))
    for offset, length in cases:
        source.fetched.clear()
        assert reader.read(offset, length) == data[offset : offset + length]
        end = min(offset + length, len(data))
        touched = 0 if offset >= end else (end - 1) // CHUNK - offset // CHUNK + 1
        # Only the chunks the range touches are fetched.
        assert sum(e - s for s, e in source.fetched) <= touched * ENC


def flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    return data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1 :]


def test_tampered_header_never_opens(rsa_id, x_id) -> None:
    data = os.urandom(1000)
    key_object, content = seal(data, [rsa_id.recipient(), x_id.recipient()])
    codec = AgeCodec()
    for pos in range(len(key_object)):
        for mask in (0x01, 0x20, 0x80):
            bad = flip(key_object, pos, mask)
            with pytest.raises(B2CryptfsError):
                codec.open(bad, [x_id, rsa_id], BytesSource(content))
    with pytest.raises(FormatError):
        codec.open(key_object + b"x", [x_id], BytesSource(content))
    with pytest.raises(FormatError):
        codec.open(key_object[:-1], [x_id], BytesSource(content))


def test_tampered_header_mac_is_an_integrity_error(x_id) -> None:
    key_object, content = seal(b"abc", [x_id.recipient()])
    # A well-formed MAC line from another header: parsing passes, the MAC check does not.
    other, _ = seal(b"abc", [x_id.recipient()])
    forged = key_object[: key_object.rindex(b"--- ")] + other[other.rindex(b"--- ") :]
    with pytest.raises(IntegrityError) as e:
        AgeCodec().open(forged, [x_id], BytesSource(content))
    assert not isinstance(e.value, PairMismatch)


def payload_positions(content: bytes, size: int) -> list[int]:
    positions = list(range(stream.NONCE_SIZE))
    for i in range((size + CHUNK - 1) // CHUNK):
        s, e = stream.chunk_span(i, size)
        positions += [s, s + 1, s + 2, s + 3, (s + e) // 2, e - 17]  # body
        positions += list(range(e - 16, e))  # tag
    rng = random.Random(7)
    positions += [rng.randrange(len(content)) for _ in range(60)]
    return positions


def assert_unreadable(key_object: bytes, identities: list, content: bytes) -> None:
    with pytest.raises(IntegrityError):
        open_all(key_object, identities, content)


def test_tampered_payload_never_reads(x_id) -> None:
    size = 3 * CHUNK + 100
    data = os.urandom(size)
    key_object, content = seal(data, [x_id.recipient()])
    for pos in payload_positions(content, size):
        assert_unreadable(key_object, [x_id], flip(content, pos))


def test_tampered_chunk_only_breaks_that_chunk(x_id) -> None:
    size = 3 * CHUNK + 100
    data = os.urandom(size)
    key_object, content = seal(data, [x_id.recipient()])
    s, _ = stream.chunk_span(2, size)
    reader = AgeCodec().open(key_object, [x_id], BytesSource(flip(content, s + 5)))
    assert reader.read(0, 2 * CHUNK) == data[: 2 * CHUNK]
    assert reader.read(3 * CHUNK, 100) == data[3 * CHUNK :]
    with pytest.raises(IntegrityError):
        reader.read(2 * CHUNK, 1)


def test_truncation_and_extension(x_id) -> None:
    size = 3 * CHUNK + 100
    data = os.urandom(size)
    key_object, content = seal(data, [x_id.recipient()])
    last_start, _ = stream.chunk_span(3, size)
    cuts = [0, 1, 15, 16, 17, 31, 32, 33, len(content) - 1, len(content) - 16]
    cuts += [len(content) - 17, last_start]  # last_start: the final chunk dropped
    cuts += [16 + k * ENC for k in (1, 2)] + [16 + k * ENC + 17 for k in (1, 2)]
    for cut in cuts:
        assert_unreadable(key_object, [x_id], content[:cut])
    for junk in (1, 15, 16, 17, 100, ENC - 116, ENC):
        assert_unreadable(key_object, [x_id], content + os.urandom(junk))
    # A copy of the final chunk appended (as if written twice).
    assert_unreadable(key_object, [x_id], content + content[last_start:])


def test_full_final_chunk_truncated_at_boundary(x_id) -> None:
    data = os.urandom(3 * CHUNK)
    key_object, content = seal(data, [x_id.recipient()])
    assert open_all(key_object, [x_id], content) == data
    # Dropping the last full chunk leaves a valid-looking length: the final flag catches it.
    assert_unreadable(key_object, [x_id], content[: 16 + 2 * ENC])


def test_reordered_chunks(x_id) -> None:
    size = 3 * CHUNK + 100
    data = os.urandom(size)
    key_object, content = seal(data, [x_id.recipient()])
    c = [content[slice(*stream.chunk_span(i, size))] for i in range(4)]
    nonce = content[:16]
    with pytest.raises(PairMismatch):
        open_all(key_object, [x_id], nonce + c[1] + c[0] + c[2] + c[3])
    assert_unreadable(key_object, [x_id], nonce + c[0] + c[2] + c[1] + c[3])
    assert_unreadable(key_object, [x_id], nonce + c[0] + c[1] + c[1] + c[3])


def test_mismatched_pair(x_id) -> None:
    a_key, a_content = seal(os.urandom(CHUNK + 3), [x_id.recipient()])
    b_key, b_content = seal(os.urandom(CHUNK + 3), [x_id.recipient()])
    with pytest.raises(PairMismatch):
        AgeCodec().open(a_key, [x_id], BytesSource(b_content))
    c_key, c_content = seal(os.urandom(10), [x_id.recipient()])
    with pytest.raises(PairMismatch):
        AgeCodec().open(c_key, [x_id], BytesSource(a_content))
    assert open_all(b_key, [x_id], b_content)


def test_decrypt_chunk_checks_length(x_id) -> None:
    data = os.urandom(CHUNK + 50)
    key_object, content = seal(data, [x_id.recipient()])
    reader = AgeCodec().open(key_object, [x_id], BytesSource(content))
    s, e = reader.chunk_span(1)
    with pytest.raises(IntegrityError):
        reader.decrypt_chunk(1, content[s : e - 1])
    with pytest.raises(IntegrityError):
        reader.decrypt_chunk(0, content[s:e])


@pytest.mark.parametrize(
    ("content_size", "plaintext"),
    [(32, 0), (33, 1), (16 + ENC, CHUNK), (16 + ENC + 17, CHUNK + 1), (16 + 2 * ENC, 2 * CHUNK)],
)
def test_size_hint_exact(content_size: int, plaintext: int) -> None:
    assert AgeCodec().plaintext_size_hint(content_size, {}) == plaintext
    assert stream.payload_size(plaintext) == content_size


@pytest.mark.parametrize("content_size", [0, 15, 16, 17, 31, 16 + ENC + 1, 16 + ENC + 16])
def test_size_hint_rejects_impossible_lengths(content_size: int) -> None:
    with pytest.raises(IntegrityError):
        AgeCodec().plaintext_size_hint(content_size, {})


def test_scrypt_recipient(x_id) -> None:
    key_object, content = seal(b"pass", [ScryptRecipient("hunter2", work_factor=10)])
    assert open_all(key_object, [ScryptIdentity("hunter2")], content) == b"pass"
    assert AgeCodec().describe_recipients(key_object) == ["scrypt (passphrase)"]
    with pytest.raises(NoMatchingIdentity):
        open_all(key_object, [ScryptIdentity("hunter3"), x_id], content)
    with pytest.raises(FormatError):
        open_all(key_object, [ScryptIdentity("hunter2", max_work_factor=9)], content)
    with pytest.raises(UsageError):
        seal(b"", [ScryptRecipient("a", work_factor=10), x_id.recipient()])


def test_seal_refuses_bad_recipients() -> None:
    with pytest.raises(UsageError):
        seal(b"x", [])
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyFileError):
        seal(b"x", [RsaIdentity(small).recipient()])


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello",
        b"age-encryption.org/v1\n",
        b"U2FsdGVkX1+abc",
        b"age-encryption.org/v2\n--- x\n",
    ],
)
def test_garbage_key_objects(garbage: bytes, x_id) -> None:
    with pytest.raises(FormatError):
        AgeCodec().describe_recipients(garbage)
    with pytest.raises(FormatError):
        AgeCodec().open(garbage, [x_id], BytesSource(bytes(64)))


def test_open_chunk_into_matches_open_chunk_and_refuses_tampering() -> None:
    cipher = stream.PayloadCipher(os.urandom(16), os.urandom(16))
    for index, size, last in [
        (0, stream.CHUNK_SIZE, False),
        (3, stream.CHUNK_SIZE, True),
        (7, 1000, True),
        (0, 0, True),
    ]:
        plain = os.urandom(size)
        sealed = bytearray(cipher.seal_chunk(index, plain, last))
        out = bytearray(size)
        cipher.open_chunk_into(index, sealed, last, memoryview(out))
        assert bytes(out) == plain == cipher.open_chunk(index, bytes(sealed), last)
        if size:
            sealed[size // 2] ^= 1
            with pytest.raises(IntegrityError, match=f"chunk {index} fails authentication"):
                cipher.open_chunk_into(index, sealed, last, memoryview(out))
    with pytest.raises(IntegrityError, match="short but not final"):
        cipher.open_chunk_into(0, bytes(100), False, memoryview(bytearray(84)))
