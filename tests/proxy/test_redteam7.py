"""Red team, seventh pass: invariant 1 (no real value back to the agent) through token streams, after
an event whose texts look clean began to be checked in one combined search.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py: its
hostile HTTPS upstream, bound to the ``rthostile`` secret, receives the real key after the swap and
hands it back split so that no byte stream holds it whole). A test reads what the agent got the way
a real client does -- the openai SDK's own accumulators (``ChatCompletionStreamState``,
``ResponseStreamState``), openai-node's ``choices[index]``, and, written out from their sources, the
Anthropic SDK's ``MessageStream``, the Vercel AI SDK's UI message stream, the Realtime console's
conversation, pusher-js, ably-js, google-genai's ``response.text`` and the hand-written
``for line in iter_lines()`` reader -- and asserts the key is not there. A refusal (502, a cut
body, a 1008 close) holds the line. A break is marked ``xfail(strict=True)``.

The one-search path itself held: pure-scrubber runs of every shape below gave the same refusals
and releases through it as text by text. What breaks is what a path is. The stitcher follows a text
by its JSON path and by a *tagged* path (array positions dropped, every enclosing object's output
field -- ``index``, ``output_index``, ``content_index``, ``item_id``, ``id`` -- named with its
value); a client follows neither exactly.

Fixed on merging (main, 2026-12-03), each now a passing test below: a leaf is stitched by a third,
*indexed* path too (only the positional output fields, ``index``, ``output_index`` and
``content_index``: an ``id`` that comes and goes no longer splits a call or a choice); ``toolCallId``
and ``type`` are output fields; a fraction of any length is read as JavaScript reads it; a path
whose decoded view ends in even one character of a value (or an escape cut short) is not idle, so
not forgotten. That is ``tool-call-id-only-in-first-chunk``, ``tool-call-id-carries-the-key``,
``chunk-id-varies``, ``index-as-a-long-fraction``, ``ai-sdk-tool-input-deltas``,
``delta-of-another-type-between``, Gemini's ``part-with-an-id`` and
``escaped-prefix-path-forgotten-behind-64-tool-calls``.

Fixed next (fix-rt7, 2026-12-03), each now a passing test below: a text is also checked against
what every other path's text ended with since its own paths' last text (a value begun at one
path's end and continued by another path's next text is refused; continued, it is followed and
held), an event's name is an output field (SSE ``event:``, a Socket.IO event's name, ``event``,
SignalR's ``target``), a payload beginning with ``data:`` is read with the prefixes stripped too, a
binary WebSocket message is JSON in any UTF ``json.loads`` reads, and textless lines (``{}``,
``: keep-alive``) between two JSON document lines do not keep them from counting as in a row. That
is ``snapshot-then-deltas`` (all three), the Realtime ``content-part-then-delta``, Gemini's
``index-only-in-first-chunk``, ``prefix-stripping-line-reader`` (both),
``websocket-other-event-between-deltas`` (both), ``sse-named-event-between-tokens`` (both),
``websocket-binary-json-in-another-utf`` (all three) and
``unlabelled-json-lines-alternating-with-textless-lines`` (both); and a JSON string that is a JSON
document is read again (its leaves under the string's paths, two levels deep): ``json-in-a-json-string``
(Pusher, Ably). Fixed last (fixstream, 2026-12-03): binary messages are also one byte stream of
their own (proxy.core.scrub.MessageScrubber), whatever text messages come between:
``websocket-binary-chunks-with-a-json-message-between``.

Breaks (as found):

- ``tool-call-id-only-in-first-chunk``: two parallel OpenAI tool calls streamed interleaved, each
  chunk's one call at array position 0 (how OpenAI streams them), ``id`` only in a call's first
  chunk (as OpenAI sends it). The plain path interleaves both calls; the tagged path of call 0's
  first chunk names ``<id=call_a>``, its later chunks' do not: two streams. The SDK accumulates
  ``arguments`` by ``index``: the key.
- ``tool-call-id-carries-the-key``: the key split over two chunks' tool-call ``id`` (calls
  interleaved as above). The ``id`` value is in its own tagged path, so each half has its own
  stream; the openai SDK's ``accumulate_delta`` concatenates every string field of a delta,
  ``id`` included.
- ``chunk-id-varies``: OpenAI ``n=2`` chunks, choice 0's halves at different array positions, the
  chunk's top-level ``id`` new in every chunk (OpenAI-compatible servers that mint one per chunk
  exist). Tagged paths differ by ``<id=...>``; plain ones by position. The SDK stitches
  ``choices[index]``: the key.
- ``index-as-a-long-fraction``: choice 0's second half with ``"index": 0.000...0`` (70 zeros): the
  lenient reader makes a fraction of more than 64 digits 0.5, no output index, so no tag; JavaScript
  reads 0 (openai-node accumulates ``choices[index]``).
- ``ai-sdk-tool-input-deltas``: the AI SDK UI message stream's ``tool-input-delta`` parts of two
  tool calls interleaved: the SDK appends ``inputTextDelta`` by ``toolCallId``, which is not an
  output field; the plain path interleaves both calls.
- ``snapshot-then-deltas`` (four shapes): a client's snapshot seeded by one event and grown by
  deltas on another path -- Anthropic ``content_block_start`` (``content_block.text``) then
  ``content_block_delta``; Anthropic ``message_start`` (``message.content[0].text``) then a delta;
  the Responses API's ``response.content_part.added`` (``part.text``) then
  ``response.output_text.delta`` (the openai SDK's ``ResponseStreamState``); the Realtime API's
  ``response.content_part.added`` then ``response.text.delta`` over a WebSocket. The first half
  is on one path, the second on another; the SDKs append the delta to the seeded text.
- ``prefix-stripping-line-reader`` (two shapes): under ``text/event-stream``, the hand-written
  reader ``for line in iter_lines(): json.loads(line.replace("data: ", ""))`` (LiteLLM's and
  countless others' way to read SSE and NDJSON alike). A ``data:`` event then a bare JSON line:
  the scrubber stitches an SSE client's texts and a line reader's apart ("two clients"), but this
  one client reads both. ``data: data: {...}``: the SSE payload is no JSON, raw text with JSON
  between the halves; ``replace`` strips both prefixes.
- ``json-in-a-json-string``: Pusher messages over a WebSocket (``{"event":..., "data": "<JSON>"}``:
  pusher-js parses a string ``data`` again) and Ably-style SSE (``"data": "<JSON>", "encoding":
  "json"``): the stitched text is the inner JSON, syntax between the halves; the client parses it
  and appends the deltas.
- ``delta-of-another-type-between``: a Responses ``response.refusal.delta`` (same ``item_id``,
  ``output_index``, ``content_index``) or an AI SDK ``reasoning-delta`` (same ``id``) between two
  text deltas: the event ``type`` is no output field, so both streams read junk between the
  halves; the clients dispatch on ``type``.
- ``gemini-parts-with-an-output-field-on-one-chunk``: the second half in ``parts[1]`` after an
  empty ``parts[0]``, with the candidate's ``index`` in the first chunk only, or an ``id`` on the
  part: the tagged ``parts[]`` path that would join them is named apart. google-genai's
  ``response.text`` joins every text part.
- ``websocket-binary-json-in-another-utf``: binary JSON deltas behind a UTF-8 BOM, in UTF-16BE,
  or UTF-32 with a BOM: only a binary message whose first byte is ``{`` or ``[`` is stitched;
  ``json.loads`` of the bytes detects the UTF.
- ``escaped-prefix-path-forgotten-behind-64-tool-calls``: call 0's arguments end in the key's
  first two characters as JSON escapes, then 65 one-chunk tool calls, then the escaped rest. A
  view ending in fewer than MIN_HOLD characters is not held, and ``idle()`` asks only the raw
  tail, so the stream is forgotten (LRU, MAX_PATHS) and the rest starts fresh. With 10 calls:
  refused.
- ``websocket-other-event-between-deltas``: Socket.IO ``42["status", ...]`` or a SignalR
  ``Status`` invocation between two ``delta`` ones: the event name is no output field; clients
  call the handler of each name.
- ``websocket-binary-chunks-with-a-json-message-between``: a file as binary messages with a JSON
  progress message between the halves: binary messages that are no JSON are checked only as the
  one byte stream of all messages; the client joins the binary ones.
- ``sse-named-event-between-tokens``: ``event: token`` / ``event: status`` / ``event: token``:
  the event name is no part of a path; a browser app listens by name.
- ``unlabelled-json-lines-alternating-with-textless-lines``: under ``application/json``, each
  document line followed by ``{}`` or ``: keep-alive``: the sniffer switches only at two
  text-bearing JSON lines in a row, so the body is scrubbed as bytes; a line reader stitches
  ``response``.

Attempts that held (passing tests at the end): a value split over three events with empty texts and
an event without the field between; mixed case across events; JSON escapes in tool-call arguments
cut at several offsets across two events; 70 decoy paths each ending in a prefix of the value; a
WebSocket delta split over three messages; json-seq (RS before each line); Gemini parts with an
empty text between the halves (no tag on one chunk only); the forgotten-path attack with 10 calls.
And, on the pure ``EventScrubber``, 20,000 random SSE event sequences (paths appearing and
vanishing, empty texts, output indexes on some events, value pieces in mixed case, cut escapes,
non-ASCII that lowercases to other lengths) gave the same output and refusals with the one-search
path as with it disabled.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, ws_agent_reads, ws_handshake
from tests.proxy.test_redteam3 import ws_messages
from tests.proxy.test_redteam5 import node, send_pieces
from tests.proxy.test_redteam6 import agent_body, halves, httpx_lines
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

SSE = "text/event-stream"


def sse(*docs: object) -> list[bytes]:
    """One ``data:`` event per document, then ``[DONE]``."""
    return [b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs] + [b"data: [DONE]\n\n"]


def served(
    rt: ProxyProcess, hostile: HostileServer, path: str, ctype: str, make: Callable[[str], list[bytes]]
) -> bytes:
    """Serve ``make(token)`` as a chunked response, one piece a chunk; the agent's body."""

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await send_pieces(w, ctype, make(req.token))

    return agent_body(rt, path)


def sse_json(body: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of the SSE events the openai SDK's decoder reads from ``body``."""
    from openai._streaming import SSEDecoder

    return [json.loads(e.data) for e in SSEDecoder().iter_bytes(iter([body])) if e.data.startswith("{")]


def openai_chat(body: bytes) -> Any:
    """The completion the openai SDK accumulates from a chat stream (``ChatCompletionStreamState``,
    what ``client.chat.completions.stream`` keeps)."""
    from openai._models import construct_type
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    docs = sse_json(body)
    if not docs:
        raise ValueError("no chunk")  # (refused: the body is the proxy's error)
    for doc in docs:
        state.handle_chunk(construct_type(type_=ChatCompletionChunk, value=doc))  # type: ignore[arg-type]
    return state.current_completion_snapshot


def tool_chunk(index: int, arguments: str, call_id: str | None = None) -> dict[str, Any]:
    """An OpenAI chat chunk with one tool-call fragment at array position 0 (``id``, ``type`` and
    the name in a call's first chunk only, as OpenAI streams them)."""
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call = {"index": index, "id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}  # fmt: skip


def chat_chunk(chunk_id: str, *choices: tuple[int, str]) -> dict[str, Any]:
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": i, "delta": {"content": t}, "finish_reason": None} for i, t in choices]}  # fmt: skip


# == breaks =======================================================================================


def test_rt7_tool_call_id_only_in_first_chunk(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Two parallel tool calls streamed interleaved, each chunk's one fragment at array position 0,
    ``id`` in a call's first chunk only (OpenAI's own shape); call 0's arguments carry the key in
    two fragments. Invariant 1 (stitched by path and by output): the plain path
    ``tool_calls[0].function.arguments`` interleaves the calls; the tagged path is
    ``<index=0><id=call_a>`` for the first fragment and ``<index=0>`` after, two streams. The openai
    SDK accumulates ``arguments`` by ``index`` and parses them: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return sse(tool_chunk(0, '{"note": "' + a, "call_a"), tool_chunk(1, '{"x": "', "call_b"),
                   tool_chunk(0, b + '"}'), tool_chunk(1, 'y"}'))  # fmt: skip

    def read(b: bytes) -> str:
        return str(json.loads(openai_chat(b).choices[0].message.tool_calls[0].function.arguments)["note"])

    assert HOST.real not in _refused_or(served(rt, hostile, "/rt7/tool-id-first", SSE, make), read)


def test_rt7_tool_call_id_carries_the_key(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The key split over two chunks' tool-call ``id``, two calls interleaved at array position 0.
    Invariant 1 (across the output fields): the tagged path holds the ``id`` value, so each half
    is on its own stream; the plain one interleaves the calls. The openai SDK's ``accumulate_delta``
    concatenates every string of a delta but ``index`` and ``type``: ``tool_calls[0].id`` is the
    key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return sse(tool_chunk(0, "", a), tool_chunk(1, "", "call_b"), tool_chunk(0, "{}", b))

    def read(b: bytes) -> str:
        return str(openai_chat(b).choices[0].message.tool_calls[0].id)

    assert HOST.real not in _refused_or(served(rt, hostile, "/rt7/tool-id-key", SSE, make), read)


def test_rt7_chunk_id_varies_and_choices_move(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI ``n=2`` chunks: choice 0's first half alone, then choice 1 at position 0 and choice 0's
    second half at position 1; the chunk's top-level ``id`` new in each chunk. Invariant 1: the
    tagged paths name ``<id=chunk-1>`` and ``<id=chunk-2>``; the plain ones positions [0] and [1].
    The openai SDK accumulates ``choices[index]``: choice 0 reads the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return sse(chat_chunk("chunk-1", (0, a)), chat_chunk("chunk-2", (1, "Hello"), (0, b)))

    def read(b: bytes) -> str:
        return str(openai_chat(b).choices[0].message.content)

    assert HOST.real not in _refused_or(served(rt, hostile, "/rt7/chunk-id", SSE, make), read)


def test_rt7_index_as_a_long_fraction(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Choice 0's halves in two chunks, a chunk of choice 1 between them (each at position 0); the
    second half's ``index`` written ``0.`` and 70 zeros. Invariant 1 (streams stitched per output
    index): the lenient reader makes a fraction of more than 64 digits 0.5, which tags nothing, so
    the half sits on the untagged path; the plain path interleaves choice 1. JavaScript reads 0:
    openai-node's ``choices[index]`` accumulation reads the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        last = json.dumps(chat_chunk("c", (0, b))).replace('"index": 0', '"index": 0.' + "0" * 70)
        return [*sse(chat_chunk("c", (0, a)), chat_chunk("c", (1, "Hello")))[:-1], f"data: {last}\n\n".encode()]

    def read(b: bytes) -> str:
        try:
            return node(
                "const acc = []; for (const l of buf.toString().split('\\n')) { if (!l.startsWith('data: {')) continue;"
                " for (const c of JSON.parse(l.slice(6)).choices) acc[c.index] = (acc[c.index] || '') + c.delta.content; }"
                " return acc[0];",
                b,
            )
        except subprocess.CalledProcessError as e:  # (refused: the body is the proxy's error)
            raise ValueError("no chunk") from e

    assert HOST.real not in _refused_or(served(rt, hostile, "/rt7/long-fraction", SSE, make), read)


def test_rt7_ai_sdk_tool_input_deltas(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The Vercel AI SDK's UI message stream: two tool calls' ``tool-input-delta`` parts
    interleaved, call c1's input carrying the key in two. Invariant 1: ``toolCallId`` is not one of
    the scrubber's output fields, so the plain and tagged ``.inputTextDelta`` streams interleave
    both calls. ``processUIMessageStream`` appends ``inputTextDelta`` to the part of its
    ``toolCallId`` and parses it (``parsePartialJson``): the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return sse({"type": "start"},
                   {"type": "tool-input-start", "toolCallId": "c1", "toolName": "f"},
                   {"type": "tool-input-start", "toolCallId": "c2", "toolName": "g"},
                   {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"note":"' + a},
                   {"type": "tool-input-delta", "toolCallId": "c2", "inputTextDelta": '{"x":"'},
                   {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": b + '"}'},
                   {"type": "tool-input-delta", "toolCallId": "c2", "inputTextDelta": 'y"}'},
                   {"type": "finish"})[:-1]  # fmt: skip

    inputs: dict[str, str] = {}
    for c in sse_json(served(rt, hostile, "/rt7/ai-sdk-tools", SSE, make)):
        if c["type"] == "tool-input-delta":
            inputs[c["toolCallId"]] = inputs.get(c["toolCallId"], "") + c["inputTextDelta"]
    assert all(HOST.real not in json.loads(text)["note"] for text in inputs.values() if "note" in text)


def _anthropic_text(events: list[dict[str, Any]]) -> str:
    """The Anthropic SDK's ``MessageStream`` accumulation (``accumulate_event``): ``message_start``
    is the snapshot, ``content_block_start`` appends its block, a ``text_delta`` appends to the text
    of the block at ``index``; ``get_final_text`` joins the text blocks."""
    snap: dict[str, Any] = {"content": []}
    for e in events:
        if e["type"] == "message_start":
            snap = e["message"]
        elif e["type"] == "content_block_start":
            snap["content"].append(dict(e["content_block"]))
        elif e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta":
            block = snap["content"][e["index"]]
            if block["type"] == "text":
                block["text"] += e["delta"]["text"]
    return "".join(b["text"] for b in snap["content"] if b["type"] == "text")


def _anthropic(first: str) -> Callable[[str], list[bytes]]:
    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": []}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
        if first == "content_block_start":
            events.append({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": a}})
        else:
            message["content"] = [{"type": "text", "text": a}]
        events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": b}},
                   {"type": "content_block_stop", "index": 0}, {"type": "message_stop"}]  # fmt: skip
        return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]

    return make


def _responses(token: str) -> list[bytes]:
    a, b = halves(token)
    response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "status": "in_progress",
                "output": [], "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}  # fmt: skip
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [{"type": "response.created", "sequence_number": 0, "response": response},
              {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item},
              {"type": "response.content_part.added", "sequence_number": 2, **where,
               "part": {"type": "output_text", "text": a, "annotations": []}},
              {"type": "response.output_text.delta", "sequence_number": 3, **where, "delta": b, "logprobs": []}]  # fmt: skip
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def _responses_text(events: list[dict[str, Any]]) -> str:
    """The text the openai SDK's ``ResponseStreamState`` (``client.responses.stream``) holds."""
    from openai._models import construct_type
    from openai.lib.streaming.responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent

    state: Any = ResponseStreamState(input_tools=[], text_format=None)  # type: ignore[arg-type]
    for e in events:
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=e))  # type: ignore[arg-type]
    snap = state._ResponseStreamState__current_snapshot  # (the snapshot it keeps; no public accessor)
    return str(snap.output[0].content[0].text)


SNAPSHOTS: dict[str, tuple[Callable[[str], list[bytes]], Callable[[list[dict[str, Any]]], str]]] = {
    "anthropic-content-block-start": (_anthropic("content_block_start"), _anthropic_text),
    "anthropic-message-start": (_anthropic("message_start"), _anthropic_text),
    "responses-content-part-added": (_responses, _responses_text),
}


@pytest.mark.parametrize("shape", list(SNAPSHOTS))
def test_rt7_snapshot_then_deltas(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """An SDK's snapshot seeded by one event, grown by deltas: the first half as the seeded text
    (Anthropic ``content_block_start``'s ``content_block.text`` or ``message_start``'s
    ``message.content[0].text``; the Responses API's ``content_part.added`` ``part.text``), the
    second as a delta of the same block or part. Invariant 1 (stitched by path): two paths, two
    streams, no separator the client keeps. The SDKs append the delta to the seeded text
    (Anthropic's ``MessageStream``, the openai SDK's ``ResponseStreamState``): the key."""
    make, read = SNAPSHOTS[shape]
    body = served(rt, hostile, f"/rt7/snapshot-{shape}", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: read(sse_json(b)))


def _ws_serve(hostile: HostileServer, path: str, make: Callable[[str], list[bytes]], opcode: int = 0x1) -> None:
    """Serve ``make(token)``'s messages over a WebSocket at ``path`` (text frames, or ``opcode``)."""

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for m in make(req.token):
            await w.send(ws_frame(opcode, m), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False


def _ws_texts(rt: ProxyProcess, path: str) -> list[bytes]:
    head, frames = ws_agent_reads(rt, path)
    assert head.startswith(b"HTTP/1.1 101")
    return [p for op, p in ws_messages(frames) if op == 0x1]


def test_rt7_realtime_content_part_then_delta(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Realtime API messages over a WebSocket: ``response.content_part.added`` whose ``part.text``
    is the first half, then ``response.text.delta`` with the second. Invariant 1 (WebSocket messages
    stitched by path): ``.part.text`` and ``.delta`` are two streams. A Realtime client's
    conversation (the openai-realtime-console's ``RealtimeConversation``) pushes the part into the
    item's content and appends each delta to ``content[content_index].text``: the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        where = {"response_id": "r", "item_id": "i", "output_index": 0, "content_index": 0}
        return [json.dumps(m).encode() for m in (
            {"type": "response.output_item.added", "output_index": 0, "item": {"id": "i", "type": "message", "content": []}},
            {"type": "response.content_part.added", **where, "part": {"type": "text", "text": a}},
            {"type": "response.text.delta", **where, "delta": b})]  # fmt: skip

    _ws_serve(hostile, "/rt7/realtime-part", make)
    items: dict[str, list[dict[str, str]]] = {}
    for m in map(json.loads, _ws_texts(rt, "/rt7/realtime-part")):
        if m["type"] == "response.output_item.added":
            items[m["item"]["id"]] = []
        elif m["type"] == "response.content_part.added":
            items[m["item_id"]].append(dict(m["part"]))
        elif m["type"] == "response.text.delta":
            items[m["item_id"]][m["content_index"]]["text"] += m["delta"]
    assert HOST.real not in "".join(part["text"] for parts in items.values() for part in parts)


PREFIXED = {
    "data-event-then-bare-line": lambda a, b: [
        b"data: " + json.dumps(chat_chunk("c", (0, a))).encode() + b"\n\n",
        json.dumps(chat_chunk("c", (0, b))).encode() + b"\n\n",
    ],
    "data-data": lambda a, b: [
        b"data: data: " + json.dumps(chat_chunk("c", (0, t))).encode() + b"\n\n" for t in (a, b)
    ],
}


@pytest.mark.parametrize("shape", list(PREFIXED))
def test_rt7_prefix_stripping_line_reader(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """``text/event-stream``, read by the hand-written reader most glue code has: ``for line in
    iter_lines(): chunk = json.loads(line.replace("data: ", ""))`` (SSE and NDJSON alike). A
    ``data:`` event with the first half then a bare JSON line with the second: the scrubber reads
    an SSE client's texts and a line reader's as two clients, never stitched together. Or
    ``data: data: {...}``: to an SSE client the payload is no JSON (raw text, JSON between the
    halves); ``replace`` strips both prefixes. The reader stitches the deltas: the key."""
    make = PREFIXED[shape]

    def pieces(token: str) -> list[bytes]:
        return [*make(*halves(token)), b"data: [DONE]\n\n"]

    read = ""
    for line in httpx_lines(served(rt, hostile, f"/rt7/prefix-{shape}", SSE, pieces)):
        line = line.replace("data: ", "")
        if line.startswith("{"):
            read += json.loads(line)["choices"][0]["delta"]["content"]
    assert HOST.real not in read


def test_rt7_pusher_json_in_a_json_string(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Pusher protocol messages over a WebSocket, ``{"event": "delta", "channel": "c", "data":
    "<JSON>"}``, the key split over two messages' inner ``delta``. Invariant 1: the stitched text is
    ``.data``, a JSON text per message, JSON syntax between the halves. pusher-js
    (``Protocol.decodeMessage``) parses a string ``data`` again; the app appends the deltas."""

    def make(token: str) -> list[bytes]:
        return [json.dumps({"event": "delta", "channel": "c", "data": json.dumps({"delta": t})}).encode()
                for t in halves(token)]  # fmt: skip

    _ws_serve(hostile, "/rt7/pusher", make)
    read = "".join(json.loads(json.loads(m)["data"])["delta"] for m in _ws_texts(rt, "/rt7/pusher"))
    assert HOST.real not in read


def test_rt7_ably_sse_json_encoded_data(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Ably's SSE endpoint: each event a message ``{"id": ..., "name": "delta", "data": "<JSON>",
    "encoding": "json"}``, the key split over two messages' inner ``text``. Invariant 1 (SSE
    stitched by path): ``.data`` is a JSON text per event. ably-js decodes ``encoding: json``
    (``JSON.parse``) and the app appends the texts: the key."""

    def make(token: str) -> list[bytes]:
        return sse(*({"id": f"m{i}", "name": "delta", "encoding": "json", "data": json.dumps({"text": t})}
                     for i, t in enumerate(halves(token))))[:-1]  # fmt: skip

    read = "".join(json.loads(m["data"])["text"] for m in sse_json(served(rt, hostile, "/rt7/ably", SSE, make)))
    assert HOST.real not in read


def _responses_typed(token: str) -> list[bytes]:
    a, b = halves(token)
    head = _responses("")[:3]  # created, output_item.added, content_part.added (empty text)
    w = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [{"type": "response.output_text.delta", "sequence_number": 3, **w, "delta": a, "logprobs": []},
              {"type": "response.refusal.delta", "sequence_number": 4, **w, "delta": "I can't"},
              {"type": "response.output_text.delta", "sequence_number": 5, **w, "delta": b, "logprobs": []}]  # fmt: skip
    return head + [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def _ai_sdk_typed(token: str) -> list[bytes]:
    a, b = halves(token)
    return sse({"type": "start"}, {"type": "text-start", "id": "0"}, {"type": "reasoning-start", "id": "0"},
               {"type": "text-delta", "id": "0", "delta": a}, {"type": "reasoning-delta", "id": "0", "delta": "hmm"},
               {"type": "text-delta", "id": "0", "delta": b}, {"type": "finish"})[:-1]  # fmt: skip


def _ai_sdk_text(events: list[dict[str, Any]]) -> str:
    """``processUIMessageStream``: a ``text-delta`` goes to the active text part of its ``id``, a
    ``reasoning-delta`` to the reasoning part of its ``id`` (two maps)."""
    text: dict[str, str] = {}
    for e in events:
        if e["type"] == "text-delta":
            text[e["id"]] = text.get(e["id"], "") + e["delta"]
    return "|".join(text.values())


TYPED: dict[str, tuple[Callable[[str], list[bytes]], Callable[[list[dict[str, Any]]], str]]] = {
    "responses-refusal-delta": (_responses_typed, _responses_text),
    "ai-sdk-reasoning-delta": (_ai_sdk_typed, _ai_sdk_text),
}


@pytest.mark.parametrize("shape", list(TYPED))
def test_rt7_delta_of_another_type_between(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """The key in two text deltas with, between them, a delta of another type on the same path and
    the same output fields: a Responses ``response.refusal.delta`` (same ``item_id``,
    ``output_index``, ``content_index``), or an AI SDK ``reasoning-delta`` of the same ``id``.
    Invariant 1 (stitched by path and output): ``.delta`` plain and tagged both read
    ``<half>I can't<half>``. Clients dispatch on ``type``: the openai SDK's ``ResponseStreamState``
    appends only ``output_text`` deltas to the text, the AI SDK keeps text and reasoning parts
    apart: the key."""
    make, read = TYPED[shape]
    assert HOST.real not in read(sse_json(served(rt, hostile, f"/rt7/typed-{shape}", SSE, make)))


GEMINI = {
    # The first chunk's candidate has "index", the next one's none (the API omits it at times).
    "index-only-in-first-chunk": ({"index": 0}, {}, {}),
    # The next chunk's second part carries an "id".
    "part-with-an-id": ({"index": 0}, {"index": 0}, {"id": "p"}),
}


@pytest.mark.parametrize("shape", list(GEMINI))
def test_rt7_gemini_parts_with_an_output_field_on_one_chunk(
    rt: ProxyProcess, hostile: HostileServer, shape: str
) -> None:
    """Gemini ``streamGenerateContent?alt=sse`` chunks: the first half in ``parts[0].text``; the
    next chunk's ``parts[0].text`` empty (a thought signature's part) and the second half in
    ``parts[1]``; an output field on one chunk only (the candidate's ``index`` in the first, or an
    ``id`` on the second half's part). Invariant 1: the plain paths ``parts[0]`` and ``parts[1]``
    are two; the tagged path ``parts[]`` (which joins a chunk's parts) is named differently in the
    two chunks. google-genai's ``response.text`` joins every text part; the app joins the chunks:
    the key."""
    first, second, part = GEMINI[shape]

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        parts = [{"text": "", "thoughtSignature": "c2ln"}, {"text": b, **part}]
        return sse({"candidates": [{**first, "content": {"role": "model", "parts": [{"text": a}]}}]},
                   {"candidates": [{**second, "content": {"role": "model", "parts": parts}}]})[:-1]  # fmt: skip

    read = "".join(
        p.get("text", "")
        for c in sse_json(served(rt, hostile, f"/rt7/gemini-{shape}", SSE, make))
        for p in c["candidates"][0]["content"]["parts"]
    )
    assert HOST.real not in read


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16-be", "utf-32"])
def test_rt7_websocket_binary_json_in_another_utf(rt: ProxyProcess, hostile: HostileServer, encoding: str) -> None:
    """Realtime-style deltas as binary messages, JSON in UTF-8 behind a BOM, in UTF-16BE, or in
    UTF-32 behind a BOM; the key split over two. Invariant 1 (binary messages that are JSON are
    stitched as text ones): the relay stitches a binary message only when it begins with ``{`` or
    ``[``, so these stream as bytes (the NUL view has JSON syntax between the halves).
    ``json.loads`` of what ``websockets``' ``recv()`` returns for a binary message (bytes) detects
    the UTF by its BOM or NULs (``json.detect_encoding``): the key."""

    def make(token: str) -> list[bytes]:
        return [json.dumps({"type": "response.text.delta", "delta": t}).encode(encoding) for t in halves(token)]

    path = f"/rt7/ws-binary-{encoding}"
    _ws_serve(hostile, path, make, opcode=0x2)

    head, frames = ws_agent_reads(rt, path)
    assert head.startswith(b"HTTP/1.1 101")
    assert HOST.real not in "".join(json.loads(p)["delta"] for op, p in ws_messages(frames) if op == 0x2)


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


@pytest.mark.parametrize(
    "calls",
    [
        pytest.param(10, id="10-calls-held"),
        pytest.param(65, id="65-calls"),
    ],
)  # fmt: skip
def test_rt7_escaped_prefix_path_forgotten_behind_64_tool_calls(
    rt: ProxyProcess, hostile: HostileServer, calls: int
) -> None:
    """Tool call 0's ``arguments`` end with the key's first two characters as JSON escapes
    (``\\u0072\\u0074``); then 65 more tool calls, one chunk each (each a new tagged path
    ``<index=i>``); then call 0's rest, escaped. Invariant 1 (no path whose text may be completed is
    forgotten): a decoded view ending in fewer than MIN_HOLD characters of a value is not held,
    and ``idle`` asks only whether the raw tail holds back, so call 0's stream is forgotten to make
    room; its rest starts a new stream whose view lacks ``rt``. The openai SDK accumulates call 0's
    ``arguments`` and parses them: the key. With 10 calls between, held: refused."""

    def make(token: str) -> list[bytes]:
        first = tool_chunk(0, '{"note": "Your key: ' + _escaped(token[:2]), "call_0")
        others = [tool_chunk(i, "{}", f"call_{i}") for i in range(1, calls + 1)]
        rest = tool_chunk(0, _escaped(token[2:]) + '"}')
        rest["choices"][0]["delta"]["tool_calls"][0]["id"] = "call_0"  # (the same tags as the first)
        return sse(first, *others, rest)

    body = served(rt, hostile, f"/rt7/forgotten-{calls}", SSE, make)

    def read(b: bytes) -> str:
        return str(json.loads(openai_chat(b).choices[0].message.tool_calls[0].function.arguments)["note"])

    assert HOST.real not in _refused_or(body, read)


def _socketio_event(name: str, text: str) -> bytes:
    return b"42" + json.dumps([name, text]).encode()


def _signalr_call(name: str, text: str) -> bytes:
    return json.dumps({"type": 1, "target": name, "arguments": [text]}).encode() + b"\x1e"


@pytest.mark.parametrize("kind", ["socketio", "signalr"])
def test_rt7_websocket_other_event_between_deltas(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """Socket.IO events (``42["delta", "..."]``) or SignalR invocations (``"target": "Delta"``),
    the key split over two ``delta`` events with a ``status`` event between. Invariant 1 (framed
    messages stitched by path): ``framed[1]`` / ``framed.arguments[0]`` read
    ``<half>working<half>``, and the tagged ``framed[]`` mixes in the names. Their clients call
    the handler of each event's name (``socket.on("delta", ...)``, ``connection.on("Delta",
    ...)``); the app appends the deltas: the key."""
    make = _socketio_event if kind == "socketio" else _signalr_call
    path = f"/rt7/ws-names-{kind}"

    def messages(token: str) -> list[bytes]:
        a, b = halves(token)
        return [make("delta", a), make("status", "working"), make("delta", b)]

    _ws_serve(hostile, path, messages)
    read = ""
    for m in _ws_texts(rt, path):
        if kind == "socketio":
            name, text = json.loads(m.lstrip(b"0123456789"))
        else:
            call = json.loads(m.rstrip(b"\x1e"))
            name, text = call["target"], call["arguments"][0]
        read += text if name == "delta" else ""
    assert HOST.real not in read


def test_rt7_websocket_binary_chunks_with_a_json_message_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A file sent as binary messages with JSON progress messages (text) between them, the key
    split over two binary chunks. Invariant 1 (WebSocket messages): binary messages that are no
    JSON are checked only as the one byte stream of all messages, where the progress message sits
    between the halves, and no path stitches them. A client joins the binary messages (``b"".join``
    of what ``recv()`` returned as bytes): the key."""

    def messages(token: str) -> list[tuple[int, bytes]]:
        a, b = halves(token)
        return [(0x2, a.encode()), (0x1, b'{"type": "progress", "sent": 1}'), (0x2, b.encode())]

    @hostile.on("/rt7/ws-file")
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for op, m in messages(req.token):
            await w.send(ws_frame(op, m), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt7/ws-file")
    assert head.startswith(b"HTTP/1.1 101")
    assert HOST.real.encode() not in b"".join(p for op, p in ws_messages(frames) if op == 0x2)


NAMED = {
    "raw-text": lambda t: t.encode(),
    "json": lambda t: json.dumps({"text": t}).encode(),
}


@pytest.mark.parametrize("payload", list(NAMED))
def test_rt7_sse_named_event_between_tokens(rt: ProxyProcess, hostile: HostileServer, payload: str) -> None:
    """Named SSE events: ``event: token`` with the key's halves (raw text, or JSON ``{"text": ...}``),
    an ``event: status`` event between them. Invariant 1 (SSE stitched by path): the event name is
    no part of a path, so the stream reads ``<half>thinking<half>``. A browser app listens by name
    (``source.addEventListener("token", e => out += e.data)``); the SSE parser (the openai SDK's
    decoder, as the spec reads events) gives each event its name: the key."""
    encode = NAMED[payload]

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        events = [("token", a), ("status", "thinking"), ("token", b)]
        return [b"event: " + name.encode() + b"\ndata: " + encode(text) + b"\n\n" for name, text in events]

    from openai._streaming import SSEDecoder

    body = served(rt, hostile, f"/rt7/named-{payload}", SSE, make)
    events = [e for e in SSEDecoder().iter_bytes(iter([body])) if e.event == "token"]
    read = "".join(e.data if payload == "raw-text" else json.loads(e.data)["text"] for e in events)
    assert HOST.real not in read


ALTERNATE = {"empty-object": b"{}", "keep-alive-comment": b": keep-alive"}


@pytest.mark.parametrize("between", list(ALTERNATE))
def test_rt7_unlabelled_json_lines_alternating_with_textless_lines(
    rt: ProxyProcess, hostile: HostileServer, between: str
) -> None:
    """Ollama-style lines under ``application/json``, the key split over two, each followed by a
    line that carries no text: ``{}`` (a JSON document with no string in it) or ``: keep-alive``.
    Invariant 1 (a body a line reader reads as a token stream is stitched as one): the sniffer
    switches at two JSON lines with text in a row, blank lines aside, and never sees two; the body
    is scrubbed as bytes, JSON between the halves. The ollama-style reader (``json.loads`` of each
    of httpx's lines, skipping what it cannot parse) stitches ``response``: the key."""
    junk = ALTERNATE[between]

    def make(token: str) -> list[bytes]:
        docs = [json.dumps({"model": "m", "response": t}).encode() for t in halves(token)]
        return [d + b"\n" + junk + b"\n" for d in docs] + [b'{"done": true}\n']

    read = ""
    for line in httpx_lines(served(rt, hostile, f"/rt7/alternate-{between}", "application/json", make)):
        try:
            read += json.loads(line).get("response", "")
        except ValueError:
            continue
    assert HOST.real not in read


# == attempts that held ==========================================================================


def _refused_or(body: bytes, read: Callable[[bytes], str]) -> str:
    """What the client read of ``body``; nothing when the proxy refused it (a 502's JSON error)
    or cut it where the client cannot parse on."""
    try:
        return read(body)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


def test_rt7_three_events_with_empty_and_missing_texts_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI chat chunks: the key in three pieces (``Your key: <20>``, three characters, the
    rest), with an empty ``content`` and a chunk with no ``content`` at all (``role`` only) between
    the first two. Held: the path stays held across the empty and the missing text; refused or
    cut, the SDK's snapshot never reads the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        role = {**chat_chunk("c", (0, "")), "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
        return sse(chat_chunk("c", (0, a)), chat_chunk("c", (0, "")), role,
                   chat_chunk("c", (0, b[:3])), chat_chunk("c", (0, b[3:])))  # fmt: skip

    body = served(rt, hostile, "/rt7/three-pieces", SSE, make)
    assert HOST.real not in _refused_or(body, lambda b: str(openai_chat(b).choices[0].message.content))


def test_rt7_mixed_case_across_events(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The key's first 15 characters upper-cased in one delta, the rest lower-cased in the next.
    Held: refused or cut; the deltas read case-blind never hold the key."""

    def make(token: str) -> list[bytes]:
        return sse(chat_chunk("c", (0, "key: " + token[:15].upper())), chat_chunk("c", (0, token[15:].lower())))

    body = served(rt, hostile, "/rt7/case", SSE, make)
    assert HOST.real.lower() not in _refused_or(body, lambda b: str(openai_chat(b).choices[0].message.content)).lower()


@pytest.mark.parametrize("cut", [8, 9, 10, 11, 12, 13, 40])
def test_rt7_json_escapes_cut_across_tool_call_chunks(rt: ProxyProcess, hostile: HostileServer, cut: int) -> None:
    """Tool-call ``arguments`` (JSON the client parses once they are whole) holding the key as
    ``\\u0072`` escapes, the text cut at ``cut`` across two chunks (inside the first escape, between
    escapes, deep in the run). Held: refused or cut; the SDK never parses the key."""

    def make(token: str) -> list[bytes]:
        args = '{"k": "' + "".join(f"\\u{ord(c):04x}" for c in token) + '"}'
        return sse(tool_chunk(0, args[:cut], "call_a"), tool_chunk(0, args[cut:]))

    body = served(rt, hostile, f"/rt7/escapes-{cut}", SSE, make)

    def read(b: bytes) -> str:
        return str(json.loads(openai_chat(b).choices[0].message.tool_calls[0].function.arguments)["k"])

    assert HOST.real not in _refused_or(body, read)


def test_rt7_seventy_decoy_paths_holding_a_prefix(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The first half on ``content``, then 70 events each on a new path whose text ends in a prefix
    of the value (to push the value's path out of the 64 followed), then the second half. Held:
    refused (no path whose text may be completed is forgotten)."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        decoys = [{f"f{i}": "x " + token[:9]} for i in range(70)]
        return sse(chat_chunk("c", (0, a)), *decoys, chat_chunk("c", (0, b)))

    body = served(rt, hostile, "/rt7/decoys", SSE, make)

    def read(b: bytes) -> str:
        return "".join(d["choices"][0]["delta"]["content"] for d in sse_json(b) if "choices" in d)

    assert HOST.real not in _refused_or(body, read)


def test_rt7_websocket_delta_over_three_messages(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A Realtime ``response.text.delta`` stream, the key in three messages (``Your key: <20>``,
    five characters, the rest). Held: closed, the agent never read the key."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        return [json.dumps({"type": "response.text.delta", "delta": t}).encode() for t in (a, b[:5], b[5:])]

    _ws_serve(hostile, "/rt7/ws-three", make)
    assert HOST.real not in "".join(json.loads(m)["delta"] for m in _ws_texts(rt, "/rt7/ws-three"))


def test_rt7_json_seq_records(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``application/json-seq`` (RFC 7464: RS before each document, LF after), the key split over
    two records' ``response``. Held: refused or cut."""

    def make(token: str) -> list[bytes]:
        return [b"\x1e" + json.dumps({"response": t}).encode() + b"\n" for t in halves(token)]

    body = served(rt, hostile, "/rt7/json-seq", "application/json-seq", make)

    def read(b: bytes) -> str:
        return "".join(json.loads(r)["response"] for r in b.split(b"\x1e") if r.strip())

    assert HOST.real not in _refused_or(body, read)


def test_rt7_gemini_empty_part_between_halves(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Gemini chunks as in the break above, with no output field on one chunk only: the first
    half in ``parts[0]``, the next chunk an empty ``parts[0]`` and the second half in ``parts[1]``.
    Held: the tagged ``parts[]`` path joins them; refused or cut."""

    def make(token: str) -> list[bytes]:
        a, b = halves(token)
        parts = [{"text": ""}, {"text": b}]
        return sse({"candidates": [{"index": 0, "content": {"parts": [{"text": a}]}}]},
                   {"candidates": [{"index": 0, "content": {"parts": parts}}]})[:-1]  # fmt: skip

    body = served(rt, hostile, "/rt7/gemini-held", SSE, make)

    def read(b: bytes) -> str:
        return "".join(p.get("text", "") for c in sse_json(b) for p in c["candidates"][0]["content"]["parts"])

    assert HOST.real not in _refused_or(body, read)
