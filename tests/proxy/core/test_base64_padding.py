"""Base64 with ``=`` inside it (red team 47, F6).

Python's ``base64.b64decode`` (not validating: its default) skips every ``=`` that does not end a
quad it completes: ``c2st=SWsy=endF...`` decodes to the value whole, whether the ``=`` falls between
quartets or inside one. A body that declares no base64 was read with each ``=`` in place, and the
value's base64 went out. (A MIME part that declares base64 drops every byte outside the alphabet.)
"""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import ScrubRefused, first_hit, scrub_field
from tests.proxy.core.test_spread import FINDER, V
from tests.proxy.core.test_spread import _body as _stream


def _padded(encoded: bytes, where: str) -> bytes:
    if where == "between-quartets":
        return b"=".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))
    if where == "two-in-the-middle":
        return encoded[:8] + b"==" + encoded[8:]
    if where in ("after-one-of-each-quad", "after-two-of-each-quad"):
        n = 1 if where == "after-one-of-each-quad" else 2
        return b"".join(encoded[i : i + n] + b"=" + encoded[i + n : i + 4] for i in range(0, len(encoded), 4))
    if where == "after-the-first-character":
        return encoded[:1] + b"=" + encoded[1:]
    raise AssertionError(where)


# (Not after three of a quad: that ``=`` completes it, and decoding stops there.)
WHERE = [
    "between-quartets",
    "two-in-the-middle",
    "after-one-of-each-quad",
    "after-two-of-each-quad",
    "after-the-first-character",
]
ENCODINGS = {"base64": base64.b64encode, "base64url": base64.urlsafe_b64encode}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("lead", [b"", b"x", b"ab"])  # (the value's base64 at each alignment)
def test_a_value_in_base64_with_padding_inside_does_not_go_out(encoding: str, where: str, lead: bytes) -> None:
    encoded = ENCODINGS[encoding](lead + V)
    body = _padded(encoded, where)
    decode = base64.b64decode if encoding == "base64" else base64.urlsafe_b64decode
    assert V in decode(body)  # (what Python's client reads)
    try:  # (refused, or the value's base64 replaced in place where the ``=`` left it whole)
        out = scrub_field(b"token: " + body, FINDER, lambda _: None)
    except ScrubRefused:
        pass
    else:
        assert V[:8] not in _read_sent(out.removeprefix(b"token: "))
    assert first_hit(FINDER, [b"x-token: " + body]) is not None
    for size in (1, 7, 1024):
        out, refused = _stream(b"token: " + body + b"\n", size)
        assert refused or V[:8] not in _read_sent(out), size
        assert V[:8] not in _read_sent(out.split(b"token: ", 1)[-1]), size


def _read_sent(sent: bytes) -> bytes:
    """What a client decodes of the base64 that went out before the refusal (its whole quads)."""
    text = bytes(c for c in sent.translate(bytes.maketrans(b"-_", b"+/")) if c in _ALPHABET)
    return base64.b64decode(text[: len(text) // 4 * 4])


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@given(st.binary(min_size=1, max_size=120), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_base64_with_padding_inside_without_a_value_goes_out_unchanged(data: bytes, rnd: random.Random) -> None:
    encoded = base64.b64encode(data)
    cuts = sorted(rnd.sample(range(len(encoded) + 1), min(3, len(encoded) + 1)))
    body = b"=".join(encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True))
    assert scrub_field(body, FINDER, lambda _: None) == body
    out, refused = _stream(body, 5)
    assert not refused and out == body
