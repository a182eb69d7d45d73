"""Red team, fourth pass: the audit record of every answer, pipelining, concurrency, upstreams that
misbehave, against a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py).

Invariant 2 is checked the way an auditor racing the agent would: the audit log is read the moment
the agent's socket returns the answer's first bytes (or its end), without waiting; the record
describing that answer must already be there. A break is marked ``xfail(strict=True)``.

Breaks:

- ``replayed-post`` (invariant 3): a POST (Content-Length body) sent on a pooled upstream
  connection that the upstream reads whole and then closes without answering is sent again on a
  fresh connection: the upstream receives the non-idempotent request twice (RFC 9110 9.2.2: a
  proxy MUST NOT retry it automatically), real key and all.
- ``stalled-body`` (invariant 2): a request whose body is held to be checked (Content-Length up to
  256 KiB) and never completes is cut at the idle timeout with no audit record at all: the record
  waits for the body, and the cut writes none. (A stalled head gets a 408 and its record.)
- ``websocket-inbound-refusal`` (invariant 2): a WebSocket closed with 1008 because the upstream
  sent a real value leaves no record of that refusal; the same refusal on HTTP writes a
  ``secret_value_inbound`` record before the 502 or the cut.
- ``100-continue`` (invariant 2, borderline: an interim answer): the proxy answers ``100 Continue``
  itself before the request is recorded (the record waits for the held body), so the agent reads
  an answer about the request while the log has none.

Held (passing tests below): records already written at the first byte of a forwarded answer, a
denial, a 502 for an upstream that closes without answering, a 502 ``secret_value_inbound``, a
body cut after its head, a HEAD answer, an HTTP/1.0 close-delimited answer, each answer of three
pipelined requests (the last one denied), and 24 concurrent connections; an upstream's second,
unasked-for response carrying the key never reaches the agent, and the next pipelined request is
answered by its own response.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import (
    API,
    HOSTILE_NAME,
    POLICY,
    bearer,
    env,
    leaked,
    recv_all,
    tls_to,
    ws_handshake,
    ws_open,
)
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt


@pytest.fixture(scope="module")
def quick(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> ProxyProcess:
    """The same world with a 2 s idle timeout (the sweeper runs twice a second)."""
    return make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), "--idle-timeout", "2", env=env())


def records_for(proxy: ProxyProcess, path: str) -> list[dict[str, object]]:
    return [r for r in proxy.audit() if r.get("path") == path]


def first_bytes(s: socket.socket, timeout: float = 10) -> bytes:
    """Block until the proxy's answer starts (or the connection ends): what an agent acts on."""
    s.settimeout(timeout)
    try:
        return s.recv(65536)
    except (ConnectionResetError, ssl.SSLError, OSError):
        return b""


def request(method: str, path: str, *extra: str, auth: str | None = None, version: str = "1.1",
            body: bytes = b"", close: bool = True, host: str = HOSTILE_NAME) -> bytes:  # fmt: skip
    lines = [f"{method} {path} HTTP/{version}", f"Host: {host}"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines += list(extra)
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# == breaks =======================================================================================


def test_rt4_post_is_never_replayed_to_the_upstream(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Warm a pooled connection to the bound host, then POST on it; the upstream reads the whole
    request (the real key in it) and closes without a word (it crashed mid-work, or it is hostile
    and wants a second copy). The proxy treats it as a stale pooled connection and replays the
    POST on a fresh one: two charges, two messages, two copies of the key."""
    seen: list[Request] = []

    @hostile.on("/rt4/charge")
    async def _(req: Request, w: Wire) -> None:
        seen.append(req)
        w.keep = False  # read it all, answer nothing

    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(request("GET", "/rt4/warm", auth=bearer(), close=False))
    s.settimeout(10)
    buf = b""
    while b"/rt4/warm" not in buf:  # the echo of the first request: its connection is back in the pool
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    s.sendall(request("POST", "/rt4/charge", auth=bearer(), body=b'{"amount": 100}'))
    answer = recv_all(s)
    assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
    assert len(seen) == 1, f"the upstream received the POST {len(seen)} times"


@pytest.mark.parametrize("half_close", [False, True], ids=["silent", "half-closed"])
def test_rt4_stalled_held_body_is_recorded_when_cut(
    quick: ProxyProcess, hostile: HostileServer, half_close: bool
) -> None:
    """POST with Content-Length 100 and 10 bytes of it, then nothing (or a half-close). The body is
    held to be checked whole, so the request is not recorded yet; the idle timeout cuts the
    connection and the audit log never says the request existed."""
    path = f"/rt4/stalled-{half_close}"
    s = tls_to(quick, HOSTILE_NAME)
    head = request("POST", path, auth=bearer(), body=b"x" * 100)
    s.sendall(head[:-90])
    if half_close:
        s.shutdown(socket.SHUT_WR)
    end = recv_all(s, timeout=30)  # the proxy ends it: a cut, no answer
    assert b"HTTP/1.1" not in end
    assert not [r for r in hostile.requests if r.path == path]
    assert records_for(quick, path), "the agent was cut off and no record of its request exists"


def test_rt4_websocket_inbound_refusal_is_recorded_before_the_close(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The upstream sends the key split over two text messages: the socket is closed with 1008.
    When the agent reads that close frame, the log must say why (as it does for an HTTP response
    refused for the same reason: ``secret_value_inbound``)."""
    path = "/rt4/ws-split"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        half = len(req.token) // 2
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x1, req.token[:half].encode()), pause=0.05)
        await w.send(ws_frame(0x1, req.token[half:].encode()), pause=0.5)
        w.keep = False

    s, buf = ws_open(rt, path)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:100]
    rest = buf.partition(b"\r\n\r\n")[2]
    s.settimeout(10)
    while b"\x88" not in rest:  # the close frame (1008)
        chunk = first_bytes(s)
        if not chunk:
            break
        rest += chunk
    refusals = [r for r in records_for(rt, path) if r["reason"] == "secret_value_inbound"]
    assert not leaked(rest)
    assert b"\x03\xf0" in rest, rest[-40:]  # the close frame's code: 1008, policy violation
    assert refusals, f"closed with 1008, audit says only {records_for(rt, path)}"


@pytest.mark.xfail(strict=True, reason="100 Continue is answered before the request is recorded")
def test_rt4_100_continue_is_recorded_before_it_is_answered(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``Expect: 100-continue`` with a held body: the proxy's own ``100 Continue`` (it says the
    request passed the gate) reaches the agent while the log holds nothing about the request."""
    path = "/rt4/continue"
    s = tls_to(rt, HOSTILE_NAME)
    body = b'{"q": 1}'
    head = request("POST", path, "Expect: 100-continue", auth=bearer(), body=body)
    s.sendall(head[: -len(body)])
    interim = first_bytes(s)
    at_interim = records_for(rt, path)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    s.sendall(body)
    assert b"HTTP/1.1 200" in recv_all(s)
    assert at_interim, "the agent read 100 Continue; the audit log had no record of the request"


# == held =========================================================================================


def _script(hostile: HostileServer) -> None:
    @hostile.on("/rt4/mute")
    async def _(req: Request, w: Wire) -> None:
        w.keep = False  # closes without answering: 502

    @hostile.on("/rt4/reflect-cl")
    async def _(req: Request, w: Wire) -> None:
        # Percent-encoded HTML references: a form the views find and cannot replace: refused.
        body = "".join(f"%26%23{ord(c)}%3B" for c in req.token).encode()
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    @hostile.on("/rt4/reflect-streamed")
    async def _(req: Request, w: Wire) -> None:
        body = "".join(f"%26%23{ord(c)}%3B" for c in req.token).encode()
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        await w.send(b"%x\r\nhello\r\n" % 5, pause=0.2)
        await w.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    @hostile.on("/rt4/close-delimited")
    async def _(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length here")
        w.keep = False


CASES = {
    # id: (request bytes, what the answer starts with, the reason the record must carry or None)
    "forwarded": (request("GET", "/rt4/a-fwd", auth=bearer()), b"HTTP/1.1 200", None),
    "denied-unbound-placeholder": (
        request("GET", "/rt4/a-deny", auth=f"Bearer {API.placeholder}"),
        b"HTTP/1.1 403",
        "secret_not_bound",
    ),
    "upstream-closes-unanswered": (request("GET", "/rt4/mute", auth=bearer()), b"HTTP/1.1 502", None),
    "inbound-refused-whole": (
        request("GET", "/rt4/reflect-cl", auth=bearer()),
        b"HTTP/1.1 502",
        "secret_value_inbound",
    ),
    "inbound-cut-after-head": (
        request("GET", "/rt4/reflect-streamed", auth=bearer()),
        b"HTTP/1.1 200",
        "secret_value_inbound",
    ),
    "head": (request("HEAD", "/rt4/a-head", auth=bearer()), b"HTTP/1.1 200", None),
    "http10-close-delimited": (
        request("GET", "/rt4/close-delimited", auth=bearer(), version="1.0"),
        b"HTTP/1.1 200",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_rt4_record_is_written_before_the_answer_reaches_the_agent(
    rt: ProxyProcess, hostile: HostileServer, case: str
) -> None:
    _script(hostile)
    raw, starts, reason = CASES[case]
    path = raw.split(b" ")[1].decode()
    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(raw)
    first = first_bytes(s)
    seen = records_for(rt, path)  # right now: the agent holds the first bytes
    rest = recv_all(s)
    assert first.startswith(starts), first[:200]
    assert seen, f"{case}: the agent read {first[:40]!r} before any record"
    if reason is not None:
        if reason == "secret_value_inbound" and starts == b"HTTP/1.1 200":
            # The head went out before the value was seen: the record of the cut is written when
            # the connection ends; read the log at that moment too.
            seen = records_for(rt, path)
            assert not rest.endswith(b"0\r\n\r\n"), "the refused body looks complete"
        assert any(r["reason"] == reason for r in seen), seen
    assert not leaked(first + rest)


def test_rt4_each_pipelined_answer_finds_its_record(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Three requests in one write (two forwarded, the last denied): whenever the agent has read
    k status lines, the log holds records for the first k requests."""
    paths = ["/rt4/p1", "/rt4/p2", "/rt4/p3"]
    data = (
        request("GET", paths[0], auth=bearer(), close=False)
        + request("GET", paths[1], auth=bearer(), close=False)
        + request("GET", paths[2], auth=f"Bearer {API.placeholder}")
    )
    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(data)
    got, missing = b"", []
    while True:
        chunk = first_bytes(s)
        if not chunk:
            break
        got += chunk
        answered = got.count(b"HTTP/1.1 ")
        for p in paths[:answered]:
            if not records_for(rt, p):
                missing.append(p)
    assert got.count(b"HTTP/1.1 200") == 2 and b"HTTP/1.1 403" in got, got[:400]
    assert not missing, f"answers read before their records: {missing}"


def test_rt4_concurrent_connections_each_find_their_record(rt: ProxyProcess, hostile: HostileServer) -> None:
    """24 connections at once, each reading the log at its answer's first byte."""
    problems: list[str] = []
    start = threading.Barrier(24)

    def one(i: int) -> None:
        path = f"/rt4/many-{i}"
        auth = bearer() if i % 3 else f"Bearer {API.placeholder}"  # a third are denials
        try:
            s = tls_to(rt, HOSTILE_NAME)
            start.wait(20)
            s.sendall(request("GET", path, auth=auth))
            first = first_bytes(s)
            if not records_for(rt, path):
                problems.append(f"{path}: {first[:20]!r} before its record")
            s.close()
        except Exception as e:  # reported, not swallowed
            problems.append(f"{path}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not problems, problems


def test_rt4_second_unasked_response_with_the_key_never_reaches_the_next_pipelined_request(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """The upstream answers the first of two pipelined requests twice, the second answer carrying
    the key plain: it must not be taken as the answer to the agent's second request."""

    @hostile.on("/rt4/twice")
    async def _(req: Request, w: Wire) -> None:
        key = req.token.encode()
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                     b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(key), key))  # fmt: skip

    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(request("GET", "/rt4/twice", auth=bearer(), close=False) + request("GET", "/rt4/after", auth=bearer()))
    got = recv_all(s)
    assert not leaked(got)
    assert got.count(b"HTTP/1.1 200") == 2 and b"/rt4/after" in got, got[:400]
