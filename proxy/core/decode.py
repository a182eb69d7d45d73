"""Content-encodings of responses that must be scrubbed, decoded incrementally with a bound.

A response to a request that carried a real key is decoded before the scrubber reads it, whatever
the chunking of its compressed bytes (a gzip member or a brotli window may span any number of
chunks). Output comes in pieces of at most ``PIECE`` bytes, so one small compressed chunk never
becomes one huge allocation, and the total is capped (decompression bombs, SECURITY-CASES F06).
What cannot be decoded -- an unknown or stacked coding, corrupt or truncated data, a bomb -- raises
:class:`DecodeError`, and the data path refuses the response instead of forwarding it unscanned.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import brotli
from backports import zstd

__all__ = ["DecodeError", "Decoder", "PIECE", "SUPPORTED", "check_one_reading"]

SUPPORTED = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})
PIECE = 64 * 1024
DEFAULT_MAX_TOTAL = 1 << 30


class DecodeError(Exception):
    """The body cannot be decoded within the bounds; the message names why, never the data."""


class Decoder:
    def __init__(self, encoding: str, max_total: int = DEFAULT_MAX_TOTAL) -> None:
        encoding = encoding.strip().lower()
        if encoding not in SUPPORTED:
            raise DecodeError(f"content-encoding {encoding[:32]!r} cannot be scanned")
        self.encoding = "gzip" if encoding == "x-gzip" else encoding
        self._max_total = max_total
        self._total = 0
        self._z: zlib._Decompress | None = None
        self._br: brotli.Decompressor | None = None
        self._zstd: zstd.ZstdDecompressor | None = None
        self._done = False
        self._open = False  # data fed that has not yet completed a stream (a truncation check)
        if self.encoding == "gzip":
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "br":
            self._br = brotli.Decompressor()
        elif self.encoding == "zstd":
            self._zstd = zstd.ZstdDecompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of ``data`` (possibly none yet), each decoded as it is asked for: a few
        bytes may decode to a gigabyte, and the caller scrubs and sends a piece before the next is
        made. Take every piece before the next :meth:`feed` or :meth:`finish`."""
        if not data:
            return
        if self._done:
            raise DecodeError(f"data after the end of the {self.encoding} stream")
        self._open = True
        try:
            if self.encoding in ("gzip", "deflate"):
                yield from self._zlib(data)
            elif self._br is not None:
                yield from self._brotli(data)
            else:
                yield from self._zstandard(data)
        except (zlib.error, brotli.error, zstd.ZstdError, EOFError) as e:
            raise DecodeError(f"corrupt {self.encoding} data ({type(e).__name__})") from None

    def finish(self) -> list[bytes]:
        """The end of the body: the stream must be complete."""
        if self._open:
            raise DecodeError(f"truncated {self.encoding} data")
        return []

    def _count(self, piece: bytes) -> Iterator[bytes]:
        self._total += len(piece)
        if self._total > self._max_total:
            raise DecodeError("decoded body exceeds the size limit")
        if piece:
            yield piece

    def _zlib(self, data: bytes) -> Iterator[bytes]:
        if self._z is None:
            # "deflate" is zlib-wrapped per RFC 9110 but raw deflate in the wild: decide on byte one.
            self._z = zlib.decompressobj(zlib.MAX_WBITS if (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS)
        while data:
            yield from self._count(self._z.decompress(data, PIECE))
            data = self._z.unconsumed_tail
            if self._z.eof:
                rest = self._z.unused_data
                if rest and self.encoding == "gzip":  # a gzip body may hold several members
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest
                elif rest:
                    raise DecodeError(f"data after the end of the {self.encoding} stream")
                else:
                    self._done = self.encoding != "gzip"
                self._open = bool(data)

    def _brotli(self, data: bytes) -> Iterator[bytes]:
        assert self._br is not None
        yield from self._count(bytes(self._br.process(data, output_buffer_limit=PIECE)))
        # The decoder may hold decoded output back even when it would take more input: drain it.
        while not self._br.is_finished():
            more = bytes(self._br.process(b"", output_buffer_limit=PIECE))
            if not more:
                break
            yield from self._count(more)
        if self._br.is_finished():
            self._done, self._open = True, False

    def _zstandard(self, data: bytes) -> Iterator[bytes]:
        while True:
            assert self._zstd is not None
            if self._zstd.eof:  # the last frame ended exactly at the previous read: a new frame starts
                self._zstd = zstd.ZstdDecompressor()
            yield from self._count(self._zstd.decompress(data, PIECE))
            data = b""
            if self._zstd.eof:
                rest = self._zstd.unused_data
                if not rest:
                    self._open = False
                    return
                self._zstd = zstd.ZstdDecompressor()  # the next frame of a multi-frame body
                data = rest
            elif self._zstd.needs_input:
                return


def check_one_reading(encoding: str, body: bytes, decoded: bytes, max_total: int) -> None:
    """Raise :class:`DecodeError` when a whole ``deflate`` body that :class:`Decoder` read
    zlib-wrapped (``decoded``) also reads as raw deflate, to other bytes: a reader that takes
    "deflate" for raw deflate (.NET's ``DeflateStream``, behind ASP.NET Core's request
    decompression) would act on what was not checked (red team 65: 65 KB of filler to the check,
    ``&_method=DELETE`` to the application). A raw reading past ``max_total`` is not read to its
    end: refused too. (A zlib stream that is also raw deflate is made so: its second byte must
    start a stored block whose length and complement agree.)"""
    if encoding.strip().lower() != "deflate" or not body or (body[0] & 0x0F) != 8:
        return
    raw = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        other = raw.decompress(body, max_total + 1)
    except zlib.error:
        return  # (no raw reading: the one reading stands)
    if len(other) > max_total or (raw.eof and other != decoded):
        raise DecodeError("the deflate body reads two ways (zlib-wrapped and raw)")
