"""Red team 70: the upstream side the sidecar shares between agent connections (the pool of kept
upstream connections, the dial right after CONNECT, TLS sessions resumed toward upstreams).

What it tried held: bytes an upstream leaves on a kept connection (a body on HEAD, 204 or 304, a
second or unasked answer, bytes after ``Connection: close`` or an HTTP/1.0 answer, spare answers
after a 100) never answered the next request, from the same agent connection or another; an
upstream that speaks before the request, or on a dial no request used, answers nothing; an answer
begun and cut is never retried. This file keeps the case a regression would turn into a leak: a
TLS session is resumed only toward the name it was verified for. A resumed session checks no
certificate, so one kept for host A and offered to a server at the same address for host B sends
B's key to a server that never proved it is B (the server here, like any that shares its ticket
key across names, resumes it). The test first shows that this server does resume A's own
session, so that no B connection resumed means something, and last that the key does go to B once
B's name leads to a server that proves it is B.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import trustme

from tests.conftest import needs_root
from tests.support.clients import Reply, raw_request, tunnel
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.listeners import DnsSink
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

A, B, ADDRESS, OTHER_ADDRESS = "rt70a.example.net", "rt70b.example.net", "127.0.0.21", "127.0.0.22"
PLACEHOLDER, REAL, ENV = f"rt70-PH-{secrets.token_hex(4)}", "rt70REAL" + secrets.token_hex(16), "SG_TEST_RT70"
POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt70-resumption}}
spec:
  allow:
    - host: {A}
    - host: {B}
  secrets:
    - name: rt70
      placeholder: {PLACEHOLDER}
      source: {{env: {ENV}}}
      hosts: [{B}]
"""


class ResumingServer(HostileServer):
    """A server that says, for each of its connections, the SNI and whether it resumed a session."""

    def start(self) -> None:
        self.resumed: list[tuple[str | None, bool]] = []  # per connection, in order
        super().start()

    async def _serve(self, reader, writer):  # type: ignore[no-untyped-def]
        obj = writer.get_extra_info("ssl_object")
        self.resumed.append((self._snis.get(id(obj)), bool(obj.session_reused)))
        await super()._serve(reader, writer)


@dataclass
class World:
    a: ResumingServer  # a certificate for A only; at first B's name leads here too
    b: ResumingServer  # a certificate for B, at OTHER_ADDRESS
    ca_file: str
    dns: DnsSink


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def world(request: pytest.FixtureRequest, dns: DnsSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("rt70") / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    servers = []
    for name, address in ((A, ADDRESS), (B, OTHER_ADDRESS)):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.maximum_version = request.param
        ca.issue_cert(name).configure_cert(ctx)
        server = ResumingServer(address, 443, ctx)

        @server.on("/close")
        async def _(req: Request, w: Wire) -> None:  # each answer ends its connection: the next one handshakes
            await w.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            w.keep = False

        server.start()
        servers.append(server)
    saved = dict(dns.hosts)
    dns.hosts.update({A: ADDRESS, B: ADDRESS})
    yield World(servers[0], servers[1], str(ca_file), dns)
    dns.hosts.clear()
    dns.hosts.update(saved)
    for server in servers:
        server.stop()


def _ask(p: ProxyProcess, host: str, head: str = "") -> Reply:
    request = f"GET /close HTTP/1.1\r\nHost: {host}\r\n{head}Connection: close\r\n\r\n".encode()
    return raw_request(tunnel(p.port, f"{host}:443", host, p.ca), request)


def _key_in(server: HostileServer) -> bool:
    return any(REAL.encode() in r.raw_head for r in server.requests)


def test_rt70_a_session_verified_for_one_host_is_never_resumed_toward_another(
    make_proxy: Callable[..., ProxyProcess], world: World
) -> None:
    p = make_proxy(POLICY, "--upstream-ca", world.ca_file, env={ENV: REAL})
    for _ in range(2):
        assert _ask(p, A).status == 200
    assert world.a.resumed[-1] == (A, True), f"the server did not resume A's own session: {world.a.resumed}"
    # B's name now leads to A's server, which resumes whatever session it is offered.
    answer = _ask(p, B, f"Authorization: Bearer {PLACEHOLDER}\r\n")
    assert answer.status != 200, answer
    assert not _key_in(world.a), "B's key went to a server that never proved it is B"
    assert (B, True) not in world.a.resumed, f"A's session was resumed for B: {world.a.resumed}"
    # Control: where B's name leads to a server that proves it is B, the same request carries the key.
    world.dns.hosts[B] = OTHER_ADDRESS
    assert _ask(p, B, f"Authorization: Bearer {PLACEHOLDER}\r\n").status == 200
    assert _key_in(world.b)
