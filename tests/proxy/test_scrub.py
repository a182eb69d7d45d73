"""Streaming scrubbing and decoding (B12, F06): matches across any chunk split, no needless delay."""

from __future__ import annotations

import base64
import gzip
import zlib

import brotli
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.scrub import DecodeError, ScrubSpec, StreamDecoder, StreamScrubber, patterns_for, scrub_text

REAL, PH = "sk-REAL-0123456789abcdef", "sk-PH-openai-xyz"
PATTERNS = ScrubSpec(patterns_for([("openai", REAL)], {"openai": PH}))


def run(chunks: list[bytes]) -> tuple[bytes, list[str]]:
    hits: list[str] = []
    s = StreamScrubber(PATTERNS, hits.append)
    return b"".join(s.feed(c) for c in chunks) + s.flush(), hits


@given(st.binary(max_size=200), st.binary(max_size=200), st.lists(st.integers(0, 500), max_size=6))
def test_b12_a_real_value_is_replaced_however_the_stream_is_split(before: bytes, after: bytes, cuts: list[int]) -> None:
    body = before + REAL.encode() + after + base64.b64encode(REAL.encode())
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    out, hits = run(chunks)
    assert REAL.encode() not in out and base64.b64encode(REAL.encode()).rstrip(b"=") not in out
    assert PH.encode() in out and len(hits) >= 2


def test_sse_events_are_not_held_back() -> None:
    s = StreamScrubber(PATTERNS, lambda _: None)
    event = b'data: {"token": "hi"}\n\n'
    assert s.feed(event) == event  # nothing that could start a secret stays behind


def test_only_a_possible_secret_prefix_is_held_back() -> None:
    s = StreamScrubber(PATTERNS, lambda _: None)
    assert s.feed(b"data: sk-RE") == b"data: "
    assert s.feed(REAL.encode()[5:] + b"\n\n") == PH.encode() + b"\n\n"


def test_header_values_are_scrubbed() -> None:
    hits: list[str] = []
    assert scrub_text(f'Bearer error="{REAL}"', PATTERNS, hits.append) == f'Bearer error="{PH}"' and hits == ["openai"]


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),
        ("br", brotli.compress),
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw", "br"],
)
def test_decoders_stream_every_encoding(encoding: str, compress: object) -> None:
    data = b"prefix " + REAL.encode() + b" suffix" * 1000
    blob = compress(data)  # type: ignore[operator]
    d = StreamDecoder(encoding)
    out = b"".join(d.feed(blob[i : i + 7]) for i in range(0, len(blob), 7)) + d.flush()
    assert out == data


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("br", brotli.compress)])
def test_f06_decompression_bombs_stop_at_the_cap(encoding: str, compress: object) -> None:
    bomb = compress(b"\0" * (64 << 20))  # type: ignore[operator]
    d = StreamDecoder(encoding, max_output=1 << 20)
    with pytest.raises(DecodeError):
        for i in range(0, len(bomb), 4096):
            d.feed(bomb[i : i + 4096])
