"""A value spread with filler, end to end: its pieces in a token stream's deltas, a client's filler
between them (a terminal's CSI in its C1 form, a zero-width space, NUL, ESC sequences), over a
WebSocket (OpenAI Realtime's JSON deltas) and over SSE. A client that joins the deltas and drops
the filler reads the key; the sidecar refuses the stream before 3 of its characters go out.

(Red team 20 reported the C1 case over WebSocket messages: the message scrubber alone does not read
a JSON text's escapes through its skeleton. The relay also stitches each message's texts, path by
path, and that refuses it: this is the test of the relay as it runs.)
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, parse_frames, recv_all, ws_handshake, ws_open
from tests.proxy.test_redteam18 import fetch, path_for, serve_raw
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

FILLERS = {
    "c1 csi": "\u009b1m",
    "csi": "\x1b[1m",
    "osc title": "\x1b]0;x\x07",
    "zero-width space": "\u200b",
    "nul": "\x00",
    "soft hyphen": "\u00ad",
}


def _pieces(token: str) -> list[str]:
    return [token[i : i + 5] for i in range(0, len(token), 5)]  # (each shorter than a run)


def _read(text: str) -> str:
    """A client that drops a terminal's sequences, then controls and format characters."""
    text = re.sub("(?:\x1b\\[|\u009b)[0-?]*[ -/]*[@-~]|\x1b\\][^\x07]*\x07", "", text)
    return "".join(c for c in text if c.isprintable())


@pytest.mark.parametrize("name", FILLERS)
def test_a_value_in_pieces_between_filler_over_websocket_json_deltas_is_refused(
    rt: ProxyProcess, hostile: HostileServer, name: str
) -> None:
    path = path_for(f"spread-ws-{name.replace(' ', '-')}")

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for piece in _pieces(req.token):
            delta = {"type": "response.text.delta", "delta": piece + FILLERS[name]}
            await w.send(ws_frame(0x1, json.dumps(delta).encode()), pause=0.01)
        await w.send(ws_frame(0x8, b"\x03\xe8"))
        w.keep = False

    s, buf = ws_open(rt, path)
    frames, _ = parse_frames(buf.partition(b"\r\n\r\n")[2] + recv_all(s, 5))
    texts = [json.loads(p)["delta"] for _, op, p in frames if op == 0x1]
    closes = [p for _, op, p in frames if op == 0x8]
    assert closes and int.from_bytes(closes[0][:2], "big") == 1008
    assert HOST.real[:3] not in _read("".join(texts))


@pytest.mark.parametrize("name", FILLERS)
def test_a_value_in_pieces_between_filler_over_sse_deltas_is_refused(
    rt: ProxyProcess, hostile: HostileServer, name: str
) -> None:
    path = path_for(f"spread-sse-{name.replace(' ', '-')}")

    def make(r: Request) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        events = []
        for piece in _pieces(r.token):
            data = b"data: " + json.dumps({"choices": [{"delta": {"content": piece + FILLERS[name]}}]}).encode()
            events.append(b"%x\r\n%s\n\n\r\n" % (len(data) + 2, data))
        return [head, *events, b"0\r\n\r\n"]

    serve_raw(hostile, path, make, pause=0.01)
    raw = fetch(rt, path, timeout=5)
    assert not raw.endswith(b"0\r\n\r\n")  # cut
    contents = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            contents.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
    assert HOST.real[:3] not in _read("".join(contents))
