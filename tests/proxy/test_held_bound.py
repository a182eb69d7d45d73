"""A response that holds back what could begin a real value, and then never says, is refused.

The upstream sends a real value's first characters and then, for ever, what the scrubber's views
drop (a terminal's sequences), or other messages and events that must wait behind them. The sidecar
held all of it, searching its whole hold again on every read: memory without limit, CPU that grows
with the square. Past the scrubber's bound the response is refused: the agent sees the stream cut
(a WebSocket closed with 1008), and the audit log says why.

Also what red team 21 found of the same kind, against the running sidecar: an event or a held tail
sent a byte a chunk (work that grew with its square, on the sidecar's only event loop), and a few
hundred bytes of brotli that decode to 128 MiB (the sidecar's memory grew by half a gigabyte).
"""

from __future__ import annotations

import contextlib
import json

import brotli
import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import (
    HOST,
    HOSTILE2_NAME,
    HOSTILE_NAME,
    parse_frames,
    recv_all,
    tls_to,
    ws_handshake,
    ws_open,
)
from tests.proxy.test_redteam18 import fetch, path_for, serve_raw
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

FILLER = b"\x1b[m" * 1365  # ~4 KiB a write, all of it dropped by a terminal
WRITES = 256  # 1 MiB in all: far past the bound (16 KiB for these values), far below what a test waits for
HELD_PAST = "held back"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _records(rt: ProxyProcess, path: str) -> list[dict[str, object]]:
    return [r for r in rt.audit() if r.get("path") == path]


def _refused(rt: ProxyProcess, path: str) -> bool:
    return any(r["decision"] == "denied" and HELD_PAST in str(r.get("detail", "")) for r in _records(rt, path))


def test_a_body_that_begins_a_value_then_sends_filler_for_ever_is_cut(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = path_for("held-body")

    def make(r: Request) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        first = b"the key is " + r.token.encode()[:5]
        return [head, _chunk(first)] + [_chunk(FILLER) for _ in range(WRITES)] + [b"0\r\n\r\n"]

    serve_raw(hostile, path, make, pause=0.001)
    raw = fetch(rt, path, timeout=20)
    assert raw.startswith(b"HTTP/1.1 200")
    assert not raw.endswith(b"0\r\n\r\n")  # cut, not completed
    assert len(raw) < 128 * 1024  # what went out before the refusal: not the megabyte
    assert _refused(rt, path)


def _event(payload: object) -> bytes:
    return _chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")


def test_events_behind_a_token_path_that_begins_a_value_are_not_held_for_ever(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    path = path_for("held-sse")

    def make(r: Request) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        events = [_event({"c": "\x1b[m" * 100}) * 40 for _ in range(WRITES)]
        return [head, _event({"c": r.token[:5]}), *events, b"0\r\n\r\n"]

    serve_raw(hostile, path, make, pause=0.001)
    raw = fetch(rt, path, timeout=30)
    assert not raw.endswith(b"0\r\n\r\n")
    assert _refused(rt, path)


def test_websocket_messages_behind_a_token_path_that_begins_a_value_are_not_held_for_ever(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    path = path_for("held-ws")

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x1, json.dumps({"content": req.token[:5]}).encode()))
        message = ws_frame(0x1, json.dumps({"progress": "still working " * 20}).encode())
        for _ in range(WRITES):
            await w.send(message * 16, pause=0.001)
        await w.send(ws_frame(0x8, b"\x03\xe8"))
        w.keep = False

    s, buf = ws_open(rt, path)
    frames, _ = parse_frames(buf.partition(b"\r\n\r\n")[2] + recv_all(s, 20))
    closes = [p for _, op, p in frames if op == 0x8]
    assert closes and int.from_bytes(closes[0][:2], "big") == 1008
    assert _refused(rt, path)


def test_a_request_body_that_begins_a_placeholder_then_sends_filler_for_ever_is_refused(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """The agent's own streamed body, to a host none of the policy's secrets is bound to: the guard
    holds what could begin a placeholder, and the agent sends filler after it for ever."""
    path = path_for("held-request")
    s = tls_to(rt, HOSTILE2_NAME)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {HOSTILE2_NAME}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + _chunk(b"note: " + HOST.placeholder.encode()[:10])
    )
    with contextlib.suppress(OSError):
        for _ in range(WRITES):
            s.sendall(_chunk(FILLER))
    raw = recv_all(s, 10)
    assert raw.startswith(b"HTTP/1.1 413") or not raw
    records = _records(rt, path)
    assert any(r["reason"] == "limit_exceeded" and HELD_PAST in str(r["detail"]) for r in records), records


def _tiny_chunks(data: bytes) -> bytes:
    """Each byte its own chunk: ``1\r\nX\r\n`` (chunked framing hands each to the scrubber as a read)."""
    return b"".join(b"1\r\n%c\r\n" % b for b in data)


@pytest.mark.parametrize(
    ("ctype", "first", "last"),
    [("text/event-stream", b"data: ", b"\n\n"), ("application/x-ndjson", b'{"a":"', b'"}\n')],
)
def test_an_event_sent_a_byte_a_chunk_is_relayed_in_reasonable_time(
    rt: ProxyProcess, hostile: HostileServer, ctype: str, first: bytes, last: bytes
) -> None:
    """Red team 21: a 64 KiB event as one-byte chunks took the sidecar's only event loop 17.8 s
    (SSE) and a 32 KiB line 10 s (NDJSON), searched from its start on every chunk; every other
    agent waited. It is relayed now well within the client's 10 s."""
    path = path_for("tiny-chunks")

    def make(r: Request) -> list[bytes]:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        return [head, _chunk(first), _tiny_chunks(b"a" * 65536), _chunk(last), b"0\r\n\r\n"]

    serve_raw(hostile, path, make, pause=0.001)
    raw = fetch(rt, path, timeout=10)
    assert raw.endswith(b"0\r\n\r\n")
    assert b"a" * 1000 in raw


def test_a_held_body_refilled_a_byte_a_chunk_is_relayed_in_reasonable_time(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """Red team 21: a value's first characters, then a terminal's sequences a byte a chunk (held,
    under the bound), then a plain line that lets them go; twice. 28.8 s of the sidecar's CPU for
    ~100 KB on the wire: the hold was searched again on every chunk."""
    path = path_for("tiny-held")

    def make(r: Request) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        pieces = [head, _chunk(b"the key is not here\n")]
        for _ in range(2):
            pieces += [_chunk(b" Q\n"), _chunk(b"k " + r.token.encode()[:5]), _tiny_chunks(b"\x1b[m" * 2666)]
        return [*pieces, _chunk(b" done\n"), b"0\r\n\r\n"]

    serve_raw(hostile, path, make, pause=0.001)
    raw = fetch(rt, path, timeout=10)
    assert raw.endswith(b"0\r\n\r\n") or _refused(rt, path)


def _peak_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 (one read of a proc file)
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_a_compressed_answer_that_decodes_to_far_more_is_relayed_in_bounded_memory(
    rt: ProxyProcess, hostile: HostileServer, framing: str
) -> None:
    """Red team 21: 211 bytes of brotli that decode to 128 MiB took the sidecar from 60 MB to a
    peak of 584 MB (739 with a Content-Length, which the sidecar keeps for a body it scrubs whole):
    one read's decoded pieces were returned in one list, and joined. The pieces are now scrubbed
    and sent one by one, and decoding waits while the agent has not read what was sent; a body
    that decodes past what is scrubbed whole is streamed. The agent gets all of it."""
    size = 128 << 20
    data = brotli.compress(b"a" * size, quality=11)
    path = path_for(f"bomb-{framing}")

    def make(r: Request) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: br\r\n"
        if framing == "chunked":
            return [head + b"Transfer-Encoding: chunked\r\n\r\n", _chunk(data), b"0\r\n\r\n"]
        return [head + b"Content-Length: %d\r\n\r\n" % len(data) + data]

    serve_raw(hostile, path, make, pause=0)
    before = _peak_rss_kib(rt.proc.pid)
    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(world.get(path, auth=world.bearer(HOST)))
    s.settimeout(30)
    got, tail = 0, b""
    while True:
        piece = s.recv(1 << 20)
        if not piece:
            break
        got += len(piece)
        tail = (tail + piece)[-16:]
        if tail.endswith(b"0\r\n\r\n"):
            break
    assert got > size
    assert tail.endswith(b"a\r\n0\r\n\r\n")
    assert _peak_rss_kib(rt.proc.pid) - before < 64 * 1024  # KiB: a bounded number of pieces, not the body
