"""Line protocols of typed parts (B13): the Vercel AI SDK's data stream (``0:"<text>"``, one part
a line, in a ``text/plain`` body), read as JSON lines whose type code is an output, as its client
appends each kind's texts. The pure scrubbers only."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import EventScrubber, ScrubRefused, SniffingScrubber, scrub_whole
from proxy.core.values import Finder

VALUE = "sk-REAL-CANARY-9f8e7d6c5b4a"
PH = "sk-sandgate-openai-ph"
FINDER = Finder.for_values([("openai", VALUE, PH)])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


def sniffed(body: bytes, cuts: list[int] | None = None) -> bytes:
    """What the agent gets of a ``text/plain`` body streamed in pieces cut at ``cuts``."""
    s = SniffingScrubber(FINDER, lambda _: None)
    return b"".join(s.feed(c) for c in chunked(body, cuts or [])) + s.finish()


def every_reader(body: bytes, cuts: list[int] | None = None) -> list[bytes]:
    """The body through each reader that may get it: sniffed (streamed, and whole), and as a
    labelled token stream (``X-Vercel-AI-Data-Stream``, or an NDJSON label)."""
    out = [sniffed(body, cuts), scrub_whole(body, FINDER, lambda _: None)]
    for kind in ("mixed", "lines"):
        s = EventScrubber(FINDER, lambda _: None, kind)
        out.append(b"".join(s.feed(c) for c in chunked(body, cuts or [])) + s.finish())
    return out


def refused_by_every_reader(body: bytes, cuts: list[int] | None = None) -> None:
    for reader in (
        lambda: sniffed(body, cuts),
        lambda: scrub_whole(body, FINDER, lambda _: None),
        *(lambda k=k: _events(k, body, cuts) for k in ("mixed", "lines")),
    ):
        with pytest.raises(ScrubRefused):
            reader()


def _events(kind: str, body: bytes, cuts: list[int] | None) -> bytes:
    s = EventScrubber(FINDER, lambda _: None, kind)
    return b"".join(s.feed(c) for c in chunked(body, cuts or [])) + s.finish()


def lines(*parts: bytes) -> bytes:
    return b"".join(p + b"\n" for p in parts)


def text(code: str, t: str, blank: str = "") -> bytes:
    return f"{code}:{blank}{json.dumps(t)}".encode()


START = b'f:{"messageId":"msg-1"}'
FINISH = (b'e:{"finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"isContinued":false}',
          b'd:{"finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2}}')  # fmt: skip
A, B = VALUE[:11], VALUE[11:]

# -- the AI SDK data stream: a value split over two parts of one kind ------------------------------

SPLIT = [
    ("text-parts", lines(START, text("0", f"Your key: {A}"), text("0", B), *FINISH)),
    ("blanks-after-the-code", lines(START, text("0", f"key {A}", " "), text("0", B, "  "), *FINISH)),
    ("reasoning-between", lines(START, text("0", A), text("g", "let me think"), text("g", " more"), text("0", B))),
    ("tool-call-between", lines(
        START, text("0", A),
        b'9:{"toolCallId":"call_1","toolName":"search","args":{"q":"x"}}',
        b'a:{"toolCallId":"call_1","result":"done"}',
        text("0", B), *FINISH)),
    ("reasoning-parts", lines(START, text("g", A), text("0", "visible text"), text("g", B))),
    ("tool-argument-deltas", lines(
        START, b'b:{"toolCallId":"call_1","toolName":"search"}',
        b'c:{"toolCallId":"call_1","argsTextDelta":"{\\"key\\": \\"' + A.encode() + b'"}',
        b'c:{"toolCallId":"call_2","argsTextDelta":"{}"}',
        b'c:{"toolCallId":"call_1","argsTextDelta":"' + B.encode() + b'\\"}"}')),
    ("after-prose-lines", b"Here is the stream:\n\n" + lines(text("0", A), text("0", B))),
    ("only-two-parts", lines(text("0", A), text("0", B))),
    ("crlf", lines(START, text("0", A), text("0", B)).replace(b"\n", b"\r\n")),
]  # fmt: skip


@pytest.mark.parametrize("body", [b for _, b in SPLIT], ids=[i for i, _ in SPLIT])
def test_a_value_split_over_two_parts_of_a_kind_is_refused(body: bytes) -> None:
    """``processDataStream`` JSON-parses each part and appends the texts of each kind (text,
    reasoning, a call's argument deltas): a value split over two parts of one kind, whatever other
    kinds come between, is refused by every reader the body may meet, streamed or whole."""
    refused_by_every_reader(body)
    refused_by_every_reader(body, [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144])  # (line starts cut too)


@given(
    at=st.integers(1, len(VALUE) - 1),
    code=st.sampled_from(["0", "g", "3"]),
    between=st.lists(
        st.sampled_from([text("g", "hmm"), text("2", "x"), b'8:[{"a":"b"}]', b"d:{}", b"e:{}"]), max_size=3
    ),
    blank=st.sampled_from(["", " ", "\t"]),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
@settings(max_examples=300, deadline=None)
def test_any_split_of_a_value_over_two_parts_is_refused_or_cut(
    at: int, code: str, between: list[bytes], blank: str, eol: bytes, cuts: list[int]
) -> None:
    """A key split anywhere over two parts of a kind, parts of other kinds between, the body cut
    anywhere: refused -- and whatever went out before the refusal never holds the key's second
    half after its first, as the client would join them."""
    between = [p for p in between if not p.startswith(code.encode())]
    body = eol.join([START, text(code, f"key: {VALUE[:at]}", blank), *between, text(code, VALUE[at:], blank), b""])
    s = SniffingScrubber(FINDER, lambda _: None)
    sent = b""
    with pytest.raises(ScrubRefused):
        for c in chunked(body, cuts):
            sent += s.feed(c)
        sent += s.finish()
    joined = "".join(json.loads(ln[2:]) for ln in sent.decode().splitlines() if ln.startswith(f"{code}:") and
                     ln.endswith('"'))  # fmt: skip
    assert VALUE not in joined
    with pytest.raises(ScrubRefused):
        scrub_whole(body, FINDER, lambda _: None)


# -- what must pass unchanged --------------------------------------------------------------------

PLAIN = [
    (
        "an-ai-sdk-stream",
        lines(
            START,
            text("0", "Hello"),
            text("0", " sk-"),
            text("g", "sk-"),
            text("0", "world"),
            b'9:{"toolCallId":"c","toolName":"t","args":{"k":"sk-RE"}}',
            *FINISH,
        ),
    ),
    ("prose", b"Dear user,\nthe key sk- prefix is for secret keys.\nOK\nThanks\n"),
    ("yaml-short-keys", b'id: "abc"\nok: "yes"\nnm: ["a", "b"]\nx: {"y": "sk-REAL"}\n'),
    ("qa-lines", b'Q: "What is sk-?"\nA: "A prefix."\nQ: "And sk-RE?"\nA: "Nothing."\n'),
    ("log-lines", b'2026-12-03 INFO a:"b"\nE1:{"code": 7}\nE2:{"code": "sk-"}\nW:["x"]\n'),
    ("csv", b"a,b,c\n1,2,3\nsk-,REAL,x\n"),
    ("a-part-line-alone", b'Some text\n0:"sk-REAL-CAN"\nmore text\n'),
]


@pytest.mark.parametrize("body", [b for _, b in PLAIN], ids=[i for i, _ in PLAIN])
def test_ordinary_plain_text_and_part_streams_without_a_value_pass_unchanged(body: bytes) -> None:
    for out in every_reader(body) + every_reader(body, [1, 2, 3, 7, 11, 29, 60]):
        assert out == body


@given(body=st.text(alphabet=st.sampled_from(list('ab0:"{}[] \n\t-skREAL')), max_size=300),
       cuts=st.lists(st.integers(min_value=0), max_size=8))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_any_text_without_a_value_passes_unchanged(body: str, cuts: list[int]) -> None:
    """Text made of what part lines are made of (codes, colons, quotes, brackets, the key's
    letters), however cut: every byte goes out as it came."""
    data = body.encode()
    assert sniffed(data, cuts) == data
    assert scrub_whole(data, FINDER, lambda _: None) == data
