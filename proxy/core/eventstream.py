"""AWS event-stream bodies toward the agent: Bedrock's token streams, read as their clients read them.

``application/vnd.amazon.eventstream`` (Bedrock's ``InvokeModelWithResponseStream`` and
``ConverseStream``, Lambda response streaming, Transcribe, S3 Select) is binary: each message is
a 12-byte prelude (total length, headers length, the CRC32 of those 8 bytes), typed headers
(``:event-type``, ``:content-type``...), a payload and the CRC32 of all that came before. A
Bedrock answer's payloads are JSON, and ``InvokeModelWithResponseStream`` wraps each model chunk
in base64 inside it (``{"bytes": "eyJ0eXBlIjoi..."}``); botocore undoes both and the SDKs stitch
``delta.text`` across messages. Scrubbed as bytes, a value split over two messages is in two
base64 runs, and no form of the whole value is anywhere in the bytes.

So a body that *begins* with a valid prelude (a CRC32 match: text never passes for one by chance,
whatever its label says) is read here message by message (:class:`FrameScrubber`):

- each message is held until it is whole (up to ``MAX_EVENT`` bytes; a larger one, a prelude
  whose CRC does not match, a length out of bounds or a message CRC that does not match cut the
  stream: the client could not read on either);
- its bytes are searched for every form of every value, plainly and in the decoded views -- a
  value inside one message is refused, not replaced (replacing would change the lengths and CRCs
  its client checks; re-framing an answer that carries a real value is not worth the risk);
- the texts its client reads -- the payload's JSON leaves by path, and those of JSON found in
  base64 in a leaf (``bytes``) -- go to a :class:`~proxy.core.scrub.PathStitcher`, which refuses a
  value split across messages and holds a message whose text ends with what could begin one.

A body that does not begin as one goes to the usual scrubber unchanged.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

from proxy.core.scrub import MAX_EVENT, PathStitcher, ScrubRefused, message_texts, scrub_whole, views
from proxy.core.values import Finder

__all__ = ["PRELUDE", "FrameScrubber", "FramedOr", "begins_framed", "framed_texts", "scrub_body"]

OnHit = Callable[[str], None]
PRELUDE = 12  # total length, headers length, CRC32 of the two
_MIN_MESSAGE = PRELUDE + 4  # no headers, no payload, the message CRC
_HEADER_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}  # value bytes of the fixed-size types
_B64_LEAF = re.compile(rb"[A-Za-z0-9+/_-]{8,}={0,2}")


def _prelude(data: bytes) -> tuple[int, int] | None:
    """(total length, headers length) when ``data`` begins with a valid prelude, else None."""
    total, headers, crc = struct.unpack_from(">III", data)
    if zlib.crc32(data[:8]) != crc or not _MIN_MESSAGE <= total <= MAX_EVENT or headers > total - _MIN_MESSAGE:
        return None
    return total, headers


def begins_framed(head: bytes) -> bool | None:
    """Whether a body beginning with ``head`` is an event stream; None until PRELUDE bytes are there."""
    if len(head) < PRELUDE:
        return None
    return _prelude(head) is not None


def _check_headers(block: bytes) -> None:
    """Raises ValueError unless ``block`` is a sequence of well-formed headers to its last byte
    (each: name length, name, type, value). Their values are searched with the message's bytes;
    no client joins header values across messages, so none is a text to stitch."""
    pos, end = 0, len(block)
    while pos < end:
        pos += 1 + block[pos]
        if pos >= end:
            raise ValueError("a header without a type")
        kind = block[pos]
        pos += 1
        if kind in (6, 7):  # byte array, string: a 2-byte length first
            if pos + 2 > end:
                raise ValueError("a header cut short")
            pos += 2 + struct.unpack_from(">H", block, pos)[0]
        elif kind in _HEADER_FIXED:
            pos += _HEADER_FIXED[kind]
        else:
            raise ValueError(f"a header of unknown type {kind}")
        if pos > end:
            raise ValueError("a header cut short")


def framed_texts(payload: bytes) -> Iterator[tuple[str, bytes]]:
    """(path, text) of what a client reads from one message's payload: its JSON leaves by path (as a
    WebSocket message's: :func:`~proxy.core.scrub.message_texts`), and for a leaf that is base64 of
    a JSON document (Bedrock's ``bytes``), that document's leaves under ``<leaf path>>b64``."""
    for path, text in message_texts(payload):
        yield path, text
        if len(text) >= 8 and _B64_LEAF.fullmatch(text):
            urlsafe = text.find(b"-") >= 0 or text.find(b"_") >= 0
            try:
                inner = base64.b64decode(
                    text.rstrip(b"=") + b"=" * (-len(text.rstrip(b"=")) % 4),
                    altchars=b"-_" if urlsafe else None,
                    validate=True,
                )
            except binascii.Error:
                continue
            if inner.lstrip()[:1] in (b"{", b"["):
                for inner_path, inner_text in message_texts(inner):
                    yield path + ">b64" + inner_path, inner_text


class FrameScrubber:
    """An event-stream body, message by message (see the module docstring). Same interface as the
    other body scrubbers: ``feed`` returns what may go to the agent now, ``finish`` the rest;
    both may raise :class:`~proxy.core.scrub.ScrubRefused`."""

    def __init__(self, finder: Finder, on_hit: OnHit) -> None:
        self._finder = finder
        self._buf = b""
        self._seq = 0
        self._stitcher = PathStitcher(finder, on_hit)
        self._pending: list[tuple[int, bytes]] = []  # checked messages the stitcher still holds

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= PRELUDE:
            lengths = _prelude(buf[pos : pos + PRELUDE])
            if lengths is None:
                raise ScrubRefused("", "an event-stream message whose prelude does not check")
            total, headers = lengths
            if len(buf) - pos < total:
                break
            out.append(self._message(buf[pos : pos + total], headers))
            pos += total
        self._buf = buf[pos:]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._buf:
            raise ScrubRefused("", "an event-stream body that ends inside a message")
        self._stitcher.finish()  # raises if what was held completes a value
        rest = b"".join(m for _, m in self._pending)
        self._pending.clear()
        return rest

    def _message(self, message: bytes, headers_len: int) -> bytes:
        if zlib.crc32(message[:-4]) != struct.unpack_from(">I", message, len(message) - 4)[0]:
            raise ScrubRefused("", "an event-stream message whose CRC does not check")
        try:
            _check_headers(message[PRELUDE : PRELUDE + headers_len])
        except ValueError as e:
            raise ScrubRefused("", f"an event-stream message whose headers do not parse: {e}") from None
        finder = self._finder
        for view in (message, *views(message)):
            hit = finder.search(view)
            if hit is not None:
                raise ScrubRefused(hit.pattern.secret, "a real value in an event-stream message")
        self._seq += 1
        seq = self._seq
        self._stitcher.add(seq, framed_texts(message[PRELUDE + headers_len : -4]))
        self._pending.append((seq, message))
        first_held = self._stitcher.first_held()
        ready = [m for q, m in self._pending if first_held is None or q < first_held]
        self._pending = [(q, m) for q, m in self._pending if first_held is not None and q >= first_held]
        return b"".join(ready)


class BodyStream(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class FramedOr:
    """A streamed body read by :class:`FrameScrubber` when its first PRELUDE bytes are a valid
    prelude, else by ``other`` (as it would have been): those bytes wait until they tell."""

    def __init__(self, other: BodyStream, finder: Finder, on_hit: OnHit) -> None:
        self._other = other
        self._finder, self._on_hit = finder, on_hit
        self._chosen: BodyStream | None = None
        self._head = b""

    def feed(self, chunk: bytes) -> bytes:
        if self._chosen is None:
            self._head += chunk
            framed = begins_framed(self._head[:PRELUDE])
            if framed is None:
                return b""
            self._chosen = FrameScrubber(self._finder, self._on_hit) if framed else self._other
            chunk, self._head = self._head, b""
        return self._chosen.feed(chunk)

    def finish(self) -> bytes:
        if self._chosen is None:  # (a body shorter than a prelude)
            self._chosen = self._other
            out = self._other.feed(self._head) if self._head else b""
            return out + self._other.finish()
        return self._chosen.finish()


def scrub_body(body: bytes, finder: Finder, on_hit: OnHit) -> bytes:
    """A complete body: message by message when it begins as an event stream, else as
    :func:`~proxy.core.scrub.scrub_whole` reads it."""
    if begins_framed(body[:PRELUDE]):
        s = FrameScrubber(finder, on_hit)
        return s.feed(body) + s.finish()
    return scrub_whole(body, finder, on_hit)
