"""A letter beyond U+FFFF as two UTF-16 halves in two token events (red team 47).

A JSON string may hold a lone surrogate (``"\\ud835"``): JavaScript's ``JSON.parse`` keeps it, and a
client that appends deltas (openai-node, the Vercel AI SDK) joins a high half with the low half the
next event brings into one character, mathematical bold ``U+1D42C`` -- ``s`` once NFKC-folded, as
the fold view reads it. Each event alone holds half a letter, which no view read as anything: a
value written so, one UTF-16 unit per event, went out. The joined halves are, in UTF-8, the
character's CESU-8 form (a surrogate's three bytes, then the other's); Java's modified UTF-8 is
that form too. The decoded view reads a high and a low half in a row as the character they make.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.scrub import EventScrubber, ScrubRefused, scrub_field
from tests.proxy.core.test_spread import FINDER, VALUE
from tests.proxy.core.test_spread import _body as _stream
from tests.proxy.core.test_stitch_aliases import bold


def halves(text: str) -> str:
    """``text`` as its UTF-16 units, each a character (a character beyond U+FFFF: two surrogates)."""
    raw = text.encode("utf-16-be")
    return "".join(chr(int.from_bytes(raw[i : i + 2])) for i in range(0, len(raw), 2))


def units(text: str) -> list[str]:
    """``text`` as JSON string escapes, one UTF-16 unit each (a character beyond U+FFFF: two)."""
    return [f"\\u{ord(u):04x}" for u in halves(text)]


def chat(texts: list[str]) -> list[bytes]:
    """A chat completion stream whose deltas are ``texts`` (JSON string bodies, escapes kept)."""
    return [b'data: {"choices":[{"delta":{"content":"' + t.encode() + b'"}}]}\n\n' for t in texts]


def refused(events: list[bytes]) -> bool:
    s = EventScrubber(FINDER, lambda _: None)
    try:
        for e in events:
            s.feed(e)
        s.finish()
    except ScrubRefused:
        return True
    return False


def joined_by_javascript(texts: list[str]) -> str:
    """What openai-node's ``content += delta.content`` makes of the deltas (a Python str of UTF-16
    units, joined into characters as JavaScript joins them)."""
    halves = "".join(json.loads('"' + t + '"') for t in texts)
    return halves.encode("utf-16-be", "surrogatepass").decode("utf-16-be")


@pytest.mark.parametrize("per_event", [1, 2, 3, 5])
def test_a_value_in_mathematical_letters_halves_apart_is_refused(per_event: int) -> None:
    """One UTF-16 unit per event (and two, three, five: a pair's halves in two events, at each
    place in an event)."""
    u = units(bold(VALUE))
    texts = ["".join(u[i : i + per_event]) for i in range(0, len(u), per_event)]
    assert any(json.loads('"' + t + '"')[-1:] >= "\ud800" for t in texts)  # (an event that ends with a high half)
    assert joined_by_javascript(texts) == bold(VALUE)
    assert refused(chat(texts))


def test_letters_halves_apart_between_plain_ones_are_refused() -> None:
    """Every third letter's halves in two events, the others plain (no run of the value is
    long enough to be refused as one)."""
    texts, carry = [], ""
    for i, c in enumerate(VALUE):
        if i % 3 == 1:
            high, low = units(bold(c))
            texts.append(carry + high)
            carry = low
        else:
            carry += c
    texts.append(carry)
    assert joined_by_javascript(texts) == "".join(bold(c) if i % 3 == 1 else c for i, c in enumerate(VALUE))
    assert refused(chat(texts))


@pytest.mark.parametrize("pieces", [1, 3])
def test_a_value_in_cesu8_is_refused(pieces: int) -> None:
    """The bytes of the joined halves (CESU-8, Java's modified UTF-8), in a body and streamed."""
    body = b"key: " + halves(bold(VALUE)).encode("utf-8", "surrogatepass")
    assert body.decode("utf-8", "surrogatepass").encode("utf-16-be", "surrogatepass").decode("utf-16-be")[5:] == bold(
        VALUE
    )
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)
    _, was_refused = _stream(body + b" and more\n", pieces)
    assert was_refused


@given(st.text(max_size=12), st.integers(1, 4))
def test_text_in_halves_without_the_value_goes_out(text: str, per_event: int) -> None:
    """Emoji and other characters beyond U+FFFF split into halves (some models' streams do) go
    out as they came."""
    u = units(text + "\U0001f600 caf\u00e9 \U0001d42c")
    texts = ["".join(u[i : i + per_event]) for i in range(0, len(u), per_event)]
    assert not refused(chat(texts))
