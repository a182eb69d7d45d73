"""Red team 43: bytes behind an upgrade request, in a later read than its head, vanish unrecorded.

README: "bytes sent behind an upgrade before its ``101`` are refused" and "pipelined requests wait
their turn and each is judged on its own". Red team 10 fixed this for bytes that arrive in the same
read as the head (``Client._after_upgrade``, then ``Exchange._agent_sent_early``: a 400 and a
record). Bytes that arrive in a *later* read, while the upstream has not answered yet, are dropped
by ``Client.on_data`` (``if self._parser is None: return``): no refusal, no record. If the upstream
accepts, the agent gets its ``101`` and a socket that silently lost what it sent; if it declines,
a request pipelined behind the handshake gets neither an answer nor an audit record.

Invariants: fail closed with a reason; one record per request (or refusal).

Fix idea: once the parser stopped at an upgrade, keep what arrives until the answer (bounded) and
treat it as ``_after_upgrade``: refused with ``malformed_request`` and a record, as in one read."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOSTILE_NAME, WS_KEY, bearer, env, recv_all, tls_to, ws_handshake
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile = world.hostile_ca, world.hostile
SEEN: list[bytes] = []


@pytest.fixture(scope="module")
def own(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> ProxyProcess:
    @hostile.on("/rt43/ws-late-yes")
    async def yes(req: Request, w: Wire) -> None:  # a WebSocket endpoint, slow to answer
        await w.send(b"", pause=1.0)
        await w.send(ws_handshake(req))
        w.keep = False
        SEEN.append(b"")
        i = len(SEEN) - 1
        try:
            while data := await w.reader.read(65536):
                SEEN[i] += data
        except ConnectionError:
            pass

    @hostile.on("/rt43/ws-late-no")
    async def no(req: Request, w: Wire) -> None:  # declines, slowly
        await w.send(b"", pause=1.0)
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")

    return make_proxy(world.POLICY, "--upstream-ca", str(hostile_ca[1]), env=env())


def _upgrade(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: {bearer()}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _reason(raw: bytes) -> str | None:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"x-sandgate-reason:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def test_rt43_a_frame_sent_before_the_101_in_a_later_read_is_refused_with_a_reason(own: ProxyProcess) -> None:
    mark = len(own.audit())
    s = tls_to(own, HOSTILE_NAME)
    s.sendall(_upgrade("/rt43/ws-late-yes"))
    time.sleep(0.3)  # (a read of its own, before the upstream answers)
    s.sendall(ws_frame(0x1, b"early-frame", mask=b"abcd"))
    out = recv_all(s, 3)
    time.sleep(0.3)
    records = own.audit()[mark:]
    assert not out.startswith(b"HTTP/1.1 101"), (
        f"the socket opened; what the agent sent before it vanished: {out[:120]!r}"
    )
    assert _reason(out) is not None, out[:200]
    assert any(r["decision"] == "denied" for r in records), records


def test_rt43_a_request_pipelined_behind_a_declined_upgrade_in_a_later_read_is_answered_or_recorded(
    own: ProxyProcess, hostile: HostileServer
) -> None:
    mark = len(own.audit())
    s = tls_to(own, HOSTILE_NAME)
    s.sendall(_upgrade("/rt43/ws-late-no"))
    time.sleep(0.3)
    s.sendall(f"GET /rt43/behind HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nConnection: close\r\n\r\n".encode())
    out = recv_all(s, 3)
    time.sleep(0.3)
    records = own.audit()[mark:]
    answers = [ln for ln in out.split(b"\r\n") if ln.startswith(b"HTTP/1.")]
    behind = [r for r in records if r.get("path") == "/rt43/behind" or r["decision"] == "denied"]
    assert len(answers) == 2 or behind, (
        f"a request sent behind the handshake got no answer ({answers}) and no record: {records}"
    )
