"""The listeners: one per address, plain TCP (TLS is the connections' own business), a cap on
concurrent connections, and a sweeper that enforces timeouts and retires idle upstreams.

At the cap a new connection still gets an answer an agent can tell from a crash, where that is
cheap: a request head is read (briefly, bounded) and ``503`` with ``limit_exceeded`` goes back; a
TLS ClientHello (transparent mode) is closed, since answering it would cost a handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from proxy.core.flow import FlowInfo
from proxy.core.http1 import denial
from proxy.datapath.certs import AgentTls
from proxy.datapath.client import Client
from proxy.datapath.conn import before_answer, count_bugs_with
from proxy.datapath.resolve import Resolver
from proxy.datapath.upstream import Pool
from proxy.policy.model import Decision, Reason, Verdict
from proxy.runtime import Runtime

__all__ = ["Server"]

SWEEP_EVERY = 0.5
_OVER_LIMIT_GRACE = 2.0
_OVER_LIMIT_MAX = 64


class _OverLimit(asyncio.Protocol):
    """A connection past ``--max-connections``: a 503 when a request head arrives soon, else closed."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.opened = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.over_limit.add(self)
        self.server.record_limit("too many connections")

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.buf += data
        if self.buf[:1] == b"\x16":  # TLS: answering would cost a handshake
            before_answer()  # (its record, written in connection_made, before the cut)
            self.transport.abort()
            return
        if b"\r\n\r\n" in self.buf or len(self.buf) > 8192:
            before_answer()
            self.transport.write(denial(Reason.LIMIT_EXCEEDED, "too many connections", 503))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.over_limit.discard(self)
        self.transport = None


class Server:
    def __init__(self, rt: Runtime, agent_tls: AgentTls, pool: Pool, resolver: Resolver) -> None:
        self.rt = rt
        self.agent_tls = agent_tls
        self.pool = pool
        self.resolver = resolver
        self.transparent = rt.transparent
        self.clients: set[Client] = set()
        self.over_limit: set[_OverLimit] = set()
        self._servers: list[asyncio.Server] = []
        count_bugs_with(rt.metrics.internal_errors.labels("data_path").inc)

    async def listen(self, hosts: Iterable[str], port: int) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        addrs: list[tuple[str, int]] = []
        for host in hosts:
            srv = await loop.create_server(self._accept, host or None, port, reuse_address=True, backlog=1024)
            self._servers.append(srv)
            for sock in srv.sockets:
                name = sock.getsockname()
                addrs.append((str(name[0]), int(name[1])))
            port = port or addrs[0][1]  # "any free port": the other families take the same one
        return addrs

    def _accept(self) -> asyncio.Protocol:
        if len(self.clients) >= self.rt.limits.max_connections:
            if len(self.over_limit) >= _OVER_LIMIT_MAX:
                return _Reject(self)
            return _OverLimit(self)
        return Client(self)

    def opened(self, client: Client) -> None:
        self.clients.add(client)
        self.rt.metrics.active_connections.set(len(self.clients))

    def closed_conn(self, client: Client) -> None:
        self.clients.discard(client)
        self.rt.metrics.active_connections.set(len(self.clients))

    def record_limit(self, detail: str) -> None:
        self.rt.record(FlowInfo(None, None, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), detail=detail), None, None)

    async def sweep_loop(self) -> None:
        """Timeouts and idle upstreams, twice a second (run under the sidecar's supervisor)."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = time.monotonic()
            for client in list(self.clients):
                try:
                    client.timed_out(now)
                except Exception as e:
                    client.internal_error(e, "timeout")
            for conn in list(self.over_limit):
                if now - conn.opened > _OVER_LIMIT_GRACE and conn.transport is not None:
                    conn.transport.abort()
            self.pool.sweep(now)

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for client in list(self.clients):
            client.abort()
        self.pool.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1)


class _Reject(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.record_limit("too many connections")
        before_answer()  # the record before the reset
        transport.abort()  # type: ignore[attr-defined]
