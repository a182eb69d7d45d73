"""Red team, sixth pass: invariant 1 (no real value back to the agent) through token streams and
WebSockets, after bodies of any label began to be read as token streams and WebSocket text
messages began to be held whole and stitched by JSON path.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py: its
hostile HTTPS upstream, bound to the ``rthostile`` secret, receives the real key after the swap and
tries to hand it back, split so that no byte stream holds it whole). A test reads what the agent got
the way a real client does (the openai SDK's SSE decoder, httpx's ``iter_lines`` as the ``ollama``
client reads NDJSON, ``requests.iter_lines`` with ``json.loads`` of each line's bytes, Node's
``JSON.parse`` and property access, the Vercel AI SDK's UI message stream, Socket.IO and SignalR
framing over a WebSocket) and asserts the key is not there. A refusal (502 ``secret_value_inbound``,
a cut body, a 1008 close) holds the line. A break is marked ``xfail(strict=True)``: its fix turns
it into a failure to unmark.

All fixed since, their tests passing: an SSE event's data lines are also read one by one; a BOM is
the stream's only at its start; a labelled token stream is read as both an SSE client and a line
reader read one (EventScrubber "mixed"); a JSON payload may begin with a BOM; the sniffer ends
lines where ``str.splitlines`` does (a NEL or U+2028 cut by a chunk waits), switches at JSON
string lines too, reads a first line as a lenient client does, and holds up to 64 KiB of blanks;
an integral fraction is the integer it equals as an output index; ``id`` is an output field; an
object keyed ``"0"`` is read as an array; binary WebSocket messages that begin as JSON are stitched
as text ones are; Socket.IO's and SignalR's framing is taken off before a message is read.

Breaks:

- ``sse-several-json-data-lines``: one ``text/event-stream`` event with two ``data:`` lines, each a
  JSON chunk carrying half the key. The scrubber joins an event's data lines (as the SSE spec says),
  the join is no JSON, so it reads the raw payload, where JSON syntax sits between the halves. The
  client most agents and proxies actually run (LiteLLM's and countless hand-written readers:
  ``for line in iter_lines(): if line.startswith("data:"): json.loads(line[5:])``) parses each
  ``data:`` line on its own and stitches the deltas: the key.
- ``sse-line-led-by-a-bom-mid-stream``: a line ``<BOM>data: x`` inside an event: the scrubber
  strips a BOM from every line, so it joins ``x`` to the event's JSON payload (no JSON: raw text
  under another path than the next event's); SSE parsers strip a BOM only at the stream's start,
  so the openai SDK ignores the line, parses the payload and stitches the key.
- ``sse-under-an-ndjson-label`` and ``ndjson-under-an-sse-label``: the label picks the reader
  (``application/x-ndjson``: lines only; ``text/event-stream``: SSE only), the client ignores the
  label. The openai SDK decodes a streamed response as SSE whatever its Content-Type (its decoder
  reads bytes); the ``ollama`` client reads lines whatever its Content-Type. Under the other label
  the scrubber reads ``data: {...}`` as a raw line, or NDJSON lines as one SSE event with no data.
- ``ndjson-lines-led-by-a-bom``: each NDJSON line begins with a UTF-8 BOM. ``json.loads`` of a
  line's bytes (``requests.iter_lines``, aiohttp's ``content``) detects ``utf-8-sig`` and reads the
  document; the scrubber parses a payload only when its first byte is ``{``, ``[`` or ``"``, so the
  line is raw text, and the sniffer never takes such a line for JSON at all (labelled and not).
- ``unlabelled-ndjson-other-line-breaks``: a body of another label whose JSON lines end in RS, FF,
  VT, NEL or U+2028 (or whose first text line follows an LF and an FF, after a line with no text): the sniffer looks for a
  token stream only after CR and LF, so the whole body (or the line before its switch) is scrubbed
  as bytes. httpx's ``iter_lines`` splits where ``str.splitlines`` does (the ollama client reads
  lines so, whatever the label): the key. (Red team 5's fix of the same for ``x-ndjson`` labels.)
- ``unlabelled-json-string-lines``: lines that are JSON strings (a JSON document with text in it)
  under ``application/json``: the sniffer switches only at an object or array line, so the body is
  bytes, quotes between the halves; the client ``json.loads`` each line and joins them.
- ``first-json-line-python-cannot-read``: an unlabelled NDJSON stream whose first line holds a
  byte that is not UTF-8 (httpx's line decoder replaces it) or an integer of 5000 digits
  (``JSON.parse`` reads it): the sniffer's plain ``json.loads`` refuses the line, so it is no
  document and goes out as body bytes before the switch at the next line; its half of the key is
  never stitched with the next line's.
- ``json-line-after-257-blanks``: a line of blanks longer than 256 bytes, alone in a chunk, after a
  first line that is no JSON: the sniffer stops holding the line's start and the JSON after the
  blanks is a body's line. ``json.loads`` skips leading blanks; a reader that skips lines it cannot
  parse (the first) stitches the key.
- ``float-output-index``: OpenAI ``n=2`` deltas where choice 1's ``index`` is written ``1.0``: the
  scrubber reads every fraction as 0 (it only wants text), so choice 1's deltas join choice 0's
  stream on the tagged path as on the plain one, between the halves. JavaScript's ``1.0`` is ``1``
  (openai-node accumulates ``choices[index]``): choice 0 is the key.
- ``ai-sdk-ui-message-stream``: the Vercel AI SDK's UI message stream (SSE, ``{"type":
  "text-delta", "id": ..., "delta": ...}``, what ``toUIMessageStreamResponse`` sends) with two text
  parts interleaved: ``useChat``/``readUIMessageStream`` append each delta to the part of its
  ``id``; ``id`` is not one of the scrubber's output fields, so its streams interleave the parts.
  (Not the data stream protocol, ``0:"..."``, tracked already.)
- ``choices-as-an-object``: ``"choices": {"0": {...}}`` in one event and ``"choices": [{...}]``
  in the next: the scrubber's paths are ``.choices.0...`` and ``.choices[0]...``, two streams;
  JavaScript's ``chunk.choices[0]`` reads both (a property key is a string), as do gjson's
  ``choices.0`` and lodash's ``get``.
- ``websocket-binary-json-delta``: Realtime-style JSON deltas, half the key in a text message and
  half in a binary one. Only text messages are stitched by path; binary ones stream as bytes, JSON
  syntax between the halves. ``json.loads(await ws.recv())`` (``websockets``: str or bytes) and
  Node's ``ws`` (a Buffer either way, ``JSON.parse`` takes it) read both alike.
- ``websocket-framed-json``: Socket.IO (``42["delta",{...}]``) and SignalR (``{...}\\x1e``)
  messages carrying deltas: a prefix or a record separator makes the message no JSON, so its texts
  are the raw message, JSON syntax between the halves. Their clients strip the framing and hand
  the app the deltas to stitch.

Attempts that held (passing tests at the end of this module, or checked on the pure scrubbers):

- The sniffer cut at every pair of positions (three chunks) of bodies ``ok\\n`` + NDJSON (LF,
  CRLF, lone CR, indented lines), bare NDJSON, and ``ok\\n`` + SSE (LF, lone CR), the key split
  over two documents: refused every time, never more than two characters of the second half
  stitched (pure ``SniffingScrubber``, ~40,000 cuts).
- The same unlabelled ``ok`` + NDJSON body streamed one byte a chunk through the proxy: cut.
- A WebSocket text delta whose JSON has duplicate ``delta`` keys (the half in the first, which
  ``JSON.parse`` and ``json.loads`` drop): the client never reads it.
- A Realtime-style delta split over two text messages each fragmented, with pings between the
  fragments: closed.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, fetch, ws_agent_reads, ws_handshake
from tests.proxy.test_redteam2 import body_of
from tests.proxy.test_redteam3 import deltas, is_cut_or_refused, ws_messages
from tests.proxy.test_redteam5 import node, send_pieces, stream_body
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt


def halves(token: str) -> tuple[str, str]:
    """The key in two texts a client concatenates: ``Your key: <first 20>``, ``<rest>``."""
    return f"Your key: {token[:20]}", token[20:]


def agent_body(rt: ProxyProcess, path: str) -> bytes:
    raw = fetch(rt, path)
    assert raw.startswith((b"HTTP/1.1 200", b"HTTP/1.1 502")), raw[:200]
    return body_of(raw)


def httpx_lines(body: bytes) -> list[str]:
    """What httpx's ``iter_lines`` yields (``str.splitlines`` of the text, bad bytes replaced)."""
    return body.decode("utf-8", "replace").splitlines()


def chat(content: str, **choice: object) -> bytes:
    return json.dumps({"choices": [{**choice, "delta": {"content": content}}]}).encode()


# == breaks =======================================================================================


def test_rt6_sse_event_with_several_json_data_lines(rt: ProxyProcess, hostile: HostileServer) -> None:
    """One ``text/event-stream`` event, two ``data:`` lines, each an OpenAI chunk with half the key.
    Invariant 1 (SSE stitched by path): the scrubber joins the lines with LF, which is no JSON, and
    stitches the raw payload (JSON between the halves). A reader that parses each ``data:`` line
    (LiteLLM, the usual hand-written loop; this module's ``deltas``) reads the key."""

    @hostile.on("/rt6/sse-two-data-lines")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        event = b"data: " + chat(a) + b"\ndata: " + chat(b) + b"\n\n"
        await send_pieces(w, "text/event-stream", [event, b"data: [DONE]\n\n"])

    assert HOST.real not in deltas(agent_body(rt, "/rt6/sse-two-data-lines").decode())


def test_rt6_sse_line_led_by_a_bom_mid_stream(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI chat deltas, the key split over two events; the first event also has a line
    ``<BOM>data: x``. Invariant 1 (SSE stitched by path): the scrubber strips a BOM from every line,
    reads that line as data, and the joined payload is no JSON (raw text, another path than the
    next event's). SSE parsers drop a BOM only at the stream's start: to the openai SDK's decoder
    the line is an unknown field, the payload is the JSON, and the deltas stitch to the key."""

    @hostile.on("/rt6/sse-mid-bom")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        events = [b"data: " + chat(a) + b"\n\xef\xbb\xbfdata: x\n\n", b"data: " + chat(b) + b"\n\n"]
        await send_pieces(w, "text/event-stream", [*events, b"data: [DONE]\n\n"])

    from openai._streaming import SSEDecoder

    body = agent_body(rt, "/rt6/sse-mid-bom")
    events = [e.data for e in SSEDecoder().iter_bytes(iter([body])) if e.data.startswith("{")]
    assert HOST.real not in "".join(json.loads(d)["choices"][0]["delta"]["content"] for d in events)


def test_rt6_sse_under_an_ndjson_label(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI chat deltas as SSE, labelled ``application/x-ndjson``, the key split over two events.
    Invariant 1: the scrubber reads each line as NDJSON (``data: {...}``: raw text, JSON between the
    halves). The openai SDK's decoder never looks at the label: it stitches the key."""

    @hostile.on("/rt6/sse-as-ndjson")
    async def _(req: Request, w: Wire) -> None:
        await send_pieces(
            w,
            "application/x-ndjson",
            [b"data: " + chat(t) + b"\n\n" for t in halves(req.token)] + [b"data: [DONE]\n\n"],
        )

    from openai._streaming import SSEDecoder

    body = agent_body(rt, "/rt6/sse-as-ndjson")
    events = [e.data for e in SSEDecoder().iter_bytes(iter([body])) if e.data.startswith("{")]
    assert HOST.real not in "".join(json.loads(d)["choices"][0]["delta"]["content"] for d in events)


def test_rt6_ndjson_under_an_sse_label(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Ollama ``/api/generate`` lines labelled ``text/event-stream``, the key split over two lines.
    Invariant 1: the scrubber reads one SSE event with no ``data:`` line (nothing stitched). The
    ``ollama`` client reads lines with httpx whatever the label and stitches ``response``."""

    @hostile.on("/rt6/ndjson-as-sse")
    async def _(req: Request, w: Wire) -> None:
        docs = [{"model": "m", "response": t, "done": False} for t in halves(req.token)]
        await send_pieces(w, "text/event-stream", [json.dumps(d).encode() + b"\n" for d in docs] + [b'{"done":true}\n'])

    lines = httpx_lines(agent_body(rt, "/rt6/ndjson-as-sse"))
    assert HOST.real not in "".join(json.loads(ln).get("response", "") for ln in lines if ln.strip())


@pytest.mark.parametrize("ctype", ["application/x-ndjson", "application/json"], ids=["ndjson", "json"])
def test_rt6_ndjson_lines_led_by_a_bom(rt: ProxyProcess, hostile: HostileServer, ctype: str) -> None:
    """NDJSON whose every line begins with a UTF-8 byte order mark, the key split over two lines.
    Invariant 1 (line-delimited JSON stitched by path): the scrubber reads each line as raw text;
    ``json.loads`` of a line's bytes (``requests``' ``iter_lines``, aiohttp) reads it as
    ``utf-8-sig``: the documents, and the key."""
    path = f"/rt6/bom-lines-{ctype.split('/')[1]}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        docs = [*({"response": t} for t in halves(req.token)), {"done": True}]
        await send_pieces(w, ctype, [b"\xef\xbb\xbf" + json.dumps(d).encode() + b"\n" for d in docs])

    lines = agent_body(rt, path).splitlines()  # requests' iter_lines: bytes
    assert HOST.real not in "".join(json.loads(ln).get("response", "") for ln in lines if ln.strip())


LINE_BREAKS = {
    "rs": ("\x1e", "\x1e"),
    "ff": ("\x0c", "\x0c"),
    "vt": ("\x0b", "\x0b"),
    "nel": ("\x85", "\x85"),
    "u2028": ("\u2028", "\u2028"),
    "ff-after-lf": ("\n\x0c", "\n"),  # LF, then FF before the first text line: that line is a body's
}


@pytest.mark.parametrize("breaks", list(LINE_BREAKS.values()), ids=list(LINE_BREAKS))
def test_rt6_unlabelled_ndjson_with_other_line_breaks(
    rt: ProxyProcess, hostile: HostileServer, breaks: tuple[str, str]
) -> None:
    """Ollama-style lines under ``application/json``, the key split over two, separated by a line
    break other than CR or LF (``ff-after-lf``: an FF begins the line that carries the first half,
    LF elsewhere). Invariant 1: the sniffer looks for a token stream after CR and LF only, so what
    comes before its switch is scrubbed as bytes, JSON between the halves. httpx's ``iter_lines``
    (the ``ollama`` client, whatever the label) splits at each: the key."""
    first, rest = breaks
    path = f"/rt6/other-breaks-{first.encode().hex()}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        a, b = (json.dumps({"model": "m", "response": t}) for t in halves(req.token))
        text = '{"status":1}' + first + a + rest + b + rest + '{"done":true}' + rest
        await send_pieces(w, "application/json", [text.encode()])

    lines = httpx_lines(agent_body(rt, path))
    assert HOST.real not in "".join(json.loads(ln).get("response", "") for ln in lines if ln.strip())


def test_rt6_unlabelled_json_string_lines(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Lines that are each a JSON string, under ``application/json``, the key split over two.
    Invariant 1: no line is an object or array, so the body is scrubbed as bytes (quotes and a line
    break between the halves). A line reader ``json.loads`` each and joins them: the key. (Red team
    5's ``json-string-deltas``, fixed for labelled streams.)"""

    @hostile.on("/rt6/string-lines")
    async def _(req: Request, w: Wire) -> None:
        lines = [json.dumps(t).encode() + b"\n" for t in (*halves(req.token), "")]
        await send_pieces(w, "application/json", lines)

    lines = httpx_lines(agent_body(rt, "/rt6/string-lines"))
    assert HOST.real not in "".join(json.loads(ln) for ln in lines if ln.strip())


@pytest.mark.parametrize("kind", ["invalid-utf8", "int-5000-digits"])
def test_rt6_first_json_line_python_cannot_read(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """Unlabelled NDJSON whose first line, with the first half, also holds a byte that is not UTF-8
    or an integer of 5000 digits. Invariant 1: the sniffer's ``json.loads`` raises on it, so it is
    no document: it goes out as body bytes, and the switch to token reading happens at the second
    line, whose half is never stitched with it. httpx's line decoder replaces the byte (then
    ``json.loads``); ``JSON.parse`` reads the integer: the key."""
    extra = b',"fp":"\xff"' if kind == "invalid-utf8" else b',"n":' + b"7" * 5000
    path = f"/rt6/first-line-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        first = json.dumps({"model": "m", "response": a}).encode()[:-1] + extra + b"}\n"
        rest = [json.dumps({"model": "m", "response": b}).encode() + b"\n", b'{"done":true}\n']
        await send_pieces(w, "application/json", [first + rest[0] + rest[1]])

    body = agent_body(rt, path)
    if kind == "invalid-utf8":
        read = "".join(json.loads(ln).get("response", "") for ln in httpx_lines(body) if ln.strip())
    else:
        read = node(
            "return buf.toString().split('\\n').filter(l => l.trim()).map(l => JSON.parse(l).response || '').join('');",
            body,
        )
    assert HOST.real not in read


def test_rt6_json_line_after_257_blanks(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``ok``, then 300 spaces alone in a chunk, then NDJSON with the key split over two lines.
    Invariant 1: the sniffer holds a blank line's start only up to 256 bytes; past that the line is
    a body's, so its JSON (the first half) goes out as bytes and the switch comes at the next line.
    ``json.loads`` skips the blanks; a reader that skips the line it cannot parse stitches the key."""

    @hostile.on("/rt6/blanks")
    async def _(req: Request, w: Wire) -> None:
        docs = b"".join(json.dumps({"response": t}).encode() + b"\n" for t in (*halves(req.token), ""))
        await send_pieces(w, "application/json", [b"ok\n", b" " * 300, docs])

    read = ""
    for ln in httpx_lines(agent_body(rt, "/rt6/blanks")):
        try:
            read += json.loads(ln).get("response", "")
        except ValueError:
            continue
    assert HOST.real not in read


def test_rt6_sse_float_output_index(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI ``n=2`` deltas, each event one choice at array position 0: choice 0 (``"index": 0``)
    gets the two halves, choice 1 (``"index": 1.0``) a word between them. Invariant 1 (streams
    stitched per output index): ``1.0`` is read as 0, so both the plain and the tagged stream read
    ``<half>Hello<half>``. openai-node accumulates ``choices[chunk.index]`` (``1.0 === 1``): the key."""

    @hostile.on("/rt6/float-index")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        events = [chat(a, index=0), chat("Hello", index=1).replace(b'"index": 1', b'"index": 1.0'), chat(b, index=0)]
        await send_pieces(w, "text/event-stream", [b"data: " + e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"])

    read = node(
        "const acc = []; for (const l of buf.toString().split('\\n')) { if (!l.startsWith('data: {')) continue;"
        " for (const c of JSON.parse(l.slice(6)).choices) acc[c.index] = (acc[c.index] || '') + c.delta.content; }"
        " return acc.join('|');",
        agent_body(rt, "/rt6/float-index"),
    )
    assert HOST.real not in read


def test_rt6_ai_sdk_ui_message_stream(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The Vercel AI SDK's UI message stream (SSE, ``x-vercel-ai-ui-message-stream: v1``): two text
    parts, ``id`` a and b, their deltas interleaved, part a carrying the key in two deltas.
    Invariant 1: the scrubber stitches ``.delta`` across both parts (``a``, ``b``, ``a``). The SDK
    (``processUIMessageStream``) appends each ``text-delta`` to the part of its ``id``: the key."""

    @hostile.on("/rt6/ui-stream")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        chunks = [{"type": "start"}, {"type": "text-start", "id": "a"}, {"type": "text-start", "id": "b"},
                  {"type": "text-delta", "id": "a", "delta": a}, {"type": "text-delta", "id": "b", "delta": "Hello"},
                  {"type": "text-delta", "id": "a", "delta": b}, {"type": "text-end", "id": "a"},
                  {"type": "text-end", "id": "b"}, {"type": "finish"}]  # fmt: skip
        await send_pieces(w, "text/event-stream", [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks])

    parts: dict[str, str] = {}
    for ln in agent_body(rt, "/rt6/ui-stream").decode().splitlines():
        if ln.startswith("data: {"):
            c = json.loads(ln[6:])
            if c["type"] == "text-delta":
                parts[c["id"]] = parts.get(c["id"], "") + c["delta"]
    assert all(HOST.real not in text for text in parts.values())


def test_rt6_sse_choices_as_an_object_keyed_0(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Event 1: ``"choices": {"0": {"delta": ...}}``; event 2: ``"choices": [{"delta": ...}]``, the
    key split between them. Invariant 1 (stitched by path): two paths, two streams. JavaScript's
    ``chunk.choices[0].delta.content`` reads both (a property key is a string): the key."""

    @hostile.on("/rt6/object-choices")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        first = json.dumps({"choices": {"0": {"delta": {"content": a}}}}).encode()
        await send_pieces(w, "text/event-stream", [b"data: " + first + b"\n\n", b"data: " + chat(b) + b"\n\n"])

    read = node(
        "return buf.toString().split('\\n').filter(l => l.startsWith('data: {'))"
        ".map(l => JSON.parse(l.slice(6)).choices[0].delta.content).join('');",
        agent_body(rt, "/rt6/object-choices"),
    )
    assert HOST.real not in read


def test_rt6_websocket_binary_json_delta(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Realtime-style ``{"type": "response.text.delta", "delta": ...}`` messages: the first half in
    a text message, the second in a binary one. Invariant 1 (WebSocket messages stitched by path):
    only text messages are; the byte stream has JSON syntax between the halves. ``json.loads`` of
    what ``websockets``' ``recv()`` returns (str or bytes), and ``JSON.parse`` of Node ``ws``'s
    Buffer, read both: the key."""

    @hostile.on("/rt6/ws-binary")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x1, json.dumps({"type": "response.text.delta", "delta": a}).encode()), pause=0.02)
        await w.send(ws_frame(0x2, json.dumps({"type": "response.text.delta", "delta": b}).encode()), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt6/ws-binary")
    assert head.startswith(b"HTTP/1.1 101")
    text = "".join(json.loads(p)["delta"] for op, p in ws_messages(frames) if op in (0x1, 0x2))
    assert HOST.real not in text


def _socketio(delta: str) -> bytes:
    return b"42" + json.dumps(["delta", {"text": delta}]).encode()


def _signalr(delta: str) -> bytes:
    return json.dumps({"type": 1, "target": "ReceiveDelta", "arguments": [delta]}).encode() + b"\x1e"


def _read_framed(kind: str, message: bytes) -> str:
    if kind == "socketio":
        return str(json.loads(message.lstrip(b"0123456789"))[1]["text"])
    return "".join(json.loads(m)["arguments"][0] for m in message.split(b"\x1e") if m)


@pytest.mark.parametrize("kind", ["socketio", "signalr"])
def test_rt6_websocket_framed_json_deltas(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """Socket.IO event packets (``42["delta",{"text":...}]``) or SignalR invocations (JSON, then the
    record separator 0x1E) carrying deltas, the key split over two messages. Invariant 1: the
    framing makes each message no JSON, so the stitcher reads raw messages, JSON syntax between
    the halves. socket.io-client and @microsoft/signalr strip the framing and hand the app the
    deltas, which a chat UI concatenates: the key."""
    make = _socketio if kind == "socketio" else _signalr
    path = f"/rt6/ws-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for text in halves(req.token):
            await w.send(ws_frame(0x1, make(text)), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, path)
    assert head.startswith(b"HTTP/1.1 101")
    assert HOST.real not in "".join(_read_framed(kind, p) for op, p in ws_messages(frames) if op == 0x1)


# == attempts that held ==========================================================================


def test_rt6_unlabelled_ndjson_streamed_one_byte_a_chunk(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``ok`` then NDJSON under ``application/json``, the key split over two lines, one byte a
    chunk (every boundary of the sniffer's switch crossed). Held: cut."""

    @hostile.on("/rt6/bytewise")
    async def _(req: Request, w: Wire) -> None:
        docs = b"".join(json.dumps({"response": t}).encode() + b"\r\n" for t in (*halves(req.token), ""))
        await stream_body(w, "application/json", b"ok\r\n" + docs, 1)

    raw = fetch(rt, "/rt6/bytewise", timeout=30)
    assert is_cut_or_refused(raw)
    lines = [ln for ln in httpx_lines(body_of(raw))[1:] if ln.strip()]
    read = ""
    for ln in lines:
        try:
            read += json.loads(ln)["response"]
        except ValueError:
            break
    assert HOST.real[:23] not in read


def test_rt6_websocket_duplicate_keys_hide_nothing_from_the_client(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A delta message whose JSON has ``delta`` twice, the first half in the first (dropped by
    ``JSON.parse`` and ``json.loads``, which keep the last), the second half in the next message.
    Held: the client never reads the first half."""

    @hostile.on("/rt6/ws-dup")
    async def _(req: Request, w: Wire) -> None:
        a, b = halves(req.token)
        await w.send(ws_handshake(req))
        first = b'{"type":"d","delta":' + json.dumps(a).encode() + b',"delta":"x"}'
        await w.send(ws_frame(0x1, first), pause=0.02)
        await w.send(ws_frame(0x1, json.dumps({"type": "d", "delta": b}).encode()), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt6/ws-dup")
    assert head.startswith(b"HTTP/1.1 101")
    read = node(
        "return JSON.parse(buf.toString()).map(m => JSON.parse(m).delta).join('');",
        json.dumps([p.decode() for op, p in ws_messages(frames) if op == 0x1]).encode(),
    )
    assert HOST.real not in read


def test_rt6_websocket_fragmented_deltas_with_pings_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Two delta messages, each in three fragments with a ping between them, the key split between
    the messages' ``delta``. Held: closed 1008, the agent read at most two characters past the
    first half."""

    @hostile.on("/rt6/ws-frag-deltas")
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for text in halves(req.token):
            m = json.dumps({"type": "response.text.delta", "delta": text}).encode()
            cuts = [m[:10], m[10:25], m[25:]]
            for i, part in enumerate(cuts):
                await w.send(ws_frame(0x1 if i == 0 else 0x0, part, fin=i == 2), pause=0.01)
                await w.send(ws_frame(0x9, b"p"), pause=0.01)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt6/ws-frag-deltas")
    assert head.startswith(b"HTTP/1.1 101")
    got = ws_messages(frames)
    text = "".join(json.loads(p)["delta"] for op, p in got if op == 0x1)
    assert HOST.real[:23] not in text
    assert any(op == 0x8 and p[:2] == (1008).to_bytes(2, "big") for op, p in got)
