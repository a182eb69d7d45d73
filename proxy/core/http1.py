"""HTTP/1.1 heads, pure: what is refused, what is forwarded, in which form.

The data path parses with llhttp (``httptools``, strict: no lenient flags), which already refuses
bare LF, obs-fold, invalid header names, a Content-Length that is not digits, two differing
Content-Lengths and Content-Length with Transfer-Encoding. What it leaves to us, and what is
decided here: the version, the framing we accept (``Transfer-Encoding`` only as exactly
``chunked``), which upgrades pass (WebSocket only, and without compression extensions), which
headers never cross the proxy (hop-by-hop, routing overrides, our own ``X-Sandgate-*``), and the
exact bytes of the heads we send on. Header names and values are ``str`` here, decoded as latin-1
from the wire (one character per byte) and encoded back the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from proxy.policy.model import Reason

__all__ = [
    "Framing",
    "RequestCheck",
    "canonical_name",
    "check_request",
    "fields_of",
    "denial",
    "request_head",
    "response_fields",
    "response_head",
    "status_line",
]

Header = tuple[str, str]
RawHeader = tuple[bytes, bytes]  # a field as received: (name, value), bytes

# Headers an agent could use to make an upstream or an intermediary route the request somewhere
# else, or to pose as us (SECURITY-CASES A17); removed before forwarding.
ROUTING = frozenset(
    {
        "x-forwarded-host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-server",
        "forwarded",
        "x-host",
        "x-original-url",
        "x-original-host",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "x-upstream-https-proxy",
    }
)
# Hop-by-hop: about one connection, never forwarded (RFC 9110 7.6.1), plus what we frame ourselves.
HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "content-length", "upgrade", "expect", "host"}
)
RESERVED_PREFIX = "x-sandgate-"
BUFFER_BODY = 256 * 1024  # a request body up to this size is checked whole before anything is sent


# Immutable values with their __init__ written out (see proxy.native, "Dataclasses").


@dataclass(slots=True, unsafe_hash=True)  # (hashable: every field is Final)
class Framing:
    content_length: Final[int | None]  # declared length; None when chunked or no body
    chunked: Final[bool]

    def __init__(self, content_length: int | None, chunked: bool) -> None:
        self.content_length, self.chunked = content_length, chunked

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def held(self) -> bool:
        """Whether the body is checked whole before any of it leaves (else it streams, checked as
        it passes)."""
        return self.content_length is not None and self.content_length <= BUFFER_BODY


@dataclass(slots=True, unsafe_hash=True)
class RequestCheck:
    framing: Final[Framing]
    websocket: Final[bool]  # a WebSocket upgrade request
    expect_continue: Final[bool]
    refusal: Final[tuple[Reason, str, int | None] | None]  # (reason, detail, status override)

    def __init__(
        self,
        framing: Framing,
        websocket: bool,
        expect_continue: bool,
        refusal: tuple[Reason, str, int | None] | None = None,
    ) -> None:
        self.framing, self.websocket, self.expect_continue, self.refusal = framing, websocket, expect_continue, refusal


def _values(headers: Sequence[Header], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name]


_FRAMING = ("transfer-encoding", "content-length", "upgrade", "expect")


def fields_of(headers: Sequence[Header], names: tuple[str, ...]) -> dict[str, list[str]]:
    """The values of each of ``names`` (lowercase), in one pass over the fields."""
    out: dict[str, list[str]] = {n: [] for n in names}
    for n, v in headers:
        values = out.get(n.lower())
        if values is not None:
            values.append(v)
    return out


_NO_BODY_FRAMING = Framing(None, False)
_PLAIN = RequestCheck(_NO_BODY_FRAMING, False, False)  # no body, no upgrade, no expectation


def _refuse(reason: Reason, detail: str, status: int | None = None) -> RequestCheck:
    return RequestCheck(_NO_BODY_FRAMING, False, False, (reason, detail, status))


def check_request(method: str, version: str, headers: Sequence[Header], max_body: int) -> RequestCheck:
    """The framing and upgrade of a request head llhttp accepted, or why it is refused."""
    if version != "1.1" and version != "1.0":
        return _refuse(Reason.PROTOCOL_NOT_ALLOWED, "only HTTP/1.1 and HTTP/1.0 are accepted")
    fields = fields_of(headers, _FRAMING)
    te, cl, upgrade, expect = fields.values()  # (in _FRAMING's order)
    if not (te or cl or upgrade or expect):
        return _PLAIN
    if te:
        if len(te) != 1 or te[0].strip().lower() != "chunked" or version != "1.1":
            return _refuse(Reason.MALFORMED_REQUEST, "Transfer-Encoding must be exactly 'chunked' (HTTP/1.1)")
        if cl:
            return _refuse(Reason.MALFORMED_REQUEST, "Content-Length together with Transfer-Encoding")
        framing = Framing(None, True)
    elif cl:
        if len(set(cl)) != 1 or not cl[0].isdigit() or len(cl[0]) > 18:
            return _refuse(Reason.MALFORMED_REQUEST, "invalid Content-Length")
        length = int(cl[0])
        if length > max_body:
            return _refuse(Reason.LIMIT_EXCEEDED, "request body too large", 413)
        framing = Framing(length, False)
    else:
        framing = _NO_BODY_FRAMING
    upgrade = [v.strip().lower() for v in upgrade]
    websocket = False
    if upgrade:
        if upgrade != ["websocket"] or method != "GET" or version != "1.1":
            return _refuse(Reason.PROTOCOL_NOT_ALLOWED, "only WebSocket upgrades are allowed")
        if framing.has_body:
            # RFC 6455 4.1: a handshake has none, and llhttp reads none behind an upgrade request's
            # head: its declared length went upstream with no bytes, and an upstream that declined
            # the upgrade took the next request on that connection for them (red team 43).
            return _refuse(Reason.MALFORMED_REQUEST, "a WebSocket handshake carries no body")
        websocket = True
    expect = [v.strip().lower() for v in expect]
    if expect and expect != ["100-continue"]:
        return RequestCheck(framing, websocket, False, (Reason.MALFORMED_REQUEST, "unsupported Expect", 417))
    # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored (a 1.0 client
    # would read our interim 100 as its answer).
    return RequestCheck(framing, websocket, bool(expect) and version == "1.1")


def _connection_tokens(headers: Sequence[Header]) -> set[str]:
    return {
        canonical_name(t.strip().lower()) for v in _values(headers, "connection") for t in v.split(",") if t.strip()
    }


def canonical_name(low: str) -> str:
    """A lowercase field name as CGI-style readers see it: WSGI, CGI, PHP and Rack map ``-`` and
    ``_`` alike to ``_`` (``X_Forwarded_Host`` is their ``HTTP_X_FORWARDED_HOST``), so a name is
    judged with every ``_`` read as ``-``."""
    return low.replace("_", "-") if "_" in low else low


# The families of ROUTING's names, whatever else a framework calls them (red team 64:
# X-HTTP-Host-Override went through): a host, a method or a URL overridden, forwarded or original.
_ROUTING_PREFIXES = ("x-original-", "x-rewrite-", RESERVED_PREFIX)


def routing(low: str) -> bool:
    """Whether a canonical field name (:func:`canonical_name`) is one that routes or poses: removed
    before forwarding (SECURITY-CASES A17). (Written out: no generator per field.)"""
    return low in ROUTING or "override" in low or "forwarded" in low or low.startswith(_ROUTING_PREFIXES)


def forwardable(headers: Iterable[Header], dropped: set[str]) -> list[Header]:
    return [
        (n, v)
        for n, v in headers
        if (low := canonical_name(n.lower())) not in HOP and low not in dropped and not routing(low)
    ]


def request_head(
    method: str,
    target: str,
    host: str,
    port: int,
    tls: bool,
    headers: Sequence[Header],
    framing: Framing,
    websocket: bool,
    accept_encoding: str | None = None,
) -> bytes:
    """The head sent upstream: origin-form target, the one canonical Host, hop-by-hop and routing
    headers gone, our framing. ``accept_encoding`` replaces the agent's, when set."""
    shown = f"[{host}]" if ":" in host else host
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {shown}" if port == (443 if tls else 80) else f"Host: {shown}:{port}",
    ]
    dropped = _connection_tokens(headers)
    if websocket:
        dropped |= {"sec-websocket-extensions"}  # no permessage-deflate: frames stay scannable
    if accept_encoding is not None:
        dropped.add("accept-encoding")
        lines.append(f"Accept-Encoding: {accept_encoding}")
    lines += [f"{n}: {v}" for n, v in forwardable(headers, dropped)]
    if framing.chunked:
        lines.append("Transfer-Encoding: chunked")
    elif framing.content_length is not None:
        lines.append(f"Content-Length: {framing.content_length}")
    if websocket:
        lines += ["Connection: Upgrade", "Upgrade: websocket"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}" for s in HTTPStatus}


def status_line(code: int) -> str:
    """Our own status line: an upstream's reason phrase is never forwarded (it is free text)."""
    line = _STATUS_LINES.get(code)
    return line if line is not None else f"HTTP/1.1 {code} "


def denial(reason: Reason, detail: str | None, status: int | None = None, *, close: bool = True) -> bytes:
    """Our answer to a refused request: ``X-Sandgate-Reason`` and a JSON body with the reason."""
    body: dict[str, str] = {"error": "sandgate_denied", "reason": reason.value}
    if detail:
        body["detail"] = detail
    data = json.dumps(body).encode()
    head = [
        status_line(status or reason.http_status),
        "Content-Type: application/json",
        f"X-Sandgate-Reason: {reason.value}",
        "Cache-Control: no-store",
        f"Content-Length: {len(data)}",
    ]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


# The same sets as bytes, for answers: an answer's fields stay the bytes the upstream sent (they are
# scanned as bytes, and forwarded as bytes: decoding and re-encoding every field cost more than the
# checks on it).
_DROPPED_IN_ANSWERS = frozenset(n.encode() for n in HOP | ROUTING) | {b"alt-svc"}
_RESERVED_PREFIX_B = RESERVED_PREFIX.encode()
ANSWER_FIELDS = ("content-length", "transfer-encoding", "content-encoding", "content-type")
_ANSWER_FIELDS_B = frozenset(n.encode() for n in ANSWER_FIELDS)


def response_fields(
    headers: Sequence[RawHeader], *, upgrade: bool = False
) -> tuple[list[RawHeader], dict[str, list[str]]]:
    """An upstream's response fields the agent may see -- hop-by-hop (and the fields its Connection
    names), Content-Length, Alt-Svc (no QUIC: C03), proxy and routing headers and our reserved
    prefix removed; the data path adds its own framing -- and the values of ANSWER_FIELDS (by
    lowercase name, decoded as latin-1) that decide that framing. One pass, each name lowercased
    once."""
    kept: list[tuple[bytes, RawHeader]] = []
    fields: dict[str, list[str]] = {n: [] for n in ANSWER_FIELDS}
    connection: list[bytes] = []
    for n, v in headers:
        low = n.lower()
        if low in _ANSWER_FIELDS_B:  # (by the name as written: llhttp frames by it)
            fields[low.decode()].append(v.decode("latin-1"))
        if 0x5F in low:  # ``_`` (an int: ``b"_" in`` tries its operand as an int first, 6x slower)
            # (dropped as forwardable drops: a CGI-style reader maps ``_`` and ``-`` alike)
            low = low.replace(b"_", b"-")
        if low in _DROPPED_IN_ANSWERS:
            if low == b"connection":
                connection.append(v)
        elif not low.startswith(_RESERVED_PREFIX_B):
            kept.append((low, (n, v)))
    out = [pair for _, pair in kept]
    if connection:  # (a Connection field in almost every answer; a token in it naming another, rarely)
        named = {
            t.encode("latin-1") for t in _connection_tokens([("connection", v.decode("latin-1")) for v in connection])
        }
        out = [pair for low, pair in kept if low not in named]
    if upgrade:
        out += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    return out, fields


_STATUS_LINES_B = {code: (line + "\r\n").encode() for code, line in _STATUS_LINES.items()}


def response_head(code: int, headers: Iterable[RawHeader], framing: str | int | None) -> bytes:
    """``framing``: a Content-Length, "chunked", or None (no body, or close-delimited)."""
    first = _STATUS_LINES_B.get(code) or (status_line(code) + "\r\n").encode()
    if framing == "chunked":
        last = b"Transfer-Encoding: chunked\r\n\r\n"
    elif isinstance(framing, int):
        last = b"Content-Length: %d\r\n\r\n" % framing
    else:
        last = b"\r\n"
    return first + b"".join([n + b": " + v + b"\r\n" for n, v in headers]) + last
