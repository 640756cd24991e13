"""The age v1 header: strict parsing, canonical serialization and the header MAC.

    age-encryption.org/v1
    -> TYPE ARG...          one stanza: arguments of printable ASCII, single spaces
    BODY                    unpadded base64, 64-column lines, ending with a shorter line
    --- MAC                 HMAC-SHA256 of everything up to and including "---"

Parsing accepts exactly the canonical encoding, so ``serialize(parse(h)) == h``; the MAC
therefore authenticates the bytes as stored.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from b2cryptfs.errors import FormatError, IntegrityError
from b2cryptfs.formats.age import b64

VERSION_LINE = b"age-encryption.org/v1"
INTRO = b"age-encryption.org/"
COLUMNS = 64
# Key objects are small (a stanza is well under 1 KiB); the cap bounds what a reader of an
# arbitrary stream buffers before deciding that it is not looking at an age header.
MAX_HEADER = 1 << 20

_ARG = re.compile(rb"[\x21-\x7e]+")
_BODY_LINE = re.compile(rb"[A-Za-z0-9+/]{0,64}")
_MAC_LINE = re.compile(rb"--- ([A-Za-z0-9+/]{43})")


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: its type (first argument), the other arguments and the body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        words = (self.type, *self.args)
        if not all(w.isascii() and _ARG.fullmatch(w.encode("ascii")) for w in words):
            raise FormatError("age header: stanza argument is empty or not printable ASCII")
        text = b64.encode(self.body)
        # The body always ends with a line shorter than 64 columns, possibly empty.
        lines = [text[i : i + COLUMNS] for i in range(0, len(text) - len(text) % COLUMNS, COLUMNS)]
        lines.append(text[len(text) - len(text) % COLUMNS :])
        return b"-> " + " ".join(words).encode("ascii") + b"\n" + b"\n".join(lines) + b"\n"


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    # The exact bytes the MAC covers: the header up to and including "---".
    mac_input: bytes

    def verify_mac(self, file_key: bytes) -> None:
        """Raise IntegrityError unless the MAC matches ``file_key``."""
        if not hmac.compare_digest(header_mac(file_key, self.mac_input), self.mac):
            raise IntegrityError("age header: MAC mismatch (header tampered with or corrupted)")

    def encode(self) -> bytes:
        return self.mac_input + b" " + b64.encode(self.mac) + b"\n"


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"header").derive(file_key)
    return hmac.new(key, mac_input, sha256).digest()


def serialize(stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    """A complete header for ``stanzas``, MAC'd with ``file_key``."""
    mac_input = VERSION_LINE + b"\n" + b"".join(s.encode() for s in stanzas) + b"---"
    return mac_input + b" " + b64.encode(header_mac(file_key, mac_input)) + b"\n"


def parse(data: bytes) -> Header:
    """Parse a header that must fill ``data`` exactly."""
    header, rest = split(data)
    if rest:
        raise FormatError("age header: unexpected data after the MAC line")
    return header


def split(data: bytes) -> tuple[Header, bytes]:
    """Parse the header at the start of ``data``; return it and the bytes that follow."""
    pos = 0

    def next_line() -> bytes:
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0:
            raise FormatError("age header: truncated (no MAC line)")
        line, pos = data[pos:end], end + 1
        return line

    first = next_line()
    if first != VERSION_LINE:
        if first.startswith(INTRO):
            raise FormatError("age header: unsupported version")
        raise FormatError("not an age header")
    stanzas: list[Stanza] = []
    while True:
        start = pos
        line = next_line()
        if line.startswith(b"---"):
            m = _MAC_LINE.fullmatch(line)
            if not m:
                raise FormatError("age header: malformed MAC line")
            mac = b64.decode(m.group(1), "age header MAC")
            return Header(tuple(stanzas), mac, data[: start + 3]), data[pos:]
        if not line.startswith(b"-> "):
            raise FormatError("age header: expected a stanza or the MAC line")
        words = line[3:].split(b" ")
        if not all(_ARG.fullmatch(w) for w in words):
            raise FormatError("age header: stanza argument is empty or not printable ASCII")
        body_lines = []
        while True:
            body_line = next_line()
            if not _BODY_LINE.fullmatch(body_line):
                raise FormatError(
                    "age header: stanza body line is not base64 of at most 64 columns"
                )
            body_lines.append(body_line)
            if len(body_line) < COLUMNS:
                break
        body = b64.decode(b"".join(body_lines), "age header: stanza body")
        text = [w.decode("ascii") for w in words]
        stanzas.append(Stanza(text[0], tuple(text[1:]), body))


def read_header(stream: BinaryIO, limit: int = MAX_HEADER) -> bytes:
    """Read the header bytes (through the MAC line) from the start of a buffered stream."""
    out = bytearray()
    while True:
        line = stream.readline(limit - len(out) + 1)
        out += line
        if len(out) > limit:
            raise FormatError("age header: too long")
        if not line.endswith(b"\n"):
            raise FormatError("age header: truncated (no MAC line)")
        if line.startswith(b"---"):
            return bytes(out)
        if len(out) == len(line) and not line.startswith(INTRO):
            raise FormatError("not an age header")
