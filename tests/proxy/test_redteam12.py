"""Red team, twelfth pass: invariant 1 (no real value back to the agent) through answers that are
streamed: SSE, JSON values in a row, WebSocket messages, AWS event-stream, enveloped frames.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py: its
hostile HTTPS upstream, bound to the ``rthostile`` secret, receives the real key after the swap and
hands it back in pieces no one byte stream or path holds whole). What the agent got is read the way
a real client reads it: the openai SDK's own decoder and ``ResponseStreamState``, the Anthropic
SDK's ``MessageStream`` (written out in red team 7), google-genai's ``response.text``, LangChain's
TGI client, Go's ``json.Decoder``, connect-es / grpc-web, a MessagePack client, ``EventSource``,
``@supabase/ssr``. A refusal (502, a cut body) holds the line. A break is
``xfail(strict=True, raises=AssertionError)``: its fix turns it into a failure to unmark.

Fixed on merging (main, 2026-12-03, late), each now a passing test below:
``escape-cut-at-a-snapshot-seam`` (all six: an end inside an escape counts as open across paths),
``pusher-padded-json-in-a-json-string`` (all three), ``ably-sse-padded-json-data`` and
``pusher-json-string-in-a-json-string`` (a JSON string is read again with whitespace around it,
and when it is a string), ``gemini-thought-part-between`` and ``tgi-special-token-between`` (a
leaf under a member that is ``true`` is also on a flagged path, and the texts no flag marks are
followed apart from the first flagged one on); ``phoenix-other-event-between`` and
``websocket-other-channel-between`` (all four: ``channel``, ``topic`` and ``identifier`` are output
fields, and the strings before an array's object name it, as Socket.IO's and Phoenix's events);
``ansi-sequence-between`` (all three: the view that drops stateful charsets' shifts drops a
terminal's CSI and OSC sequences too); ``unicode-forms-streamed`` (all three: a token stream's
text that NFKC or dropping format characters changes is also stitched folded, on a stream that
begins as its path's; whole bodies in such forms are not read so -- a gap);
``anthropic-blocks-joined-in-index-order``, ``responses-outputs-joined-in-index-order`` (both
shapes each) and ``converse-blocks-joined-in-index-order`` (each output of a group of indexed paths
that differ only by their positions remembers its beginning; a text is checked against the end of
the output before it and the beginning of the one after it, in index order among the outputs
present, whatever order they came in, on every field of the outputs -- a block's snapshot
too); ``chat-audio-base64-deltas`` and ``realtime-audio-base64-deltas`` (both cuts: a leaf that is wholly base64, long or padded, is also
decoded on its own and the bytes stitched on its paths + ``<b64>``, as a client that decodes each
piece and appends the bytes; later pieces on such a path, short ones too).

Held since runs of a value are read (2026-12-04: any 16 characters in a row of the key, or half
of it, is refused; ``proxy.core.values.runs_of``), each now a passing test below, because one half of
a value cut in two is always such a run: ``gemini-rest-json-array``, ``connect-streaming-json``,
``grpc-web-proto-stream``, ``websocket-msgpack-deltas``, ``concatenated-json-values`` (both),
``eventsource-reconnect-resumes``, ``stomp-json-bodies``, ``docker-multiplexed-stream``,
``kubernetes-exec-channels``, ``json-lines-with-another-line-between`` (all three) and
``chunked-cookies``. Their framings are still read only as bytes: a value cut there into pieces
shorter than a run is not found (tests/proxy/test_value_runs.py keeps one such case as an
expected failure).

Breaks (as found):

- ``anthropic-blocks-joined-in-index-order`` (two shapes) and ``responses-outputs-joined-in-index-order``
  (two shapes): texts of several outputs whose client joins them *in index order*, not in the order
  they came. ``out-of-order``: output 1's text (the second half) comes before output 0's last text
  (the first half). ``third-output-between``: output 0 ends with the first half, output 2 speaks,
  output 1 begins with the second half (the suspected "seam with a third path between":
  ``PathStitcher._went_on`` drops output 0's end because the plain path went on after it, on the
  premise that a client keeps positions apart). The Anthropic SDK's ``get_final_text()`` and the
  openai SDK's ``Response.output_text`` join blocks / output items in index order: the key.
- ``converse-blocks-joined-in-index-order``: the same through Bedrock ``ConverseStream``
  (``contentBlockIndex`` 1 before 0); a client builds ``content`` by index and joins the blocks.
- ``gemini-thought-part-between``: a thought part (``"thought": true``) between the halves on
  ``parts[0].text``: google-genai's ``response.text`` skips thought parts. ``thought`` is no
  output field.
- ``tgi-special-token-between``: a TGI ``generate_stream`` special token between the halves:
  LangChain's TGI clients skip ``token.special``.
- ``chat-audio-base64-deltas`` (two cuts) and ``realtime-audio-base64-deltas`` (two cuts): each
  event's leaf is base64 of the next bytes (Chat Completions ``delta.audio.data``, the Realtime
  API's ``response.audio.delta`` over a WebSocket), the first piece no multiple of 3 long. The
  stitched text is two base64 strings, no base64 of the key; clients decode each delta and append
  the bytes (red team 11 fixed this for event-stream ``bytes`` only).
- ``gemini-rest-json-array``: ``streamGenerateContent`` without ``alt=sse``: one JSON array
  streamed an element at a time; not a token stream to the sniffer (lines begin with ``,``), read
  as body bytes. A REST client parses the array and joins the texts.
- ``connect-streaming-json``: Connect server streaming (``application/connect+json``): 5-byte
  envelopes before each JSON message, no line breaks: read as body bytes.
- ``grpc-web-proto-stream``: gRPC-Web (``application/grpc-web+proto``): frames and protobuf field
  tags between the halves.
- ``websocket-msgpack-deltas``: binary WebSocket messages in MessagePack (SignalR's MessagePack
  protocol, socket.io-msgpack-parser): a binary message that does not begin as JSON is only part
  of the byte stream of all messages, MessagePack framing between the halves.
- ``concatenated-json-values`` (``compact``, ``pretty``): JSON values one after another with no
  separator, or pretty-printed over several lines each: no line holds a document, so no token
  stream; Go's ``json.Decoder`` loop and Python's ``raw_decode`` loop read each value.
- ``eventsource-reconnect-resumes``: the first response ends (cleanly) with the first half,
  ``retry: 0``; the client reconnects with ``Last-Event-ID`` and the second response begins with
  the second half. The stitcher lives for one response (the held half goes out at its end);
  ``EventSource`` (and fetch-event-source, the AI SDK's resumable streams) dispatches both
  responses' events to one handler.
- ``chunked-cookies``: ``Set-Cookie: sb-auth-token.0=<half>`` and ``.1=<half>``: each field is
  checked alone; ``@supabase/ssr``'s ``combineChunks`` (NextAuth's chunked session cookie too)
  joins them.
- ``escape-cut-at-a-snapshot-seam`` (six shapes): a snapshot grown by a delta (Anthropic
  ``content_block_start`` then ``text_delta``), a character of the key percent-encoded (``%``,
  ``%6``, ``%u00``), an HTML reference (``&#``, ``&#x``) or quoted-printable (``=6``), the escape
  cut between the two texts. On one path the same cut is refused; across paths
  ``SegmentedScrubber.open_end`` offers the next path a region only when ``_has_escapes`` finds a
  whole escape in it, and a cut ``%``, ``&`` or ``=`` is none, so the end is empty and the seam is
  never asked. (Cut backslash escapes -- ``\\``, ``\\x6``, ``\\u00``, ``\\u{``, octal -- are refused
  across the seam.) The client stitches the text and decodes it as a URL, as HTML or as
  quoted-printable: the key.
- ``pusher-padded-json-in-a-json-string`` (three pads) and ``ably-sse-padded-json-data``: red team
  7's fixed JSON-in-a-JSON-string, the inner JSON with whitespace around it (a leading space, a
  trailing ``\\n``, CRLFs): ``_collect_leaves`` parses a string again only when its first character
  is ``{``/``[`` and its last ``}``/``]``; ``JSON.parse`` (pusher-js, ably-js) skips whitespace.
- ``pusher-json-string-in-a-json-string``: ``data`` a JSON string encoded again (``"\\"...\\""``):
  only an inner object or array is read again, the quotes sit between the halves; pusher-js parses
  it to the string.
- ``phoenix-other-event-between``: Phoenix Channels arrays ``[join_ref, ref, topic, event,
  payload]``, a ``status`` message between two ``delta`` ones: the event name (fourth element) is
  no output field (only Socket.IO's first element is); phoenix.js dispatches by event.
- ``stomp-json-bodies``: STOMP ``MESSAGE`` frames over a WebSocket with JSON bodies: not JSON
  from their first byte, so raw text, the next frame's headers between the halves; stompjs hands
  each body to the app.
- ``websocket-other-channel-between`` (Pusher, Action Cable, Centrifugo, Ably): one socket
  multiplexing subscriptions, another channel's message between the halves: the channel key is
  no output field; the client libraries deliver per channel.
- ``docker-multiplexed-stream``: Docker's attach/logs/exec framing (8-byte headers, a stderr frame
  between two stdout ones): body bytes; docker-py and the CLI demultiplex stdout.
- ``kubernetes-exec-channels``: ``v4.channel.k8s.io`` binary messages, each led by its channel
  byte, a stderr message between two stdout ones; the clients strip the byte and join stdout
  (the framing is inside each message: not red team 7's open binary-chunks-with-JSON-between).
- ``ansi-sequence-between`` (three sequences): command output as chunked ``text/plain`` with an
  SGR or erase-line sequence between the halves: no view drops CSI sequences; a terminal shows
  the key, and harnesses strip ANSI from tool output before the model reads it.
- ``json-lines-with-another-line-between`` (three lines): JSON lines under ``application/json``
  with a non-JSON line (``# progress``, ``42``, ``<!-- -->``) between the two halves: the sniffer
  never switches to a token stream; a tolerant line reader skips the line. (Under an NDJSON label
  the same body is refused.)
- ``unicode-forms-streamed`` (three forms): the key as fullwidth characters (NFKC gives it back), or
  with a zero-width space or soft hyphen between every two characters (invisible in a browser,
  dropped by sanitizers): no view reads them.

Attempts that held (passing tests at the end): block 0 ending with the first half and block 1's
next text beginning with the second, nothing between (the plain path reads both); the audio deltas
with the first piece a multiple of 3 long (the base64 strings join into base64 of the key); the
percent escape cut the same way between two deltas of one path; ``Your key: <key>`` in base64 (and,
on the pure ``EventScrubber``, base64url, hex and base64 of UTF-16-LE) cut at every offset
between a snapshot and its delta; the JSON lines with a progress line between under an NDJSON
label. Also on the pure scrubber: cut backslash escapes across a snapshot seam (Responses
``function_call`` arguments then their delta), with and without a third output between (refused);
a graphql-ws message of another subscription ``id`` between the halves (refused: ``id`` is an output
field).
"""

from __future__ import annotations

import base64
import html
import json
import quopri
import re
import struct
import unicodedata
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy import test_redteam11 as rt11
from tests.proxy.test_redteam import HOST, _respond, fetch
from tests.proxy.test_redteam2 import body_of
from tests.proxy.test_redteam3 import ws_messages
from tests.proxy.test_redteam5 import send_pieces
from tests.proxy.test_redteam6 import agent_body, halves
from tests.proxy.test_redteam7 import _anthropic_text, _refused_or, _ws_serve, _ws_texts, served, sse_json
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

SSE = "text/event-stream"
Doc = dict[str, Any]


def break_(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


def named(*docs: Doc) -> list[bytes]:
    """One SSE event per document, named by its ``type`` (Anthropic's and the Responses API's way)."""
    return [f"event: {d['type']}\ndata: {json.dumps(d)}\n\n".encode() for d in docs]


def plain(*docs: Doc) -> list[bytes]:
    """One ``data:`` event per document."""
    return [b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs]


# == what clients stitch ==========================================================================


def _anthropic(order: list[tuple[int, str]], blocks: int) -> Callable[[str], list[bytes]]:
    """An Anthropic Messages stream: ``blocks`` text blocks started, then ``order``'s deltas
    (block index, text: ``A``/``B`` stand for the key's two halves)."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": []}
        docs: list[Doc] = [{"type": "message_start", "message": message}]
        docs += [{"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}
                 for i in range(blocks)]  # fmt: skip
        for i, t in order:
            text = {"A": a, "B": b}.get(t, t)
            docs.append({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}})
        docs += [{"type": "content_block_stop", "index": i} for i in range(blocks)]
        docs += [{"type": "message_stop"}]
        return named(*docs)

    return make


def _responses(order: list[tuple[int, str]], outputs: int) -> Callable[[str], list[bytes]]:
    """A Responses API stream: ``outputs`` message items (one text part each), then ``order``'s
    ``response.output_text.delta`` events (output index, text)."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "status": "in_progress",
                    "output": [], "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}  # fmt: skip
        docs: list[Doc] = [{"type": "response.created", "sequence_number": 0, "response": response}]
        for o in range(outputs):
            item = {"id": f"msg_{o}", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            docs.append({"type": "response.output_item.added", "output_index": o, "item": item})
            docs.append({"type": "response.content_part.added", "item_id": f"msg_{o}", "output_index": o,
                         "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})  # fmt: skip
        for o, t in order:
            docs.append({"type": "response.output_text.delta", "item_id": f"msg_{o}", "output_index": o,
                         "content_index": 0, "delta": {"A": a, "B": b}.get(t, t), "logprobs": []})  # fmt: skip
        for n, d in enumerate(docs):
            d["sequence_number"] = n
        return named(*docs)

    return make


def responses_output_text(events: list[Doc]) -> str:
    """``response.output_text`` of the openai SDK's ``ResponseStreamState`` snapshot (what
    ``client.responses.stream(...).get_final_response().output_text`` gives): every message item's
    ``output_text`` parts joined, in output order."""
    from openai._models import construct_type
    from openai.lib.streaming.responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent

    state: Any = ResponseStreamState(input_tools=[], text_format=None)  # type: ignore[arg-type]
    for e in events:
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=e))  # type: ignore[arg-type]
    snap = state._ResponseStreamState__current_snapshot  # (the snapshot it keeps; no public accessor)
    return str(snap.output_text)


ORDERS: dict[str, tuple[list[tuple[int, str]], int]] = {
    # The second half first, on output 1; then the first half, at the end of output 0.
    "out-of-order": ([(1, "B"), (0, "A")], 2),
    # The first half ends output 0, output 2 speaks, the second half begins output 1.
    "third-output-between": ([(0, "A"), (2, " (see below)"), (1, "B")], 3),
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_rt12_anthropic_blocks_joined_in_index_order(rt: ProxyProcess, hostile: HostileServer, order: str) -> None:
    """Anthropic text blocks whose deltas come out of block order: block 1's text (the second
    half) before block 0's last text (the first half), or block 0's first half, then a delta of
    block 2, then block 1's second half. Invariant 1: each block is a stream of its own (the
    ``index`` tag), the plain ``.delta.text`` reads ``B A`` or ``A ... B``, and the cross-path
    check only asks whether an end is continued by a *later* text of another path that no third
    path's text came before. The Anthropic SDK's ``MessageStream`` puts each delta in
    ``content[index]`` and ``get_final_text()`` joins the text blocks in index order: the key."""
    make = _anthropic(*ORDERS[order])
    body = served(rt, hostile, f"/rt12/anthropic-{order}", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: _anthropic_text(sse_json(b)))


@pytest.mark.parametrize("order", list(ORDERS))
def test_rt12_responses_outputs_joined_in_index_order(rt: ProxyProcess, hostile: HostileServer, order: str) -> None:
    """The Responses API's ``response.output_text.delta`` of two (three) message items out of output
    order: the second half on output 1 first, then the first half at the end of output 0; or the
    first half ending output 0, a delta of output 2, then the second half on output 1. Invariant 1
    (as above). The openai SDK's ``ResponseStreamState`` appends each delta to
    ``output[output_index].content[content_index].text``; ``Response.output_text`` joins them in
    output order: the key."""
    make = _responses(*ORDERS[order])
    body = served(rt, hostile, f"/rt12/responses-{order}", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: responses_output_text(sse_json(b)))


def _gemini(parts: list[Doc]) -> Doc:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}], "modelVersion": "m"}


def gemini_text(chunks: list[Doc]) -> str:
    """google-genai: ``"".join(chunk.text for chunk in stream)``, where ``GenerateContentResponse.text``
    joins the first candidate's text parts, skipping the parts with ``thought: true``."""
    out = ""
    for c in chunks:
        for part in c["candidates"][0]["content"]["parts"]:
            if isinstance(part.get("text"), str) and part.get("thought") is not True:
                out += part["text"]
    return out


def test_rt12_gemini_thought_part_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Gemini ``streamGenerateContent?alt=sse`` chunks: the first half as a text part, then a chunk
    whose part is a thought summary (``"thought": true``, ``includeThoughts``), then the second
    half. Invariant 1: ``parts[0].text`` (plain and tagged) reads ``A <thought> B``. google-genai's
    ``response.text`` skips thought parts; the app joins ``chunk.text``: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return plain(_gemini([{"text": a}]), _gemini([{"text": "Considering the key...", "thought": True}]),
                     _gemini([{"text": b}]))  # fmt: skip

    body = served(rt, hostile, "/rt12/gemini-thought", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: gemini_text(sse_json(b)))


# == base64 pieces ================================================================================


def b64_pieces(token: str, cut: int) -> list[str]:
    """``Your key: `` and the key in two pieces cut at ``cut``, each base64 on its own (the first
    piece's length no multiple of 3: the base64 strings do not join into base64 of the key)."""
    data = b"Your key: " + token.encode()
    return [base64.b64encode(p).decode() for p in (data[: 10 + cut], data[10 + cut :])]


@pytest.mark.parametrize("cut", [10, 13])
def test_rt12_chat_audio_base64_deltas(rt: ProxyProcess, hostile: HostileServer, cut: int) -> None:
    """Chat Completions audio output streamed (``modalities: ["text", "audio"]``): each chunk's
    ``choices[0].delta.audio.data`` is base64 of the next bytes. The key's bytes in two deltas,
    the first piece's length no multiple of 3. Invariant 1: ``.delta.audio.data`` is stitched as
    text, ``base64(A) + base64(B)``, which is no base64 of the key (nor holds its forms). The
    client decodes each delta and appends the bytes (the audio streaming guide's
    ``audio += base64.b64decode(delta.audio.data)``): the key."""

    def make(token: str) -> list[bytes]:
        return plain(*({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [{"index": 0, "delta": {"audio": {"id": "audio_1", "data": p}}}]}
                       for p in b64_pieces(token, cut)))  # fmt: skip

    body = served(rt, hostile, f"/rt12/chat-audio-{cut}", SSE, make)
    got = b"".join(base64.b64decode(d["choices"][0]["delta"]["audio"]["data"]) for d in sse_json(body))
    assert HOST.real.encode() not in got


@pytest.mark.parametrize("cut", [10, 13])
def test_rt12_realtime_audio_base64_deltas(rt: ProxyProcess, hostile: HostileServer, cut: int) -> None:
    """The Realtime API over a WebSocket: ``response.audio.delta`` messages, each ``delta`` base64 of
    the next bytes of audio. The key's bytes in two deltas (as above). The Realtime console (and
    every player) decodes each delta and appends the bytes to the item's audio: the key."""

    def make(token: str) -> list[bytes]:
        where = {"response_id": "r", "item_id": "i", "output_index": 0, "content_index": 0}
        return [json.dumps({"type": "response.audio.delta", **where, "delta": p}).encode()
                for p in b64_pieces(token, cut)]  # fmt: skip

    _ws_serve(hostile, f"/rt12/realtime-audio-{cut}", make)
    got = b"".join(base64.b64decode(json.loads(m)["delta"]) for m in _ws_texts(rt, f"/rt12/realtime-audio-{cut}"))
    assert HOST.real.encode() not in got


def test_rt12_converse_blocks_joined_in_index_order(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Bedrock ``ConverseStream`` (``application/vnd.amazon.eventstream``): ``contentBlockDelta`` of
    block 1 (the second half) before block 0's (the first half). Invariant 1: per
    ``contentBlockIndex`` each block is its own stream, and no later text continues block 0's end.
    A client builds ``content`` by ``contentBlockIndex`` (LangChain's ``ChatBedrockConverse``
    merges chunks by index) and reads the message's text, the blocks joined in order: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [rt11.converse(b, 1), rt11.converse(a, 0)]

    rt11.serve(hostile, "/rt12/converse-order", make)
    blocks = rt11.converse_blocks(rt11.agent_body(rt, "/rt12/converse-order"))
    assert HOST.real not in "".join(blocks[i] for i in sorted(blocks))


# == client-side filters ===========================================================================


def tgi(text: str, index: int, special: bool = False) -> Doc:
    return {"index": index, "token": {"id": 1000 + index, "text": text, "logprob": -0.1, "special": special},
            "generated_text": None, "details": None}  # fmt: skip


def tgi_text(chunks: list[Doc]) -> str:
    """LangChain's ``HuggingFaceEndpoint._stream`` (and ``HuggingFaceTextGenInference``) over TGI's
    ``generate_stream``: ``None if res.token.special else res.token.text``, joined."""
    return "".join(c["token"]["text"] for c in chunks if not c["token"]["special"])


def test_rt12_tgi_special_token_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Text Generation Inference's ``/generate_stream``: a token per event; the first half, then
    a special token (``"special": true``, ``</s>``-like text), then the second half. Invariant 1:
    ``.token.text`` reads ``A <special> B`` (each token's tagged path is its own: ``index`` and the
    token ``id``). LangChain's TGI clients drop special tokens and join the rest: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return plain(tgi(a, 0), tgi("<|eot_id|>", 1, special=True), tgi(b, 2))

    body = served(rt, hostile, "/rt12/tgi-special", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: tgi_text(sse_json(b)))


# == framed bodies =================================================================================


def gemini_array(token: str) -> list[bytes]:
    """Gemini's ``streamGenerateContent`` without ``alt=sse``: one JSON array streamed, an element
    at a time (``[{...}``, ``,{...}``, ``]``), as the REST API writes it."""
    a, b = halves(token)
    return [b"[" + json.dumps(_gemini([{"text": a}]), indent=2).encode() + b"\n",
            b"," + json.dumps(_gemini([{"text": b}]), indent=2).encode() + b"\n", b"]"]  # fmt: skip


def test_rt12_gemini_rest_json_array(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Gemini (and Vertex AI) ``:streamGenerateContent`` without ``alt=sse``: the chunks are the
    elements of one JSON array, streamed; the first half in one element's text part, the second
    in the next. Invariant 1: the lines begin with ``,`` or are pretty-printed members, no token
    stream to the sniffer; the body stream reads ``A"}]...,{...[{"text": "B``. A REST client
    (``requests.post(...).json()``, ijson over the array) joins the elements' texts: the key."""
    body = served(rt, hostile, "/rt12/gemini-array", "application/json; charset=UTF-8", gemini_array)
    got = _refused_or(body, lambda b: gemini_text(json.loads(b)))
    assert HOST.real not in got


def envelope(flags: int, data: bytes) -> bytes:
    """A Connect / gRPC-Web message: flags, a big-endian 32-bit length, the data."""
    return bytes([flags]) + struct.pack(">I", len(data)) + data


def envelopes(body: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while len(body) - pos >= 5:
        flags, size = body[pos], struct.unpack_from(">I", body, pos + 1)[0]
        if len(body) - pos - 5 < size:
            break
        out.append((flags, body[pos + 5 : pos + 5 + size]))
        pos += 5 + size
    return out


def test_rt12_connect_streaming_json(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The Connect protocol's server streaming with the JSON codec (``application/connect+json``):
    each message a 5-byte envelope and a JSON document, no line breaks; an end-of-stream envelope
    (flags 0x02) last. The key in two messages' ``text``. Invariant 1: no token stream to the
    sniffer; the body stream reads ``A"}\\x00\\x00\\x00\\x00\\x1a{"text": "B``. connect-es /
    connect-go read each envelope and parse it; the app joins ``text``: the key."""

    def make(token: str) -> list[bytes]:
        return [envelope(0, json.dumps({"text": t}).encode()) for t in halves(token)] + [envelope(2, b"{}")]

    body = served(rt, hostile, "/rt12/connect-json", "application/connect+json", make)
    got = "".join(json.loads(d)["text"] for f, d in envelopes(body) if f == 0)
    assert HOST.real not in got


def pb_string(field: int, text: str) -> bytes:
    """A protobuf string field (length-delimited; lengths under 128)."""
    data = text.encode()
    return bytes([field << 3 | 2, len(data)]) + data


def pb_strings(message: bytes) -> list[str]:
    """The length-delimited fields of a flat protobuf message (what the generated class reads)."""
    out: list[str] = []
    pos = 0
    while pos < len(message):
        key, size = message[pos], message[pos + 1]
        assert key & 7 == 2 and size < 128
        out.append(message[pos + 2 : pos + 2 + size].decode())
        pos += 2 + size
    return out


def test_rt12_grpc_web_proto_stream(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A gRPC-Web server stream (``application/grpc-web+proto``): each message a 5-byte frame and a
    protobuf message whose field 1 is the next text (a ``StreamGenerate`` reply); the trailers
    frame (0x80) last. Invariant 1: the body stream reads ``A\\x00\\x00\\x00\\x00\\x16\\x0a\\x14B``.
    grpc-web / connect-es decode each message; the app joins field 1: the key."""

    def make(token: str) -> list[bytes]:
        return [envelope(0, pb_string(1, t)) for t in halves(token)] + [envelope(0x80, b"grpc-status:0\r\n")]

    body = served(rt, hostile, "/rt12/grpc-web", "application/grpc-web+proto", make)
    got = "".join(s for f, d in envelopes(body) if f == 0 for s in pb_strings(d))
    assert HOST.real not in got


def msgpack_map(pairs: dict[str, str]) -> bytes:
    """A MessagePack map of short strings (fixmap; fixstr or str8)."""

    def s(x: str) -> bytes:
        b = x.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b

    return bytes([0x80 | len(pairs)]) + b"".join(s(k) + s(v) for k, v in pairs.items())


def msgpack_unmap(data: bytes) -> dict[str, str]:
    n, pos, out = data[0] & 0x0F, 1, []
    for _ in range(2 * n):
        if data[pos] == 0xD9:
            size, pos = data[pos + 1], pos + 2
        else:
            size, pos = data[pos] & 0x1F, pos + 1
        out.append(data[pos : pos + size].decode())
        pos += size
    return dict(zip(out[::2], out[1::2], strict=True))


def test_rt12_websocket_msgpack_deltas(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Binary WebSocket messages in MessagePack (SignalR's MessagePack protocol, socket.io-msgpack-
    parser, Centrifugo, many realtime APIs): ``{"type": "delta", "text": ...}`` each, the key in
    two. Invariant 1: a binary message that does not begin as JSON is checked only as part of the
    byte stream of all messages, which reads ``A\\x82\\xa4type\\xa5delta\\xa4text\\xd9.B``. The
    client unpacks each message and joins ``text``: the key."""

    def make(token: str) -> list[bytes]:
        return [msgpack_map({"type": "delta", "text": t}) for t in halves(token)]

    _ws_serve(hostile, "/rt12/ws-msgpack", make, opcode=0x2)
    head, frames = world.ws_agent_reads(rt, "/rt12/ws-msgpack")
    assert head.startswith(b"HTTP/1.1 101")
    got = "".join(msgpack_unmap(p)["text"] for op, p in ws_messages(frames) if op == 0x2)
    assert HOST.real not in got


# == across responses ==============================================================================


def sse_data(body: bytes) -> list[str]:
    """The ``data`` of each message event an SSE client dispatches (the openai SDK's decoder, which
    parses as the spec's EventSource does)."""
    from openai._streaming import SSEDecoder

    return [e.data for e in SSEDecoder().iter_bytes(iter([body])) if e.event in (None, "message")]


def test_rt12_eventsource_reconnect_resumes(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A resumable SSE stream: the first response's events end with the first half (``id: 1``,
    ``retry: 0``) and the response ends cleanly; the client reconnects at once with
    ``Last-Event-ID: 1`` and the second response continues with the second half. Invariant 1: the
    stitcher lives for one response, so the held half is released at its end and the second
    response starts fresh. The browser's ``EventSource`` (and fetch-event-source, the AI SDK's
    resumable streams) reconnects by itself and dispatches both responses' events to the same
    ``onmessage``; the app appends ``data``: the key."""
    seen: list[str] = []

    @hostile.on("/rt12/eventsource")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        seen.append(req.header("last-event-id"))
        piece = f"retry: 0\nid: 1\ndata: {a}\n\n" if len(seen) == 1 else f"id: 2\ndata: {b}\n\n"
        await send_pieces(w, SSE, [b": stream\n\n", piece.encode()])

    got = "".join(sse_data(agent_body(rt, "/rt12/eventsource")))
    got += "".join(sse_data(body_of(fetch(rt, "/rt12/eventsource", "Last-Event-ID: 1"))))
    assert seen == ["", "1"]
    assert HOST.real not in got


CONCATENATED = {
    "compact": lambda d: json.dumps(d).encode(),
    "pretty": lambda d: json.dumps(d, indent=2).encode() + b"\n",
}


def json_values(body: bytes) -> list[Doc]:
    """A stream of JSON values one after another, read as Go's ``json.Decoder`` (``for dec.More()``)
    or Python's ``raw_decode`` loop reads it: any whitespace, or none, between values."""
    text, pos, out = body.decode(), 0, []
    decoder = json.JSONDecoder()
    while (pos := len(text) - len(text[pos:].lstrip())) < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        out.append(doc)
    return out


@pytest.mark.parametrize("shape", list(CONCATENATED))
def test_rt12_concatenated_json_values(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """A stream of JSON values written one after another, with no separator (``{...}{...}``) or
    pretty-printed over several lines each, ``{"response": ...}`` the key in two values. Invariant
    1: neither is a JSON line stream to the sniffer (no line holds a document), so the body stream
    reads ``A"}{"response": "B``. Go's ``json.Decoder`` (the usual ``for dec.More()`` loop of Go
    clients) and Python's ``raw_decode`` loop read each value; the client joins ``response``: the
    key."""
    write = CONCATENATED[shape]

    def make(token: str) -> list[bytes]:
        return [write({"model": "m", "response": t, "done": False}) for t in halves(token)]

    body = served(rt, hostile, f"/rt12/concatenated-{shape}", "application/json", make)
    assert HOST.real not in _refused_or(body, lambda b: "".join(d["response"] for d in json_values(b)))


# == encodings cut at a seam =======================================================================

# An escape of the key's character at ``CUT`` cut in two: (end of the first text, start of the second,
# how the client decodes the stitched text).
CUT_ESCAPES: dict[str, tuple[str, str, Callable[[str], str]]] = {
    "percent": ("%", "{hex}", urllib.parse.unquote),
    "percent-one-digit": ("%{hex0}", "{hex1}", urllib.parse.unquote),
    "percent-u": ("%u00", "{hex}", lambda t: re.sub("%u00([0-9a-f]{2})", lambda m: chr(int(m[1], 16)), t)),
    "html-decimal": ("&#", "{dec};", html.unescape),
    "html-hex": ("&#x", "{hex};", html.unescape),
    "quoted-printable": ("={hex0}", "{hex1}", lambda t: quopri.decodestring(t.encode()).decode()),
}


def _snapshot_then_delta(first: str, second: str) -> list[bytes]:
    """Anthropic: a text block seeded by ``content_block_start`` (``first``), grown by a delta."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": []}
    return named({"type": "message_start", "message": message},
                 {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": first}},
                 {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": second}},
                 {"type": "content_block_stop", "index": 0}, {"type": "message_stop"})  # fmt: skip


def cut_escape(token: str, shape: str) -> tuple[str, str]:
    """``Your key: `` and the key, its character at ``CUT`` escaped and the escape cut in two."""
    end, start, _ = CUT_ESCAPES[shape]
    c = token[CUT]
    fill = {"hex": f"{ord(c):02x}", "hex0": f"{ord(c):02x}"[0], "hex1": f"{ord(c):02x}"[1], "dec": str(ord(c))}
    return f"Your key: {token[:CUT]}{end.format(**fill)}", start.format(**fill) + token[CUT + 1 :]


CUT = 17  # (a character of the key's hex part, past "rtREALhostile")


@pytest.mark.parametrize("shape", list(CUT_ESCAPES))
def test_rt12_escape_cut_at_a_snapshot_seam(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """An SDK's snapshot grown by a delta (Anthropic ``content_block_start``'s text, then a
    ``text_delta``: red team 7's fixed ``snapshot-then-deltas``), the key's 18th character
    percent-encoded, an HTML character reference or quoted-printable, the escape cut between the
    two texts (``...%`` | ``6x...``, ``...&#x`` | ``6x;...``). Invariant 1: on one path the same cut
    is refused (the escaped view); across the seam it goes out -- ``open_end`` keeps a region for
    the next path only when ``_has_escapes`` sees a whole escape in it, and a cut ``%``, ``&`` or
    ``=`` is none (JSON's and C's backslash escapes cut the same way are refused). The client
    stitches the text (``MessageStream``) and decodes it as a URL, as HTML (a chat UI that renders
    it) or as quoted-printable: the key."""
    decode = CUT_ESCAPES[shape][2]
    body = served(rt, hostile, f"/rt12/seam-{shape}", SSE, lambda t: _snapshot_then_delta(*cut_escape(t, shape)))
    assert HOST.real not in _refused_or(body, lambda b: decode(_anthropic_text(sse_json(b))))


def test_rt12_escape_cut_on_one_path(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The percent escape cut the same way between two deltas of one block (one path). Held:
    refused or cut."""

    def make(token: str) -> list[bytes]:
        first, second = cut_escape(token, "percent")
        return _anthropic([(0, first), (0, second)], 1)(token)

    body = served(rt, hostile, "/rt12/one-path-percent", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: urllib.parse.unquote(_anthropic_text(sse_json(b))))


# == JSON in a JSON string, padded ================================================================

PADS = {"leading-space": (" ", ""), "trailing-newline": ("", "\n"), "both-crlf": ("\r\n", "\r\n")}


@pytest.mark.parametrize("pad", list(PADS))
def test_rt12_pusher_padded_json_in_a_json_string(rt: ProxyProcess, hostile: HostileServer, pad: str) -> None:
    """Pusher messages over a WebSocket (red team 7's fixed ``json-in-a-json-string``), the inner
    JSON in ``data`` with whitespace around it (a server that writes ``json_encode($x) . "\\n"``).
    Invariant 1: the inner document is read again only when the string begins with ``{``/``[`` and
    ends with ``}``/``]``, so ``.data`` is stitched as raw JSON text, syntax between the halves.
    ``JSON.parse`` (pusher-js's ``decodeMessage``) skips the whitespace; the app appends the
    deltas: the key."""
    before, after = PADS[pad]

    def make(token: str) -> list[bytes]:
        return [json.dumps({"event": "delta", "channel": "c", "data": before + json.dumps({"delta": t}) + after}).encode()
                for t in halves(token)]  # fmt: skip

    _ws_serve(hostile, f"/rt12/pusher-{pad}", make)
    read = "".join(json.loads(json.loads(m)["data"])["delta"] for m in _ws_texts(rt, f"/rt12/pusher-{pad}"))
    assert HOST.real not in read


def test_rt12_ably_sse_padded_json_data(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Ably-style SSE messages, ``"encoding": "json"``, the inner ``data`` ending in a line break.
    Invariant 1 (as above). ably-js decodes ``encoding: json`` with ``JSON.parse``: the key."""

    def make(token: str) -> list[bytes]:
        return plain(*({"id": f"m{i}", "name": "delta", "encoding": "json", "data": json.dumps({"text": t}) + "\n"}
                       for i, t in enumerate(halves(token))))  # fmt: skip

    read = "".join(json.loads(m["data"])["text"] for m in sse_json(served(rt, hostile, "/rt12/ably-padded", SSE, make)))
    assert HOST.real not in read


def test_rt12_pusher_json_string_in_a_json_string(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Pusher messages whose ``data`` is a JSON *string* encoded again (``"data": "\\"...\\""``,
    what ``json_encode`` of a PHP string gives). Invariant 1: only an inner object or array is read
    again, so ``.data`` is stitched as ``"A""B"``. pusher-js ``JSON.parse``s ``data`` to the string;
    the handler appends it: the key."""

    def make(token: str) -> list[bytes]:
        return [json.dumps({"event": "delta", "channel": "c", "data": json.dumps(t)}).encode() for t in halves(token)]

    _ws_serve(hostile, "/rt12/pusher-string", make)
    read = "".join(json.loads(json.loads(m)["data"]) for m in _ws_texts(rt, "/rt12/pusher-string"))
    assert HOST.real not in read


# == WebSocket subprotocols ========================================================================


def phoenix(event: str, text: str, ref: int) -> bytes:
    """A Phoenix Channels message (serializer V2): ``[join_ref, ref, topic, event, payload]``."""
    return json.dumps([None, str(ref), "room:lobby", event, {"text": text}]).encode()


def test_rt12_phoenix_other_event_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Phoenix Channels over a WebSocket: ``delta`` messages carrying the halves, a ``status``
    message with the same payload shape between them. Invariant 1: the stitcher names a Socket.IO
    event (the first element, behind its packet type) but a Phoenix array's elements are positions
    only: ``[4].text`` (plain and tagged ``[].text``) reads ``A typing... B``. phoenix.js calls the
    handler of each event (``channel.on("delta", ...)``); it appends ``text``: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [phoenix("delta", a, 1), phoenix("status", "typing...", 2), phoenix("delta", b, 3)]

    _ws_serve(hostile, "/rt12/phoenix", make)
    read = "".join(m[4]["text"] for m in map(json.loads, _ws_texts(rt, "/rt12/phoenix")) if m[3] == "delta")
    assert HOST.real not in read


def stomp(text: str, n: int) -> bytes:
    """A STOMP ``MESSAGE`` frame (headers, a blank line, a JSON body, NUL)."""
    body = json.dumps({"delta": text}).encode()
    head = f"MESSAGE\ndestination:/topic/chat\ncontent-type:application/json\nsubscription:sub-0\nmessage-id:{n}\n"
    return head.encode() + b"content-length:%d\n\n" % len(body) + body + b"\x00"


def stomp_bodies(messages: list[bytes]) -> list[Doc]:
    return [json.loads(m.partition(b"\n\n")[2].rstrip(b"\x00")) for m in messages if m.startswith(b"MESSAGE\n")]


def test_rt12_stomp_json_bodies(rt: ProxyProcess, hostile: HostileServer) -> None:
    """STOMP over a WebSocket (Spring's message broker, RabbitMQ Web-STOMP; stompjs in the client):
    two ``MESSAGE`` frames whose JSON bodies carry the halves in ``delta``. Invariant 1: a message
    that does not begin as JSON is read as raw text, the next frame's command and headers between
    the halves. stompjs hands each frame's ``body`` to the subscription; the app parses it and
    appends ``delta``: the key."""

    def make(token: str) -> list[bytes]:
        return [stomp(t, n) for n, t in enumerate(halves(token))]

    _ws_serve(hostile, "/rt12/stomp", make)
    read = "".join(d["delta"] for d in stomp_bodies(_ws_texts(rt, "/rt12/stomp")))
    assert HOST.real not in read


# Each: (a message on channel ``ch`` carrying ``text``, the (channel, text) a client reads of one).
CHANNELS: dict[str, tuple[Callable[[str, str], Doc], Callable[[Doc], tuple[str, str]]]] = {
    "pusher": (lambda ch, t: {"event": "delta", "channel": ch, "data": json.dumps({"delta": t})},
               lambda m: (m["channel"], json.loads(m["data"])["delta"])),
    "actioncable": (lambda ch, t: {"identifier": json.dumps({"channel": "ChatChannel", "room": ch}),
                                   "message": {"delta": t}},
                    lambda m: (m["identifier"], m["message"]["delta"])),
    "centrifugo": (lambda ch, t: {"push": {"channel": ch, "pub": {"data": {"delta": t}}}},
                   lambda m: (m["push"]["channel"], m["push"]["pub"]["data"]["delta"])),
    "ably": (lambda ch, t: {"action": 15, "channel": ch, "messages": [{"name": "delta", "data": t}]},
             lambda m: (m["channel"], m["messages"][0]["data"])),
}  # fmt: skip


@pytest.mark.parametrize("proto", list(CHANNELS))
def test_rt12_websocket_other_channel_between(rt: ProxyProcess, hostile: HostileServer, proto: str) -> None:
    """One WebSocket multiplexing subscriptions (Pusher's ``channel``, Action Cable's
    ``identifier``, Centrifugo's ``push.channel``, Ably's ``channel``): the halves on channel
    ``room-a``, a message of the same shape on ``room-b`` between them. Invariant 1: the channel is
    not one of the output fields, so plain and tagged paths read ``A zz B``. pusher-js,
    @rails/actioncable, centrifuge-js and ably-js deliver each message to its channel's
    subscription; the app appends what ``room-a`` says: the key."""
    write, read = CHANNELS[proto]

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [json.dumps(write(ch, t)).encode() for ch, t in (("room-a", a), ("room-b", "zz"), ("room-a", b))]

    _ws_serve(hostile, f"/rt12/channels-{proto}", make)
    said: dict[str, str] = {}
    for ch, t in (read(json.loads(m)) for m in _ws_texts(rt, f"/rt12/channels-{proto}")):
        said[ch] = said.get(ch, "") + t
    assert all(HOST.real not in t for t in said.values())


def docker_frame(stream: int, data: bytes) -> bytes:
    """A Docker multiplexed-stream frame: the stream (1 stdout, 2 stderr), three zeros, a
    big-endian 32-bit size, the data."""
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data


def docker_demux(body: bytes) -> bytes:
    """docker-py's ``frames_iter`` / ``demux_adaptor``: stdout's frames joined."""
    out, pos = b"", 0
    while len(body) - pos >= 8:
        stream, size = body[pos], struct.unpack_from(">I", body, pos + 4)[0]
        if stream == 1:
            out += body[pos + 8 : pos + 8 + size]
        pos += 8 + size
    return out


def test_rt12_docker_multiplexed_stream(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Docker's attach / logs / exec output without a TTY
    (``application/vnd.docker.multiplexed-stream``): 8-byte frame headers before each piece of
    stdout or stderr; the halves in two stdout frames, a stderr frame between. Invariant 1: the
    body stream reads ``A\\x02\\x00\\x00\\x00...warn\\x01\\x00...B``. docker-py (``demux=True``),
    the Docker CLI and dockerode demultiplex and join stdout: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [docker_frame(1, a.encode()), docker_frame(2, b"warning: slow\n"), docker_frame(1, b.encode())]

    body = served(rt, hostile, "/rt12/docker", "application/vnd.docker.multiplexed-stream", make)
    assert HOST.real.encode() not in docker_demux(body)


def test_rt12_kubernetes_exec_channels(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``kubectl exec`` / the Kubernetes clients over a WebSocket (``v4.channel.k8s.io``): each
    binary message begins with its channel byte (1 stdout, 2 stderr). The halves in two stdout
    messages, a stderr one between. Invariant 1: the byte stream of all messages reads
    ``A\\x02warn\\x01B``. The client strips the channel byte and joins stdout: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [b"\x01" + a.encode(), b"\x02warning\n", b"\x01" + b.encode()]

    _ws_serve(hostile, "/rt12/k8s", make, opcode=0x2)
    head, frames = world.ws_agent_reads(rt, "/rt12/k8s")
    assert head.startswith(b"HTTP/1.1 101")
    stdout = b"".join(p[1:] for op, p in ws_messages(frames) if op == 0x2 and p[:1] == b"\x01")
    assert HOST.real.encode() not in stdout


_CSI = re.compile("\x1b\\[[0-9;?]*[ -/]*[@-~]")  # (strip-ansi's CSI: what a terminal acts on and never shows)

ANSI = {"sgr-reset": "\x1b[0m", "sgr-color": "\x1b[1;32m", "erase-line": "\x1b[K"}


@pytest.mark.parametrize("seq", list(ANSI))
def test_rt12_ansi_sequence_between(rt: ProxyProcess, hostile: HostileServer, seq: str) -> None:
    """Chunked ``text/plain`` command output (a log or exec stream, colored), a terminal control
    sequence (SGR colour, erase-line) between the halves. Invariant 1: no decoded view drops CSI
    sequences, so no form of the key is there. A terminal shows the key; agent harnesses strip
    ANSI codes from tool output (``strip-ansi``) before the model reads it: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [b"$ env\n", a.encode(), (ANSI[seq] + b + "\n").encode()]

    body = served(rt, hostile, f"/rt12/ansi-{seq}", "text/plain; charset=utf-8", make)
    assert HOST.real not in _CSI.sub("", body.decode())


NOT_JSON = {"progress": b"# progress 50%\n", "number": b"42\n", "html-comment": b"<!-- -->\n"}


@pytest.mark.parametrize("line", list(NOT_JSON))
def test_rt12_json_lines_with_another_line_between(rt: ProxyProcess, hostile: HostileServer, line: str) -> None:
    """JSON lines under ``application/json`` (many servers label their NDJSON so), the halves in two
    documents' ``response`` with a line that is no JSON object between (a progress note, a bare
    number). Invariant 1: red team 7's fix lets textless lines (``{}``, ``: keep-alive``) come
    between, but any other line keeps the two document lines from counting as in a row, so the
    body is scrubbed as bytes, the line between the halves. A tolerant line reader (``if
    line.startswith("{"): json.loads(line)``) joins ``response``: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [
            json.dumps({"response": a}).encode() + b"\n",
            NOT_JSON[line],
            json.dumps({"response": b}).encode() + b"\n",
        ]

    body = served(rt, hostile, f"/rt12/json-lines-{line}", "application/json", make)
    read = "".join(json.loads(ln)["response"] for ln in body.decode().splitlines() if ln.startswith("{"))
    assert HOST.real not in read


# The key in a Unicode form: (write it, what a client does that gives it back).
UNICODE: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "fullwidth-nfkc": (lambda t: "".join(chr(ord(c) + 0xFEE0) for c in t),
                       lambda t: unicodedata.normalize("NFKC", t)),
    "zero-width-spaces": (lambda t: "\u200b".join(t),
                          lambda t: "".join(c for c in t if unicodedata.category(c) != "Cf")),
    "soft-hyphens": (lambda t: "\u00ad".join(t),
                     lambda t: "".join(c for c in t if unicodedata.category(c) != "Cf")),
}  # fmt: skip


@pytest.mark.parametrize("form", list(UNICODE))
def test_rt12_unicode_forms_streamed(rt: ProxyProcess, hostile: HostileServer, form: str) -> None:
    """The key streamed as chat deltas in a Unicode form a client turns back into it: fullwidth
    letters and digits (``unicodedata.normalize("NFKC")``, which search indexes, LangChain's and
    many RAG text cleaners apply), or a zero-width space or soft hyphen between every two
    characters (format characters, category Cf: invisible in a browser, which shows the key, and
    dropped by the usual ``[\\u200B-\\u200D\\uFEFF\\u00AD]`` sanitizers). Invariant 1: no view of the
    scrubbers reads these, so the value is in no form it knows. The client's text, so cleaned: the
    key."""
    write, undo = UNICODE[form]

    def make(token: str) -> list[bytes]:
        text = write(token)
        half = len(text) // 2
        return plain(
            *({"choices": [{"index": 0, "delta": {"content": t}}]} for t in ("Your key: " + text[:half], text[half:]))
        )

    body = served(rt, hostile, f"/rt12/unicode-{form}", SSE, make)
    read = "".join(d["choices"][0]["delta"]["content"] for d in sse_json(body))
    assert HOST.real not in undo(read)


# == attempts that held ============================================================================


def test_rt12_anthropic_blocks_in_index_order_adjacent(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The in-order seam the family above gets round: block 0's text ends with the first half and
    block 1's next text begins with the second, no text between. Held: the plain ``.delta.text``
    path reads them together: refused or cut."""
    make = _anthropic([(0, "A"), (1, "B")], 2)
    body = served(rt, hostile, "/rt12/anthropic-adjacent", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: _anthropic_text(sse_json(b)))


def test_rt12_chat_audio_base64_deltas_aligned(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The audio deltas above with the first piece a multiple of 3 long (21 bytes): the base64
    strings join into base64 of the key. Held: refused or cut."""

    def make(token: str) -> list[bytes]:
        return plain(*({"choices": [{"index": 0, "delta": {"audio": {"id": "audio_1", "data": p}}}]}
                       for p in b64_pieces(token, 11)))  # fmt: skip

    body = served(rt, hostile, "/rt12/chat-audio-aligned", SSE, make)
    docs = _refused_or(body, lambda b: json.dumps(sse_json(b)))
    got = b"".join(base64.b64decode(d["choices"][0]["delta"]["audio"]["data"]) for d in json.loads(docs or "[]"))
    assert HOST.real.encode() not in got


def test_rt12_chunked_cookies(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A session cookie written in chunks, as ``@supabase/ssr`` and NextAuth write cookies over the
    4 KB limit: ``Set-Cookie: sb-auth-token.0=<first half>`` and ``sb-auth-token.1=<second half>``.
    Invariant 1 (every channel back to the agent): each field is searched on its own (and with the
    others joined by a separator no pattern crosses). The client's cookie jar keeps both; the
    library's ``combineChunks`` joins ``name.0``, ``name.1``, ... in order: the key."""

    @hostile.on("/rt12/cookie-chunks")
    async def _(req: Request, w: Wire) -> None:
        a, b = (p.replace(" ", "%20") for p in halves(req.token))
        cookies = f"Set-Cookie: sb-auth-token.0={a}; Path=/\r\nSet-Cookie: sb-auth-token.1={b}; Path=/\r\n"
        await w.send(_respond(cookies, b"ok"))

    head = fetch(rt, "/rt12/cookie-chunks").partition(b"\r\n\r\n")[0].decode()
    jar = dict(
        line.split(":", 1)[1].strip().split(";")[0].split("=", 1)
        for line in head.split("\r\n")
        if line.lower().startswith("set-cookie:")
    )
    combined = "".join(jar[f"sb-auth-token.{i}"] for i in range(len(jar)) if f"sb-auth-token.{i}" in jar)
    assert HOST.real not in urllib.parse.unquote(combined)


@pytest.mark.parametrize("cut", [13, 17, 30])
def test_rt12_base64_cut_at_a_snapshot_seam(rt: ProxyProcess, hostile: HostileServer, cut: int) -> None:
    """``Your key: <key>`` in base64, the base64 cut between a ``content_block_start`` snapshot and
    its delta (before, at and past where the key's stable base64 begins). Held: replaced, refused
    or cut; the stitched text never decodes to the key."""

    def make(token: str) -> list[bytes]:
        text = base64.b64encode(f"Your key: {token}".encode()).decode()
        return _snapshot_then_delta(text[:cut], text[cut:])

    body = served(rt, hostile, f"/rt12/seam-base64-{cut}", SSE, make)
    got = _refused_or(body, lambda b: _anthropic_text(sse_json(b)))
    assert HOST.real.encode() not in base64.b64decode(got[: len(got) - len(got) % 4])  # (a cut text: its whole quanta)


def test_rt12_json_lines_with_another_line_between_under_an_ndjson_label(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """The body above labelled ``application/x-ndjson``: every line is an event, the document lines'
    ``response`` path reads both halves. Held: refused or cut."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [
            json.dumps({"response": a}).encode() + b"\n",
            b"# progress 50%\n",
            json.dumps({"response": b}).encode() + b"\n",
        ]

    body = served(rt, hostile, "/rt12/ndjson-line-between", "application/x-ndjson", make)
    read = "".join(json.loads(ln)["response"] for ln in body.decode().splitlines() if ln.startswith("{"))
    assert HOST.real not in read
