"""What scrubbing a response costs: the pure scrubbers on their own, no network.

    .venv/bin/python bench/scrub.py

Prints one table: microseconds per response body to scrub it of the real values of 1, 5 and 256
secrets bound to the host (each value in its every form: see proxy/core/values.py). The search
engine's speed depends on the values (an automaton's prefilter can fail on hex or base64 text), so
each cell is over 8 different sets of random values: the median, and the slowest in brackets.
Bodies: a small JSON answer; 64 KiB of JSON text, base64 and hex, each scanned whole
(Content-Length kept); 64 KiB of JSON text streamed through the hold-back scrubber in 16 KiB
pieces; 64 KiB with JSON escapes in it (which adds the decoded view). The goal (issue 14): a 64 KiB
response of a swapped request costs at most 0.1 ms more than one without a swap.
"""

from __future__ import annotations

import base64
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.core.scrub import BodyScrubber, scrub_field
from proxy.core.values import Finder


def per_call(fn: Callable[[], object], runs: int = 5, inner: int = 20) -> float:
    """Median over ``runs`` of the mean microseconds per call over ``inner`` calls."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(samples)


def finder(n: int, seed: int) -> Finder:
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_"
    return Finder.for_values(
        (f"s{i}", "sk-" + "".join(rnd.choices(alphabet, k=40)), f"sk-sandgate-{i:04d}") for i in range(n)
    )


def streamed(f: Finder, body: bytes) -> None:
    s = BodyScrubber(f, lambda _: None)
    for i in range(0, len(body), 16384):
        s.feed(body[i : i + 16384])
    s.finish()


def main() -> None:
    rnd = random.Random(7)
    blob = rnd.randbytes(49152)
    small = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"message":{"content":"ok"}}]}'
    text = (b'{"index": 3, "delta": {"content": "The quick brown fox jumps over the lazy dog."}}\n' * 900)[:65536]
    b64 = base64.b64encode(blob)[:65536]
    hexed = blob.hex().encode()[:65536]
    escaped = text[:60000] + b'{"a":"\\u0041\\/x"}' * 300
    rows: list[tuple[str, Callable[[Finder], object]]] = [
        ("small JSON answer, whole", lambda f: scrub_field(small, f, lambda _: None)),
        ("64 KiB JSON text, whole", lambda f: scrub_field(text, f, lambda _: None)),
        ("64 KiB base64, whole", lambda f: scrub_field(b64, f, lambda _: None)),
        ("64 KiB hex, whole", lambda f: scrub_field(hexed, f, lambda _: None)),
        ("64 KiB JSON text, streamed in 16 KiB pieces", lambda f: streamed(f, text)),
        ("64 KiB JSON with escapes, whole", lambda f: scrub_field(escaped, f, lambda _: None)),
    ]
    counts = (1, 5, 256)
    sets = {n: [finder(n, seed) for seed in range(8)] for n in counts}
    print("| body | " + " | ".join(f"{n} secret{'s' if n > 1 else ''}" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for name, fn in rows:
        cells = []
        for n in counts:
            times = [per_call(lambda f=f, fn=fn: fn(f)) for f in sets[n]]
            cells.append(f"{statistics.median(times):.0f} µs ({max(times):.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        f"\nPatterns searched: {', '.join(f'{n} secrets: {len(sets[n][0].patterns)}' for n in counts)}. "
        "Engines picked (find loop for encoded input) in the 8 sets: "
        + ", ".join(f"{n} secrets: {sum(f.loop_for_large for f in sets[n])}" for n in counts)
        + "."
    )


if __name__ == "__main__":
    main()
