"""WebSocket binary messages as a stream of their own (B13): a client that receives a file as
binary messages joins them whatever text messages come between (progress, acknowledgements). The
pure scrubber only (:class:`MessageScrubber`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import MessageScrubber, ScrubRefused
from proxy.core.values import Finder

VALUE = "sk-REAL-CANARY-9f8e7d6c5b4a"
PH = "sk-sandgate-openai-ph"
FINDER = Finder.for_values([("openai", VALUE, PH)])
A, B = VALUE[:11], VALUE[11:]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


# -- WebSocket binary messages, a stream of their own --------------------------------------------

Message = tuple[bool, list[bytes]]  # (binary, its fragments)


def _drive(s: MessageScrubber, messages: list[Message], out: list[tuple[int, bytes]]) -> None:
    """Feed ``messages`` fragment by fragment, as the relay does, collecting what goes out in
    ``out`` (kept by the caller: what went out before a refusal)."""
    for seq, (binary, fragments) in enumerate(messages):
        if binary:
            s.binary(seq)
        for frag in fragments:
            out += s.feed(frag, seq)
        out += s.end_segment()
    out += s.finish()


def relay(messages: list[Message]) -> list[tuple[int, bytes]]:
    """What :class:`MessageScrubber` lets out of ``messages``, fragment by fragment, as the relay
    drives it; checks it keeps the messages' order and completes each (nothing held at the end)."""
    s = MessageScrubber(FINDER, lambda _: None)
    out: list[tuple[int, bytes]] = []
    _drive(s, messages, out)
    assert [q for q, _ in out] == sorted(q for q, _ in out)
    assert not s.held_segments()
    return out


def joined_binary(out: list[tuple[int, bytes]], messages: list[Message]) -> bytes:
    return b"".join(d for q, d in out if messages[q][0])


PROGRESS = b'{"type": "progress", "sent": 1}'


@pytest.mark.parametrize(
    "messages",
    [
        [(True, [A.encode()]), (False, [PROGRESS]), (True, [B.encode()])],
        [(True, [b"file: " + A.encode()]), (False, [PROGRESS]), (False, [b"ack"]), (True, [B.encode() + b"\n"])],
        [(True, [b"x" * 5000, A[:5].encode(), A[5:].encode()]), (False, [PROGRESS]), (True, [B[:3].encode(), B[3:].encode()])],
        [(True, [b'{"k": "' + A.encode()]), (False, [PROGRESS]), (True, [B.encode() + b'"}'])],  # (a JSON file in pieces)
        [(True, [A.encode()]), (False, [b"x"]), (True, [b""]), (False, [b"y"]), (True, [B.encode()])],
    ],
    ids=["bare", "text-between", "fragmented", "json-file", "empty-binary-between"],
)  # fmt: skip
def test_a_value_split_over_binary_messages_with_text_between_is_refused(messages: list[Message]) -> None:
    with pytest.raises(ScrubRefused):
        relay(messages)


def test_binary_and_text_messages_without_a_value_go_out_unchanged_and_in_order() -> None:
    messages: list[Message] = [
        (True, [b"chunk one sk-"]),  # (ends with what begins a value: held until the next binary message)
        (False, [PROGRESS]),
        (False, [b"sk-REAL"]),
        (True, [b"NOT IT", b" more"]),
        (False, [b"done"]),
    ]
    out = relay(messages)
    for seq, (_, fragments) in enumerate(messages):
        assert b"".join(d for q, d in out if q == seq) == b"".join(fragments)


def test_a_value_inside_one_binary_message_is_replaced_not_refused() -> None:
    out = relay([(True, [b"a " + VALUE[:9].encode(), VALUE[9:].encode() + b" b"]), (False, [PROGRESS])])
    assert b"".join(d for q, d in out if q == 0) == b"a " + PH.encode() + b" b"


def test_text_messages_wait_behind_a_binary_message_that_may_begin_a_value() -> None:
    """A binary message ending in a value's first characters holds every message after it until the
    next binary message tells; the stream's end releases them."""
    s = MessageScrubber(FINDER, lambda _: None)
    s.binary(0)
    out = s.feed(b"data " + A.encode(), 0) + s.end_segment()
    out += s.feed(PROGRESS, 1) + s.end_segment()
    assert {0, 1} <= s.held_segments()
    assert all(q == 0 for q, _ in out)
    s.binary(2)
    out += s.feed(b"unrelated", 2) + s.end_segment()
    assert not s.held_segments()
    assert [q for q, _ in out] == sorted(q for q, _ in out)
    sent = {q: b"".join(d for p, d in out if p == q) for q in (0, 1, 2)}
    assert sent == {0: b"data " + A.encode(), 1: PROGRESS, 2: b"unrelated"}


@given(
    at=st.integers(1, len(VALUE) - 1),
    before=st.binary(max_size=40).filter(lambda b: b"sk" not in b.lower()),
    between=st.lists(st.sampled_from([PROGRESS, b"ack", b"", b"sk-", b"REAL"]), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_any_split_over_binary_messages_is_refused_before_the_agent_could_join_it(
    at: int, before: bytes, between: list[bytes], cuts: list[int]
) -> None:
    """A key split anywhere over two binary messages (each fragmented anyhow), text messages
    between: refused, and what went out of the binary messages never holds the key."""
    first, second = before + VALUE[:at].encode(), VALUE[at:].encode()
    messages: list[Message] = [(True, chunked(first, cuts)), *((False, [t]) for t in between),
                               (True, chunked(second, cuts))]  # fmt: skip
    s = MessageScrubber(FINDER, lambda _: None)
    out: list[tuple[int, bytes]] = []
    with pytest.raises(ScrubRefused):
        _drive(s, messages, out)
    assert VALUE.encode() not in joined_binary(out, messages)
