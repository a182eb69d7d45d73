"""Red team 22: attacks on a real ``sandgate proxy`` from outside (see tests/proxy/test_redteam.py for the world).

Each test asserts an invariant; a failing test names a break. What broke, fixed since: a binary
WebSocket message told JSON (and so stitched with the next) from its first fragment, which may be
empty or a blank; an endless response head (64 MiB: +247 MiB, 8.6 s of the loop) and an endless
request trailer (48 MiB: +90 MiB) were read without bound. Left as stated: the key in pieces in
header values of AWS event-stream messages (no client joins them across messages). (Not kept here,
for their minute of CPU each: a flood of empty WebSocket continuation frames, ~16 us of the loop
a frame.)
"""

from __future__ import annotations

import json
import struct
import subprocess
import threading
import time
import zlib

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import (
    HOSTILE_NAME,
    bearer,
    dechunk,
    fetch,
    get,
    leaked,
    parse_frames,
    recv_all,
    tls_to,
    ws_handshake,
    ws_open,
)
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

MiB = 1 << 20


def rss_mib(proxy: ProxyProcess) -> float:
    with open(f"/proc/{proxy.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed_echo(proxy: ProxyProcess, timeout: float = 60) -> float:
    """Another agent's ordinary request (to the echo script): seconds until its answer is whole
    (a failure -- the proxy did not even finish the TLS handshake -- counts as the time it took, negated)."""
    t = time.monotonic()
    try:
        s = tls_to(proxy, HOSTILE_NAME)
        s.settimeout(timeout)
        s.sendall(get("/rt22/echo-other", auth=bearer()))
        got = recv_all(s, timeout)
        if not got.startswith(b"HTTP/1.1 200"):
            return -(time.monotonic() - t)
    except OSError:
        return -(time.monotonic() - t)
    return time.monotonic() - t


# == 4. DoS: an upstream's response head that never ends ==========================================


def cpu_s(proxy: ProxyProcess) -> float:
    with open(f"/proc/{proxy.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks


@pytest.mark.parametrize("mib", [16])
def test_rt22_endless_response_head_does_not_stall_or_grow(rt: ProxyProcess, hostile: HostileServer, mib: int) -> None:
    """An allowed upstream answers with a response head that never ends (one header field of tens of
    MiB). The proxy must bound what it takes of a response head (it bounds a request head at 64 KiB):
    no memory or CPU growing with it, other agents' requests answered promptly meanwhile."""
    path = f"/rt22/headflood-{mib}"
    total = mib * MiB
    sent = [0]

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 200 OK\r\nX-A: ")
        chunk = b"a" * 65536
        while sent[0] < total:
            await w.send(chunk)
            sent[0] += len(chunk)
        await w.send(b"\r\nContent-Length: 2\r\n\r\nok")
        w.keep = False

    before, cpu0 = rss_mib(rt), cpu_s(rt)
    peak = [before]
    lat: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(rt))
            time.sleep(0.05)

    def others() -> None:
        while not done.is_set():
            lat.append(timed_echo(rt))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    threading.Thread(target=others, daemon=True).start()
    t0 = time.monotonic()
    out = fetch(rt, path, timeout=300)
    took = time.monotonic() - t0
    done.set()
    cpu = cpu_s(rt) - cpu0
    print(
        f"\n[{mib} MiB head] agent got {out[:40]!r}... after {took:.1f}s; sidecar CPU {cpu:.1f}s; "
        f"rss {before:.0f} -> peak {peak[0]:.0f} MiB; other agent: {len(lat)} requests, max latency {max(lat or [0]):.2f}s"
    )
    assert peak[0] - before < 32, f"the sidecar grew {peak[0] - before:.0f} MiB holding one upstream's response head"
    assert cpu < 5, f"the sidecar spent {cpu:.0f}s of CPU on one upstream's response head"


# == 3. WebSocket: JSON binary messages whose first fragment is empty or a blank ===================


def _ws_messages(frames: list[tuple[bool, int, bytes]]) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each data message, fragments joined, as a client's recv() returns them."""
    out, cur, op = [], b"", 0
    for fin, opcode, payload in frames:
        if opcode >= 0x8:
            continue
        if opcode != 0:
            op, cur = opcode, b""
        cur += payload
        if fin:
            out.append((op, cur))
    return out


@pytest.mark.parametrize("first", ["whole", "empty-first-fragment", "blank-first-fragment"])
def test_rt22_websocket_json_binary_messages_split_key_never_reaches_the_agent(
    rt: ProxyProcess, hostile: HostileServer, first: str
) -> None:
    """The key in 8-character deltas (shorter than any run piece) over six binary WebSocket messages, each a JSON document
    (`json.loads(await ws.recv())` reads a binary message as JSON, and a Realtime client stitches the
    deltas). The proxy reads a binary message as a token stream only when it *begins* as JSON, and
    decides that on the first fragment: a first fragment that is empty, or a single blank (JSON allows
    leading whitespace), makes the message 'not JSON' and its deltas are not stitched."""
    path = f"/rt22/ws-bin-json-{first}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(ws_handshake(req))
        for i in range(0, len(t), 8):
            doc = json.dumps({"type": "response.audio_transcript.delta", "delta": t[i : i + 8]}).encode()
            if first == "whole":
                await w.send(ws_frame(0x2, doc), pause=0.02)
            else:
                lead = b"" if first == "empty-first-fragment" else b" "
                await w.send(ws_frame(0x2, lead, fin=False) + ws_frame(0x0, doc), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.2)
        w.keep = False

    s, buf = ws_open(rt, path)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    rest += recv_all(s, 5)
    frames, _ = parse_frames(rest)
    msgs = _ws_messages(frames)
    deltas = "".join(json.loads(p).get("delta", "") for op, p in msgs if op == 0x2)
    closes = [p for _, op, p in frames if op == 0x8]
    print(
        f"\n[{first}] agent got {len(msgs)} binary messages; close frames {closes}; joined deltas {len(deltas)} chars; "
        f"leaked {bool(leaked(deltas))}"
    )
    print([line for line in rt.stderr().splitlines() if "redaction" in line][-1:])
    assert not leaked(deltas), "the agent stitched the real key from the deltas of JSON binary messages"


# == 4. DoS: a request's trailer section that never ends (the agent's side) =======================


def test_rt22_endless_request_trailer_is_bounded(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A chunked request body, then a trailer field that never ends. Request heads are bounded
    (64 KiB, 431); trailers are dropped, but are they bounded while they are read?"""
    before = rss_mib(rt)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(rt))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(
        f"POST /rt22/trailer HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: {bearer()}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: ".encode()
    )
    chunk = b"a" * 65536
    sent = 0
    try:
        while sent < 48 * MiB:
            s.sendall(chunk)
            sent += len(chunk)
        s.sendall(b"\r\n\r\n")
    except OSError:
        pass
    got = recv_all(s, 30)
    time.sleep(0.5)
    done.set()
    print(
        f"\n[request trailer] agent sent {sent / MiB:.0f} MiB of trailer; got {got[:40]!r}; rss {before:.0f} -> peak {peak[0]:.0f} MiB"
    )
    assert peak[0] - before < 32, f"the sidecar grew {peak[0] - before:.0f} MiB holding one request's trailer"


# == 3. AWS event-stream: the key across messages ==================================================


def es_header(name: str, value: bytes, kind: int = 7) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + struct.pack(">H", len(value)) + value


def es_message(headers: bytes, payload: bytes) -> bytes:
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def es_parse(data: bytes) -> list[tuple[dict[str, bytes], bytes]]:
    """(string/bytes headers, payload) of each whole message, as a client's decoder reads them."""
    out = []
    while len(data) >= 16:
        total, hlen = struct.unpack_from(">II", data)
        if len(data) < total:
            break
        block, payload = data[12 : 12 + hlen], data[12 + hlen : total - 4]
        headers, pos = {}, 0
        while pos < len(block):
            n = block[pos]
            name = block[pos + 1 : pos + 1 + n].decode()
            pos += 1 + n
            pos += 1  # (the value's type)
            ln = struct.unpack_from(">H", block, pos)[0]
            headers[name] = block[pos + 2 : pos + 2 + ln]
            pos += 2 + ln
        out.append((headers, payload))
        data = data[total:]
    return out


def _es_fetch(rt: ProxyProcess, path: str) -> list[tuple[dict[str, bytes], bytes]]:
    raw = fetch(rt, path)
    return es_parse(dechunk(raw) if b"chunked" in raw.split(b"\r\n\r\n")[0].lower() else raw.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(
            s,
            # Not strict: a piece the message's CRC happens to continue (its next byte the key's next
            # character, a few percent of the random keys) holds a run, and is found.
            marks=pytest.mark.xfail(
                strict=False, raises=AssertionError, reason="header values are checked per message, not joined across"
            ),
        )
        if s.endswith("header-pieces") or s.startswith("exception")
        else s
        for s in [
            "header-pieces",
            "bytes-header-pieces",
            "payload-pieces",
            "bedrock-pieces",
            "exception-message-pieces",
        ]
    ],
)
def test_rt22_eventstream_key_in_pieces_across_messages(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """The key in 8-character pieces (shorter than any run piece), one per event-stream message."""
    import base64

    path = f"/rt22/es-{shape}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        msgs = b""
        for i in range(0, len(t), 8):
            p = t[i : i + 8].encode()
            ev = es_header(":message-type", b"event") + es_header(":event-type", b"chunk")
            ev += es_header(":content-type", b"application/json")
            if shape == "header-pieces":
                msgs += es_message(ev + es_header("x-part", p), b'{"ok":true}')
            elif shape == "bytes-header-pieces":
                msgs += es_message(ev + es_header("x-part", p, kind=6), b'{"ok":true}')
            elif shape == "payload-pieces":  # Lambda's PayloadChunk: raw bytes a client appends
                msgs += es_message(es_header(":message-type", b"event") + es_header(":event-type", b"PayloadChunk"), p)
            elif shape == "bedrock-pieces":
                inner = json.dumps(
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p.decode()}}
                )
                msgs += es_message(ev, json.dumps({"bytes": base64.b64encode(inner.encode()).decode()}).encode())
            else:  # exception messages with the error text in headers
                msgs += es_message(
                    es_header(":message-type", b"error")
                    + es_header(":error-code", b"E")
                    + es_header(":error-message", p),
                    b"",
                )
        await w.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await w.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(msgs), msgs))

    msgs = _es_fetch(rt, path)
    texts = []
    for h, payload in msgs:
        texts.append(h.get("x-part", b"") + h.get(":error-message", b""))
        if shape == "payload-pieces":
            texts.append(payload)
        if shape == "bedrock-pieces" and payload.startswith(b"{"):
            inner = json.loads(base64.b64decode(json.loads(payload)["bytes"]))
            texts.append(inner["delta"]["text"].encode())
    joined = b"".join(texts)
    print(
        f"\n[{shape}] agent got {len(msgs)} messages; joined {len(joined)} bytes; leaked {bool(leaked(joined))}; "
        f"{[line for line in rt.stderr().splitlines() if 'redaction' in line][-1:]}"
    )
    assert not leaked(joined), "the agent joined the real key from event-stream messages"


def _loop_latency(proxy: ProxyProcess) -> float:
    """Seconds until the sidecar answers a plain request it refuses itself (no upstream involved):
    how long its event loop makes a new connection wait. Asked by curl, in a process of its own
    (this one's threads, the hostile upstream's among them, share a GIL)."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "--max-time", "30",
         "-x", f"http://127.0.0.1:{proxy.port}", "http://not-allowed.example/"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    return float(out[1]) if out and out[0] == "403" else float("inf")


def test_rt22_a_flood_of_empty_websocket_frames_does_not_hold_the_loop(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """Red team 22: 6M empty continuation frames (2 bytes each) took a minute of the sidecar's CPU
    (~9 us a frame, wsproto's own parsing) and every other connection waited for the whole of each
    read of them. Frames are now taken a few milliseconds at a time: the flood still costs its CPU,
    but new connections are answered while it is relayed (before: none, one waited ~2 s)."""
    path = "/rt22/ws-empty-fragments-latency"
    frames = 200_000

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x1, b"x", fin=False) + b"\x00\x00" * frames + ws_frame(0x0, b"y"))
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=1)
        w.keep = False

    answered: list[tuple[float, float]] = []  # (when it was answered, how long it waited)
    done = threading.Event()

    def others() -> None:
        while not done.is_set():
            waited = _loop_latency(rt)
            answered.append((time.monotonic(), waited))

    s, _ = ws_open(rt, path)
    start = time.monotonic()
    thread = threading.Thread(target=others, daemon=True)
    thread.start()
    s.settimeout(60)
    got = b""
    while (0x1, b"xy") not in _ws_messages(parse_frames(got)[0]):  # (the message, whole)
        piece = s.recv(65536)
        assert piece, "the socket closed before the message was relayed"
        got += piece
    relayed = time.monotonic()
    done.set()
    thread.join()
    during = sorted(w for t, w in answered if start < t < relayed)
    assert len(during) >= 10, f"{len(during)} connections answered while {frames} frames were relayed"
    assert during[len(during) // 2] < 0.1
