"""AWS event-stream bodies (Bedrock's token streams) toward the agent: read message by message, as
botocore and the SDKs read them (invariant 1: no real value back to the agent).

The messages here are built as botocore's ``EventStreamMessage`` encodes them (prelude, typed
headers, payload, two CRC32s) and read back the way a client does: the payloads, then Bedrock's
``bytes`` (base64 of the model's chunk), then ``delta.text`` stitched across messages.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.eventstream import FramedOr, FrameScrubber, begins_framed, scrub_body
from proxy.core.scrub import EventScrubber, ScrubRefused, SniffingScrubber
from proxy.core.values import Finder

VALUE = "sk-REAL-CANARY-9f8e7d6c5b4a"
PH = "sk-sandgate-openai-ph"
FINDER = Finder.for_values([("openai", VALUE, PH)])


def message(payload: bytes, headers: list[tuple[str, int, bytes]] | None = None) -> bytes:
    """One event-stream message; ``headers``: (name, type, encoded value) -- string ones by default."""
    if headers is None:
        headers = [(n, 7, v.encode()) for n, v in ((":event-type", "chunk"), (":content-type", "application/json"),
                                                  (":message-type", "event"))]  # fmt: skip
    block = b""
    for name, kind, value in headers:
        block += bytes([len(name)]) + name.encode() + bytes([kind])
        block += struct.pack(">H", len(value)) + value if kind in (6, 7) else value
    prelude = struct.pack(">II", PRELUDE_AND_CRC + len(block) + len(payload), len(block))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + payload
    return head + struct.pack(">I", zlib.crc32(head))


PRELUDE_AND_CRC = 16


def invoke_chunk(text: str, index: int = 0) -> bytes:
    """InvokeModelWithResponseStream: the model's chunk (Anthropic's), base64 in ``bytes``."""
    chunk = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
    return message(
        json.dumps({"bytes": base64.b64encode(json.dumps(chunk).encode()).decode(), "p": "abcdefgh"}).encode()
    )


def converse_delta(text: str, index: int = 0) -> bytes:
    """ConverseStream: the delta itself is the payload."""
    return message(json.dumps({"contentBlockIndex": index, "delta": {"text": text}, "p": "abcd"}).encode())


def read_texts(body: bytes) -> str:
    """What a client stitches: every delta text, in order (botocore's framing, then the SDK's)."""
    out, pos = [], 0
    while pos + 16 <= len(body):
        total, hlen = struct.unpack_from(">II", body, pos)
        payload = json.loads(body[pos + 12 + hlen : pos + total - 4])
        if "bytes" in payload:
            payload = json.loads(base64.b64decode(payload["bytes"]))
        out.append(payload["delta"]["text"])
        pos += total
    return "".join(out)


def run(chunks: list[bytes]) -> bytes:
    s = FramedOr(SniffingScrubber(FINDER, lambda _: None), FINDER, lambda _: None)
    return b"".join(s.feed(c) for c in chunks) + s.finish()


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


STREAM_WORDS = ["Hello", " there", "! Here", " is", " a", " sk-", "like", " string", ": sk", "-REAL", " no", "."]


@pytest.mark.parametrize("make", [invoke_chunk, converse_delta], ids=["invoke-model", "converse"])
def test_a_bedrock_stream_without_a_value_passes_byte_for_byte(make: object) -> None:
    assert callable(make)
    body = b"".join(make(w) for w in STREAM_WORDS)
    assert run([body]) == body
    assert run([body[i : i + 7] for i in range(0, len(body), 7)]) == body  # cut anywhere: the same
    assert scrub_body(body, FINDER, lambda _: None) == body


@pytest.mark.parametrize("make", [invoke_chunk, converse_delta], ids=["invoke-model", "converse"])
@pytest.mark.parametrize("cut", [1, 3, 10, len(VALUE) - 1], ids=lambda c: f"cut-{c}")
def test_a_value_split_over_two_messages_is_refused(make: object, cut: int) -> None:
    assert callable(make)
    body = make("Your key: ") + make(VALUE[:cut]) + make(VALUE[cut:]) + make(" done")
    assert VALUE in read_texts(body)  # what the client would read
    for chunks in ([body], [body[i : i + 5] for i in range(0, len(body), 5)]):
        s = FramedOr(SniffingScrubber(FINDER, lambda _: None), FINDER, lambda _: None)
        sent = b""
        with pytest.raises(ScrubRefused):
            for c in chunks:
                sent += s.feed(c)
            sent += s.finish()
        assert VALUE not in read_texts(sent)
    with pytest.raises(ScrubRefused):
        scrub_body(body, FINDER, lambda _: None)


WHOLE = {
    "plain in a converse delta": converse_delta(f"key {VALUE}"),
    "in the model's chunk (base64 of it in the bytes field)": invoke_chunk(f"key {VALUE} end"),
    "JSON-escaped inside the base64 chunk": message(
        json.dumps(
            {
                "bytes": base64.b64encode(
                    ('{"delta":{"text":"' + VALUE.replace("R", "\\u0052") + '"}}').encode()
                ).decode()
            }
        ).encode()
    ),
    "base64url chunk": message(
        json.dumps(
            {"bytes": base64.urlsafe_b64encode(json.dumps({"t": "x" + VALUE}).encode()).decode().rstrip("=")}
        ).encode()
    ),
    "in a string header": message(b"{}", [(":exception-type", 7, f"bad key {VALUE}".encode())]),
    "in a byte-array header": message(b"{}", [("blob", 6, VALUE.encode())]),
}


@pytest.mark.parametrize("msg", list(WHOLE.values()), ids=list(WHOLE))
def test_a_value_inside_one_message_is_refused_not_replaced(msg: bytes) -> None:
    """A replacement would change the lengths and CRCs the client checks: the stream is cut."""
    body = converse_delta("hi") + msg
    with pytest.raises(ScrubRefused) as e:
        run([body])
    assert e.value.secret == "openai"


def _with_bad_message_crc(m: bytes) -> bytes:
    return m[:-4] + struct.pack(">I", (struct.unpack(">I", m[-4:])[0] + 1) & 0xFFFFFFFF)


MALFORMED = {
    "prelude CRC of the second message": converse_delta("a") + b"\x00" * 8 + b"\x00\x00\x00\x01" + b"x" * 20,
    "message CRC": converse_delta("a") + _with_bad_message_crc(converse_delta("b")),
    "a header of an unknown type": message(b"{}", [("x", 42, b"")]),
    "a header cut short": message(b"", [("x", 4, b"\x00\x00")]),  # an int header with two of its four bytes
}


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_message_cuts_the_stream(body: bytes) -> None:
    """Fail closed: what the client could not read either is not passed on as bytes."""
    with pytest.raises(ScrubRefused):
        run([body])


def test_a_body_ending_inside_a_message_is_refused() -> None:
    body = converse_delta("a") + converse_delta("b")[:-3]
    s = FramedOr(SniffingScrubber(FINDER, lambda _: None), FINDER, lambda _: None)
    assert s.feed(body) == converse_delta("a")
    with pytest.raises(ScrubRefused):
        s.finish()


def test_a_message_over_the_bound_is_refused_at_its_prelude() -> None:
    prelude = struct.pack(">II", (1 << 20) + 1, 0)
    s = FrameScrubber(FINDER, lambda _: None)
    with pytest.raises(ScrubRefused):
        s.feed(converse_delta("a") + prelude + struct.pack(">I", zlib.crc32(prelude)))


@pytest.mark.parametrize(
    "body",
    [b'data: {"a": 1}\n\n', b'{"text": "x"}\n{"text": "y"}\n', b"plain", b"", b"\x00" * 40],
    ids=["sse", "ndjson", "short", "empty", "zeros"],
)
def test_a_body_that_does_not_begin_framed_is_read_as_before(body: bytes) -> None:
    assert begins_framed(body[:12]) is (None if len(body) < 12 else False)
    expected = SniffingScrubber(FINDER, lambda _: None)
    assert run(pieces(body, [3, 9])) == expected.feed(body) + expected.finish()
    events = EventScrubber(FINDER, lambda _: None, "mixed")
    s = FramedOr(EventScrubber(FINDER, lambda _: None, "mixed"), FINDER, lambda _: None)
    assert b"".join(s.feed(c) for c in pieces(body, [5])) + s.finish() == events.feed(body) + events.finish()


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, len(VALUE) - 1),
    st.lists(st.integers(0, 10_000), max_size=6),
    st.sampled_from(["invoke", "converse"]),
    st.lists(st.sampled_from(STREAM_WORDS), max_size=4),
)
def test_any_split_of_a_value_over_messages_cut_anywhere_is_refused(
    cut: int, cuts: list[int], kind: str, decoys: list[str]
) -> None:
    make = invoke_chunk if kind == "invoke" else converse_delta
    body = b"".join(make(w) for w in decoys) + make(VALUE[:cut]) + make(VALUE[cut:]) + make(" bye")
    s = FramedOr(SniffingScrubber(FINDER, lambda _: None), FINDER, lambda _: None)
    sent = b""
    with pytest.raises(ScrubRefused):
        for c in pieces(body, cuts):
            sent += s.feed(c)
        sent += s.finish()
    assert VALUE not in read_texts(sent)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=12), st.lists(st.integers(0, 10_000), max_size=6))
def test_any_stream_without_a_value_passes_unchanged(texts: list[str], cuts: list[int]) -> None:
    body = b"".join(invoke_chunk(t, i % 2) for i, t in enumerate(texts))
    assert run(pieces(body, cuts)) == body


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(STREAM_WORDS), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.binary(max_size=40),
    st.lists(st.integers(0, 10_000), max_size=4),
)
def test_any_bytes_get_an_answer(words: list[str], flips: list[tuple[int, int]], tail: bytes, cuts: list[int]) -> None:
    """Totality: a valid stream with bytes changed anywhere (lengths, CRCs, header types, payloads)
    and junk after it is passed on or refused (ScrubRefused), never another exception; and what
    passes is what came (nothing is rewritten)."""
    body = bytearray(b"".join(converse_delta(w) for w in words) + tail)
    for at, byte in flips:
        body[at % len(body)] = byte
    try:
        out = run(pieces(bytes(body), cuts))
    except ScrubRefused:
        return
    assert out == bytes(body)


def test_converse_blocks_interleaved_are_stitched_by_their_index() -> None:
    """ConverseStream names a delta's content block ``contentBlockIndex`` (the SDKs append each
    block's deltas by it): two blocks' deltas interleaved, the value split over block 0's, another
    block's text between them."""
    body = (
        converse_delta("Your key: ", 0)
        + converse_delta(VALUE[:12], 0)
        + converse_delta("zz", 1)
        + converse_delta(VALUE[12:], 0)
        + converse_delta(" bye", 1)
    )
    by_block: dict[int, str] = {}
    pos = 0
    while pos < len(body):
        total, hlen = struct.unpack_from(">II", body, pos)
        payload = json.loads(body[pos + 12 + hlen : pos + total - 4])
        by_block[payload["contentBlockIndex"]] = (
            by_block.get(payload["contentBlockIndex"], "") + payload["delta"]["text"]
        )
        pos += total
    assert VALUE in by_block[0]  # what the client reads
    with pytest.raises(ScrubRefused):
        run([body])


def _typed(kind: str, text: str) -> bytes:
    return message(json.dumps({"delta": {"text": text}}).encode(), [(":event-type", 7, kind.encode())])


INNER = {
    "line breaks in the base64": lambda raw: base64.encodebytes(raw).decode(),
    "a stray dash before it": lambda raw: "-" + base64.b64encode(raw).decode(),
    "base64url, unpadded": lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="),
    "JSON behind a BOM": lambda raw: base64.b64encode(b"\xef\xbb\xbf" + raw).decode(),
    "JSON in UTF-16": lambda raw: base64.b64encode(raw.decode().encode("utf-16")).decode(),
    "base64 of base64": lambda raw: base64.b64encode(base64.b64encode(raw)).decode(),
}


@pytest.mark.parametrize("encode", list(INNER.values()), ids=list(INNER))
def test_base64_in_a_leaf_is_read_as_its_readers_read_it(encode: object) -> None:
    """A value split over two messages' ``bytes``, each encoded as a lenient reader still decodes
    it (b64decode skips what is outside the alphabet; json.loads reads any UTF): refused."""
    assert callable(encode)

    def chunk(text: str) -> bytes:
        return message(json.dumps({"bytes": encode(json.dumps({"delta": {"text": text}}).encode())}).encode())

    with pytest.raises(ScrubRefused):
        run([chunk("key: " + VALUE[:10]) + chunk(VALUE[10:])])
    body = chunk("hello") + chunk(" world")
    assert run([body]) == body


def test_a_decoy_type_between_two_halves_is_stitched_apart() -> None:
    """botocore skips a message whose ``:event-type`` its service does not know: the halves in two
    ``chunk`` messages, a ``ping`` between them with a character of its own, read as one text."""
    with pytest.raises(ScrubRefused):
        run([_typed("chunk", VALUE[:9]) + _typed("ping", "X") + _typed("chunk", VALUE[9:])])


def test_a_leaf_whose_base64_reading_is_text_is_stitched_as_it_is_too() -> None:
    """A value that is itself base64 of text (many keys are): each half, as a ``bytes`` leaf, also
    decodes to readable text. Each half is still half a value as it is, for a reader that does not
    decode: stitched so. Only a leaf that decodes to a JSON document (Bedrock's ``bytes``) is
    stitched by its decoding alone."""
    value = base64.b64encode(b"sk-REAL-CANARY-9f8e7d6c").decode()
    finder = Finder.for_values([("b64key", value, "ph-b64key-placeholder")])
    half, rest = value[:12], value[12:]
    assert base64.b64decode(half).isascii()  # (the half reads as text: "sk-REAL-C")
    body = message(json.dumps({"bytes": half}).encode()) + message(json.dumps({"bytes": rest}).encode())
    s = FrameScrubber(finder, lambda _: None)
    with pytest.raises(ScrubRefused):
        s.feed(body)
        s.finish()
