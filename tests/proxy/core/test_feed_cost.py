"""A read of one byte costs about what a byte of a larger read costs: no scrubber searches again,
on every read, what it has searched before.

An upstream chooses how it cuts its answer: chunked framing hands the scrubber each chunk as its own
read, so a one-byte chunk (six bytes on the wire) is a read. An event, a line or a held tail that
was searched from its start on every read made the work per event grow with its square: 17.8 s of
the sidecar's only event loop for one 64 KiB SSE event sent a byte at a time (red team 21). Each
test feeds the same stream in N and in 4N one-byte reads and compares the cost per read: about 1 when
the work is linear, 4 when it is quadratic. (Process time, the least of three runs; a ratio, not a
speed target.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from proxy.core.scrub import BodyScrubber, EventScrubber, SegmentedScrubber, SniffingScrubber, scrub_whole
from tests.proxy.core.test_spread import FINDER, V

Feed = Callable[[bytes], object]


def _per_read(make: Callable[[], Feed], prefix: bytes, cycle: bytes, n: int) -> float:
    """Process time a read, feeding ``prefix`` then ``n`` reads, the bytes of ``cycle`` in turn."""
    best = float("inf")
    reads = [cycle[i % len(cycle) : i % len(cycle) + 1] for i in range(n)]
    for _ in range(3):
        feed = make()
        feed(prefix)
        t = time.process_time()
        for byte in reads:
            feed(byte)
        best = min(best, time.process_time() - t)
    return best / n


def _linear(make: Callable[[], Feed], prefix: bytes, cycle: bytes, n: int) -> None:
    small, large = _per_read(make, prefix, cycle, n), _per_read(make, prefix, cycle, 4 * n)
    assert large < 2.2 * small, f"{large * 1e6:.1f} us a read at {4 * n} reads, {small * 1e6:.1f} at {n}"


def _events(kind: str) -> Feed:
    return EventScrubber(FINDER, lambda _: None, kind).feed


@pytest.mark.parametrize(("kind", "prefix"), [("sse", b"data: "), ("lines", b'{"a":"'), ("mixed", b"data: ")])
def test_an_event_sent_a_byte_at_a_time_costs_linear_work(kind: str, prefix: bytes) -> None:
    _linear(lambda: _events(kind), prefix, b"a", 4000)


def test_a_sniffed_body_sent_a_byte_at_a_time_costs_linear_work() -> None:
    _linear(lambda: SniffingScrubber(FINDER, lambda _: None).feed, b'{"a":"', b"a", 4000)


def test_a_held_body_sent_a_byte_at_a_time_costs_linear_work() -> None:
    """A body whose end could begin a value, spread with filler (held until it is refused or not),
    grown a byte at a time."""
    _linear(lambda: BodyScrubber(FINDER, lambda _: None).feed, b"the key is " + V[:5], b"\x1b[m", 1500)


def test_a_held_message_stream_sent_a_byte_at_a_time_costs_linear_work() -> None:
    def make() -> Feed:
        s = SegmentedScrubber(FINDER, lambda _: None, replace=False)
        return lambda b: s.feed(b, 0)

    _linear(make, b"the key is " + V[:5], b"\x1b[m", 1500)


def _whole_cost(data: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        scrub_whole(data, FINDER, lambda _: None)
        best = min(best, time.process_time() - t)
    return best


@pytest.mark.parametrize("opener", ["\u009d", "\u0090", "\u009b"])
def test_unterminated_c1_sequences_cost_linear_work(opener: str) -> None:
    """Red team 23: a body of C1 strings (OSC, DCS) never terminated made the skeleton scan from
    each opener to the end of the body (64 KiB: 49 s of the loop). A body 4 times as long costs
    about 4 times as much."""
    unit = (opener + "ab").encode()
    small, large = _whole_cost(unit * 2000), _whole_cost(unit * 8000)
    assert large < 4 * 2.2 * small, f"{large * 1e3:.1f} ms for 4x the bytes, {small * 1e3:.1f} ms"
