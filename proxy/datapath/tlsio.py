"""TLS over memory buffers, driven by the connection that owns the socket.

The data path runs TLS itself (``ssl.SSLObject`` on two ``MemoryBIO``\\s) rather than through
asyncio's TLS transports: the first bytes of a connection can then be looked at before deciding
whether TLS starts at all (transparent mode takes TLS and plain HTTP on one port; a CONNECT tunnel
may carry either), the ClientHello's server name is tied to its connection, and upstream sessions
can be resumed (``session=``), which asyncio's transports do not offer.
"""

from __future__ import annotations

import contextlib
import ssl

__all__ = ["TlsSession"]

_READ = 256 * 1024


class TlsSession:
    def __init__(
        self,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
        owner: object = None,
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname, session=session
        )
        if owner is not None:
            self.obj.sandgate_owner = owner  # type: ignore[attr-defined]  # read by sni callbacks
        self.established = False

    def handshake(self) -> bytes:
        """Advance the handshake; returns bytes to send. Raises ``ssl.SSLError`` when it fails."""
        try:
            self.obj.do_handshake()
            self.established = True
        except ssl.SSLWantReadError:
            pass
        return self._out.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Feed bytes from the socket: (plaintext, bytes to send back, whether the peer closed TLS
        with close_notify). Raises ``ssl.SSLError`` on a protocol error."""
        self._in.write(data)
        if not self.established:
            out = self.handshake()
            if not self.established:
                return b"", out, False
        else:
            out = b""
        chunks: list[bytes] = []
        closed = False
        obj, incoming = self.obj, self._in
        while True:
            try:
                chunk = obj.read(_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
            # Nothing left to decrypt, in the BIO or inside OpenSSL: the next read would only raise
            # SSLWantReadError, and raising it (an exception object with its message formatted) cost
            # more than the rest of this function. A partial record left in the BIO is read on.
            if not incoming.pending and not obj.pending():
                break
        out += self._out.read()
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), out, closed

    def send(self, data: bytes | memoryview) -> bytes:
        """Encrypt ``data``: the bytes to write to the socket."""
        self.obj.write(data)
        return self._out.read()

    def close(self) -> bytes:
        """close_notify, best effort."""
        with contextlib.suppress(ssl.SSLError, ssl.SSLWantReadError, ValueError):
            self.obj.unwrap()
        return self._out.read()

    @property
    def pending(self) -> bool:
        return self._in.pending > 0
