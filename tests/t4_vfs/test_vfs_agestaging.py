"""The age staging file (vfs/agestaging.py): sealed in place into a payload the stock ``age``
binary decrypts, and never sealing two plaintexts under one (key, nonce) pair."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from vfs_testutil import x25519_identity

from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.formats.age import encode_x25519_identity, stream
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.agestaging import AgeStaging, seal_in_place
from b2cryptfs.vfs.outboxcontent import ContentFile
from b2cryptfs.vfs.staging import BLOCK

AGE = shutil.which("age")


class NonceLedger:
    """Every (key, nonce) a seal used, with the plaintext it sealed: the real ciphers are
    called through, only watched."""

    def __init__(self) -> None:
        self.seen: dict[tuple[bytes, ...], str] = {}
        self.payload_chunks = 0

    def record(self, key: tuple[bytes, ...], plaintext: bytes) -> None:
        digest = hashlib.sha256(plaintext).hexdigest()
        assert self.seen.setdefault(key, digest) == digest, f"nonce reused: {key!r}"


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> NonceLedger:
    book = NonceLedger()
    init, seal = stream.PayloadCipher.__init__, stream.PayloadCipher.seal_chunk
    seal_into = stream.PayloadCipher.seal_chunk_into

    def watched_init(self, file_key: bytes, nonce: bytes) -> None:  # type: ignore[no-untyped-def]
        init(self, file_key, nonce)
        self.ledger_key = (file_key, nonce)

    def watched_seal(self, index: int, plaintext: bytes, last: bool) -> bytes:  # type: ignore[no-untyped-def]
        book.record((*self.ledger_key, stream.chunk_nonce(index, last)), plaintext)
        book.payload_chunks += 1
        return seal(self, index, plaintext, last)

    def watched_seal_into(self, index: int, plaintext: bytes, last: bool, out) -> None:  # type: ignore[no-untyped-def]
        book.record((*self.ledger_key, stream.chunk_nonce(index, last)), bytes(plaintext))
        book.payload_chunks += 1
        seal_into(self, index, plaintext, last, out)

    monkeypatch.setattr(stream.PayloadCipher, "__init__", watched_init)
    monkeypatch.setattr(stream.PayloadCipher, "seal_chunk", watched_seal)
    monkeypatch.setattr(stream.PayloadCipher, "seal_chunk_into", watched_seal_into)
    return book


class WatchedAead:
    """The staging's private cipher, called through; its nonces are recorded too."""

    def __init__(self, aead, book: NonceLedger, tag: bytes) -> None:  # type: ignore[no-untyped-def]
        self._aead, self._book, self._tag = aead, book, tag

    def encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        self._book.record((self._tag, nonce), bytes(data))
        return self._aead.encrypt(nonce, data, aad)

    def encrypt_into(self, nonce: bytes, data: bytes, aad: bytes, out) -> None:  # type: ignore[no-untyped-def]
        self._book.record((self._tag, nonce), bytes(data))
        self._aead.encrypt_into(nonce, data, aad, out)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, data, aad)


def new_staging(directory: Path, book: NonceLedger) -> AgeStaging:
    st = AgeStaging(str(directory))
    st._aead = WatchedAead(st._aead, book, os.urandom(16))  # type: ignore[assignment]  # noqa: SLF001
    return st


def seal(pairs: PairStore, st: AgeStaging, dest: Path) -> tuple[bytes, bool]:
    """Seal as vfs/content.py does: (key object, whether it was sealed in place)."""
    out = ContentFile(str(dest), durable=False)
    with out:
        sealed = seal_in_place(pairs, st, out)
        in_place = sealed is not None
        if sealed is None:
            sealed = pairs.seal(st.stream(), out)  # type: ignore[arg-type]
    data = dest.read_bytes()
    assert len(data) == out.size == sealed.content_size
    assert hashlib.sha1(data).hexdigest() == out.sha1
    return sealed.key_object, in_place


def age_decrypt(identity_file: Path, joined: Path) -> bytes:
    cmd = [str(AGE), "-d", "-i", str(identity_file), str(joined)]
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@pytest.fixture
def keys(tmp_path: Path) -> tuple[PairStore, Path]:
    ident = x25519_identity()
    idfile = tmp_path / "identity.txt"
    idfile.write_text(encode_x25519_identity(ident) + "\n")
    store = DirStore(str(tmp_path / "store"), create=True)
    return PairStore(store, recipients=[ident.recipient()], identities=[ident]), idfile


def test_sequential_writer_is_sealed_in_place(tmp_path: Path, ledger: NonceLedger, keys) -> None:
    pairs, idfile = keys
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    st = new_staging(staging_dir, ledger)
    data = os.urandom(40 * BLOCK + 1234)
    for pos in range(0, len(data), 1 << 20):
        st.write(pos, data[pos : pos + (1 << 20)])
    assert os.listdir(staging_dir) == []  # nothing with a name: a kill -9 leaves nothing
    before = ledger.payload_chunks
    dest = tmp_path / "1.content"
    key_object, in_place = seal(pairs, st, dest)
    assert in_place
    # Only the blocks still in memory and the final chunk were encrypted at seal.
    assert ledger.payload_chunks - before <= 17
    # Named, not copied: the outbox's file is the staging file itself.
    assert os.stat(dest).st_ino == os.fstat(st._base_fd).st_ino  # noqa: SLF001
    joined = tmp_path / "joined.age"
    joined.write_bytes(key_object + dest.read_bytes())
    if AGE is not None:
        assert age_decrypt(idfile, joined) == data
    # The staging goes on after its file was handed over (fsync, then more writes).
    st.write(len(data), b"more")
    assert st.read(0, len(data) + 4) == data + b"more"
    st.close()


@pytest.mark.parametrize("seed", range(6))
def test_random_writes_seal_like_a_bytearray(
    tmp_path: Path, ledger: NonceLedger, keys, seed: int
) -> None:
    """Random writes, truncates, flushes, refills and seals against a bytearray: every seal
    decrypts (with ``age`` where installed) to the model, and no (key, nonce) pair ever
    seals two plaintexts (the ledger asserts it)."""
    pairs, idfile = keys
    rng = random.Random(seed)
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    st = new_staging(staging_dir, ledger)
    model = bytearray()
    seals = in_place = 0
    for step in range(160):
        op = rng.random()
        if op < 0.55:
            if rng.random() < 0.5:
                off = len(model) // BLOCK * BLOCK  # appends, as most writers do
            else:
                off = rng.randrange(0, 24 * BLOCK)
            n = rng.choice([1, 100, 4096, BLOCK, BLOCK + 7, 3 * BLOCK, 20 * BLOCK])
            data = rng.randbytes(n)
            st.write(off, data)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off : off + n] = data
        elif op < 0.7:
            size = rng.randrange(0, 26 * BLOCK)
            st.truncate(size)
            del model[size:]
            model.extend(bytes(size - len(model)))
        elif op < 0.8:
            st.flush()
        elif op < 0.85:
            # Reopened from what was stored (fill_from), as an append or overwrite does.
            st.close()
            st = new_staging(staging_dir, ledger)
            st.fill_from(lambda o, n: bytes(model[o : o + n]), len(model))
        else:
            dest = tmp_path / f"{step}.content"
            key_object, done_in_place = seal(pairs, st, dest)
            seals += 1
            in_place += done_in_place
            joined = tmp_path / "joined.age"
            joined.write_bytes(key_object + dest.read_bytes())
            if AGE is not None and seals % 3 == 1:
                assert age_decrypt(idfile, joined) == bytes(model)
            reader = pairs.codec.open(key_object, pairs.identities, _Source(dest.read_bytes()))
            assert reader.read(0, len(model) + 1) == bytes(model)
        assert st.size == len(model)
        off = rng.randrange(0, len(model) + 10)
        assert st.read(off, 2 * BLOCK) == bytes(model[off : off + 2 * BLOCK])
    assert st.stream().read() == bytes(model)
    assert seals and in_place  # both paths ran (the seed set is fixed)
    st.close()


class _Source:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def fetch(self, start: int, end: int) -> bytes:
        return self.data[start:end]
