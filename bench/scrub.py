"""What scrubbing a response costs: the pure scrubbers on their own, no network.

    .venv/bin/python bench/scrub.py [WORD...]   (only the rows whose name holds one of the words)

Prints one table: microseconds per response body to scrub it of the real values of 1, 5 and 256
secrets bound to the host (each value in its every form: see proxy/core/values.py). The search
engine's speed depends on the values (an automaton's prefilter can fail on hex or base64 text), so
each cell is over 8 different sets of random values: the median, and the slowest in brackets.
Bodies: a small JSON answer; a chat completion as a model answers most requests (1.6 KiB of
markdown and code, JSON-escaped); 64 KiB of JSON text, base64 and hex, each scanned whole
(Content-Length kept); 64 KiB of JSON text streamed through the hold-back scrubber in 16 KiB
pieces; 64 KiB with JSON escapes in it (which adds the decoded view); and token streams, per event:
200 SSE events as OpenAI's chat completions and Anthropic's messages stream them, each event's
JSON read and its texts stitched by path as their clients stitch them; and 200 messages of an AWS
event-stream as Bedrock's InvokeModelWithResponseStream sends them (the model's chunk in base64 in
a JSON payload, two CRC32s a message); 200 lines of the Vercel AI SDK's data stream (``0:"..."``,
in a ``text/plain`` body the sniffer tells); 200 WebSocket messages, a file's binary pieces with
JSON text messages between (each binary one checked twice: with every message, and with the
binary ones); 64 KiB of plain text with lines, which the sniffer reads; and 64 KiB of a command's
coloured output (an escape sequence every ~20 bytes), whole and streamed. The goal (issue 14): a 64 KiB
response of a swapped request costs at most 0.1 ms more than one without a swap.
"""

from __future__ import annotations

import base64
import json
import random
import statistics
import string
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.core.eventstream import FrameScrubber
from proxy.core.scrub import BodyScrubber, EventScrubber, MessageScrubber, SniffingScrubber, scrub_field
from proxy.core.values import Finder

EVENTS = 200  # a token stream's events, for the per-event rows
_FRENCH = (
    "Le cœur a ses raisons que la raison ne connaît point. Où êtes-vous allé cet été ? "
    "C'était déjà très agréable, à côté du lac, près de la forêt. "
)


def per_call(fn: Callable[[], object], runs: int = 5, inner: int = 20) -> float:
    """Median over ``runs`` of the mean microseconds per call over ``inner`` calls."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(samples)


# An assistant's answer as a chat API returns it (JSON-escaped): prose, markdown, a code block, a link.
_ANSWER = """## Setting up the client

Is the key read from the environment? **Yes**: the SDK reads `OPENAI_API_KEY` first; see
https://platform.openai.com/docs/quickstart?lang=python&step=2 for the details.

- Install the package: `pip install openai`
- Create a client; the *default* timeout is 600 s.

```python
import os
from openai import OpenAI

client = OpenAI(timeout=30.0, max_retries=2)
resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
print(resp.choices[0].message.content)  # "Hello!"
```

Then run it with `python app.py`; if it fails with a 401, the key is wrong.
"""


def finder(n: int, seed: int) -> Finder:
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_"
    return Finder.for_values(
        ((f"s{i}", "sk-" + "".join(rnd.choices(alphabet, k=40)), f"sk-sandgate-{i:04d}") for i in range(n)),
        runs=True,  # (a bound host's finder, as the sidecar builds it: forms and runs)
    )


def streamed(f: Finder, body: bytes) -> None:
    s = BodyScrubber(f, lambda _: None)
    for i in range(0, len(body), 16384):
        s.feed(body[i : i + 16384])
    s.finish()


def _chunks(n: int) -> tuple[list[bytes], list[bytes]]:
    """``n`` SSE events as OpenAI's chat completions stream them (five string fields, one the token)
    and as Anthropic's messages stream does (an event line, a text delta)."""
    openai = [
        b"data: "
        + json.dumps(
            {"id": "chatcmpl-AbC123xyz", "object": "chat.completion.chunk", "created": 1733200000,
             "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_abc123",
             "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "logprobs": None, "finish_reason": None}]},
            separators=(",", ":"),
        ).encode()
        + b"\n\n"
        for i in range(n)
    ]  # fmt: skip
    anthropic = [
        b"event: content_block_delta\ndata: "
        + json.dumps(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" tok{i}"}}
        ).encode()
        + b"\n\n"
        for i in range(n)
    ]
    return openai, anthropic


def _bedrock(n: int) -> list[bytes]:
    """``n`` event-stream messages as Bedrock's InvokeModelWithResponseStream sends them."""
    out = []
    for i in range(n):
        chunk = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" tok{i}"}}
        payload = json.dumps({"bytes": base64.b64encode(json.dumps(chunk).encode()).decode(), "p": "abcdefghij"})
        block = b"".join(
            bytes([len(k)]) + k + b"\x07" + struct.pack(">H", len(v)) + v
            for k, v in (
                (b":event-type", b"chunk"),
                (b":content-type", b"application/json"),
                (b":message-type", b"event"),
            )
        )
        prelude = struct.pack(">II", 16 + len(block) + len(payload), len(block))
        head = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + payload.encode()
        out.append(head + struct.pack(">I", zlib.crc32(head)))
    return out


def framed_stream(f: Finder, messages: list[bytes]) -> None:
    s = FrameScrubber(f, lambda _: None)
    for m in messages:
        s.feed(m)
    s.finish()


def token_stream(f: Finder, events: list[bytes]) -> None:
    s = EventScrubber(f, lambda _: None)
    for e in events:
        s.feed(e)
    s.finish()


def _ai_sdk(n: int) -> bytes:
    """``n`` parts of the Vercel AI SDK's data stream (``text/plain``): text deltas, a reasoning
    part every tenth."""
    parts = [b'f:{"messageId":"msg-AbC123xyz"}']
    parts += [(b"g:" if i % 10 == 9 else b"0:") + json.dumps(f" tok{i}").encode() for i in range(n - 1)]
    return b"".join(p + b"\n" for p in parts)


def sniffed(f: Finder, pieces: list[bytes]) -> None:
    s = SniffingScrubber(f, lambda _: None)
    for p in pieces:
        s.feed(p)
    s.finish()


def _file_messages(n: int) -> list[tuple[bool, bytes]]:
    """``n`` WebSocket messages: a file in 4 KiB binary messages, a JSON progress message (text)
    after every fourth."""
    rnd = random.Random(3)
    out: list[tuple[bool, bytes]] = []
    while len(out) < n:
        out.append((True, rnd.randbytes(4096)))
        if len(out) % 5 == 4:
            out.append((False, json.dumps({"type": "progress", "sent": len(out)}).encode()))
    return out[:n]


def websocket(f: Finder, messages: list[tuple[bool, bytes]]) -> None:
    s = MessageScrubber(f, lambda _: None)
    for seq, (binary, data) in enumerate(messages):
        if binary:
            s.binary(seq)
        s.feed(data, seq)
        s.end_segment()
    s.finish()


def main() -> None:
    rnd = random.Random(7)
    blob = rnd.randbytes(49152)
    small = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"message":{"content":"ok"}}]}'
    chat = json.dumps(  # (a model's answer as an agent gets most of them: ~1.6 KiB, markdown and code)
        {"id": "chatcmpl-AbC123xyz", "object": "chat.completion", "created": 1733200000, "model": "gpt-4o-2024-08-06",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": _ANSWER * 2, "refusal": None},
                      "logprobs": None, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 12, "completion_tokens": 300, "total_tokens": 312}, "system_fingerprint": "fp_abc"}
    ).encode()  # fmt: skip
    text = (b'{"index": 3, "delta": {"content": "The quick brown fox jumps over the lazy dog."}}\n' * 900)[:65536]
    b64 = base64.b64encode(blob)[:65536]
    hexed = blob.hex().encode()[:65536]
    escaped = text[:60000] + b'{"a":"\\u0041\\/x"}' * 300
    answer = json.dumps({"content": (_ANSWER * 100)[:60000]}).encode()  # (\n, \" escapes; =, ?, *, ;)
    binary = rnd.randbytes(65536)
    # (text in other scripts, as a model answers in them: every byte above 0x7F brings the EBCDIC and
    # cleaning-client views; fullwidth punctuation is no letter, so no NFKC)
    unicode_text = json.dumps(
        {"content": ("Größe — “quoted” … Привет, мир. 你好\uff0c世界\uff1a这是一个测试。" * 900)[:30000]},
        ensure_ascii=False,
    ).encode()[:65536]
    # (accented Latin letters: every one brings the view of a client that strips accents, NFKD)
    french = json.dumps({"content": (_FRENCH * 400)[:40000]}, ensure_ascii=False).encode()[:65536]
    openai_french = [
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": w + " "}}]}, ensure_ascii=False).encode()
        + b"\n\n"
        for w in (_FRENCH * 20).split()[:EVENTS]
    ]  # fmt: skip
    openai, anthropic = _chunks(EVENTS)
    bedrock = _bedrock(EVENTS)
    ai_sdk = _ai_sdk(EVENTS)
    ai_sdk_parts = [ln + b"\n" for ln in ai_sdk.splitlines()]
    prose = ((_ANSWER + "\n") * 40).encode()[:65536]
    files = _file_messages(EVENTS)
    # (a command's coloured output, as an agent's harness relays it: a sequence every ~20 bytes)
    log = b"".join(
        b"\x1b[2m2026-12-05T12:00:%02d\x1b[0m \x1b[32mINFO\x1b[0m worker[%d] \x1b[1mjob %d\x1b[22m done in %d ms\n"
        % (i % 60, i % 8, i, i % 97)
        for i in range(1200)
    )[:65536]
    rows: list[tuple[str, Callable[[Finder], object]]] = [
        ("small JSON answer, whole", lambda f: scrub_field(small, f, lambda _: None)),
        ("chat completion, 1.6 KiB of markdown and code, whole", lambda f: scrub_field(chat, f, lambda _: None)),
        ("64 KiB JSON text, whole", lambda f: scrub_field(text, f, lambda _: None)),
        ("64 KiB base64, whole", lambda f: scrub_field(b64, f, lambda _: None)),
        ("64 KiB hex, whole", lambda f: scrub_field(hexed, f, lambda _: None)),
        ("64 KiB JSON text, streamed in 16 KiB pieces", lambda f: streamed(f, text)),
        ("64 KiB JSON with escapes, whole", lambda f: scrub_field(escaped, f, lambda _: None)),
        ("64 KiB LLM answer (markdown, code) in JSON, whole", lambda f: scrub_field(answer, f, lambda _: None)),
        ("64 KiB LLM answer in JSON, streamed in 16 KiB pieces", lambda f: streamed(f, answer)),
        ("64 KiB binary (an image, a model file), streamed in 16 KiB pieces", lambda f: streamed(f, binary)),
        ("64 KiB UTF-8 answer in other scripts in JSON, whole", lambda f: scrub_field(unicode_text, f, lambda _: None)),
        ("64 KiB French answer in JSON (accented letters), whole", lambda f: scrub_field(french, f, lambda _: None)),
        (f"token stream, per event: {EVENTS} OpenAI chat chunks (SSE)", lambda f: token_stream(f, openai)),
        (f"token stream, per event: {EVENTS} OpenAI chat chunks of French words (SSE)",
         lambda f: token_stream(f, openai_french)),
        (f"token stream, per event: {EVENTS} Anthropic text deltas (SSE)", lambda f: token_stream(f, anthropic)),
        (f"token stream, per event: {EVENTS} Bedrock messages (AWS event-stream)", lambda f: framed_stream(f, bedrock)),
        (f"token stream, per event: {EVENTS} AI SDK data stream parts (text/plain, sniffed)",
         lambda f: sniffed(f, ai_sdk_parts)),
        (f"WebSocket, per message: {EVENTS} messages, a file's 4 KiB binary ones, JSON text between",
         lambda f: websocket(f, files)),
        ("64 KiB plain text (markdown lines), sniffed, streamed in 16 KiB pieces",
         lambda f: sniffed(f, [prose[i : i + 16384] for i in range(0, len(prose), 16384)])),
        ("64 KiB coloured log (ANSI sequences), whole", lambda f: scrub_field(log, f, lambda _: None)),
        ("64 KiB coloured log (ANSI sequences), streamed in 16 KiB pieces", lambda f: streamed(f, log)),
    ]  # fmt: skip
    per_event = {name for name, _ in rows if "per event" in name or "per message" in name}
    if sys.argv[1:]:  # (only the rows whose name holds one of the words given)
        rows = [(name, fn) for name, fn in rows if any(w in name for w in sys.argv[1:])]
    counts = (1, 5, 256)
    sets = {n: [finder(n, seed) for seed in range(8)] for n in counts}
    print("| body | " + " | ".join(f"{n} secret{'s' if n > 1 else ''}" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for name, fn in rows:
        cells = []
        for n in counts:
            inner = 2 if name in per_event or "binary" in name else 20  # (those cost milliseconds)
            times = [per_call(lambda f=f, fn=fn: fn(f), inner=inner) for f in sets[n]]
            if name in per_event:
                times = [t / EVENTS for t in times]
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
