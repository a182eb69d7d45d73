"""Differential tests of what streams and token streams read (red team 44, findings 4, 5 and 7).

- A token stream's bytes are read as a body's too: for any body, what scrub_whole and the
  streaming token readers (a body sniffed as a token stream, one labelled as one) refuse or change is
  at least what scrub_field finds in the same bytes (it refuses them or replaces a value in them),
  however the stream is cut. Bodies of a few KiB: a stream reads each event with the window of
  bytes before it (4,736 bytes for this key), and a body that fits in it is read whole.
- A stream reads a decoding opened before its window: for a body with a long UTF-7 run, JWT,
  encoded-word or MIME part before an encoded key, a stream refuses or changes it whenever the body
  scrubbed whole is refused or changed, however it is cut.

Each fails on the code before the fix (its examples are the red team's bodies)."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from typing import Protocol

from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.core.scrub import (
    BodyScrubber,
    EventScrubber,
    ScrubRefused,
    SniffingScrubber,
    scrub_field,
    scrub_whole,
)
from proxy.core.values import Finder
from tests.proxy.core.test_scrub import ENCODE, chunked

KEY = "rtREALa3f9c0b7e15d24a68c0ffee1234abcd"
PH = "sk-sandgate-placeholder-0"
FINDER = Finder.for_values([("k", KEY, PH)], runs=True)
V = KEY.encode()


def outcome(run: Callable[[], bytes], body: bytes) -> str:
    """Refused, changed (what was sent is not ``body``) or the same: "refused", "changed", "same"."""
    try:
        out = run()
    except ScrubRefused:
        return "refused"
    return "same" if out == body else "changed"


class _Stream(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


def streamed(make: Callable[[], _Stream], pieces: list[bytes]) -> bytes:
    s = make()
    out = b"".join(s.feed(p) for p in pieces)
    return out + s.finish()


# -- a token stream's bytes read as a body's ------------------------------------------------------

LEADS = [
    b'data: {"status": "error"}\n\n',
    b": diagnostics follow\n\n",
    b'{"level": "error", "msg": "auth failed"}\n{"level": "info", "msg": "dump"}\n',
    b'0:"tok"\n1:"more"\n',
]
# What a key's encoding may be cut by: line ends (each ends a token stream's line), blanks, the
# joints of decodings that read across a line end (a soft break, HZ's, a continuation's, a word's).
SEPARATORS = [
    b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e",
    "\u0085".encode(), "\u2028".encode(), "\u2029".encode(), b" ", b"\n ", b"\n\t", b"=\n", b"=\r\n",
    b"= \n", b"~\n", b";\n", b"\\\n", b"\x1b[0m\n",
]  # fmt: skip
FILLERS = [
    b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
    b'{"a": "b"}\n',
    b"plain words here\n",
    b": ping\n\n",
    b"\n",
    b'0:"tok"\n',
    "\u4f60\u597d\uff0c\u4e16\u754c\n".encode(),
    b"x=1&y=%20z\n",
    b"Content-Transfer-Encoding: base64\n",
    b"event: e\ndata: x\n\n",
    b"\x1b[1mbold\x1b[0m\n",
    b"id_token=a.eyJhbGciOiJub25lIn0.\n",
    b"note +AGEAYgBj- done\n",
    b'{"t": "line\\nnext \\u00e9"}\n',
    b"=?utf-8?q?hi?=\n",
]


@st.composite
def key_pieces(draw: st.DrawFn) -> bytes:
    """The key in one of test_scrub's encodings, cut into pieces joined by separators."""
    encode, _ = ENCODE[draw(st.sampled_from(sorted(ENCODE)))]
    encoded: bytes = b"x" * draw(st.integers(0, 2)) + encode(V)
    cuts = sorted(draw(st.lists(st.integers(0, len(encoded)), max_size=3, unique=True)))
    pieces = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
    seps = [draw(st.sampled_from(SEPARATORS)) for _ in pieces[1:]]
    return pieces[0] + b"".join(s + p for s, p in zip(seps, pieces[1:], strict=True))


@st.composite
def token_bodies(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.one_of(st.sampled_from(FILLERS), key_pieces(), st.sampled_from(SEPARATORS)), max_size=6))
    return draw(st.sampled_from(LEADS)) + b"".join(parts)


def _readers(body: bytes, cuts: list[int]) -> dict[str, Callable[[], bytes]]:
    pieces = chunked(body, cuts)
    return {
        "whole": lambda: scrub_whole(body, FINDER, lambda _: None),
        "sniffed": lambda: streamed(lambda: SniffingScrubber(FINDER, lambda _: None), pieces),
        "sniffed by byte": lambda: streamed(lambda: SniffingScrubber(FINDER, lambda _: None), chunked(body, [*range(len(body))])),
        "labelled": lambda: streamed(lambda: EventScrubber(FINDER, lambda _: None, "mixed"), pieces),
        "sse": lambda: streamed(lambda: EventScrubber(FINDER, lambda _: None, "sse"), pieces),
    }  # fmt: skip


_PEM = base64.b64encode(b'{"api_key": "x' + V + b'"}')
_RS = b"\x1e".join(bytes([c]) for c in V)


@settings(max_examples=300, deadline=None)
@example(LEADS[0] + b"-----BEGIN KEY-----\n" + _PEM[:64] + b"\n" + _PEM[64:] + b"\n-----END KEY-----\n", [])
@example(LEADS[2] + b"key: " + _RS + b"\n", [5, 9])  # (red team 44: finding 5)
@example(LEADS[1] + b"key: " + "\u2028".join(KEY).encode() + b"\n", [])
# (The stream's last event declares base64: every byte before it is read so, the window too.)
@example(LEADS[0] + b"\n" + base64.b64encode(b"stored: " + V)[:40] + b"\n\n" + base64.b64encode(b"stored: " + V)[40:]
         + b"\n\nContent-Transfer-Encoding: base64\n", [])  # fmt: skip
@given(token_bodies(), st.lists(st.integers(min_value=0), max_size=8))
def test_a_token_stream_finds_whatever_scrub_field_finds_in_its_bytes(body: bytes, cuts: list[int]) -> None:
    """One-sided: the token readers read more than a body's reading (the texts they stitch by path)."""
    if outcome(lambda: scrub_field(body, FINDER, lambda _: None), body) == "same":
        return
    for name, run in _readers(body, cuts).items():
        assert outcome(run, body) != "same", name


# -- decodings opened before a stream's window -----------------------------------------------------


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _escaped(key: bytes) -> bytes:
    return b"".join(b"\\u%04x" % c for c in key)


def _utf7(pad: int, split: int) -> bytes:
    run = base64.b64encode(("x" * pad + KEY[:split]).encode("utf-16-be")).rstrip(b"=")
    return b"note: +" + run + b"-" + V[split:] + b" end\n"


def _jwt(pad: int, split: int) -> bytes:
    claims = b'{"pad": "' + b"x" * pad + b'", "sub": "' + _escaped(V) + b'"}'
    return b"id_token=" + _b64url(b'{"alg":"none"}') + b"." + _b64url(claims) + b".\n"


def _word(pad: int, split: int) -> bytes:
    return b"Subject: =?utf-8?b?" + base64.b64encode(b"x" * pad + _escaped(V)) + b"?=\n"


def _mime(pad: int, split: int) -> bytes:
    blob = base64.b64encode(b"x" * pad + V)
    return (b"--b1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + b"\r\n".join(blob[i : i + 8] for i in range(0, len(blob), 8)) + b"\r\n--b1--\r\n")  # fmt: skip


OPENED: dict[str, Callable[[int, int], bytes]] = {"utf7": _utf7, "jwt": _jwt, "word": _word, "mime": _mime}


@settings(max_examples=60, deadline=None)
@example("utf7", 6000, 31, b"", [4096 * i for i in range(1, 8)])  # (red team 44: finding 7)
@example("jwt", 20000, 0, b"", [4096 * i for i in range(1, 8)])
@given(
    st.sampled_from(sorted(OPENED)),
    st.integers(0, 16000),
    st.integers(0, len(KEY)),
    st.sampled_from([b"", b"text before\n", "\u4f60\u597d\n".encode()]),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_a_stream_finds_what_the_body_read_whole_finds_past_its_window(
    kind: str, pad: int, split: int, before: bytes, cuts: list[int]
) -> None:
    body = before + OPENED[kind](pad, split)
    if outcome(lambda: scrub_whole(body, FINDER, lambda _: None), body) == "same":
        return
    pieces = chunked(body, cuts)
    makers: dict[str, Callable[[], _Stream]] = {
        "body": lambda: BodyScrubber(FINDER, lambda _: None),
        "sniffed": lambda: SniffingScrubber(FINDER, lambda _: None),
    }
    for name, make in makers.items():
        assert outcome(functools.partial(streamed, make, pieces), body) != "same", name


# (Far enough back that a stream's window and what it holds, two windows, do not reach the opener;
# the key's last characters outside the UTF-7 run, so that no form of it is there whole.)
_FAR = {"utf7": (6000, 31), "jwt": (12000, 0), "word": (12000, 0), "mime": (6000, 0)}


def test_the_window_is_read_after_each_opener_kind_at_every_alignment() -> None:
    """Each kind, its opener farther back than a stream reaches, at each alignment of its units (a
    UTF-7 run's eight characters, base64's four) with the window's first byte."""
    for kind, make in OPENED.items():
        pad, split = _FAR[kind]
        for shift in range(8):
            body = make(pad + shift, split)
            for size in (1000, 4096):
                pieces = chunked(body, [*range(size, len(body), size)])
                got = outcome(functools.partial(streamed, lambda: BodyScrubber(FINDER, lambda _: None), pieces), body)
                assert got != "same", (kind, pad + shift, size)


def test_ordinary_json_lines_still_go_out_as_they_come() -> None:
    """The body reading holds nothing of an ordinary token stream: each event goes out when it ends."""
    s = EventScrubber(FINDER, lambda _: None, "mixed")
    for i in range(50):
        event = (
            b"data: " + json.dumps({"choices": [{"delta": {"content": f" tok{i} ```x = 1```\n"}}]}).encode() + b"\n\n"
        )
        assert s.feed(event) == event
    line = b'{"response": "a line of base64: QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="}\n'
    assert s.feed(line) == line
