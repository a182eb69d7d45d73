"""Red team 71: what the audit trail says of each use of a key.

A request that a pooled upstream connection took and then closed without answering is sent once
more on a new connection (idempotent methods only). An upstream that reads the whole request and
hangs up so had the real key twice, while one audit record said it was swapped and
``sandgate_secret_swaps_total`` moved by one: a security team counting the key's uses counted one
fewer for each such retry, and the upstream chose when that happened. The second send now has a
record of its own, counted as the first was, its ``detail`` saying why; and it is recorded once it
leaves: a second dial that fails sends nothing, so the first record stands alone.

A real value in a CONNECT authority, in a tunnel the client left before TLS, was recorded as
``host_not_allowed`` (the host redacted, so nothing leaked), where the same name in any request is
``secret_value_outbound`` naming the secret. Such a CONNECT is now refused at once, as that
(tests/proxy/test_value_in_a_name.py: an allowed wildcard name holding a value was looked up).

What held (the red team's other probes): an upstream that hangs up on a fresh connection or on a
POST, after half a status line or a 103 (one record, one swap, no retry); ``Expect: 100-continue``
with the agent leaving after the 100; pipelined requests, allowed then refused; a streamed body
refused midway; HEAD, OPTIONS, a WebSocket upgrade; an answer refused after the key went; the real
value in a path, a host or a method (redacted or refused); an unwritable audit log (``/dev/full``)
and an audit log renamed four times under 30 requests at once: no record lost that was not counted.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import needs_root
from tests.proxy.test_redteam import HOST, HOSTILE_NAME, POLICY, env, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.support.clients import Reply, raw_request, tunnel
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.listeners import DnsSink
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

SWAPS = ("sandgate_secret_swaps_total", {"secret": HOST.name, "host": HOSTILE_NAME})


def _exchange(p: ProxyProcess, method: str, path: str, body: bytes = b"") -> Reply:
    """One request with the placeholder, on a tunnel of its own (kept alive: the proxy keeps its
    upstream connection in the pool)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: Bearer {HOST.placeholder}\r\n"
    request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    return raw_request(tunnel(p.port, f"{HOSTILE_NAME}:443", HOSTILE_NAME, p.ca), request, timeout=3)


def _records(p: ProxyProcess, path: str, at_least: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len([r for r in p.audit() if r["path"] == path]) < at_least:
        time.sleep(0.05)
    time.sleep(0.3)  # (and nothing more after)
    return [r for r in p.audit() if r["path"] == path]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_rt71_a_request_sent_again_has_a_record_and_a_count_for_each_time_the_key_left(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    method: str,
) -> None:
    p = make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), env=env())

    @hostile.on("/rt71/ok")
    async def ok(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    @hostile.on("/rt71/take-and-hang-up")
    async def take(req: Request, w: Wire) -> None:
        w.keep = False  # the whole request, the key in it, was read; the connection ends unanswered

    assert _exchange(p, "GET", "/rt71/ok").status == 200  # an upstream connection is pooled
    swaps, sent = p.metric(SWAPS[0], **SWAPS[1]), len(hostile.requests)
    answer = _exchange(p, method, "/rt71/take-and-hang-up", b"payload" if method == "PUT" else b"")
    assert answer.status == 502, answer
    delivered = [r.conn for r in hostile.requests[sent:] if r.token == HOST.real]
    assert len(set(delivered)) == 2, f"the retry premise: the key went on two connections, not {delivered}"
    records = _records(p, "/rt71/take-and-hang-up", 2)
    assert [(r["decision"], r["method"], r["secrets"]) for r in records] == [("allowed", method, [HOST.name])] * 2
    assert records[0]["detail"] is None
    assert "sent again on a new upstream connection" in records[1]["detail"]
    assert p.metric(SWAPS[0], **SWAPS[1]) - swaps == 2


def test_rt71_a_real_value_in_a_connect_authority_is_recorded_as_one(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
) -> None:
    """The tunnel would be left without a request, as a client that does not trust the proxy's CA
    leaves it. Its reason and secret, and ``sandgate_secret_blocked_total``, say what the same
    name says in a plain-HTTP request or in a request inside a tunnel (docs/deny-reasons.md: a
    real value "anywhere in a request to any host"), and the record redacts the value."""
    p = make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), env=env())
    name = HOST.real.lower() + ".test"
    blocked = ("sandgate_secret_blocked_total", {"secret": HOST.name, "reason": "secret_value_outbound"})
    before, n = p.metric(blocked[0], **blocked[1]), len(p.audit())
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(f"CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 403")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(p.audit()) <= n:
        time.sleep(0.05)
    got = [(r["decision"], r["reason"], r["host"], r["secret"]) for r in p.audit()[n:]]
    assert got == [("denied", "secret_value_outbound", f"[redacted:{HOST.name}].test", HOST.name)], got
    assert p.metric(blocked[0], **blocked[1]) - before == 1


# A second send whose dial fails: an upstream of its own, which stops listening once it has read
# the request (the pooled connection then closes unanswered, and the retry finds nothing to dial).
ALONE, ALONE_ADDRESS = "rt71-alone.example.net", "127.0.0.23"
ALONE_PH, ALONE_REAL, ALONE_ENV = f"rt71-PH-{secrets.token_hex(4)}", "rt71REAL" + secrets.token_hex(16), "SG_TEST_RT71"
ALONE_POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt71-alone}}
spec:
  allow:
    - host: {ALONE}
  secrets:
    - name: rt71
      placeholder: {ALONE_PH}
      source: {{env: {ALONE_ENV}}}
      hosts: [{ALONE}]
"""


@pytest.fixture
def alone(hostile_ca: tuple[trustme.CA, Path], dns: DnsSink) -> Iterator[HostileServer]:  # noqa: F811
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    hostile_ca[0].issue_cert(ALONE).configure_cert(ctx)
    server = HostileServer(ALONE_ADDRESS, 443, ctx)
    server.start()
    dns.hosts[ALONE] = ALONE_ADDRESS
    yield server
    del dns.hosts[ALONE]
    server.stop()


def test_rt71_a_second_send_whose_dial_fails_has_no_record(
    make_proxy: Callable[..., ProxyProcess],
    alone: HostileServer,
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
) -> None:
    p = make_proxy(ALONE_POLICY, "--upstream-ca", str(hostile_ca[1]), env={ALONE_ENV: ALONE_REAL})
    swaps = ("sandgate_secret_swaps_total", {"secret": "rt71", "host": ALONE})

    @alone.on("/rt71/ok")
    async def ok(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    @alone.on("/rt71/hang-up-and-go")
    async def go(req: Request, w: Wire) -> None:
        alone._server.close()  # no new connection: the retry's dial is refused
        w.keep = False

    def ask(path: str) -> Reply:
        request = f"GET {path} HTTP/1.1\r\nHost: {ALONE}\r\nAuthorization: Bearer {ALONE_PH}\r\n\r\n".encode()
        return raw_request(tunnel(p.port, f"{ALONE}:443", ALONE, p.ca), request, timeout=3)

    assert ask("/rt71/ok").status == 200  # an upstream connection is pooled
    before = p.metric(swaps[0], **swaps[1])
    assert ask("/rt71/hang-up-and-go").status == 502
    assert [r.token for r in alone.requests].count(ALONE_REAL) == 2, "the premise: the key left once more"
    records = _records(p, "/rt71/hang-up-and-go", 1)
    assert [(r["decision"], r["detail"]) for r in records] == [("allowed", None)], records
    assert p.metric(swaps[0], **swaps[1]) - before == 1
