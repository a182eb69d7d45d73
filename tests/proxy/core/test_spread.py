"""A value spread with filler farther apart than a stream keeps (red team 19).

A stream keeps of what it sent only a window (scrub._view_window); an upstream that puts more filler
than that between a value's characters -- what clients drop whole: a terminal's sequences, NUL,
SO and SI, quoted-printable's and HZ's line continuations, bytes above 0x7F -- sent every byte of
it, and the client read the value. Each stream now keeps a skeleton of what it sent (the filler
dropped): the value is refused there, and at most MIN_HOLD - 1 of its characters go out first.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import (
    MIN_HOLD,
    BodyScrubber,
    EventScrubber,
    MessageScrubber,
    ScrubRefused,
    _view_window,
    first_hit,
    skeleton,
)
from proxy.core.values import Finder

VALUE = "sk-Ik2zwEQhs7T9aLm0pXv4"
V = VALUE.encode()
FINDER = Finder.for_values([("s", VALUE, "sk-sandgate-placeholder")], runs=True)
WINDOW = _view_window(FINDER)


def _strip_ansi(b: bytes) -> bytes:  # strip-ansi's pattern, and ISO-2022's designators
    return re.sub(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()$][@-Z]", b"", b)


# (filler, how a client drops it)
FILLERS: dict[str, tuple[bytes, Callable[[bytes], bytes]]] = {
    "csi": (b"\x1b[m", _strip_ansi),
    "osc title": (b"\x1b]0;x\x07", _strip_ansi),
    "charset designator": (b"\x1b(B", _strip_ansi),
    "quoted-printable soft break": (b"=\n", lambda b: b.replace(b"=\n", b"")),
    "quoted-printable soft break, crlf": (b"=\r\n", lambda b: b.replace(b"=\r\n", b"")),
    "hz line continuation": (b"~\n", lambda b: b.decode("hz").encode()),
    "nul": (b"\x00", lambda b: b.replace(b"\x00", b"")),
    "so si": (b"\x0e\x0f", lambda b: b.decode("iso2022_kr", "replace").encode()),
    "zero-width space": ("\u200b".encode(), lambda b: b.decode("utf-8", "ignore").replace("\u200b", "").encode()),
    "letters of another script": ("\u0436".encode(), lambda b: b.decode("utf-8", "ignore").encode("ascii", "ignore")),
}


def _spread(filler: bytes, gap: int) -> bytes:
    return (filler * (gap // len(filler) + 1)).join(bytes([c]) for c in V)


def _body(data: bytes, size: int) -> tuple[bytes, bool]:
    s = BodyScrubber(FINDER, lambda _: None)
    out = b""
    try:
        for i in range(0, len(data), size):
            out += s.feed(data[i : i + size])
        out += s.finish()
    except ScrubRefused:
        return out, True
    return out, False


@pytest.mark.parametrize("name", FILLERS)
def test_a_value_spread_past_the_window_in_a_body_is_refused_before_it_is_read(name: str) -> None:
    filler, read = FILLERS[name]
    data = _spread(filler, 2 * WINDOW)
    assert read(data) == V  # (what a client reads of the whole)
    out, refused = _body(data, 1024)
    assert refused
    assert V[:MIN_HOLD] not in read(out) and V[:MIN_HOLD] not in skeleton(out)


@pytest.mark.parametrize("name", FILLERS)
def test_a_value_spread_over_messages_past_the_window_is_refused(name: str) -> None:
    """WebSocket: a character and the filler in each message."""
    filler, read = FILLERS[name]
    s = MessageScrubber(FINDER, lambda _: None)
    out = b""
    with pytest.raises(ScrubRefused):
        for n, c in enumerate(V):
            message = bytes([c]) + filler * (2 * WINDOW // len(filler) + 1)
            out += b"".join(d for _, d in s.feed(message, n)) + b"".join(d for _, d in s.end_segment())
        out += b"".join(d for _, d in s.finish())
    assert V[:MIN_HOLD] not in read(out)


def _delta(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def _contents(sse: bytes) -> str:
    return "".join(
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in sse.split(b"\n")
        if line.startswith(b"data: {")
    )


@pytest.mark.parametrize("name", [n for n in FILLERS if n not in ("so si", "hz line continuation")])
def test_a_value_spread_over_token_deltas_past_the_window_is_refused(name: str) -> None:
    """A token stream: a character and the filler in each delta (JSON carries the filler as text)."""
    filler, read = FILLERS[name]
    text = filler.decode("utf-8")
    s = EventScrubber(FINDER, lambda _: None, "sse")
    out = b""
    with pytest.raises(ScrubRefused):
        for c in VALUE:
            out += s.feed(_delta(c + text * (2 * WINDOW // len(filler) + 1)))
        out += s.finish()
    assert V[:MIN_HOLD] not in read(_contents(out).encode())


@given(
    seed=st.integers(0, 2**32),
    kinds=st.lists(st.sampled_from(sorted(FILLERS)), min_size=1, max_size=3),
    gap=st.sampled_from([1, 40, WINDOW // 2, WINDOW, 2 * WINDOW + 7]),
    size=st.sampled_from([7, 100, 1024, 5000]),
)
@settings(max_examples=60, deadline=None)
def test_a_value_spread_with_any_filler_never_leaves_more_than_a_stub(
    seed: int, kinds: list[str], gap: int, size: int
) -> None:
    """Fillers mixed, gaps from none (the value plain: replaced) to past the window, any chunk size:
    what went out, its filler dropped, holds neither the value nor a run of it."""
    rnd = random.Random(seed)
    parts = []
    for c in V:
        parts.append(bytes([c]))
        filler = FILLERS[rnd.choice(kinds)][0]
        parts.append(filler * (rnd.randint(0, gap) // len(filler)))
    out, _ = _body(b"".join(parts), size)
    assert first_hit(FINDER, [skeleton(out)]) is None


@given(data=st.binary(min_size=1, max_size=6000), cuts=st.lists(st.integers(1, 6000), max_size=8), seed=st.integers())
@settings(max_examples=150, deadline=None)
def test_binary_and_other_scripts_without_a_value_go_out_unchanged(data: bytes, cuts: list[int], seed: int) -> None:
    """No value: the skeleton refuses nothing and holds nothing back for good, in a body stream and
    in a message stream (random bytes, and text in another script with ASCII between)."""
    rnd = random.Random(seed)
    text = "".join(rnd.choice(["\u0436", "\u4e2d", " ", "a", "1", "\x1b[m", "=\n"]) for _ in range(len(data)))
    for body in (data, text.encode()):
        points = sorted({c % len(body) for c in cuts} - {0})
        pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
        s = BodyScrubber(FINDER, lambda _: None)
        assert b"".join(s.feed(p) for p in pieces) + s.finish() == body
        m = MessageScrubber(FINDER, lambda _: None)
        out = b""
        for n, p in enumerate(pieces):
            out += b"".join(d for _, d in m.feed(p, n)) + b"".join(d for _, d in m.end_segment())
        out += b"".join(d for _, d in m.finish())
        assert out == body
