"""Runs of age chunks sealed and opened through libcrypto with the GIL released
(formats/age/nogil.py), checked against cryptography's AEAD and the stock chunk functions,
and the same through the cryptography fallback in a process without it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from b2cryptfs.errors import IntegrityError
from b2cryptfs.formats.age import nogil, stream

CH = stream.CHUNK_SIZE
SIZES = [0, 1, CH - 1, CH, CH + 5, 3 * CH, 16 * CH]


@pytest.mark.parametrize("size", SIZES)
def test_run_aead_matches_cryptography(size: int) -> None:
    key = os.urandom(32)
    count = max(1, -(-size // CH))
    src = os.urandom(size)
    nonces = [os.urandom(12) for _ in range(count)]
    aads = [os.urandom(9) if k % 2 else None for k in range(count)]
    out = bytearray(size + count * nogil.TAG_SIZE)
    nogil.RunAead(key).seal_into(nonces, src, out, CH, aads)
    ref = ChaCha20Poly1305(key)
    want = b"".join(
        ref.encrypt(nonces[k], src[k * CH : (k + 1) * CH], aads[k]) for k in range(count)
    )
    assert bytes(out) == want
    back = bytearray(size)
    # A read-only slice of a larger buffer as input, a memoryview as output: no copies needed.
    framed = memoryview(b"x" + bytes(out) + b"y")[1:-1]
    nogil.RunAead(key).open_into(nonces, framed, memoryview(back), CH, aads)
    assert bytes(back) == src


def test_run_aead_tampered_chunk_is_named_and_output_zeroed() -> None:
    key = os.urandom(32)
    src = os.urandom(4 * CH)
    nonces = [os.urandom(12) for _ in range(4)]
    out = bytearray(len(src) + 4 * nogil.TAG_SIZE)
    run = nogil.RunAead(key)
    run.seal_into(nonces, src, out, CH)
    out[2 * (CH + 16) + 100] ^= 1
    back = bytearray(len(src))
    with pytest.raises(nogil.ChunkAuthError) as e:
        run.open_into(nonces, out, back, CH)
    assert e.value.index == 2
    assert not any(back)  # chunks 0 and 1 opened, then were wiped: nothing half-trusted


def test_run_aead_refuses_bad_shapes() -> None:
    run = nogil.RunAead(os.urandom(32))
    with pytest.raises(ValueError):
        run.seal_into([os.urandom(12)] * 2, bytes(CH), bytearray(CH + 32), CH)  # 1 chunk, 2 nonces
    with pytest.raises(ValueError):
        run.seal_into([os.urandom(12)], bytes(10), bytearray(10), CH)  # no room for the tag
    with pytest.raises(ValueError):
        run.seal_into([b"short"], bytes(10), bytearray(26), CH)


@pytest.mark.parametrize("size", [1, CH, 5 * CH + 3, 16 * CH])
def test_payload_runs_match_single_chunks(size: int) -> None:
    cipher = stream.PayloadCipher(os.urandom(32), os.urandom(stream.NONCE_SIZE))
    data = os.urandom(size)
    count = -(-size // CH)
    sealed = bytearray(stream.payload_size(size) - stream.NONCE_SIZE)
    cipher.seal_run_into(0, data, True, sealed)
    want = b"".join(
        cipher.seal_chunk(k, data[k * CH : (k + 1) * CH], k == count - 1) for k in range(count)
    )
    assert bytes(sealed) == want
    back = bytearray(size)
    cipher.open_run_into(0, sealed, True, back)
    assert bytes(back) == data
    if count > 1:  # a run from the middle, not final
        mid = bytes(sealed[stream.ENC_CHUNK_SIZE : 2 * stream.ENC_CHUNK_SIZE])
        one = bytearray(CH)
        cipher.open_run_into(1, mid, False, one)
        assert bytes(one) == data[CH : 2 * CH]
        with pytest.raises(IntegrityError, match="chunk 2 fails"):
            cipher.open_run_into(2, mid, False, one)  # chunk 1's bytes are not chunk 2


def test_payload_run_refuses_truncated_and_final_mismatch() -> None:
    cipher = stream.PayloadCipher(os.urandom(32), os.urandom(stream.NONCE_SIZE))
    data = os.urandom(2 * CH)
    sealed = bytearray(2 * stream.ENC_CHUNK_SIZE)
    cipher.seal_run_into(0, data, True, sealed)
    out = bytearray(2 * CH)
    with pytest.raises(IntegrityError, match="chunk 1 fails"):
        cipher.open_run_into(0, sealed, False, out)  # the final chunk read as non-final
    with pytest.raises(IntegrityError, match="short but not final"):
        cipher.open_run_into(0, sealed[:-1], False, bytearray(2 * CH - 1))


def test_fallback_without_libcrypto_gives_the_same_bytes() -> None:
    script = (
        "import os, sys\n"
        "from b2cryptfs.formats.age import nogil\n"
        "assert not nogil.NOGIL\n"
        "key, nonce = bytes(range(32)), bytes(12)\n"
        "src = bytes(range(256)) * 1000\n"
        "out = bytearray(len(src) + 4 * 16)\n"
        "nogil.RunAead(key).seal_into([nonce] * 4, src, out, 65536)\n"
        "back = bytearray(len(src))\n"
        "nogil.RunAead(key).open_into([nonce] * 4, out, back, 65536)\n"
        "assert back == src\n"
        "sys.stdout.write(out.hex())\n"
    )
    env = dict(os.environ, B2CRYPTFS_NO_NOGIL="1")
    got = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    src = bytes(range(256)) * 1000
    out = bytearray(len(src) + 64)
    nogil.RunAead(bytes(range(32))).seal_into([bytes(12)] * 4, src, out, CH)
    assert got == out.hex()


def test_open_chunk_into_matches_open_chunk_and_refuses_tampering() -> None:
    cipher = stream.PayloadCipher(os.urandom(16), os.urandom(16))
    for index, size, last in [(0, CH, False), (3, CH, True), (7, 1000, True), (0, 0, True)]:
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
