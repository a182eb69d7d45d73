"""proxy.core.http1's answer side: which of an upstream's fields the agent sees, and the head's bytes.

An answer's fields stay bytes from the parser to the agent; the reference below is the same rule
written over latin-1 strings (as it was before), and a property holds the two to each other.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.http1 import (
    ANSWER_FIELDS,
    HOP,
    RESERVED_PREFIX,
    ROUTING,
    Framing,
    check_request,
    request_head,
    response_fields,
    response_head,
)
from proxy.policy.model import Reason

Raw = list[tuple[bytes, bytes]]


def reference(headers: Raw, upgrade: bool = False) -> tuple[Raw, dict[str, list[str]]]:
    """The rule, spelled out over strings: drop hop-by-hop fields, what Connection names,
    Content-Length, Alt-Svc, routing fields and the reserved prefix, each name judged with ``_``
    read as ``-`` (as CGI-style readers map both); keep the rest in order."""
    text = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
    named = {
        t.strip().lower().replace("_", "-")
        for n, v in text
        if n.lower() == "connection"
        for t in v.split(",")
        if t.strip()
    }
    kept = [
        (n, v)
        for n, v in text
        if (low := n.lower().replace("_", "-")) not in HOP
        and low not in ROUTING
        and low not in named
        and low not in ("alt-svc", "content-length")
        and not low.startswith(RESERVED_PREFIX)
    ]
    if upgrade:
        kept += [("Connection", "Upgrade"), ("Upgrade", "websocket")]
    fields = {f: [v for n, v in text if n.lower() == f] for f in ANSWER_FIELDS}
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in kept], fields


CASES = {
    "plain fields kept in order": (
        [(b"Content-Type", b"application/json"), (b"X-Request-Id", b"r1"), (b"Server", b"x")],
        [b"Content-Type", b"X-Request-Id", b"Server"],
    ),
    "hop-by-hop and framing dropped": (
        [
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"12"),
            (b"Trailer", b"x"),
            (b"Upgrade", b"h2c"),
            (b"Date", b"d"),
        ],
        [b"Date"],
    ),
    "a field Connection names is dropped, in any case": (
        [(b"Connection", b"close, X-Secret-Hop"), (b"x-secret-hop", b"1"), (b"X-Other", b"2")],
        [b"X-Other"],
    ),
    "Connection tokens with blanks and empty ones": (
        [(b"Connection", b" ,x-a ,\t, X-B"), (b"X-A", b"1"), (b"x-b", b"2"), (b"X-C", b"3")],
        [b"X-C"],
    ),
    "Alt-Svc dropped (no QUIC)": ([(b"alt-svc", b'h3=":443"'), (b"Vary", b"Accept")], [b"Vary"]),
    "routing and proxy fields dropped": (
        [(b"Proxy-Authenticate", b"Basic"), (b"X-Forwarded-For", b"1.2.3.4"), (b"Forwarded", b"for=x"), (b"A", b"b")],
        [b"A"],
    ),
    "our reserved prefix dropped, any case": (
        [(b"X-Sandgate-Reason", b"forged"), (b"x-sandgate-anything", b"x"), (b"X-Sandgatex", b"kept")],
        [b"X-Sandgatex"],
    ),
    "underscores read as hyphens (a CGI-style reader maps both to _)": (
        [
            (b"X_Sandgate_Reason", b"forged"),
            (b"Alt_Svc", b"h3"),
            (b"Keep_Alive", b"t"),
            (b"X_Kept", b"1"),
            (b"Connection", b"x_named"),
            (b"X-Named", b"2"),
        ],
        [b"X_Kept"],
    ),
    "repeated fields all kept": ([(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")], [b"Set-Cookie", b"Set-Cookie"]),
}


@pytest.mark.parametrize(("headers", "names"), list(CASES.values()), ids=list(CASES))
def test_response_fields_keeps_what_the_agent_may_see(headers: Raw, names: list[bytes]) -> None:
    kept, _ = response_fields(headers)
    assert [n for n, _ in kept] == names
    assert kept == reference(headers)[0]


def test_response_fields_reads_the_framing_fields_by_lowercase_name() -> None:
    headers = [(b"content-LENGTH", b"5"), (b"Content-Type", b"text/plain "), (b"Content-Encoding", b"gzip"),
               (b"content-encoding", b"br"), (b"X", b"y")]  # fmt: skip
    _, fields = response_fields(headers)
    assert fields == {
        "content-length": ["5"],
        "transfer-encoding": [],
        "content-encoding": ["gzip", "br"],
        "content-type": ["text/plain "],
    }


def test_an_upgrade_answer_gets_our_own_connection_fields() -> None:
    kept, _ = response_fields(
        [(b"Upgrade", b"websocket"), (b"Connection", b"upgrade"), (b"Sec-WebSocket-Accept", b"k")], upgrade=True
    )
    assert kept == [(b"Sec-WebSocket-Accept", b"k"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]


@pytest.mark.parametrize(
    ("framing", "last"),
    [(None, b"\r\n"), ("chunked", b"Transfer-Encoding: chunked\r\n\r\n"), (0, b"Content-Length: 0\r\n\r\n"),
     (1234, b"Content-Length: 1234\r\n\r\n")],
    ids=["none", "chunked", "empty", "length"],
)  # fmt: skip
def test_response_head_bytes(framing: str | int | None, last: bytes) -> None:
    head = response_head(200, [(b"A", b"1"), (b"b", b"\xff two")], framing)
    assert head == b"HTTP/1.1 200 OK\r\nA: 1\r\nb: \xff two\r\n" + last


def test_response_head_names_no_phrase_for_an_unknown_code() -> None:
    """An upstream's reason phrase is free text and never forwarded; a code without a standard phrase
    gets none."""
    assert response_head(599, [], None) == b"HTTP/1.1 599 \r\n\r\n"


_NAMES = st.sampled_from(
    [b"Connection", b"connection", b"Content-Length", b"Transfer-Encoding", b"Content-Type", b"content-encoding",
     b"Alt-Svc", b"Keep-Alive", b"Upgrade", b"X-Forwarded-Host", b"Proxy-Authenticate", b"X-Sandgate-Reason",
     b"X-A", b"x-b", b"Set-Cookie", b"Date", b"TE", b"Trailer", b"X_A", b"Content_Length", b"alt_svc",
     b"X_Sandgate_Reason", b"Transfer_Encoding"]
)  # fmt: skip
_TOKENISH = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_VALUES = st.one_of(
    _TOKENISH,
    st.lists(st.sampled_from([b"x-a", b"X-B", b"x_b", b"close", b"keep-alive", b"date", b" ", b"", b"\xa0x-a"])).map(
        b",".join
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=12), st.booleans())
def test_response_fields_matches_the_rule_spelled_out(headers: Raw, upgrade: bool) -> None:
    """Differential: the one-pass bytes reading drops and keeps exactly what the string rule does,
    and reads the same framing values."""
    assert response_fields(headers, upgrade=upgrade) == reference(headers, upgrade)


@pytest.mark.parametrize(
    "name",
    ["X_Forwarded_Host", "X-Forwarded_Host", "x_http_method_override", "X_Original_URL", "Proxy_Authorization",
     "X_Sandgate_Reason", "Transfer_Encoding", "Content_Length", "Keep_Alive", "X_Named_By_Connection"],
)  # fmt: skip
def test_request_fields_spelled_with_underscores_are_judged_as_hyphenated(name: str) -> None:
    """A17: WSGI, CGI, PHP and Rack read ``X_Forwarded_Host`` as ``X-Forwarded-Host`` (both are their
    ``HTTP_X_FORWARDED_HOST``): a routing override, a hop-by-hop field or our reserved prefix is
    removed however its hyphens are written, as is a field the Connection header names either way."""
    headers = [("Connection", "x-named-by-connection"), (name, "v"), ("X-Kept_Field", "k")]
    head = request_head("GET", "/", "api.example.com", 443, True, headers, Framing(None, False), False)
    assert name.lower().encode() not in head.lower()
    assert b"X-Kept_Field: k\r\n" in head


@pytest.mark.parametrize(("version", "continues"), [("1.1", True), ("1.0", False)])
def test_expect_100_continue_is_answered_for_http_1_1_only(version: str, continues: bool) -> None:
    """RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue is ignored (no interim 100, which a 1.0
    client reads as its answer); another expectation is refused either way."""
    check = check_request("POST", version, [("Expect", "100-continue"), ("Content-Length", "3")], 1 << 20)
    assert check.refusal is None and check.expect_continue is continues
    other = check_request("POST", version, [("Expect", "something-else")], 1 << 20)
    assert other.refusal is not None and other.refusal[2] == 417


@pytest.mark.parametrize("framing", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
def test_a_websocket_handshake_that_declares_a_body_is_refused(framing: tuple[str, str]) -> None:
    """llhttp reads no body behind an upgrade request's head: its declared length went upstream
    with no bytes behind it (red team 43). A length of 0 declares none."""
    ws = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    check = check_request("GET", "1.1", [*ws, framing], 1 << 20)
    assert check.refusal is not None and check.refusal[0] is Reason.MALFORMED_REQUEST
    assert check_request("GET", "1.1", [*ws, ("Content-Length", "0")], 1 << 20).websocket
