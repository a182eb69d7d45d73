"""Red team, eleventh pass: invariant 1 (no real value back to the agent) against the AWS
event-stream reader (``application/vnd.amazon.eventstream``: Bedrock's
``InvokeModelWithResponseStream`` and ``ConverseStream``, Lambda response streaming, S3 Select),
proxy/core/eventstream.py.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py: its
hostile HTTPS upstream, bound to the ``rthostile`` secret, receives the real key after the swap and
tries to hand it back). What the agent got is read the way a real client reads it: botocore's
framing (:func:`frames`: prelude, string headers, payload; a message whose ``:event-type`` its
service model does not know is skipped, ``_do_parse`` returns ``{}`` and ``EventStream.__iter__``
drops it), botocore's blob parser (``base64.b64decode``, which drops every character outside the
alphabet), ``json.loads`` of bytes (any UTF, a byte order mark), then the SDKs' stitching
(``delta.text`` in order; ConverseStream's per ``contentBlockIndex``, as LangChain's
``ChatBedrockConverse`` merges chunks by index; S3 Select's ``Records`` payloads joined, as
boto3's documented loop does). A refusal (502 ``secret_value_inbound``) or a cut stream holds the
line. A break is ``xfail(strict=True, raises=AssertionError)``: its fix turns it into a failure to
unmark. The agent is an adversary reading raw bytes: a body botocore would reject is still a
break when the bytes carry the key in a form a hand-written reader reassembles.

Fixed on merging (main, 2026-12-03), each now a passing test below: a message's texts are tagged by
its type (``:event-type``, else ``:exception-type`` or ``:message-type``), as an SSE event's name
tags its texts; a leaf that is mostly base64 is decoded as readers decode it (bytes outside the
alphabet skipped; ``-`` and ``_`` read both as base64url and skipped), its bytes stitched and, when
JSON in any UTF ``json.loads`` reads (a string too), its leaves, three levels deep;
``contentBlockIndex`` is a positional output field; a framed body is also read as the scrubber its
label would have chosen, for that one's refusals; a message over 1 MiB is refused, not read as text.
Still open: ``leading-junk``.

Breaks (as found):

- ``decoy-event-type``: the key split over two ``chunk`` messages, a message between them with
  another ``:event-type`` (``ping``) and the same payload shape holding a one-character delta.
  The stitcher follows JSON paths and ignores ``:event-type``, so it sees ``half1 + "X" + half2``;
  botocore skips the unknown event and the SDK stitches ``half1 + half2``. Same as a
  Content-Length body.
- ``b64-line-break``: the ``bytes`` base64 with a line break in it (MIME wrapping). The inner
  document is only read when the leaf is ``[A-Za-z0-9+/_-]{8,}={0,2}`` whole; botocore's
  ``b64decode`` drops the line break, and the halves are in two base64 runs.
- ``b64-stray-dash``: a ``-`` before the base64. The proxy takes ``-`` as base64url's ``+`` and
  decodes garbage (no inner document); ``b64decode`` (and Node's ``Buffer.from(s, "base64")``)
  drops it and decodes the chunk.
- ``inner-bom``: the chunk JSON behind a UTF-8 byte order mark. The inner document is read only
  when it begins with ``{`` or ``[``; ``json.loads(bytes)`` (boto3's documented
  ``json.loads(event["chunk"]["bytes"])``) reads it.
- ``inner-utf16be``: the chunk JSON in UTF-16-BE (begins with a NUL byte): same gate;
  ``json.loads(bytes)`` detects UTF-16.
- ``inner-json-string``: the chunk is a JSON string (``"Your key: rtREAL..."``) in base64: the gate
  wants ``{`` or ``[``; ``json.loads`` gives the text.
- ``inner-plain-text``: the chunk is plain text in base64 (a model or Lambda streaming text), the
  first half of a length that is no multiple of 3: the two base64 runs stitched on ``bytes`` are
  no base64 of the key; the client decodes each and joins.
- ``double-base64``: ``bytes`` holding base64 of ``{"bytes": base64(chunk)}``: one level of base64
  is read; a reader that unwraps until it finds the chunk stitches the key.
- ``converse-block-index``: ConverseStream deltas of two content blocks interleaved
  (``contentBlockIndex`` 0, 1, 0): ``contentBlockIndex`` is not one of the output keys, so the
  stitched ``delta.text`` is ``half1 + noise + half2``; a client that accumulates per block index
  (LangChain, the Converse docs' own loop keyed by index) reads the key in block 0.
- ``s3-select-progress``: S3 Select ``Records`` payloads (raw, not JSON) with a ``Progress`` event
  (an XML payload, also raw) between the halves: both raw payloads are on path ``""``; boto3's
  loop joins the ``Records`` payloads only.
- ``sse-polyglot``: a ``text/event-stream`` body whose bytes are also event-stream messages (no
  headers, a payload that begins with a line break and is an SSE event; lengths padded so every
  framing byte is ASCII). The proxy chooses by the first 12 bytes and reads it as event-stream
  only (raw payloads, never as SSE); an SSE client (the OpenAI SDK, EventSource) skips the framing
  bytes as lines of an unknown field and stitches ``delta.content``: the key.
- ``first-message-over-1mib``: a first message larger than ``MAX_EVENT`` (1 MiB; botocore takes
  payloads up to 24 MiB): ``begins_framed`` says "not framed" and the whole body goes to the
  sniffing text scrubber, where each half is in its own base64 run. botocore reads every message.
- ``leading-junk``: an SSE comment line (``: ok``) and then an event-stream: not framed by its
  first bytes, so read as text. A reader that looks for the first prelude whose CRC checks (the
  agent writes that in five lines) stitches the key.

Attempts that held (passing tests):

- The plain split over two ``chunk`` messages: in 1-byte chunked pieces (message and chunk
  boundaries anywhere), and gzip-encoded.
- Two interleaved Anthropic content blocks inside ``bytes`` (``index`` 0, 1, 0): cut.
- ConverseStream deltas of one block as a Content-Length body: refused.
- Lambda ``PayloadChunk`` raw payloads split mid-key: cut.
- S3 Select ``Records`` with empty ``Cont`` messages between: cut.
- Tool input ``partial_json`` with the key as ``\\uXXXX`` escapes split mid-escape across deltas: cut.
- The key in an ``:error-message`` header of an ``error`` message, and as UTF-16-LE in a byte-array
  header: refused or cut.
- Plain text in ``bytes``, the first half a multiple of 3 long (the runs join into base64 of the
  key): cut.
- A valid message then SSE text (the body becomes something else): cut before the second half.
- A message nested 5000 deep (a crash attempt): cut, and the proxy serves the next request.
- A second message larger than 1 MiB: cut.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import zlib
from collections.abc import Callable

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, _chunks, _respond, fetch
from tests.proxy.test_redteam2 import body_of, refused
from tests.proxy.test_redteam3 import deltas, is_cut_or_refused
from tests.proxy.test_redteam5 import CHUNKED
from tests.support.hostile import HostileServer, Request, Wire

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

ES = "application/vnd.amazon.eventstream"
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
Headers = dict[str, str]


def break_(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


# == the framing ==================================================================================


def es(payload: bytes, event: str | None = "chunk", ctype: str = "application/json", mtype: str = "event") -> bytes:
    """One event-stream message with string headers (as botocore's serializer writes them)."""
    pairs = [(":event-type", event), (":content-type", ctype), (":message-type", mtype)]
    return es_raw(payload, [(n, v) for n, v in pairs if v is not None])


def es_raw(payload: bytes, headers: list[tuple[str, str]]) -> bytes:
    block = b""
    for name, value in headers:
        block += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    prelude = struct.pack(">II", 16 + len(block) + len(payload), len(block))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + payload
    return head + struct.pack(">I", zlib.crc32(head))


def frames(body: bytes) -> list[tuple[Headers, bytes]]:
    """What botocore's ``EventStreamBuffer`` yields: each whole message's (string) headers and payload;
    it stops where the body was cut."""
    out: list[tuple[Headers, bytes]] = []
    pos = 0
    while len(body) - pos >= 16:
        total, hlen = struct.unpack_from(">II", body, pos)
        if total < 16 or len(body) - pos < total:
            break
        msg = body[pos : pos + total]
        headers: Headers = {}
        hp = 12
        while hp < 12 + hlen:
            name = msg[hp + 1 : hp + 1 + msg[hp]].decode()
            hp += 1 + msg[hp]
            kind = msg[hp]
            hp += 1
            if kind in (6, 7):
                size = struct.unpack_from(">H", msg, hp)[0]
                headers[name] = msg[hp + 2 : hp + 2 + size].decode("latin-1")
                hp += 2 + size
            else:
                hp += _FIXED[kind]
        out.append((headers, msg[12 + hlen : total - 4]))
        pos += total
    return out


def resync(body: bytes) -> bytes:
    """A hand-written reader's start: the first offset where a prelude's CRC checks."""
    for i in range(len(body) - 12):
        if zlib.crc32(body[i : i + 8]) == struct.unpack_from(">I", body, i + 8)[0]:
            return body[i:]
    return b""


# == what clients stitch ==========================================================================


def anthropic_chunk(text: str, index: int = 0) -> bytes:
    return json.dumps(
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
    ).encode()


def invoke(inner: bytes, event: str | None = "chunk", wrap: Callable[[str], str] = lambda s: s) -> bytes:
    """InvokeModelWithResponseStream: ``{"bytes": base64(inner)}``, the base64 touched by ``wrap``."""
    return es(json.dumps({"bytes": wrap(base64.b64encode(inner).decode())}).encode(), event)


def chunk_bytes(body: bytes) -> list[bytes]:
    """botocore: the ``chunk`` events' ``bytes`` blobs (``base64.b64decode``: not validating),
    unknown event types skipped."""
    return [
        base64.b64decode(json.loads(p)["bytes"])
        for h, p in frames(body)
        if h.get(":event-type") == "chunk" and h.get(":message-type") == "event"
    ]


def bedrock_text(body: bytes) -> str:
    """boto3's documented loop: ``json.loads(event["chunk"]["bytes"])``, ``delta.text`` joined."""
    out = ""
    for blob in chunk_bytes(body):
        doc = json.loads(blob)
        if isinstance(doc, dict) and doc.get("type") == "content_block_delta":
            out += doc["delta"].get("text", "")
        elif isinstance(doc, str):
            out += doc
    return out


def halves(token: str) -> tuple[str, str]:
    return f"Your key: {token[:20]}", token[20:]


def serve(
    hostile: HostileServer, path: str, make: Callable[[str], list[bytes]], ctype: str = ES, *, how: str = "chunked"
) -> None:
    """``make(token)``: the messages (or pieces); ``how``: "chunked" (one chunk a piece), "length"
    (one Content-Length body), "gzip" (gzip-encoded, chunked), "bytes" (one byte a chunk)."""

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        pieces = make(req.token)
        body = b"".join(pieces)
        if how == "length":
            await w.send(_respond(f"Content-Type: {ctype}\r\n", body))
            return
        if how == "gzip":
            await w.send(CHUNKED.format(ctype + "\r\nContent-Encoding: gzip").encode())
            z = gzip.compress(body)
            pieces = [z[i : i + 97] for i in range(0, len(z), 97)]
        elif how == "bytes":
            await w.send(CHUNKED.format(ctype).encode())
            pieces = [body[i : i + 1] for i in range(len(body))]
        else:
            await w.send(CHUNKED.format(ctype).encode())
        for p in pieces:
            await w.send(_chunks(p)[:-5], pause=0.01 if how != "bytes" else 0.0)
        await w.send(b"0\r\n\r\n")


def agent_body(rt: world.ProxyProcess, path: str) -> bytes:
    raw = fetch(rt, path, timeout=20)
    if refused(raw):
        return b""
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    return body_of(raw)


# == breaks =======================================================================================


@pytest.mark.parametrize("how", ["chunked", "length"])
def test_rt11_decoy_event_type(rt: world.ProxyProcess, hostile: HostileServer, how: str) -> None:
    """Key halves in two ``chunk`` messages, a ``ping`` message between them with the same payload
    shape and a one-character delta: the proxy stitches ``half1 + "X" + half2``; botocore drops
    the ``ping`` and the SDK stitches the key."""

    def make(t: str) -> list[bytes]:
        a, b = halves(t)
        return [invoke(anthropic_chunk(a)), invoke(anthropic_chunk("X"), event="ping"), invoke(anthropic_chunk(b))]

    serve(hostile, f"/rt11/decoy/{how}", make, how=how)
    assert HOST.real not in bedrock_text(agent_body(rt, f"/rt11/decoy/{how}"))


def test_rt11_base64_line_break(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """``bytes`` base64 with a line break after 16 characters: not a base64 leaf to the proxy, so
    only the two base64 runs are stitched; botocore's ``b64decode`` drops the line break."""

    def make(t: str) -> list[bytes]:
        return [invoke(anthropic_chunk(h), wrap=lambda s: s[:16] + "\n" + s[16:]) for h in halves(t)]

    serve(hostile, "/rt11/b64-lf", make)
    assert HOST.real not in bedrock_text(agent_body(rt, "/rt11/b64-lf"))


def test_rt11_base64_stray_dash(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """``bytes`` = ``"-" + base64(chunk)``: the proxy reads ``-`` as base64url's 62 and decodes
    bytes that are no JSON; botocore's (and Node's) base64 decoder skips the ``-``."""

    def make(t: str) -> list[bytes]:
        return [invoke(anthropic_chunk(h), wrap=lambda s: "-" + s) for h in halves(t)]

    serve(hostile, "/rt11/b64-dash", make)
    assert HOST.real not in bedrock_text(agent_body(rt, "/rt11/b64-dash"))


def test_rt11_inner_bom(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    def make(t: str) -> list[bytes]:
        return [invoke(b"\xef\xbb\xbf" + anthropic_chunk(h)) for h in halves(t)]

    serve(hostile, "/rt11/bom", make)
    assert HOST.real not in bedrock_text(agent_body(rt, "/rt11/bom"))


def test_rt11_inner_utf16be(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    def make(t: str) -> list[bytes]:
        return [invoke(anthropic_chunk(h).decode().encode("utf-16-be")) for h in halves(t)]

    serve(hostile, "/rt11/utf16be", make)
    assert HOST.real not in bedrock_text(agent_body(rt, "/rt11/utf16be"))


def test_rt11_inner_json_string(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    def make(t: str) -> list[bytes]:
        return [invoke(json.dumps(h).encode()) for h in halves(t)]

    serve(hostile, "/rt11/json-string", make)
    assert HOST.real not in bedrock_text(agent_body(rt, "/rt11/json-string"))


def _plain_text(body: bytes) -> str:
    """A streaming-text client: each ``chunk``'s bytes decoded, joined."""
    return b"".join(chunk_bytes(body)).decode()


def test_rt11_inner_plain_text(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """Two chunks of plain text (no JSON) in base64, the first 20 bytes long (no multiple of 3)."""

    def make(t: str) -> list[bytes]:
        return [invoke(b"Your key: " + t[:10].encode()), invoke(t[10:].encode())]

    serve(hostile, "/rt11/plain", make)
    assert HOST.real not in _plain_text(agent_body(rt, "/rt11/plain"))


def test_rt11_inner_plain_text_aligned(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """The same with a first chunk 21 bytes long: the runs join into base64 of the key. Held."""

    def make(t: str) -> list[bytes]:
        return [invoke(b"Your key: " + t[:11].encode()), invoke(t[11:].encode())]

    serve(hostile, "/rt11/plain-aligned", make)
    assert HOST.real not in _plain_text(agent_body(rt, "/rt11/plain-aligned"))


def test_rt11_double_base64(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """``bytes`` = base64 of ``{"bytes": base64(chunk)}``. A reader that unwraps ``bytes`` until it
    finds a chunk stitches the key."""

    def make(t: str) -> list[bytes]:
        return [
            invoke(json.dumps({"bytes": base64.b64encode(anthropic_chunk(h)).decode()}).encode()) for h in halves(t)
        ]

    serve(hostile, "/rt11/double", make)
    text = ""
    for blob in chunk_bytes(agent_body(rt, "/rt11/double")):
        doc = json.loads(blob)
        while "bytes" in doc:
            doc = json.loads(base64.b64decode(doc["bytes"]))
        text += doc["delta"]["text"]
    assert HOST.real not in text


def converse(text: str, index: int) -> bytes:
    return es(json.dumps({"contentBlockIndex": index, "delta": {"text": text}}).encode(), "contentBlockDelta")


def converse_blocks(body: bytes) -> dict[int, str]:
    """ConverseStream as LangChain's ``ChatBedrockConverse`` merges it: text per ``contentBlockIndex``."""
    blocks: dict[int, str] = {}
    for h, p in frames(body):
        if h.get(":event-type") == "contentBlockDelta":
            doc = json.loads(p)
            i = doc["contentBlockIndex"]
            blocks[i] = blocks.get(i, "") + doc["delta"].get("text", "")
    return blocks


def test_rt11_converse_interleaved_blocks(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    def make(t: str) -> list[bytes]:
        a, b = halves(t)
        return [converse(a, 0), converse("(thinking)", 1), converse(b, 0)]

    serve(hostile, "/rt11/converse-blocks", make)
    assert HOST.real not in "\n".join(converse_blocks(agent_body(rt, "/rt11/converse-blocks")).values())


def s3(payload: bytes, event: str = "Records", ctype: str | None = "application/octet-stream") -> bytes:
    return es(payload, event, ctype) if ctype else es_raw(payload, [(":event-type", event), (":message-type", "event")])


def s3_records(body: bytes) -> str:
    """boto3's S3 Select loop: ``if "Records" in event: records.append(event["Records"]["Payload"])``."""
    return b"".join(p for h, p in frames(body) if h.get(":event-type") == "Records").decode()


def test_rt11_s3_select_progress_between(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    def make(t: str) -> list[bytes]:
        a, b = halves(t)
        progress = b"<Progress><BytesScanned>512</BytesScanned><BytesProcessed>512</BytesProcessed></Progress>"
        return [s3(f"id,key\n1,{a}".encode()), s3(progress, "Progress", "text/xml"), s3(f"{b}\n".encode())]

    serve(hostile, "/rt11/s3-progress", make)
    assert HOST.real not in s3_records(agent_body(rt, "/rt11/s3-progress"))


def _ascii_frame(payload_for: Callable[[int], bytes]) -> bytes:
    """A header-less message whose framing bytes (prelude, CRCs) are all ASCII other than CR and
    LF: ``payload_for(pad)`` grows with ``pad`` until it is."""
    for pad in range(20000):
        m = es_raw(payload_for(pad), [])
        framing = m[:12] + m[-4:]
        if all(b < 0x80 and b not in (10, 13) for b in framing):
            return m
    raise AssertionError("no padding found")


def test_rt11_sse_polyglot(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """``text/event-stream`` whose bytes are event-stream messages too: each payload is
    ``\\ndata: {...}\\n\\n``; the framing bytes are lines of an unknown field to an SSE client."""

    def make(t: str) -> list[bytes]:
        def event(text: str) -> Callable[[int], bytes]:
            def payload(pad: int) -> bytes:
                doc = {"choices": [{"index": 0, "delta": {"content": text}}], "pad": " " * pad}
                return b"\ndata: " + json.dumps(doc).encode() + b"\n\n"

            return payload

        return [_ascii_frame(event(h)) for h in halves(t)]

    serve(hostile, "/rt11/polyglot", make, "text/event-stream")
    body = agent_body(rt, "/rt11/polyglot")
    assert HOST.real not in deltas(body.decode())


def test_rt11_first_message_over_1mib(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """botocore reads payloads up to 24 MiB; the proxy's prelude check bounds a message at 1 MiB and
    then reads the body as text, where each half of the key is in a base64 run of its own."""

    def make(t: str) -> list[bytes]:
        big = invoke(anthropic_chunk("Hello" + " " * (900 * 1024)))
        assert len(big) > 1 << 20
        return [big, *(invoke(anthropic_chunk(h)) for h in halves(t))]

    serve(hostile, "/rt11/big-first", make)
    assert HOST.real not in bedrock_text(agent_body(rt, "/rt11/big-first"))


@break_("a body that begins as something else is read as text, even when an event-stream follows")
def test_rt11_leading_junk(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    def make(t: str) -> list[bytes]:
        return [b": ok\n\n", *(invoke(anthropic_chunk(h)) for h in halves(t))]

    serve(hostile, "/rt11/junk-first", make)
    assert HOST.real not in bedrock_text(resync(agent_body(rt, "/rt11/junk-first")))


# == attempts that held ===========================================================================


@pytest.mark.parametrize("how", ["bytes", "gzip"])
def test_rt11_split_delta_odd_boundaries(rt: world.ProxyProcess, hostile: HostileServer, how: str) -> None:
    """The plain split over two ``chunk`` messages, one byte a chunk, or gzip-encoded. Held."""
    serve(hostile, f"/rt11/odd/{how}", lambda t: [invoke(anthropic_chunk(h)) for h in halves(t)], how=how)
    raw = fetch(rt, f"/rt11/odd/{how}", timeout=20)
    assert HOST.real not in bedrock_text(body_of(raw))
    assert is_cut_or_refused(raw)


def test_rt11_anthropic_blocks_interleaved(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """Anthropic chunks in ``bytes`` of two content blocks interleaved (``index`` 0, 1, 0). Held."""

    def make(t: str) -> list[bytes]:
        a, b = halves(t)
        return [invoke(anthropic_chunk(a, 0)), invoke(anthropic_chunk("noise", 1)), invoke(anthropic_chunk(b, 0))]

    serve(hostile, "/rt11/anthropic-blocks", make)
    raw = fetch(rt, "/rt11/anthropic-blocks")
    blobs = [json.loads(b) for b in chunk_bytes(body_of(raw))]
    assert HOST.real not in "".join(d["delta"]["text"] for d in blobs if d["index"] == 0)
    assert is_cut_or_refused(raw)


def test_rt11_converse_content_length(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """ConverseStream deltas of one block as a Content-Length body (scrubbed whole). Held: refused."""
    serve(hostile, "/rt11/converse-cl", lambda t: [converse(h, 0) for h in halves(t)], how="length")
    body = agent_body(rt, "/rt11/converse-cl")
    assert body == b"" or HOST.real not in converse_blocks(body).get(0, "")
    assert body == b""


def test_rt11_lambda_payload_chunks(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """Lambda ``InvokeWithResponseStream``: raw ``PayloadChunk`` payloads split mid-key. Held."""

    def make(t: str) -> list[bytes]:
        body = json.dumps({"statusCode": 200, "body": f"key={t}"}).encode()
        cut = body.index(t.encode()) + 17
        return [s3(body[:cut], "PayloadChunk"), s3(body[cut:], "PayloadChunk"), s3(b"{}", "InvokeComplete")]

    serve(hostile, "/rt11/lambda", make)
    raw = fetch(rt, "/rt11/lambda")
    got = b"".join(p for h, p in frames(body_of(raw)) if h.get(":event-type") == "PayloadChunk")
    assert HOST.real.encode() not in got
    assert is_cut_or_refused(raw)


def test_rt11_s3_select_cont_between(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """S3 Select ``Records`` with empty ``Cont`` (keep-alive) messages between the halves. Held."""

    def make(t: str) -> list[bytes]:
        a, b = halves(t)
        return [s3(a.encode()), s3(b"", "Cont", None), s3(b"", "Cont", None), s3(b.encode())]

    serve(hostile, "/rt11/s3-cont", make)
    raw = fetch(rt, "/rt11/s3-cont")
    assert HOST.real not in s3_records(body_of(raw))
    assert is_cut_or_refused(raw)


def test_rt11_tool_input_escapes_split(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """A tool call's ``input_json_delta``: the key as ``\\uXXXX`` escapes inside the partial JSON,
    split in the middle of an escape. The client joins ``partial_json`` and parses it. Held."""

    def make(t: str) -> list[bytes]:
        text = '{"key": "' + "".join(f"\\u{ord(c):04x}" for c in t) + '"}'
        cut = 9 + 6 * 20 + 3
        return [
            invoke(
                json.dumps(
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": p},
                    }
                ).encode()
            )
            for p in (text[:cut], text[cut:])
        ]

    serve(hostile, "/rt11/tool-escapes", make)
    raw = fetch(rt, "/rt11/tool-escapes")
    joined = "".join(json.loads(b)["delta"]["partial_json"] for b in chunk_bytes(body_of(raw)))
    try:
        got = json.loads(joined)["key"]
    except ValueError:
        got = joined
    assert HOST.real not in got
    assert is_cut_or_refused(raw)


def test_rt11_error_message_header(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """An ``error`` message whose ``:error-message`` header holds the key (botocore raises with it). Held."""

    def make(t: str) -> list[bytes]:
        headers = [(":message-type", "error"), (":error-code", "Throttling"), (":error-message", f"bad key {t}")]
        return [invoke(anthropic_chunk("Hi")), es_raw(b"", headers)]

    serve(hostile, "/rt11/error-header", make)
    raw = fetch(rt, "/rt11/error-header")
    assert HOST.real.encode() not in raw
    assert is_cut_or_refused(raw)


def test_rt11_becomes_sse(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """A valid message with the first half, then the body turns into SSE with the second. Held: cut."""

    def make(t: str) -> list[bytes]:
        a, b = halves(t)
        sse = f"\n\ndata: {json.dumps({'type': 'content_block_delta', 'delta': {'text': b}})}\n\n".encode()
        return [invoke(anthropic_chunk(a)), sse]

    serve(hostile, "/rt11/becomes-sse", make)
    raw = fetch(rt, "/rt11/becomes-sse")
    assert HOST.real[20:] not in raw.decode("latin-1")
    assert is_cut_or_refused(raw)


def test_rt11_deep_nesting(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """A payload nested 5000 deep, in ``bytes`` too (a crash attempt). Held: cut, the proxy lives on."""

    def make(t: str) -> list[bytes]:
        return [invoke(b"[" * 5000 + b"]" * 5000), invoke(anthropic_chunk(t))]

    serve(hostile, "/rt11/deep", make)
    raw = fetch(rt, "/rt11/deep")
    assert HOST.real.encode() not in raw
    assert is_cut_or_refused(raw)
    serve(hostile, "/rt11/deep-after", lambda t: [invoke(anthropic_chunk("still here"))])
    assert bedrock_text(agent_body(rt, "/rt11/deep-after")) == "still here"


def test_rt11_second_message_over_1mib(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """A first half, then a message over 1 MiB, then the second half. Held: cut at the big one."""

    def make(t: str) -> list[bytes]:
        a, b = halves(t)
        return [invoke(anthropic_chunk(a)), invoke(anthropic_chunk(" " * (900 * 1024))), invoke(anthropic_chunk(b))]

    serve(hostile, "/rt11/big-second", make)
    raw = fetch(rt, "/rt11/big-second", timeout=20)
    assert HOST.real not in bedrock_text(body_of(raw))
    assert is_cut_or_refused(raw)


def test_rt11_byte_array_header(rt: world.ProxyProcess, hostile: HostileServer) -> None:
    """A byte-array header (type 6) holding the key's UTF-16-LE, after a chunk. Held: refused."""

    def make(t: str) -> list[bytes]:
        value = t.encode("utf-16-le")
        block = b"\x08x-sig-16\x06" + struct.pack(">H", len(value)) + value
        prelude = struct.pack(">II", 16 + len(block) + 2, len(block))
        head = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + b"{}"
        return [invoke(anthropic_chunk("Hi")), head + struct.pack(">I", zlib.crc32(head))]

    serve(hostile, "/rt11/byte-array-header", make)
    raw = fetch(rt, "/rt11/byte-array-header")
    assert HOST.real.encode("utf-16-le") not in raw
    assert is_cut_or_refused(raw)
