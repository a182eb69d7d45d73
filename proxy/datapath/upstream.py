"""Connections to upstreams: dialled only to an address the gate checked, TLS always verified, and
shared by every client connection of the sidecar through a pool.

A pooled connection is keyed by the checked IP, the port and the TLS server name, so it is only
ever reused for the same destination it was opened (and verified) for. One exchange at a time;
an idle connection that the upstream closes leaves the pool at once, and one that stays idle for
``idle_timeout`` is closed. TLS sessions are kept per key and resumed on the next dial, so a new
connection to a known upstream skips the full handshake.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from typing import Protocol

from proxy.datapath.conn import Endpoint

__all__ = ["Pool", "Upstream", "UpstreamError"]

Key = tuple[
    str, int, str | None
]  # (checked IP, port, the name TLS verifies -- a host name or an IP -- or None: plain HTTP)


class UpstreamError(Exception):
    """The upstream could not be reached or failed; ``timeout`` says which status to answer."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class Receiver(Protocol):
    """The exchange an upstream connection currently serves."""

    def upstream_data(self, data: bytes) -> None: ...
    def upstream_closed(self) -> None: ...
    def upstream_write_paused(self, paused: bool) -> None: ...


class Upstream(Endpoint):
    def __init__(self, pool: Pool, key: Key, relay_target: str | None) -> None:
        self.pool = pool
        self.key = key
        self.receiver: Receiver | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reused = False
        self.session_kept = False
        self.idle_since = 0.0
        self._relay_target = relay_target  # "IP:PORT" to CONNECT to through the relay, or None
        self._relay_buf = b""
        self.last_activity = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._relay_target is not None:
            self.send(f"CONNECT {self._relay_target} HTTP/1.1\r\nHost: {self._relay_target}\r\n\r\n".encode())
            return
        self._after_tcp()

    def _after_tcp(self) -> None:
        name = self.key[2]
        if name is None:
            if not self.ready.done():
                self.ready.set_result(None)
            return
        # For an IP the name is the IP: no SNI is sent, and the certificate must name that address.
        self.begin_tls(self.pool.tls, server_side=False, hostname=name, session=self.pool.session(self.key))

    def on_tls_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def on_tls_error(self, error: ssl.SSLError) -> None:
        # The message names what failed (verification, protocol); it never holds request data.
        reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or type(error).__name__
        if not self.ready.done():
            self.ready.set_exception(UpstreamError(f"TLS with the upstream failed: {reason}"))
        self.abort()

    def on_data(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self._relay_target is not None and not self.ready.done():
            self._relay_reply(data)
            return
        if self.receiver is not None:
            self.receiver.upstream_data(data)
        else:  # bytes from an idle connection: it is out of step, never reuse it
            self.abort()

    def _relay_reply(self, data: bytes) -> None:
        self._relay_buf += data
        end = self._relay_buf.find(b"\r\n\r\n")
        if end == -1:
            if len(self._relay_buf) > 8192:
                self.ready.set_exception(UpstreamError("the relay answered badly"))
                self.abort()
            return
        status = self._relay_buf.split(b" ", 2)[1:2]
        rest = self._relay_buf[end + 4 :]
        if status != [b"200"] or rest:
            self.ready.set_exception(UpstreamError("the relay refused the connection"))
            self.abort()
            return
        self._relay_target = None
        self._after_tcp()

    def on_peer_closed(self) -> None:
        self.close()

    def on_lost(self) -> None:
        self.pool.discard(self)
        if not self.ready.done():
            self.ready.set_exception(UpstreamError("the upstream closed the connection"))
        if self.receiver is not None:
            receiver, self.receiver = self.receiver, None
            receiver.upstream_closed()

    def on_write_paused(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_write_paused(True)

    def on_write_resumed(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_write_paused(False)


class Pool:
    def __init__(
        self,
        tls: ssl.SSLContext,
        relay: tuple[str, int] | None,
        connect_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_idle: int = 64,
        max_idle_per_key: int = 16,
    ) -> None:
        self.tls = tls
        self.relay = relay
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.max_idle_per_key = max_idle_per_key
        self._idle: dict[Key, list[Upstream]] = {}
        self._count = 0
        self._sessions: OrderedDict[Key, ssl.SSLSession] = OrderedDict()
        self.dials = 0

    def session(self, key: Key) -> ssl.SSLSession | None:
        return self._sessions.get(key)

    def take(self, key: Key) -> Upstream | None:
        conns = self._idle.get(key)
        while conns:
            up = conns.pop()  # the most recently used: the least likely to have been closed
            self._count -= 1
            if not up.closed:
                up.reused = True
                return up
        return None

    async def dial(self, key: Key) -> Upstream:
        ip, port, _ = key
        loop = asyncio.get_running_loop()
        self.dials += 1
        target = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

        def factory() -> Upstream:
            return Upstream(self, key, target if self.relay is not None else None)

        host, tcp_port = self.relay if self.relay is not None else (ip, port)
        up: Upstream | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, up = await loop.create_connection(factory, host, tcp_port)
                await up.ready
        except BaseException as e:
            if up is not None:  # connected, then not ready in time, or cancelled: not left open
                up.abort()
            if isinstance(e, TimeoutError):
                raise UpstreamError("connecting to the upstream timed out", timeout=True) from None
            if isinstance(e, OSError):
                raise UpstreamError(f"cannot connect to the upstream: {e.strerror or type(e).__name__}") from None
            raise
        return up

    def remember(self, up: Upstream) -> None:
        """Keep the TLS session of an upstream that served a whole exchange (its tickets have
        arrived by then), to resume it on the next dial to the same key."""
        if up.session_kept or up.tls is None or not up.tls.established:
            return
        up.session_kept = True  # once per connection: reading the session is not cheap
        session = up.tls.obj.session
        if session is not None:
            self._sessions[up.key] = session
            self._sessions.move_to_end(up.key)
            while len(self._sessions) > 256:
                self._sessions.popitem(last=False)

    def put(self, up: Upstream) -> None:
        """An upstream whose exchange completed cleanly: keep it for the next one, reading (its
        exchange may have paused it: an answer scrubbed in slices, an agent slow to take one; a
        paused idle connection would never see its close, nor the next request's answer)."""
        up.receiver = None
        if up.closed:
            return
        up.resume_reading()
        self.remember(up)
        conns = self._idle.setdefault(up.key, [])
        if len(conns) >= self.max_idle_per_key or self._count >= self.max_idle:
            up.close()
            return
        up.idle_since = time.monotonic()
        conns.append(up)
        self._count += 1

    def discard(self, up: Upstream) -> None:
        conns = self._idle.get(up.key)
        if conns and up in conns:
            conns.remove(up)
            self._count -= 1

    def sweep(self, now: float) -> None:
        for key, conns in list(self._idle.items()):
            for up in [u for u in conns if now - u.idle_since > self.idle_timeout]:
                conns.remove(up)
                self._count -= 1
                up.close()
            if not conns:
                del self._idle[key]

    def close(self) -> None:
        for conns in self._idle.values():
            for up in conns:
                up.close()
        self._idle.clear()
        self._count = 0
