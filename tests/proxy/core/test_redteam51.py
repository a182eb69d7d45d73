"""Red team 51, on the compiled per-request modules (``proxy.native``), given only the invariant
"compiled, the modules decide exactly as their Python source does": no leak found, two ways the
compiled code decided otherwise.

- Checks of what a byte is preceded by, run on texts of 8 KiB or more, sliced ``data[i - 1 : i]``
  at ``i = 0``: Python gives ``b""``, mypyc's slice of bytes raises ``SystemError`` when the end is
  before the start. Any body, SSE event, WebSocket message or request head of 8 KiB or more that
  began with ``?`` (holding an ``=``), or with a ``J`` in its first three bytes (holding a ``.``):
  ``{"Jobs": ...}``, was cut (fail closed, but a legitimate answer lost).
- JSON nested ~1,000 deep: Python ran out of stack reading its leaves (an internal error, the
  connection cut); compiled, the recursion has no limit and it was read. Now refused both ways
  past JSON_DEPTH, with the refusal the event's reader gives what it cannot read.

Each test failed (compiled) before the fix; they run against whichever build is in use.
"""

from __future__ import annotations

import json

import pytest

from proxy.core.scrub import JSON_DEPTH, BodyScrubber, EventScrubber, ScrubRefused, first_hit, views
from tests.proxy.core.test_spread import FINDER, VALUE

LONG = b"c" * 9000


@pytest.mark.parametrize("start", [b"?a=1 ", b"Jobs done. ", b'{"Jobs": 1.5, ', b"xxJ. ", b"=?"])
def test_rt51_a_long_text_that_begins_with_a_question_mark_or_a_j_is_read(start: bytes) -> None:
    text = start + LONG
    assert views(text) is not None
    s = BodyScrubber(FINDER, lambda _: None)
    assert s.feed(text) + s.finish() == text
    assert first_hit(FINDER, [b"/Jobs/list.json", b"Cookie", b"s=" + LONG]) is None
    hits: list[str] = []  # (and a value after it is still found)
    s = BodyScrubber(FINDER, hits.append)
    assert VALUE.encode() not in s.feed(text + b" " + VALUE.encode()) + s.finish() and hits


def _sse(doc: object) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def _nested(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("depth", [JSON_DEPTH + 10, 1000])
def test_rt51_json_nested_deeper_than_any_api_is_refused(depth: int) -> None:
    s = EventScrubber(FINDER, lambda _: None)
    with pytest.raises(ScrubRefused, match="nested too deep"):
        s.feed(_sse({"choices": [{"delta": {"content": _nested(depth, "hello")}}]}))
        s.finish()


def test_rt51_json_nested_as_deep_as_answers_are_is_read() -> None:
    event = _sse({"choices": [{"delta": {"content": _nested(JSON_DEPTH - 10, "hello")}}]})
    s = EventScrubber(FINDER, lambda _: None)
    assert s.feed(event) + s.finish() == event
