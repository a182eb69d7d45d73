"""Red team 39 (2026-12-05), against the response-head check and the audit record.

1. A response head whose fields end by opening a C1 control string (U+009D OSC, U+0090 DCS) that
   they never close hid the start of the next field from the head check's terminal reading of the
   joined fields: 16 characters of the key in each field after one (8 plain, 8 behind C1 CSIs) went
   to the agent, field by field, the whole key. Each field is now read on its own
   (proxy.core.scrub.skeleton with ``fields``); the unit tests are in tests/proxy/core/test_scrub.py.
2. A request decided under one policy, whose destination was still being resolved when a reload
   served another, was recorded "allowed" under the new policy's name and digest (a policy that
   denies its host), then "denied". It is decided again before that record.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.proxy.test_redteam import HOSTILE_NAME, hostile, hostile_ca, hostile_plain  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import PH, keyed_proxy
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.listeners import DnsSink
from tests.support.proxyproc import ProxyProcess
from tests.support.wait import wait_for

CSI_P = b"\xc2\x9bp"  # U+009B CSI, final 'p': shows nothing on a terminal
OSC_OPEN = b"\xc2\x9d"  # U+009D OSC, never closed in its own field


def spread_head(key: str, opener: bytes = OSC_OPEN) -> bytes:
    fields = b""
    for n, i in enumerate(range(0, len(key), 16)):
        chunk = key[i : i + 16].encode()
        plain, rest = chunk[:8], chunk[8:]
        fields += b"X-Note-%d: ok%s\r\n" % (n, opener)
        fields += b"X-Part-%d: %s%s\r\n" % (n, plain, b"".join(CSI_P + bytes([c]) for c in rest))
    return b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, Path]]:
    p, key = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)

    @hostile.on("/rt39/echo-head")
    async def echo(req: Request, w: Wire) -> None:  # the upstream hands back what it was given
        await w.send(spread_head(req.token))

    @hostile.on("/rt39/echo-head-dcs")
    async def echo_dcs(req: Request, w: Wire) -> None:  # U+0090 DCS as the opener
        await w.send(spread_head(req.token, b"\xc2\x90"))

    @hostile.on("/rt39/echo-head-control")
    async def echo_control(req: Request, w: Wire) -> None:  # no opener: the same spread, caught
        await w.send(spread_head(req.token, b""))

    yield p, key
    p.stop()


def tunnel(p: ProxyProcess) -> ssl.SSLSocket:
    """A CONNECT to the hostile upstream through ``p``, and TLS inside it (the proxy's CA)."""
    sock = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    sock.sendall(f"CONNECT {HOSTILE_NAME}:443 HTTP/1.1\r\nHost: {HOSTILE_NAME}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return ssl.create_default_context(cafile=str(p.ca)).wrap_socket(sock, server_hostname=HOSTILE_NAME)


def get(p: ProxyProcess, path: str) -> bytes:
    """GET ``path`` with the placeholder through a tunnel of its own: all the agent receives."""
    s = tunnel(p)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: Bearer {PH}\r\n"
              "Connection: close\r\n\r\n".encode())  # fmt: skip
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    return buf


@pytest.mark.parametrize("path", ["/rt39/echo-head", "/rt39/echo-head-dcs"])
def test_rt39_a_key_spread_over_fields_after_an_unclosed_control_string_never_reaches_the_agent(
    world: tuple[ProxyProcess, Path], path: str
) -> None:
    p, key = world
    real = key.read_text()
    raw = get(p, path)
    head = raw.partition(b"\r\n\r\n")[0]
    # What a terminal shows of each X-Part field: the C1 CSI sequences show nothing.
    shown = b"".join(
        line.split(b": ", 1)[1].replace(CSI_P, b"") for line in head.split(b"\r\n") if line.startswith(b"X-Part-")
    ).decode()
    assert real not in shown, f"the agent read the real key {real!r} from the response head:\n{head!r}"


def test_rt39_control_without_the_opener_the_same_head_is_refused(world: tuple[ProxyProcess, Path]) -> None:
    """Holds: with the X-Note fields not opening a control string, the check sees the runs."""
    p, key = world
    raw = get(p, "/rt39/echo-head-control")
    assert not raw.startswith(b"HTTP/1.1 200"), raw[:300]
    assert key.read_text()[:8].encode() not in raw


def _policy(name: str, host: str) -> str:
    return f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: {name}}}
spec:
  allow: [{{host: {host}, ports: [80]}}]
"""


class _SlowHosts(dict):  # type: ignore[type-arg]
    """dns.hosts whose next lookup (any query) waits until the test releases it."""

    armed = False
    seen = threading.Event()
    release = threading.Event()

    def items(self):  # type: ignore[no-untyped-def]
        if _SlowHosts.armed:
            _SlowHosts.armed = False
            _SlowHosts.seen.set()
            _SlowHosts.release.wait(6)
        return super().items()


def test_rt39_a_request_recorded_after_a_reload_is_recorded_as_that_policy_decides_it(
    make_proxy: Callable[..., ProxyProcess],
    hostile_plain: HostileServer,  # noqa: F811
    dns: DnsSink,
) -> None:
    @hostile_plain.on("/rt39/plain")
    async def plain(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    p = make_proxy(_policy("before", HOSTILE_NAME))
    saved = dns.hosts
    dns.hosts = _SlowHosts(saved)
    try:
        _SlowHosts.armed = True
        out: list[bytes] = []

        def go() -> None:
            s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
            s.sendall(f"GET http://{HOSTILE_NAME}/rt39/plain HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\n"
                      "Connection: close\r\n\r\n".encode())  # fmt: skip
            buf = b""
            while chunk := s.recv(65536):
                buf += chunk
            out.append(buf)

        t = threading.Thread(target=go)
        t.start()
        assert _SlowHosts.seen.wait(10), "the proxy never asked the nameserver"
        before = p.metric("sandgate_policy_reloads_total", result="success")
        after_text = _policy("after", "other.example.org")  # the host is no longer allowed
        p.policy.write_text(after_text)
        wait_for(lambda: p.metric("sandgate_policy_reloads_total", result="success") > before)
        _SlowHosts.release.set()
        t.join(20)
    finally:
        dns.hosts = saved
    time.sleep(0.5)
    after_sha = hashlib.sha256(after_text.encode()).hexdigest()
    lines = [r for r in p.audit() if r.get("path") == "/rt39/plain"]
    assert [(r["decision"], r["reason"], r["policy"], r["policy_sha256"]) for r in lines] == [
        ("denied", "host_not_allowed", "after", after_sha)
    ], lines  # one record, the decision of the policy it names (never "allowed" by "after")
    assert out and b"host_not_allowed" in out[0]
