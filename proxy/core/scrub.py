"""Every channel back to the agent: scrubbed or refused (SECURITY-CASES B12, B13).

A response from a host a secret is bound to may echo a real value. Each way bytes reach the agent
has a scrubber here, streaming and pure (bytes in, bytes out, :class:`ScrubRefused` when a value is
there in a form that cannot be replaced in place):

- :class:`BodyScrubber`: a response body (already decoded, see :mod:`proxy.core.decode`). It
  holds back only a tail that could still begin a value, so a match split across chunks is found
  and nothing else waits.
- :class:`EventScrubber`: token streams -- ``text/event-stream`` (SSE) and line-delimited JSON
  (``application/x-ndjson`` and kin). Only complete events (lines) go out. Each is scrubbed as
  bytes, then the text it carries (the ``data:`` payload, or each JSON string leaf by its path: the
  way a client stitches a token stream together) is checked as one stream per path across events:
  an event whose text ends with what could begin a value is held until the next event on that path
  says otherwise; a value split across events is refused.
- :class:`SegmentedScrubber`: WebSocket messages, text and binary alike, as one stream across
  fragments and consecutive messages: in-message values are replaced, a value split across two
  messages is refused.
- :func:`scrub_field`: one header name or value, a status reason, a control frame payload.

**Side views.** A value can also arrive in an encoding that is not a fixed form: JSON escapes of
printable ASCII (``\\u0073k-...``, ``\\/``) or percent-encoding of any subset of its characters.
Where such escapes appear, the scrubbers also search a decoded copy; a value found only there
cannot be replaced in place, so it is refused. Once a stream has shown escapes it holds back
enough bytes (``VIEW_HOLD``) that no escaped value can be half sent before it is seen whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from proxy.core.values import Finder

__all__ = ["BodyScrubber", "EventScrubber", "ScrubRefused", "SegmentedScrubber", "fields_clean", "scrub_field", "views"]

OnHit = Callable[[str], None]
MAX_EVENT = 1 << 20  # an event (or line) must fit here to be checked whole; a larger one is refused
MIN_HOLD = 3  # at a segment's end, a held tail shorter than this goes out (see SegmentedScrubber)
_JSON_ESCAPES = re.compile(rb"\\u00([2-7][0-9a-fA-F])|\\/")
_PERCENT = re.compile(rb"%([0-9a-fA-F]{2})")
_PARTIAL_ESCAPE = re.compile(rb"(?:\\(?:u(?:0(?:0[2-7]?)?)?)?|%[0-9a-fA-F]?)\Z")  # an escape cut by the chunk


class ScrubRefused(Exception):
    """A real value is in the stream in a form that cannot be replaced in place (split across
    events or messages, escaped): the stream must end here. ``secret`` names it."""

    def __init__(self, secret: str, detail: str) -> None:
        super().__init__(detail)
        self.secret = secret
        self.detail = detail


def _has_escapes(data: bytes) -> bool:
    return (b"\\" in data and _JSON_ESCAPES.search(data) is not None) or (
        b"%" in data and _PERCENT.search(data) is not None
    )


def views(data: bytes) -> list[bytes]:
    """Decoded copies of ``data`` in which an escaped value reads plainly (none when nothing is escaped)."""
    out = []
    if b"\\" in data and _JSON_ESCAPES.search(data) is not None:
        out.append(_JSON_ESCAPES.sub(lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else b"/", data))
    if b"%" in data and _PERCENT.search(data) is not None:
        out.append(_PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), data))
    return out


def _check_views(data: bytes, finder: Finder) -> None:
    for view in views(data):
        hit = finder.search(view)
        if hit is not None:
            raise ScrubRefused(hit.pattern.secret, "a real value in escapes (JSON or percent)")


def scrub_field(value: bytes, finder: Finder, on_hit: OnHit) -> bytes:
    """One complete value (a header name or value, a reason phrase, a control frame payload, a
    whole body)."""
    out = finder.sub(value, on_hit)
    _check_views(out, finder)
    return out


def fields_clean(finder: Finder, fields: list[bytes]) -> bool:
    """Whether no field holds a value, plainly or escaped: :func:`scrub_field` would return every
    one unchanged. One search over all of them (no value holds a newline, and no escape spans one,
    so nothing is found across two fields that is not in one)."""
    blob = b"\n".join(fields)
    return finder.search(blob) is None and all(finder.search(v) is None for v in views(blob))


def _replace(data: bytes, hits: list[Any], on_hit: OnHit | None) -> bytes:
    if not hits:
        return data
    parts: list[bytes] = []
    pos = 0
    for h in hits:
        parts += (data[pos : h.start], h.pattern.replace)
        if on_hit is not None:
            on_hit(h.pattern.secret)
        pos = h.end
    parts.append(data[pos:])
    return b"".join(parts)


class BodyScrubber:
    def __init__(self, finder: Finder, on_hit: OnHit) -> None:
        self._finder = finder
        self._on_hit = on_hit
        self._held = b""
        self._view_hold = max(finder.max_len * 6, 64)  # an escaped value is at most 6 bytes a character
        self._window = b""  # the last bytes sent, for values in escapes that began there
        self._escaped = False  # escapes seen: hold back enough to see an escaped value whole

    def feed(self, chunk: bytes) -> bytes:
        f = self._finder
        buf = self._held + chunk if self._held else chunk
        hits = f.hits(buf)
        last_end = hits[-1].end if hits else 0
        keep = f.holdback(buf[last_end:]) if last_end < len(buf) else 0
        if (partial := _PARTIAL_ESCAPE.search(buf[-6:])) is not None:
            keep = max(keep, len(partial.group(0)))  # wait for the rest of an escape cut in two
        if self._escaped or _has_escapes(self._window[-6:] + buf):
            self._escaped = True
            _check_views(self._window + _replace(buf, hits, None), f)
            keep = max(keep, min(len(buf), self._view_hold))
        cut = len(buf) - keep
        for h in hits:  # never cut through a value: what straddles the cut stays held, whole
            if h.start < cut < h.end:
                cut = h.start
                break
        self._held = buf[cut:]
        out = _replace(buf[:cut], [h for h in hits if h.end <= cut], self._on_hit)
        if out:
            self._window = (self._window + out)[-self._view_hold :]
        return out

    def finish(self) -> bytes:
        held, self._held = self._held, b""
        if not held:
            return b""
        hits = self._finder.hits(held)
        out = _replace(held, hits, self._on_hit)
        if self._escaped or _has_escapes(out):
            _check_views(self._window + out, self._finder)
        return out


@dataclass(slots=True)
class _Piece:
    segment: int
    data: bytes


class SegmentedScrubber:
    """One stream made of segments (WebSocket messages; the text of one SSE path, event by event).

    Values inside a segment are replaced (or, with ``replace=False``, refused); a value spanning
    two segments is refused. Within a segment any tail that could begin a value is held back. At a
    segment's end (:meth:`end_segment`) a held tail of ``MIN_HOLD`` bytes or more stays held -- the
    caller must not complete the segment toward the agent until a later segment resolves it -- and
    a shorter one goes out, so a message ending in a letter that happens to begin some value is not
    delayed: if the next segment then completes a value, the stream is refused, and the agent has
    seen at most ``MIN_HOLD - 1`` of its characters."""

    def __init__(self, finder: Finder, on_hit: OnHit, *, replace: bool = True, min_hold: int = MIN_HOLD) -> None:
        self._finder = finder
        self._on_hit = on_hit
        self._replace = replace
        self._min_hold = min_hold
        self._held: list[_Piece] = []  # bytes not yet emitted, by segment
        self._history = b""  # the last bytes emitted: a value starting there spans a boundary

    @property
    def finder(self) -> Finder:
        return self._finder

    def held_segments(self) -> set[int]:
        return {p.segment for p in self._held if p.data}

    def take_held(self) -> bytes:
        """Everything held, unchecked (for a stream that is let through anyway)."""
        held, self._held = self._held, []
        return b"".join(p.data for p in held)

    def feed(self, data: bytes, segment: int) -> list[tuple[int, bytes]]:
        """Add ``data`` to ``segment``; returns (segment, bytes to emit) in order."""
        if self._held and self._held[-1].segment == segment:
            self._held[-1].data += data
        else:
            self._held.append(_Piece(segment, data))
        return self._drain(hold_all=True)

    def end_segment(self) -> list[tuple[int, bytes]]:
        """The latest segment is complete: release its tail if it is too short to hold."""
        held = b"".join(p.data for p in self._held)
        if held and self._finder.holdback(self._history + held) < self._min_hold:
            return self._drain(hold_all=False)
        return []

    def finish(self) -> list[tuple[int, bytes]]:
        return self._drain(hold_all=False)

    def _drain(self, hold_all: bool) -> list[tuple[int, bytes]]:
        f = self._finder
        hist = self._history
        held = b"".join(p.data for p in self._held)
        buf = hist + held
        base = len(hist)
        found = [h for h in f.hits(buf) if h.end > base]
        for h in found:
            if h.start < base:
                raise ScrubRefused(h.pattern.secret, "a real value split across messages or events")
        hits = [_shift(h, base) for h in found]
        if hits and not self._replace:
            raise ScrubRefused(hits[0].pattern.secret, "a real value split across events or escaped in one")
        bounds: list[int] = []
        at = 0
        for p in self._held[:-1]:
            at += len(p.data)
            bounds.append(at)
        for sh in hits:
            if any(sh.start < b < sh.end for b in bounds):
                raise ScrubRefused(sh.pattern.secret, "a real value split across messages or events")
        if _has_escapes(buf):
            _check_views(hist + _replace(held, hits, None), f)
        last_end = hits[-1].end if hits else 0
        keep = 0
        if hold_all and last_end < len(held):
            # What could begin a value may have started in bytes already sent: hold all after it.
            region = held[last_end:] if hits else buf
            keep = min(f.holdback(region), len(held) - last_end)
        cut = len(held) - keep
        out: list[tuple[int, bytes]] = []
        start = 0
        rest: list[_Piece] = []
        for p in self._held:
            end = start + len(p.data)
            upto = min(end, cut)
            if upto > start:
                mine = [_shift(h, start) for h in hits if start <= h.start and h.end <= upto]
                out.append((p.segment, _replace(p.data[: upto - start], mine, self._on_hit)))
            if end > cut:
                rest.append(_Piece(p.segment, p.data[max(cut - start, 0) :]))
            start = end
        self._held = rest
        emitted = b"".join(d for _, d in out)
        if emitted:
            self._history = (self._history + emitted)[-max(f.max_len * 6, 1) :]
        return out


@dataclass(slots=True)
class _Hit:  # a hit moved to other offsets
    start: int
    end: int
    pattern: Any


def _shift(h: Any, by: int) -> _Hit:
    return _Hit(h.start - by, h.end - by, h.pattern)


# -- token streams: SSE and line-delimited JSON --------------------------------------------------

# An SSE event ends at a blank line; a line ends with CRLF, LF or CR (a lone CR: one not
# followed by LF). So a line end followed by another.
_SSE_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_LINE_END = re.compile(rb"\n")
STREAM_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
                "application/json-seq", "application/stream+json")  # fmt: skip


@dataclass(slots=True)
class EventScrubber:
    """A token stream toward the agent, event by event (see the module docstring).
    ``kind``: "sse" (``text/event-stream``) or "lines" (one JSON document a line)."""

    finder: Finder
    on_hit: OnHit
    kind: str = "sse"
    _buf: bytes = b""
    _seq: int = 0
    _pending: list[tuple[int, bytes]] = field(default_factory=list)  # scrubbed events not yet sent
    _paths: dict[str, SegmentedScrubber] = field(default_factory=dict)

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        ends = _SSE_END if self.kind == "sse" else _LINE_END
        out: list[bytes] = []
        while True:
            m = ends.search(self._buf)
            if m is None:
                break
            raw, self._buf = self._buf[: m.end()], self._buf[m.end() :]
            out.append(self._event(raw))
        if len(self._buf) > MAX_EVENT:
            raise ScrubRefused("", "an event larger than the scrubber's bound")
        return b"".join(out)

    def finish(self) -> bytes:
        tail = self._event(self._buf) if self._buf else b""
        self._buf = b""
        for stream in self._paths.values():
            stream.finish()  # raises if what was held completes a value
        rest = b"".join(e for _, e in self._pending)
        self._pending.clear()
        return tail + rest

    def _event(self, raw: bytes) -> bytes:
        self._seq += 1
        seq = self._seq
        event = scrub_field(raw, self.finder, self.on_hit)
        texts = _sse_texts(event) if self.kind == "sse" else _line_texts(event)
        for path, text in texts:
            stream = self._paths.get(path)
            if stream is None:
                if len(self._paths) >= 64:  # bounded: ever-new paths are checked as one more stream
                    path = "*"
                    stream = self._paths.get(path)
                if stream is None:
                    stream = self._paths[path] = SegmentedScrubber(self.finder, self.on_hit, replace=False)
            stream.feed(text, seq)
        for stream in self._paths.values():
            stream.end_segment()
        self._pending.append((seq, event))
        held = [min(h) for s in self._paths.values() if (h := s.held_segments())]
        first_held = min(held) if held else None
        ready = [e for q, e in self._pending if first_held is None or q < first_held]
        self._pending = [(q, e) for q, e in self._pending if first_held is not None and q >= first_held]
        return b"".join(ready)


def _sse_texts(event: bytes) -> Iterator[tuple[str, bytes]]:
    """(path, text) of what an SSE client would read from one event: the data payload, and when
    it is JSON, each string leaf by its path (array indexes included)."""
    lines = re.split(rb"\r\n|\r|\n", event)
    data = [ln[5:].removeprefix(b" ") for ln in lines if ln.startswith(b"data:")]
    if not data:
        return
    yield from _payload_texts(b"\n".join(data))


def _line_texts(line: bytes) -> Iterator[tuple[str, bytes]]:
    payload = line.strip(b"\r\n\x1e \t")  # json-seq puts RS before each document
    if payload:
        yield from _payload_texts(payload)


def _payload_texts(payload: bytes) -> Iterator[tuple[str, bytes]]:
    if payload[:1] in (b"{", b"["):
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        if doc is not None:
            yield from _leaves(doc, "")
            return
    yield "", payload


def _leaves(doc: object, path: str) -> Iterator[tuple[str, bytes]]:
    if isinstance(doc, str):
        yield path, doc.encode("utf-8", "surrogatepass")
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, f"{path}[{i}]")
