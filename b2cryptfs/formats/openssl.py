"""The ``openssl`` format: Backblaze's sample procedure, byte for byte.

Key object: RSA PKCS#1 v1.5 encryption of a one-time password line plus ``\\n`` (what
``echo $ONE_TIME_PASSWORD | openssl rsautl -encrypt -pubin -inkey PUB`` writes).
Content object: ``openssl enc -aes-256-cbc -a -salt -pass stdin`` output, i.e. base64 in
64-character lines of ``Salted__`` + 8-byte salt + AES-256-CBC with PKCS#7 padding, key and
IV from EVP_BytesToKey (one round of SHA-256, or MD5 for OpenSSL before 1.1.0). We write
exactly that; we read any fixed line width, CRLF line ends and single-line (``-A``) text.

With ``md="auto"``, our key check value (file info) names the digest; without it, the
padding check of the last block decides, and when both digests pass it (about one file
in 256) text-like first bytes or a longer padding do; a true tie is an error asking for an
explicit setting rather than a guess.

There is no MAC. What a reader can detect: a wrong RSA key (the unwrapped plaintext is not
a password), a key object from another write (our key check value in the file info, else
the last block's padding, which a random key passes with probability about 1/256), bad
base64 or line layout, a length that is not whole blocks, and bad padding at the end.
What it cannot detect: bit flips or swapped blocks inside the ciphertext, which decrypt to
wrong plaintext silently, as with the seed's own ``openssl enc -d``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from typing import BinaryIO

from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import padding as asympadding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from b2cryptfs.errors import (
    FormatError,
    IntegrityError,
    NoMatchingIdentity,
    NoPrivateKey,
    PairMismatch,
    UsageError,
)
from b2cryptfs.formats import b64lines, evp
from b2cryptfs.formats.base import Codec, ContentReader, ContentSource, Sealed
from b2cryptfs.keys.rsacheck import ensure_checked
from b2cryptfs.keys.types import Identity, Recipient, RsaIdentity, RsaRecipient

INFO_KCV = "b2cryptfs-kcv"
INFO_SIZE = "b2cryptfs-size"
MAGIC = b"Salted__"
HEADER = len(MAGIC) + evp.SALT_LEN  # raw bytes before the ciphertext
BLOCK = 16
LINE_RAW = 48  # raw bytes per 64-character base64 line: 3 AES blocks
# 1365 lines: just under 64 KiB of plaintext, a multiple of the AES block and of a line.
CHUNK_SIZE = 1365 * LINE_RAW
# Raw bytes per streaming step while sealing (a multiple of LINE_RAW).
_SEAL_STEP = (1 << 20) // LINE_RAW * LINE_RAW
# Bytes of text fetched from each end at open time; whole objects up to _SMALL in one fetch.
_HEAD = 1024
_TAIL = 512
_SMALL = 16384


def _aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return d.update(ciphertext) + d.finalize()


def _padding_len(last_block: bytes) -> int:
    """PKCS#7 padding length of a decrypted last block, or 0 if the padding is invalid."""
    n = last_block[-1]
    if 1 <= n <= BLOCK and last_block[-n:] == bytes([n]) * n:
        return n
    return 0


def _looks_structured(data: bytes) -> bool:
    """Text-like bytes, which random (wrongly decrypted) bytes almost never are."""
    if not data:
        return False
    good = sum(1 for b in data if b in evp.PRINTABLE or b == 0)
    return good * 8 >= len(data) * 7


_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def _raw_key_object(key_object: bytes) -> bytes:
    """The RSA ciphertext. Some scripts store it base64-encoded (binary RSA output is
    practically never all base64 characters), so accept that too."""
    if _BASE64_TEXT.fullmatch(key_object):
        try:
            return base64.b64decode(b"".join(key_object.split()), validate=True)
        except binascii.Error:
            pass
    return key_object


def _unwrap(key_object: bytes, identity: RsaIdentity) -> bytes | None:
    """The RSA plaintext, or None when this key cannot have produced the key object."""
    if len(key_object) != (identity.private_key.key_size + 7) // 8:
        return None
    ensure_checked(identity.private_key)
    try:
        return identity.private_key.decrypt(key_object, asympadding.PKCS1v15())
    except ValueError:
        return None


def _wrap(password: bytes, recipient: RsaRecipient) -> bytes:
    try:
        return recipient.public_key.encrypt(password + b"\n", asympadding.PKCS1v15())
    except ValueError:
        raise UsageError(
            f"RSA key of {recipient.public_key.key_size} bits is too small for the openssl "
            "format's 244-byte password (use 2048 bits or more)"
        ) from None


def _single_rsa_recipient(recipients: Sequence[Recipient]) -> RsaRecipient:
    rsa = [r for r in recipients if isinstance(r, RsaRecipient)]
    if len(rsa) != 1 or len(recipients) != 1:
        raise UsageError(
            "the openssl format encrypts to exactly one RSA public key "
            f"(got {len(rsa)} RSA and {len(recipients) - len(rsa)} other recipients); "
            "use the age format for several or X25519 recipients"
        )
    return rsa[0]


class _LineWriter:
    """Buffers raw bytes and writes them as 64-character base64 lines."""

    def __init__(self, dst: BinaryIO) -> None:
        self.dst = dst
        self.buf = bytearray()
        self.written = 0

    def write(self, raw: bytes) -> None:
        self.buf += raw
        whole = len(self.buf) // LINE_RAW * LINE_RAW
        if whole >= _SEAL_STEP:
            self._emit(bytes(self.buf[:whole]))
            del self.buf[:whole]

    def close(self) -> int:
        self._emit(bytes(self.buf))
        self.buf.clear()
        return self.written

    def _emit(self, raw: bytes) -> None:
        text = b64lines.encode_lines(raw)
        self.dst.write(text)
        self.written += len(text)


class OpensslReader(ContentReader):
    """Random access to an ``openssl enc -a`` object: chunk ``i`` needs the cipher block
    before it (its CBC IV) and its own blocks, located through the base64 line layout."""

    chunk_size = CHUNK_SIZE

    def __init__(
        self,
        source: ContentSource,
        layout: b64lines.Layout,
        key: bytes,
        iv: bytes,
        plaintext_size: int,
        md: str,
    ) -> None:
        super().__init__(source)
        self.layout = layout
        self._key = key
        self._iv = iv
        self.plaintext_size = plaintext_size
        self.md = md
        self._cipher_size = layout.raw_size - HEADER
        self._pad = self._cipher_size - plaintext_size

    def _raw_range(self, index: int) -> tuple[int, int]:
        if not 0 <= index < max(self.chunk_count, 1):
            raise IndexError(f"chunk {index} out of range")
        # Raw offset of ciphertext byte p is HEADER + p, so the block before chunk `index`
        # (its IV; for chunk 0 the header, ignored) starts exactly at index * chunk_size.
        start = index * self.chunk_size
        end = HEADER + min((index + 1) * self.chunk_size, self._cipher_size)
        if index == max(self.chunk_count, 1) - 1:
            end = HEADER + self._cipher_size  # the last chunk takes the padding block too
        return start, end

    def chunk_span(self, index: int) -> tuple[int, int]:
        return self.layout.text_range(*self.layout.char_range(*self._raw_range(index)))

    def decrypt_chunk(self, index: int, ciphertext: bytes) -> bytes:
        start, end = self._raw_range(index)
        n0, n1 = self.layout.char_range(start, end)
        text_start, text_end = self.layout.text_range(n0, n1)
        if len(ciphertext) != text_end - text_start:
            raise IntegrityError(f"openssl content: chunk {index} has the wrong length")
        raw = self.layout.decode(n0, bytes(ciphertext))  # (a cache may hand a memoryview)
        if len(raw) < end - start:
            raise IntegrityError(f"openssl content: chunk {index} is truncated")
        iv = self._iv if index == 0 else raw[:BLOCK]
        plain = _aes_cbc_decrypt(self._key, iv, raw[BLOCK : end - start])
        if end == HEADER + self._cipher_size:
            if _padding_len(plain[-BLOCK:]) != self._pad:
                raise IntegrityError("openssl content: bad padding in the last block")
            plain = plain[: len(plain) - self._pad]
        return plain


class OpensslCodec(Codec):
    name = "openssl"

    def __init__(self, md: str = "auto") -> None:
        if md not in ("auto", *evp.MDS):
            raise UsageError(f"unknown openssl digest {md!r} (expected auto, sha256 or md5)")
        self.md = md

    # --- writing -----------------------------------------------------------------------

    def seal(self, src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient]) -> Sealed:
        recipient = _single_rsa_recipient(recipients)
        password = evp.new_password()
        key_object = _wrap(password, recipient)
        md = "md5" if self.md == "md5" else "sha256"
        salt = os.urandom(evp.SALT_LEN)
        key, iv = evp.evp_bytes_to_key(md, password, salt)
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        padder = sympadding.PKCS7(128).padder()
        out = _LineWriter(dst)
        out.write(MAGIC + salt)
        size = 0
        while block := src.read(_SEAL_STEP):
            size += len(block)
            out.write(encryptor.update(padder.update(block)))
        out.write(encryptor.update(padder.finalize()) + encryptor.finalize())
        content_size = out.close()
        info = {INFO_KCV: evp.key_check_value(password, salt, md), INFO_SIZE: str(size)}
        return Sealed(key_object, size, content_size, info)

    def rewrap(
        self, key_object: bytes, identities: Sequence[Identity], recipients: Sequence[Recipient]
    ) -> bytes:
        recipient = _single_rsa_recipient(recipients)
        # Without the content there is no padding check: only the shape vouches for the key.
        candidates = self._passwords(key_object, identities)
        if len(candidates) != 1:
            raise NoMatchingIdentity("openssl key object: ambiguous private keys")
        return _wrap(candidates[0], recipient)

    # --- reading -----------------------------------------------------------------------

    def plaintext_size_hint(self, content_size: int, info: dict[str, str]) -> int | None:
        try:
            size = int(info.get(INFO_SIZE, ""))
        except ValueError:
            return None
        # Only trust it if it fits the object length (64-character lines of base64).
        raw = HEADER + (size // BLOCK + 1) * BLOCK
        chars = -(-raw // 3) * 4
        return size if size >= 0 and chars + -(-chars // 64) == content_size else None

    def describe_recipients(self, key_object: bytes) -> list[str]:
        bits = len(_raw_key_object(key_object)) * 8
        return [f"rsa-pkcs1v15 {bits}-bit (openssl sample format)"]

    def _passwords(self, key_object: bytes, identities: Sequence[Identity]) -> list[bytes]:
        """Passwords that some identity unwraps from ``key_object`` (normally one)."""
        if not identities:
            raise NoPrivateKey("no private key given: cannot unwrap the file key")
        rsa = [i for i in identities if isinstance(i, RsaIdentity)]
        if not rsa:
            raise NoMatchingIdentity("the openssl format needs an RSA private key")
        found: list[bytes] = []
        key_object = _raw_key_object(key_object)
        for identity in rsa:
            plaintext = _unwrap(key_object, identity)
            if plaintext is None:
                continue
            password = evp.password_from_plaintext(plaintext, strict=False)
            if password is not None and password not in found:
                found.append(password)
        if not found:
            raise NoMatchingIdentity(
                f"none of the {len(rsa)} RSA private key(s) unwraps this key object"
            )
        return found

    def open(
        self,
        key_object: bytes,
        identities: Sequence[Identity],
        source: ContentSource,
        info: dict[str, str] | None = None,
    ) -> ContentReader:
        info = info or {}
        kcv = info.get(INFO_KCV)
        # Our writes carry a key check value, which is a stronger test than the shape.
        passwords = self._passwords(key_object, identities)
        fetched = _Fetched(source)
        layout = b64lines.detect(
            fetched.get(0, min(_HEAD, source.size)), fetched.tail(), source.size
        )
        if layout.raw_size < HEADER + BLOCK:
            raise FormatError("openssl content: too short for 'Salted__', salt and one block")
        header = layout.decode(0, fetched.get(*layout.text_range(0, 24)))
        if header[: len(MAGIC)] != MAGIC:
            raise FormatError("openssl content: does not start with 'Salted__'")
        salt = header[len(MAGIC) : HEADER]
        cipher_size = layout.raw_size - HEADER
        if cipher_size < BLOCK or cipher_size % BLOCK:
            raise IntegrityError(
                f"openssl content: {cipher_size} bytes of ciphertext is not whole AES blocks "
                "(truncated or corrupted)"
            )
        # The last two cipher blocks (or the only one) give the padding, hence the size.
        last_start = max(HEADER, HEADER + cipher_size - 2 * BLOCK)
        n0, n1 = layout.char_range(last_start, layout.raw_size)
        raw_tail = layout.decode(n0, fetched.get(*layout.text_range(n0, n1)))
        raw_tail = raw_tail[last_start - n0 // 4 * 3 :]

        if kcv is not None:
            md, password = self._choose_by_kcv(kcv, passwords, salt)
            key, iv = evp.evp_bytes_to_key(md, password, salt)
            pad = _padding_len(self._last_block(raw_tail, key, iv, cipher_size))
            if not pad:
                raise IntegrityError("openssl content: bad padding (corrupted content)")
        else:
            md, key, iv, pad = self._choose_by_padding(
                passwords, salt, raw_tail, cipher_size, layout, fetched
            )
        size = cipher_size - pad
        if INFO_SIZE in info and info[INFO_SIZE] != str(size):
            raise IntegrityError(
                f"openssl content: {size} bytes of plaintext, file info says {info[INFO_SIZE]}"
            )
        return OpensslReader(source, layout, key, iv, size, md)

    @staticmethod
    def _last_block(raw_tail: bytes, key: bytes, iv: bytes, cipher_size: int) -> bytes:
        prev = iv if cipher_size == BLOCK else raw_tail[:BLOCK]
        return _aes_cbc_decrypt(key, prev, raw_tail[-BLOCK:])

    def _choose_by_kcv(self, kcv: str, passwords: list[bytes], salt: bytes) -> tuple[str, bytes]:
        # The KCV names the digest the writer used; it overrides the md setting.
        for password in passwords:
            for md in evp.MDS:
                if evp.kcv_matches(kcv, password, salt, md):
                    return md, password
        raise PairMismatch("openssl key object does not belong to this content (key check value)")

    def _choose_by_padding(
        self,
        passwords: list[bytes],
        salt: bytes,
        raw_tail: bytes,
        cipher_size: int,
        layout: b64lines.Layout,
        fetched: _Fetched,
    ) -> tuple[str, bytes, bytes, int]:
        mds = evp.MDS if self.md == "auto" else (self.md,)
        fits = []
        for password in passwords:
            for md in mds:
                key, iv = evp.evp_bytes_to_key(md, password, salt)
                pad = _padding_len(self._last_block(raw_tail, key, iv, cipher_size))
                if pad:
                    fits.append((md, key, iv, pad))
        if not fits:
            raise PairMismatch(
                "openssl key object does not fit this content (bad padding"
                + (" with both SHA-256 and MD5" if len(mds) > 1 else f" with {mds[0]}")
                + "): mismatched pair or corrupted content"
            )
        if len(fits) == 1:
            return fits[0]
        # Several fit: a wrong key passes the padding check about once in 256. Text-like first
        # bytes tell the right one; else the longer padding is far likelier to be real.
        n0, n1 = layout.char_range(0, HEADER + BLOCK)
        head = layout.decode(n0, fetched.get(*layout.text_range(n0, n1)))
        first = head[HEADER : HEADER + BLOCK]
        structured = [
            f
            for f in fits
            if _looks_structured(
                _aes_cbc_decrypt(f[1], f[2], first)[: min(BLOCK, cipher_size - f[3])]
            )
        ]
        if len(structured) == 1:
            return structured[0]
        fits.sort(key=lambda f: f[3], reverse=True)
        if fits[0][3] > fits[1][3]:
            return fits[0]
        raise FormatError(
            "openssl content: cannot tell which key derivation wrote it (SHA-256 or MD5); "
            "set the openssl md option to sha256 or md5"
        )


class _Fetched:
    """Open-time access to the content object: one fetch at each end (one in all for a
    small object), then any further range on demand."""

    def __init__(self, source: ContentSource) -> None:
        self.source = source
        self.parts: list[tuple[int, bytes]] = []
        size = source.size
        if size <= 0:
            raise FormatError("openssl content: empty object")
        if size <= _SMALL:
            self._tail = self.get(0, size)[-_TAIL:]
        else:
            self.get(0, _HEAD)
            self._tail = self.get(size - _TAIL, size)

    def tail(self) -> bytes:
        return self._tail

    def get(self, start: int, end: int) -> bytes:
        for s, data in self.parts:
            if s <= start and end <= s + len(data):
                return data[start - s : end - s]
        data = _check_length(self.source.fetch(start, end), start, end)
        self.parts.append((start, data))
        return data


def _check_length(data: bytes, start: int, end: int) -> bytes:
    if len(data) != end - start:
        raise IntegrityError(
            f"openssl content: got {len(data)} bytes at {start} instead of {end - start}"
        )
    return data
