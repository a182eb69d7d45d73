"""What scrubbing a response costs: the pure scrubbers on their own, no network.

    .venv/bin/python bench/scrub.py

Prints one table: microseconds per response body (median of repeated runs) to scrub it of the real
values of 1, 5 and 256 secrets bound to the host (each value in its every form: see
proxy/core/values.py), for a small JSON answer, a 64 KiB answer scanned whole (Content-Length
kept) and the same 64 KiB streamed through the hold-back scrubber in 16 KiB pieces; and the body
with JSON escapes in it, which adds the decoded view. The goal (issue 14): a 64 KiB response of a
swapped request costs at most 0.1 ms more than one without a swap.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.core.scrub import BodyScrubber, scrub_field
from proxy.core.values import Finder


def per_call(fn: Callable[[], object], runs: int = 7, inner: int = 200) -> float:
    """Median over ``runs`` of the mean microseconds per call over ``inner`` calls."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(samples)


def finder(n: int) -> Finder:
    return Finder.for_values(
        (f"s{i}", f"sk-REAL-scrub-{i:04d}-0123456789abcdef", f"sk-sandgate-{i:04d}") for i in range(n)
    )


def streamed(f: Finder, body: bytes) -> None:
    s = BodyScrubber(f, lambda _: None)
    for i in range(0, len(body), 16384):
        s.feed(body[i : i + 16384])
    s.finish()


def main() -> None:
    small = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"message":{"content":"ok"}}]}'
    big = os.urandom(32768).hex().encode()  # 64 KiB that never holds a value
    escaped = big[:60000] + b'{"a":"\\u0041\\/x"}' * 300
    sets = {n: finder(n) for n in (1, 5, 256)}
    rows = [
        ("small JSON answer, whole", lambda f: scrub_field(small, f, lambda _: None)),
        ("64 KiB, whole (Content-Length kept)", lambda f: scrub_field(big, f, lambda _: None)),
        ("64 KiB, streamed in 16 KiB pieces", lambda f: streamed(f, big)),
        ("64 KiB with JSON escapes, whole", lambda f: scrub_field(escaped, f, lambda _: None)),
    ]
    print("| body | 1 secret | 5 secrets | 256 secrets |")
    print("|---|---|---|---|")
    for name, fn in rows:
        cells = [f"{per_call(lambda f=f, fn=fn: fn(f)):.1f} µs" for f in sets.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nPatterns searched: {', '.join(f'{n} secrets: {len(f.patterns)}' for n, f in sets.items())}.")


if __name__ == "__main__":
    main()
