"""Red team 37: the secret lifecycle over time.

An answer under way keeps what it is scrubbed of from when its request came; a rotation (or a
reload that binds a secret to its host) meanwhile gave the upstream a value on another request,
and the long-poll or event stream opened before handed it back to the agent in clear."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.proxy.test_redteam import HOSTILE2_NAME, HOSTILE_NAME, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.support.clients import Reply, curl
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess
from tests.support.wait import wait_for

PH = f"rt37-PH-{secrets.token_hex(4)}-rot"


def _policy(key: Path, hosts: str, name: str = "rt37") -> str:
    """One secret, read from ``key`` (a file the test rotates), bound to ``hosts``."""
    return f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: {name}}}
spec:
  allow: [{{host: {HOSTILE_NAME}}}, {{host: {HOSTILE2_NAME}}}]
  secrets:
    - name: rot
      placeholder: {PH}
      source: {{file: {key}}}
      hosts: [{hosts}]
"""


class _Keeper:
    """The upstream: /rt37/keep stores the credential it is given; /rt37/poll and /rt37/stream
    answer (whole, or as an event stream whose head goes out at once) with what was kept, once the
    test says so."""

    def __init__(self, server: HostileServer) -> None:
        self.kept: list[str] = []
        self.release = threading.Event()

        @server.on("/rt37/keep")
        async def keep(req: Request, w: Wire) -> None:
            self.kept.append(req.token)
            await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        @server.on("/rt37/poll")
        async def poll(req: Request, w: Wire) -> None:
            await self._released()
            body = f'{{"kept": "{self.kept[-1]}"}}'.encode()
            await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))  # fmt: skip

        @server.on("/rt37/stream")
        async def stream(req: Request, w: Wire) -> None:
            await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            await w.send(b"d\r\ndata: hello\n\n\r\n")
            await self._released()
            event = f"data: {self.kept[-1]}\n\n".encode()
            await w.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))

    async def _released(self) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.02)


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, _Keeper, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)
    yield p, _Keeper(hostile), key
    p.stop()


def keyed_proxy(make: Callable[..., ProxyProcess], ca: Path, tmp_path: Path) -> tuple[ProxyProcess, Path]:
    """A proxy whose one secret is the file it returns, re-read every 0.5 s, bound to the hostile host."""
    key = tmp_path / "key"
    key.write_text("rtREALa" + secrets.token_hex(16))
    p = make(_policy(key, HOSTILE_NAME), "--upstream-ca", str(ca), "--secret-refresh", "0.5", "--secret-max-stale", "30",
             env={})  # fmt: skip
    return p, key


def _in_background(p: ProxyProcess, host: str, path: str) -> tuple[threading.Thread, list[Reply]]:
    out: list[Reply] = []
    t = threading.Thread(target=lambda: out.append(curl(p.url, p.ca, f"https://{host}{path}", timeout=30)))
    t.start()
    time.sleep(1.0)  # (its request is in, and its scrubbing chosen)
    return t, out


def _keep(p: ProxyProcess, keeper: _Keeper, host: str, value: str) -> None:
    def kept() -> bool:
        curl(p.url, p.ca, f"https://{host}/rt37/keep", "-H", f"Authorization: Bearer {PH}")
        return bool(keeper.kept) and keeper.kept[-1] == value

    wait_for(kept)


@pytest.mark.parametrize("path", ["/rt37/poll", "/rt37/stream"])
def test_rt37_a_value_rotated_in_while_an_answer_was_under_way_does_not_come_back_in_it(
    world: tuple[ProxyProcess, _Keeper, Path], path: str
) -> None:
    p, keeper, key = world
    t, out = _in_background(p, HOSTILE_NAME, path)
    new = "rt37REALb" + secrets.token_hex(16)
    key.write_text(new)  # the operator rotates the key; the next refresh serves it
    _keep(p, keeper, HOSTILE_NAME, new)  # another request gives it to the upstream
    keeper.release.set()
    t.join(30)
    assert out, "the answer never came"
    assert new not in out[0].body, "the rotated-in value reached the agent"


def test_rt37_a_value_bound_by_a_reload_while_an_answer_was_under_way_does_not_come_back_in_it(
    world: tuple[ProxyProcess, _Keeper, Path],
) -> None:
    p, keeper, key = world
    t, out = _in_background(p, HOSTILE2_NAME, "/rt37/poll")  # (no secret bound there yet: not scrubbed)
    reloads = p.metric("sandgate_policy_reloads_total", result="success")
    p.policy.write_text(_policy(key, f"{HOSTILE_NAME}, {HOSTILE2_NAME}"))
    wait_for(lambda: p.metric("sandgate_policy_reloads_total", result="success") > reloads)
    _keep(p, keeper, HOSTILE2_NAME, key.read_text())
    keeper.release.set()
    t.join(30)
    assert out, "the answer never came"
    assert key.read_text() not in out[0].body, "a value bound by the reload reached the agent"
