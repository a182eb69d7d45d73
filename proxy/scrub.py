"""Response scrubbing: a real secret value coming back toward the agent becomes its placeholder.

Streaming and pure: :class:`StreamScrubber` is fed chunks as they arrive and returns what may be
sent on. It holds back only a tail that could still be the start of a secret (so an SSE event that
ends in ``\\n\\n`` is never delayed), which makes matches across chunk boundaries work without
buffering the stream. :class:`StreamDecoder` undoes gzip/deflate/br incrementally with a bound on
each step's output, so a decompression bomb costs at most one bounded chunk at a time.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Mapping

import brotli

__all__ = ["ScrubSpec", "StreamDecoder", "StreamScrubber", "patterns_for", "scrub_text"]

OnHit = Callable[[str], None]


def patterns_for(values: Iterable[tuple[str, str]], placeholders: Mapping[str, str]) -> dict[bytes, tuple[str, bytes]]:
    """Byte patterns to find for (secret name, real value) pairs -- the value and its base64 /
    base64url / percent-encoded forms -> (secret name, replacement). Encoded forms are replaced by
    the same encoding of the placeholder."""
    out: dict[bytes, tuple[str, bytes]] = {}
    for name, value in values:
        if name not in placeholders:
            continue
        ph = placeholders[name]
        forms = {
            value.encode(): ph.encode(),
            base64.b64encode(value.encode()): base64.b64encode(ph.encode()),
            base64.urlsafe_b64encode(value.encode()): base64.urlsafe_b64encode(ph.encode()),
            urllib.parse.quote(value, safe="").encode(): urllib.parse.quote(ph, safe="").encode(),
        }
        for find, repl in forms.items():
            # base64 of a value ends in padding that depends on what follows; match without it.
            find, repl = find.rstrip(b"="), repl.rstrip(b"=")
            if len(find) >= 8:
                out[find] = (name, repl)
    return out


class ScrubSpec:
    """The compiled form of a set of patterns: built once per set of secret values (not per
    response), shared by every scrubber."""

    def __init__(self, patterns: Mapping[bytes, tuple[str, bytes]]) -> None:
        self.patterns = dict(patterns)
        self.regex: re.Pattern[bytes] | None = None
        self.prefixes: frozenset[bytes] = frozenset()
        self.max_prefix = 0
        if self.patterns:
            ordered = sorted(self.patterns, key=len, reverse=True)
            self.regex = re.compile(b"|".join(re.escape(p) for p in ordered))
            self.prefixes = frozenset(p[:k] for p in self.patterns for k in range(1, len(p)))
            self.max_prefix = max(len(p) for p in self.patterns) - 1


class StreamScrubber:
    def __init__(self, spec: ScrubSpec, on_hit: OnHit) -> None:
        self._spec = spec
        self._on_hit = on_hit
        self._held = b""

    def _sub(self, m: re.Match[bytes]) -> bytes:
        name, repl = self._spec.patterns[m.group(0)]
        self._on_hit(name)
        return repl

    def feed(self, chunk: bytes) -> bytes:
        spec = self._spec
        if spec.regex is None:
            return chunk
        buf = self._held + chunk
        last_end = 0
        for m in spec.regex.finditer(buf):
            last_end = m.end()
        keep = 0
        for k in range(min(spec.max_prefix, len(buf) - last_end), 0, -1):
            if buf[len(buf) - k :] in spec.prefixes:
                keep = k
                break
        self._held = buf[len(buf) - keep :] if keep else b""
        return spec.regex.sub(self._sub, buf[: len(buf) - keep])

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held  # a held tail is by construction not a complete match


def scrub_text(text: str, spec: ScrubSpec, on_hit: OnHit) -> str:
    """Scrub one complete string (a header value)."""
    if spec.regex is None:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    if spec.regex.search(raw) is None:
        return text
    s = StreamScrubber(spec, on_hit)
    return (s.feed(raw) + s.flush()).decode("utf-8", "surrogateescape")


class DecodeError(Exception):
    pass


class StreamDecoder:
    """Incremental gzip / deflate / br decoding; each call's output is bounded by ``max_output``
    per input chunk, and the total by ``max_total`` (decompression bombs, SECURITY-CASES F06)."""

    SUPPORTED = ("gzip", "x-gzip", "deflate", "br")

    def __init__(self, encoding: str, max_output: int = 4 << 20, max_total: int = 1 << 30) -> None:
        self.encoding = encoding
        self._max_output = max_output
        self._max_total = max_total
        self._total = 0
        self._br: brotli.Decompressor | None = None
        self._z: zlib._Decompress | None = None
        self._deflate_probe = b""
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "br":
            self._br = brotli.Decompressor()
        elif encoding != "deflate":
            raise DecodeError(f"unsupported content-encoding {encoding!r}")

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "deflate" and self._z is None:
            # "deflate" is zlib-wrapped per RFC 9110 but raw deflate in the wild: decide on byte one.
            self._z = zlib.decompressobj(zlib.MAX_WBITS if data[:1] and (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS)
        try:
            if self._br is not None:
                out = bytes(self._br.process(data, output_buffer_limit=self._max_output))
                if not self._br.can_accept_more_data():
                    raise DecodeError("compressed chunk expands beyond the per-chunk limit")
            else:
                assert self._z is not None
                out = self._z.decompress(data, self._max_output)
                if self._z.unconsumed_tail:
                    raise DecodeError("compressed chunk expands beyond the per-chunk limit")
        except (zlib.error, brotli.error) as e:
            raise DecodeError(f"corrupt {self.encoding} stream: {e}") from None
        if len(out) > self._max_output:
            raise DecodeError("compressed chunk expands beyond the per-chunk limit")
        self._total += len(out)
        if self._total > self._max_total:
            raise DecodeError("decoded body exceeds the size limit")
        return out

    def flush(self) -> bytes:
        if self._z is not None:
            out: bytes = self._z.flush()
            return out
        return b""
