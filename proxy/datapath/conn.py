"""A TCP connection of the data path, with the TLS we run ourselves (:mod:`proxy.datapath.tlsio`).

Both sides of the proxy (toward the agent and toward an upstream) are an :class:`Endpoint`: bytes
from the socket go through TLS when it is on and arrive as plaintext in :meth:`Endpoint.on_data`;
:meth:`Endpoint.send` encrypts. Reading is paused while the other side cannot take more (flow
control both ways, so neither a fast upstream nor a fast agent fills the proxy's memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from typing import cast

from proxy.datapath.tlsio import TlsSession

__all__ = ["Endpoint", "at_round_end", "before_answer", "count_bugs_with"]

log = logging.getLogger("sandgate.proxy")

# Writes made while bytes from a socket are being handled are held and written once at the end of
# that callback: a response head and its body (or a request and its body) go out as one TLS
# record and one system call, not several (more than two records' worth: record by record, _flush).
_dirty: list[Endpoint] = []
_depth = 0
_RECORD = 16384  # TLS's largest record: what a peer can decrypt on its own
# Run before held writes toward an agent go out: what must be written before the answers it
# describes (the audit log's records), see at_round_end.
_round_end: list[Callable[[], None]] = []


# What counts an internal error: sandgate_internal_errors_total{task="data_path"} (count_bugs_with).
_bug_counter: list[Callable[[], None]] = []


def count_bugs_with(counter: Callable[[], None]) -> None:
    """Call ``counter`` for every internal error of a connection (the last server made sets it).
    (A module's list, not a class attribute to reassign: compiled, Endpoint's own methods are
    bound when it is built.)"""
    _bug_counter[:] = [counter]


def at_round_end(hook: Callable[[], None]) -> Callable[[], None]:
    """Call ``hook`` each time held writes toward an agent are about to go out (and before any
    connection is closed or cut), before them; returns what ends that. A request's record is
    written in the round that sends it upstream, its answer goes out in a later one: records of
    several requests go out in one write when their answers do."""
    _round_end.append(hook)
    return lambda: _round_end.remove(hook)


def before_answer() -> None:
    """Run the round-end hooks now: for code that answers on a socket directly, not through an
    :class:`Endpoint` (the listener's over-the-cap refusals)."""
    for hook in _round_end:
        hook()


def _flush_all(*, always: bool = True) -> None:
    if not always:
        for ep in _dirty:  # (a loop, not any() over a generator: this runs on every socket callback)
            if ep.toward_agent:
                always = True
                break
    if always:
        before_answer()
    while _dirty:
        ep = _dirty.pop()
        try:
            ep._flush()
        except Exception as e:  # outside the callback that made the write: cut that connection
            ep.internal_error(e, "flush")


HIGH_WATER = 256 * 1024


class Endpoint(asyncio.Protocol):
    transport: asyncio.Transport | None = None
    tls: TlsSession | None = None
    closed: bool = False
    write_paused: bool = False
    toward_agent: bool = False  # what it sends are answers (the round-end hooks run first)

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        global _depth
        _depth += 1
        try:
            self._received(data)
        except Exception as e:
            self.internal_error(e, "data")
        finally:
            _depth -= 1
        if _depth == 0:
            _flush_all(always=False)

    def internal_error(self, error: Exception, where: str) -> None:
        """A bug in our code: the connection (and, through it, its peer) is cut, never left to carry
        on unchecked; logged by type only (the message may quote request data) and counted."""
        log.error(json.dumps({"event": "internal_error", "where": f"{type(self).__name__}.{where}",
                              "error": type(error).__name__, "action": "closed"}))  # fmt: skip
        for count in _bug_counter:
            count()
        self.abort()

    def _received(self, data: bytes) -> None:
        if self._draining:
            return  # after our final answer: read and dropped
        tls = self.tls
        if tls is None:
            self.on_data(data)
            return
        was = tls.established
        try:
            plain, out, peer_closed = tls.receive(data)
        except ssl.SSLError as e:
            self.on_tls_error(e)
            return
        if out and self.transport is not None and not self.closed:
            self.transport.write(out)
        if not tls.established:
            return
        if not was:
            self.on_tls_ready()
        if plain and not self.closed:
            self.on_data(plain)
        if peer_closed and not self.closed:
            self.on_peer_closed()

    def eof_received(self) -> bool:
        if self._draining:
            if self.transport is not None:
                self.transport.close()
            return False
        try:
            self.on_peer_closed()
        except Exception as e:
            self.internal_error(e, "eof")
        # A half-close: the peer sends no more, but may still read. Unless its owner closed it, the
        # transport stays open for what is still owed (answers to whole requests), then the owner
        # closes it.
        return not self.closed

    def pause_writing(self) -> None:
        self.write_paused = True
        try:
            self.on_write_paused()
        except Exception as e:
            self.internal_error(e, "pause_writing")

    def resume_writing(self) -> None:
        self.write_paused = False
        try:
            self.on_write_resumed()  # (a streamed answer's decoding goes on here: Exchange._pump_on)
        except Exception as e:
            self.internal_error(e, "resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        try:
            self.on_lost()
        except Exception as e:
            self.internal_error(e, "lost")

    # -- for the connection's owner -----------------------------------------------------------------
    def begin_tls(
        self,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        hostname: str | None = None,
        session: ssl.SSLSession | None = None,
        first: bytes = b"",
    ) -> None:
        if self._pending:
            # Plaintext held for this round (a CONNECT's 200) precedes the TLS that follows it on
            # the wire; held, it would be encrypted after the handshake's first flight.
            _flush_all()
        self.tls = TlsSession(ctx, server_side=server_side, server_hostname=hostname, session=session, owner=self)
        if not server_side:
            try:
                out = self.tls.handshake()
            except ssl.SSLError as e:
                self.on_tls_error(e)
                return
            if out and self.transport is not None:
                self.transport.write(out)
        if first:
            self.data_received(first)

    def send(self, data: bytes) -> None:
        if self.closed or self.transport is None or not data:
            return
        if not self._pending:
            self._pending = [data]
            _dirty.append(self)
        else:
            self._pending.append(data)
        if _depth == 0:  # not inside a socket callback (a task, a timer): nothing to wait for
            _flush_all(always=False)

    _pending: list[bytes] | None = None

    def flush_now(self) -> None:
        """Write what this endpoint holds now rather than at the end of the callback: for a request
        or an answer known to be whole, so that the work after it in the same callback (its audit
        record and counters, pooling, the next pipelined request) is not on its way. Toward an
        agent, what must precede an answer (the round-end hooks) goes first."""
        if self._pending is None:
            return
        if self.toward_agent:
            before_answer()
        try:
            _dirty.remove(self)  # (held once, so its end-of-callback flush would find nothing)
            self._flush()
        except Exception as e:  # as in _flush_all: that connection is cut, not the caller's
            self.internal_error(e, "flush")

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if not pending or self.transport is None or self.transport.is_closing():
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        tls = self.tls
        if tls is None:
            self.transport.write(data)
        elif len(data) <= _RECORD * 2:
            self.transport.write(tls.send(data))
        else:
            # Record by record: the peer decrypts the first while the next is encrypted, where one
            # write of all of them made it wait for the last (a 64 KiB answer held whole to be
            # scrubbed: ~40 us sooner, bench/README.md). A system call per 16 KiB costs less.
            view = memoryview(data)
            for i in range(0, len(data), _RECORD):
                self.transport.write(tls.send(view[i : i + _RECORD]))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what was written has been sent."""
        if self.closed:
            return
        _flush_all()  # (this one's held writes, after what must precede them)
        self.closed = True
        if self.transport is not None:
            if self.tls is not None and self.tls.established:
                with contextlib.suppress(RuntimeError):
                    self.transport.write(self.tls.close())
            self.transport.close()

    def close_lingering(self, grace: float = 2.0) -> None:
        """Close after our answer, without resetting it away: stop writing (close_notify and FIN)
        but keep reading and discarding for ``grace`` seconds, so a peer still sending a request we
        refused (a 431 to a 100 KB head) reads our answer instead of a connection reset."""
        if self.closed or self.transport is None:
            return
        _flush_all()
        self.closed = True
        self._draining = True
        t = self.transport
        if self.tls is not None and self.tls.established:
            with contextlib.suppress(RuntimeError):
                t.write(self.tls.close())
        if t.can_write_eof():
            t.write_eof()
        asyncio.get_running_loop().call_later(grace, t.close)

    _draining = False

    def abort(self) -> None:
        """Close now (the peer sees a reset: a response cut short). What was already sent in this
        round, held to go out with the rest of it, goes out first: it was clean and on its way."""
        if not self.closed:
            _flush_all()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- for subclasses ---------------------------------------------------------------------------
    def on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def on_tls_ready(self) -> None:
        pass

    def on_tls_error(self, error: ssl.SSLError) -> None:
        self.abort()

    def on_peer_closed(self) -> None:
        self.close()

    def on_write_paused(self) -> None:
        pass

    def on_write_resumed(self) -> None:
        pass

    def on_lost(self) -> None:
        pass
