"""Red team 44, findings 4 to 7: streams and token streams read less than a body read whole.

4. Wrapped base64 after a token line. A body of any label is read as a token stream from its first
   line if that is an SSE field (``data:``, ``: comment``), else from its first ``data:`` line or
   two JSON lines in a row (SniffingScrubber; scrub_whole for a body scrubbed whole); labelled
   ``text/event-stream`` and NDJSON bodies are too. From there every line that does not begin an
   SSE event was an event of its own, scrubbed alone (EventScrubber._event -> scrub_field), and only
   the texts of JSON and part lines were stitched: a PEM block or a MIME part with the key's base64
   across a line break was in no line. scrub_field of the same bytes refuses it (or replaces the
   base64 form whole in a line); ``base64 -d`` of the block or an email parser read the key.
5. The same root: the key with one of ``str.splitlines``' separators between each of its characters
   (RS, FS, GS, VT, FF, NEL, LS, PS), each character an event of its own. A terminal shows nothing
   of RS, FS and GS (``curl`` printed the key, plainly); a cleaning client drops them all.
6. A streamed text in a script that is not Latin (valid UTF-8), then the key percent-encoded with
   raw zero-width spaces between its escapes: the stream's window, cut at a byte count, began
   inside a character, and a decoded view over 4 KiB that was not UTF-8 was not folded. Fixed on
   main before this branch ("Fold every decoded view", 6c17f59): kept as a regression test. Those
   whose window begins inside a character fail on the code before it; the window that begins on
   one (two blanks first) and WebSocket messages (a window of its own) were refused already.
7. A streamed body where what opens a decoding lies farther back than the window the stream keeps
   (4,736 bytes here): a UTF-7 run ended by ``-``, a JWT whose claims hold the key JSON-escaped.
   Scrubbed whole, refused; streamed, the window began inside the run and no view decoded it.

Now: a token stream's bytes are also read as a body's, across events (proxy.core.scrub
_BodyReading): a value found there closes the stream, and an event whose reading ends with the
beginning of one waits for the next; a body scrubbed whole as a token stream is also read as
scrub_field reads it, for refusals. A stream keeps what opened the run its window begins inside
(proxy.core.scrub._Opened) and reads the window after it. The differential tests (stream against
whole, token reading against scrub_field) are in tests/proxy/core/test_stream_readings.py.

Each pure test drives the scrubbers with a file-keyed secret's value; each end-to-end test runs a
real sidecar (``keyed_proxy``: ``rtREALa`` and 32 hex characters, bound to the hostile host) and a
hostile upstream that echoes the real key, and reads what the agent received as a client would.
"""

from __future__ import annotations

import base64
import email
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from proxy.core.scrub import (
    EventScrubber,
    MessageScrubber,
    ScrubRefused,
    SniffingScrubber,
    scrub_field,
    scrub_whole,
)
from proxy.core.values import Finder
from tests.proxy.test_redteam import HOSTILE_NAME, dechunk, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import PH, keyed_proxy
from tests.proxy.test_redteam39 import get
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess

KEY = "rtREALa3f9c0b7e15d24a68c0ffee1234abcd"


def finder() -> Finder:
    return Finder.for_values([("k", KEY, PH)], runs=True)


def refused_or(make: Callable[[], bytes]) -> bytes:
    """What ``make`` returned, or nothing when it refused."""
    try:
        return make()
    except ScrubRefused:
        return b""


def sniffed(f: Finder, body: bytes, size: int) -> bytes:
    """``body`` through a SniffingScrubber in ``size``-byte reads: what it sent, or nothing."""

    def run() -> bytes:
        s = SniffingScrubber(f, lambda _: None)
        return b"".join(s.feed(body[i : i + size]) for i in range(0, len(body), size)) + s.finish()

    return refused_or(run)


def body_of(raw: bytes) -> bytes:
    """The body the agent read (chunked framing undone; what came before a cut)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    return dechunk(raw) if b"transfer-encoding: chunked" in head.lower() else rest


# -- 4 and 5: after a line that makes the body a token stream ---------------------------------------

# What makes the rest of the body a token stream (each an ordinary first line of some answer).
LEADS = {
    "data-line": b'data: {"status": "error"}\n\n',
    "sse-comment": b": diagnostics follow\n\n",
    "json-lines": b'{"level": "error", "msg": "auth failed"}\n{"level": "info", "msg": "dump"}\n',
}


def pem(key: str, pad: int = 0) -> bytes:
    blob = base64.b64encode(b'{"api_key": "' + b"x" * pad + key.encode() + b'"}')
    lines = b"\n".join(blob[i : i + 64] for i in range(0, len(blob), 64))
    return b"-----BEGIN CREDENTIAL-----\n" + lines + b"\n-----END CREDENTIAL-----\n"


def mime(key: str, pad: int = 0) -> bytes:
    blob = base64.b64encode(b"x" * pad + key.encode())
    return (b"--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + b"\r\n".join(blob[i : i + 8] for i in range(0, len(blob), 8)) + b"\r\n--b1--\r\n")  # fmt: skip


def read_pem(body: bytes) -> bytes:
    m = re.search(rb"-----BEGIN CREDENTIAL-----(.*?)-----END CREDENTIAL-----", body, re.S)
    try:
        return base64.b64decode(re.sub(rb"\s", b"", m.group(1))) if m else b""
    except ValueError:
        return b""


def read_mime(body: bytes) -> bytes:
    at = body.find(b"--b1\r\n")
    if at < 0:
        return b""
    msg = email.message_from_bytes(b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" + body[at:])
    parts = msg.get_payload()
    if not isinstance(parts, list) or not parts or isinstance(parts[0], str):
        return b""
    payload = parts[0].get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


BLOBS: dict[str, tuple[Callable[..., bytes], Callable[[bytes], bytes]]] = {
    "pem": (pem, read_pem),
    "mime": (mime, read_mime),
}


@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("blob", sorted(BLOBS))
@pytest.mark.parametrize("lead", sorted(LEADS))
def test_rt44_wrapped_base64_after_a_token_line_is_read_as_scrub_field_reads_it(lead: str, blob: str, pad: int) -> None:
    """scrub_field refuses the body (the key's base64 across a line break) or replaces a base64 form
    of the key that lies whole in one line (at some alignments: then the block no longer decodes to
    the key); the token readings, whole and streamed, do no less. (The red team's version expected
    a refusal at the one alignment where the form is replaced.)"""
    f = finder()
    make, read = BLOBS[blob]
    body = LEADS[lead] + make(KEY, pad)
    assert KEY.encode() in read(body)
    assert KEY.encode() not in read(refused_or(lambda: scrub_field(body, f, lambda _: None)))
    assert KEY.encode() not in read(refused_or(lambda: scrub_whole(body, f, lambda _: None))), "whole body"
    for size in (1, 7, 100):
        assert KEY.encode() not in read(sniffed(f, body, size)), f"streamed in {size}-byte reads"


SEPARATORS = {
    "rs": b"\x1e",
    "fs": b"\x1c",
    "gs": b"\x1d",
    "vt": b"\x0b",
    "ff": b"\x0c",
    "nel": "\u0085".encode(),
    "ls": "\u2028".encode(),
    "ps": "\u2029".encode(),
}


def spread_body(key: str, lead: str, sep: str) -> bytes:
    return LEADS[lead] + b"key: " + SEPARATORS[sep].join(bytes([c]) for c in key.encode()) + b"\n"


def cleaned(body: bytes) -> str:
    """The README's cleaning client (and, for RS, FS and GS, what a terminal shows): printable
    ASCII and line ends kept."""
    return "".join(c for c in body.decode("utf-8", "replace") if c.isascii() and (c.isprintable() or c == "\n"))


@pytest.mark.parametrize("sep", sorted(SEPARATORS))
@pytest.mark.parametrize("lead", sorted(LEADS))
def test_rt44_a_key_spread_with_line_separators_after_a_token_line_is_refused(lead: str, sep: str) -> None:
    f = finder()
    body = spread_body(KEY, lead, sep)
    assert KEY in cleaned(body)
    with pytest.raises(ScrubRefused):  # held: the same without the first line
        scrub_whole(body.removeprefix(LEADS[lead]), f, lambda _: None)
    assert KEY not in cleaned(refused_or(lambda: scrub_whole(body, f, lambda _: None))), "whole body"
    for size in (1, 16, 4096):
        assert KEY not in cleaned(sniffed(f, body, size)), f"streamed in {size}-byte reads"

    def labelled() -> bytes:  # (an event stream by its label: the data path's EventScrubber, "mixed")
        s = EventScrubber(f, lambda _: None, "mixed")
        return b"".join(s.feed(body[i : i + 5]) for i in range(0, len(body), 5)) + s.finish()

    assert KEY not in cleaned(refused_or(labelled)), "labelled an event stream"


# -- 6: a window cut inside a character ---------------------------------------------------------------

ZWSP = "\u200b".encode()
CHINESE = (
    "\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u6587\u672c\uff0c\u7528\u4e8e\u8bf4\u660e\u3002" * 5000
).encode()  # (valid UTF-8, 3 bytes a character)


def chinese_body(key: str, pad: int, lead: int) -> bytes:
    escaped = ZWSP.join(b"%%%02X" % c for c in key.encode())
    return b" " * lead + CHINESE[: pad * 3] + b"\n key: " + escaped + b"\n"


def unquoted(body: bytes) -> str:
    """The agent's ``unquote``, then the cleaning client: printable ASCII kept."""
    return "".join(c for c in urllib.parse.unquote(body.decode("utf-8", "replace")) if c.isascii() and c.isprintable())


@pytest.mark.parametrize("lead", [0, 1, 2])
@pytest.mark.parametrize("size", [4096, 16384, 65536])
def test_rt44_a_stream_reads_what_the_whole_body_reads_in_a_text_that_is_not_latin(size: int, lead: int) -> None:
    f = finder()
    body = chinese_body(KEY, 70_000, lead)
    assert KEY in unquoted(body)
    with pytest.raises(ScrubRefused):  # whole: refused
        scrub_whole(body, f, lambda _: None)
    assert KEY not in unquoted(sniffed(f, body, size)), "streamed: the key went to the agent"


def test_rt44_websocket_messages_in_a_text_that_is_not_latin_then_the_escaped_key_are_refused() -> None:
    """The same shape as text messages (a message stream keeps a window of what it sent too)."""
    f = finder()
    messages = [CHINESE[i : i + 4096] for i in range(0, 60_000, 4096)]
    messages.append(b"key: " + ZWSP.join(b"%%%02X" % c for c in KEY.encode()))
    s = MessageScrubber(f, lambda _: None)

    def run() -> bytes:
        out = b""
        for seq, message in enumerate(messages):
            out += b"".join(d for _, d in s.feed(message, seq) + s.end_segment())
        return out + b"".join(d for _, d in s.finish())

    assert KEY not in unquoted(refused_or(run))


# -- 7: a decoding opened before the window -----------------------------------------------------------


def utf7_body(key: str) -> bytes:
    run = base64.b64encode(("x" * 6000 + key[:31]).encode("utf-16-be")).rstrip(b"=")
    return b"note: +" + run + b"-" + key[31:].encode() + b" end\n"


def read_utf7(body: bytes) -> str:
    return body.decode("utf-7", "replace")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jwt_body(key: str) -> bytes:
    claims = ('{"pad": "' + "x" * 20000 + '", "sub": "' + "".join(f"\\u{ord(c):04x}" for c in key) + '"}').encode()
    token = _b64url(b'{"alg":"none"}') + b"." + _b64url(claims) + b"."
    return b"id_token=" + token + b"\n"


def read_jwt(body: bytes) -> str:
    m = re.search(rb"\.(eyJ[A-Za-z0-9_-]+)\.", body)
    if m is None:
        return ""
    try:
        return str(json.loads(base64.urlsafe_b64decode(m.group(1) + b"=" * (-len(m.group(1)) % 4)))["sub"])
    except (ValueError, KeyError, TypeError):
        return ""


OPENERS: dict[str, tuple[Callable[[str], bytes], Callable[[bytes], str], bytes]] = {
    "utf7": (utf7_body, read_utf7, b"text/plain; charset=utf-7"),
    "jwt": (jwt_body, read_jwt, b"text/plain"),
}


@pytest.mark.parametrize("size", [1000, 4096, 65536])
@pytest.mark.parametrize("case", sorted(OPENERS))
def test_rt44_a_stream_reads_a_decoding_opened_before_its_window(case: str, size: int) -> None:
    make, read, _ = OPENERS[case]
    f = finder()
    body = make(KEY)
    assert KEY in read(body)
    with pytest.raises(ScrubRefused):  # whole: refused
        scrub_whole(body, f, lambda _: None)
    assert KEY not in read(sniffed(f, body, size)), "streamed: the key went to the agent"


@pytest.mark.xfail(
    strict=True,
    reason="known: a stream of segments (a token stream's path, WebSocket messages, a streamed request body) "
    "reads a decoding opened more than a window before within the window only",
)
def test_rt44_a_message_stream_reads_a_utf7_run_opened_before_its_window() -> None:
    f = finder()
    text = utf7_body(KEY)
    s = MessageScrubber(f, lambda _: None)

    def run() -> bytes:
        out = b""
        for seq, at in enumerate(range(0, len(text), 40)):
            out += b"".join(d for _, d in s.feed(text[at : at + 40], seq) + s.end_segment())
        return out + b"".join(d for _, d in s.finish())

    assert KEY not in read_utf7(refused_or(run))


@pytest.mark.xfail(
    strict=True,
    reason="known: what opens a decoding of bytes before it (a declaration of base64, a JWT's .eyJ, a UTF-7 "
    "run ended by -) more than a window after them, streamed",
)
def test_rt44_a_stream_reads_base64_declared_a_window_after_it() -> None:
    f = finder()
    blob = base64.b64encode(KEY.encode())
    body = b"\r\n".join(blob[i : i + 8] for i in range(0, len(blob), 8)) + b"\r\n" + b"y " * 6000
    body += b"\r\nContent-Transfer-Encoding: base64\r\n"
    with pytest.raises(ScrubRefused):  # whole: refused
        scrub_whole(body, f, lambda _: None)
    s = SniffingScrubber(f, lambda _: None)
    with pytest.raises(ScrubRefused):
        for i in range(0, len(body), 1000):
            s.feed(body[i : i + 1000])
        s.finish()


# -- end to end ----------------------------------------------------------------------------------------


async def _chunked(w: Wire, head: bytes, body: bytes, size: int, pause: float) -> None:
    await w.send(head + b"Transfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        await w.send(b"%x\r\n%s\r\n" % (len(piece), piece), pause=pause)
    await w.send(b"0\r\n\r\n")


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)
    error = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
    for lead in LEADS:
        for blob in BLOBS:

            def blob_routes(lead: str = lead, blob: str = blob) -> None:
                @hostile.on(f"/rt44/lines/{lead}/{blob}/whole")
                async def whole(req: Request, w: Wire) -> None:
                    body = LEADS[lead] + BLOBS[blob][0](req.token)
                    await w.send(error + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

                @hostile.on(f"/rt44/lines/{lead}/{blob}/stream")
                async def stream(req: Request, w: Wire) -> None:
                    await _chunked(w, error, LEADS[lead] + BLOBS[blob][0](req.token), 40, 0.005)

            blob_routes()

        def spread_routes(lead: str = lead) -> None:
            @hostile.on(f"/rt44/seps/{lead}/whole")
            async def whole(req: Request, w: Wire) -> None:
                body = spread_body(req.token, lead, "rs")
                await w.send(error + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

            @hostile.on(f"/rt44/seps/{lead}/stream")
            async def stream(req: Request, w: Wire) -> None:
                await _chunked(w, error, spread_body(req.token, lead, "rs"), 1 << 20, 0)

        spread_routes()

    @hostile.on("/rt44/seps/labelled-sse")
    async def labelled(req: Request, w: Wire) -> None:  # an event stream by its label
        body = spread_body(req.token, "sse-comment", "rs")
        await _chunked(w, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n", body, 1 << 20, 0)

    for blanks in range(3):

        def chinese_routes(blanks: int = blanks) -> None:
            @hostile.on(f"/rt44/utf8/{blanks}")
            async def answer(req: Request, w: Wire) -> None:  # chunked: streamed whatever its length
                head = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                await _chunked(w, head, chinese_body(req.token, 20_000, blanks), 4096, 0.01)

        chinese_routes()
    for case in OPENERS:

        def opener_routes(case: str = case) -> None:
            @hostile.on(f"/rt44/opener/{case}")
            async def answer(req: Request, w: Wire) -> None:
                make, _, ctype = OPENERS[case]
                head = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n"
                await _chunked(w, head, make(req.token), 4096, 0.01)

        opener_routes()
    yield p, key
    p.stop()


@pytest.mark.parametrize("framing", ["whole", "stream"])
@pytest.mark.parametrize("blob", sorted(BLOBS))
@pytest.mark.parametrize("lead", sorted(LEADS))
def test_rt44_a_key_in_wrapped_base64_after_a_token_line_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path], lead: str, blob: str, framing: str
) -> None:
    p, key = world
    real = key.read_text().encode()
    raw = get(p, f"/rt44/lines/{lead}/{blob}/{framing}")
    assert real not in BLOBS[blob][1](body_of(raw)), f"the agent read the real key: {raw[:600]!r}"


@pytest.mark.parametrize("framing", ["whole", "stream"])
@pytest.mark.parametrize("lead", sorted(LEADS))
def test_rt44_a_key_spread_with_record_separators_after_a_token_line_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path], lead: str, framing: str
) -> None:
    p, key = world
    raw = get(p, f"/rt44/seps/{lead}/{framing}")
    assert key.read_text() not in cleaned(body_of(raw)), f"the agent read the real key: {raw!r}"


def test_rt44_a_key_spread_with_record_separators_in_a_labelled_event_stream_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path],
) -> None:
    p, key = world
    raw = get(p, "/rt44/seps/labelled-sse")
    assert key.read_text() not in cleaned(body_of(raw)), f"the agent read the real key: {raw!r}"


def test_rt44_a_key_escaped_and_spread_in_a_streamed_chinese_text_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path],
) -> None:
    """Three answers, their text one byte longer each: the window begins at each of a character's
    three bytes in turn, so at least two of them begin inside one."""
    p, key = world
    real = key.read_text()
    leaked = [lead for lead in range(3) if real in unquoted(body_of(get(p, f"/rt44/utf8/{lead}")))]
    assert not leaked, f"the agent read the real key from the answers with {leaked} leading blanks"


@pytest.mark.parametrize("case", sorted(OPENERS))
def test_rt44_a_key_decoded_from_an_opener_past_the_window_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path], case: str
) -> None:
    p, key = world
    raw = get(p, f"/rt44/opener/{case}")
    assert key.read_text() not in OPENERS[case][1](body_of(raw)), f"the agent read the real key: ...{raw[-300:]!r}"
