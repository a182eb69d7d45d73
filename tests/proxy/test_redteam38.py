"""Red team 38: reloads, rotations and refreshes against requests and answers under way (after red
team 37's fixes: tests/proxy/test_redteam37.py)."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.proxy.test_redteam import (  # noqa: F401 (fixtures)
    HOSTILE2_NAME,
    HOSTILE_NAME,
    WS_KEY,
    hostile,
    hostile_ca,
    parse_frames,
    recv_all,
    ws_handshake,
)
from tests.proxy.test_redteam37 import PH, _policy, keyed_proxy
from tests.support.clients import Reply, curl, raw_request, tunnel
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess
from tests.support.wait import wait_for


class _Upstream:
    def __init__(self, server: HostileServer) -> None:
        self.kept: list[str] = []
        self.release = threading.Event()

        @server.on("/rt38/keep")
        async def keep(req: Request, w: Wire) -> None:
            self.kept.append(req.token)
            await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        @server.on("/rt38/hints")
        async def hints(req: Request, w: Wire) -> None:
            while not self.release.is_set():
                await asyncio.sleep(0.02)
            await w.send(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css?k=%s>; rel=preload\r\n\r\n" % self.kept[-1].encode()
            )
            await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, _Upstream, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)
    yield p, _Upstream(hostile), key
    p.stop()


def _held(p: ProxyProcess) -> object:
    """A request whose head is in and whose 9-byte body is held back."""
    s = tunnel(p.port, f"{HOSTILE_NAME}:443", HOSTILE_NAME, p.ca)
    s.sendall(f"POST /rt38/keep HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: Bearer {PH}\r\n"
              "Content-Length: 9\r\n\r\n".encode())  # fmt: skip
    time.sleep(0.5)
    return s


def _reload(p: ProxyProcess, text: str) -> None:
    before = p.metric("sandgate_policy_reloads_total", result="success")
    p.policy.write_text(text)
    wait_for(lambda: p.metric("sandgate_policy_reloads_total", result="success") > before)


def test_rt38_a_request_held_back_past_a_reload_that_unbinds_its_secret_is_decided_again(
    world: tuple[ProxyProcess, _Upstream, Path],
) -> None:
    """Its head was decided, and swapped, when it came: the body sent after the reload took the key
    to a host the policy in force no longer binds it to (the audit record naming that policy)."""
    p, upstream, key = world
    s = _held(p)
    _reload(p, _policy(key, HOSTILE2_NAME, name="unbound"))
    reply = raw_request(s, b"123456789")  # type: ignore[arg-type]
    assert reply.status == 403 and reply.headers.get("x-sandgate-reason") == "secret_not_bound", reply
    assert key.read_text() not in upstream.kept


def test_rt38_a_request_held_back_past_its_secrets_revocation_is_decided_again(
    world: tuple[ProxyProcess, _Upstream, Path],
) -> None:
    p, upstream, key = world
    s = _held(p)
    real = key.read_text()
    key.unlink()  # revoked: the next refresh fails closed at once (no file, no stale window)
    wait_for(
        lambda: (
            curl(p.url, p.ca, f"https://{HOSTILE_NAME}/rt38/keep", "-H", f"Authorization: Bearer {PH}").status == 503
        )
    )
    given = len(upstream.kept)  # (what the requests before the revocation took)
    reply = raw_request(s, b"123456789")  # type: ignore[arg-type]
    assert reply.status == 503, reply
    assert real not in upstream.kept[given:]


def test_rt38_an_interim_head_after_a_rotation_is_scrubbed_of_the_new_value(
    world: tuple[ProxyProcess, _Upstream, Path],
) -> None:
    """103 Early Hints was scrubbed by what was bound when its request came."""
    p, upstream, key = world
    out: list[Reply] = []
    t = threading.Thread(
        target=lambda: out.append(curl(p.url, p.ca, f"https://{HOSTILE_NAME}/rt38/hints", "-i", timeout=30))
    )
    t.start()
    time.sleep(1.0)
    new = "rt38REALb" + secrets.token_hex(16)
    key.write_text(new)

    def kept() -> bool:
        curl(p.url, p.ca, f"https://{HOSTILE_NAME}/rt38/keep", "-H", f"Authorization: Bearer {PH}")
        return bool(upstream.kept) and upstream.kept[-1] == new

    wait_for(kept)
    upstream.release.set()
    t.join(30)
    assert out and "103 Early Hints" in out[0].body and out[0].body.endswith("ok"), (
        out
    )  # (-i: every head, then the body)
    assert new not in out[0].body


def test_rt38_an_open_websocket_is_closed_by_a_reload_that_takes_its_host_away(
    world: tuple[ProxyProcess, _Upstream, Path],
    hostile: HostileServer,  # noqa: F811
) -> None:
    """The socket kept the policy of its handshake: after a reload took its host out of the
    allowlist, the agent's messages (placeholders in them too) still reached it, uncounted."""
    p, _, key = world
    got: list[bytes] = []

    @hostile.on("/rt38/ws")
    async def ws(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        buf = b""
        while data := await w.reader.read(65536):
            buf += data
            frames, buf = parse_frames(buf)
            got.extend(payload for _, op, payload in frames if op in (0x0, 0x1, 0x2))  # (fragments too)
        w.keep = False

    s = tunnel(p.port, f"{HOSTILE_NAME}:443", HOSTILE_NAME, p.ca)
    s.sendall(f"GET /rt38/ws HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    s.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(65536)
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(ws_frame(0x1, b"before", mask=b"abcd"))
    wait_for(lambda: b"".join(got) == b"before")
    _reload(p, _policy(key, HOSTILE2_NAME, name="gone").replace(f"{{host: {HOSTILE_NAME}}}, ", ""))
    s.sendall(ws_frame(0x1, f"after {PH}".encode(), mask=b"abcd"))
    frames, _ = parse_frames(head.partition(b"\r\n\r\n")[2] + recv_all(s, 3))
    assert any(op == 0x8 for _, op, _ in frames), "the agent's socket was not closed"
    assert b"".join(got) == b"before", "a message after the reload reached the host it took away"
