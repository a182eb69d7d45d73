"""A total deadline for each blocking call into Vault, connections included, and a bound on
the size of each answer.

``requests`` (under hvac) has no total timeout: its timeout bounds each read, and a Vault (or
anything between) that sends a byte, or a TLS record of one byte, within every read's timeout keeps
a call alive for as long as it likes. The event loop stops waiting at the deadline, but the worker
thread went on reading: the Vault client's threads were held for good, and once Vault answered
normally again nothing could reach it.

So each call runs as a :class:`Call`: every connection it opens or sends a request on (urllib3's
connection classes, through the pool classes of a transport adapter: the documented extension
points) is noted, and :meth:`Call.expire` shuts their sockets down, which ends the blocked read (or
TLS handshake) with an error in the worker thread; the connection is then discarded by urllib3, and
the thread is free for the next call. A call already expired when it reaches a connection fails at
once (it was waiting on a lock or in the executor's queue).

Nor has it a bound on an answer's size: an endless body was read into memory (3 GiB in 10 s, red
team 35) until the deadline, and nothing ever stopped a fast one. The adapter reads each answer
itself, up to :data:`MAX_ANSWER` bytes (decoded), and fails the call past that.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, ReadTimeoutError
from urllib3.poolmanager import PoolManager

__all__ = ["MAX_ANSWER", "AnswerTooLarge", "Call", "CallExpired", "DeadlineAdapter"]

MAX_ANSWER = 4 << 20  # bytes of one answer from Vault, decoded: many times any KV read or login

T = TypeVar("T")

_current = threading.local()


class CallExpired(OSError):
    """The call's deadline passed before it reached Vault (raised in the worker thread; the event
    loop has already given up on it)."""


class AnswerTooLarge(requests.RequestException):
    """An answer longer than :data:`MAX_ANSWER` (its connection is dropped, the rest unread)."""


class Call:
    """One blocking call into Vault and the connections it used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: list[HTTPConnection] = []
        self._expired = False
        self._done = False

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` as this call (in the worker thread)."""
        _current.call = self
        try:
            return fn(*args)
        finally:
            _current.call = None
            with self._lock:
                self._done = True
                self._conns.clear()

    def expire(self) -> None:
        """The deadline passed: end whatever the call is blocked on (from any thread)."""
        with self._lock:
            if self._done:
                return
            self._expired = True
            conns = list(self._conns)
        for conn in conns:
            _shut(conn.sock)

    def _use(self, conn: HTTPConnection) -> None:
        with self._lock:
            if self._expired:
                raise CallExpired("the call's deadline passed")
            self._conns.append(conn)


def _use(conn: HTTPConnection) -> None:
    call: Call | None = getattr(_current, "call", None)
    if call is not None:
        call._use(conn)


def _shut(sock: socket.socket | None) -> None:
    """Shut the socket down, not close it: the descriptor stays the reading thread's (closing it
    under a blocked read could hand its number to another file), and the read returns at once.
    Called on the plain socket's own method, so that an ``SSLSocket`` is not unwrapped under the
    thread that is using it."""
    if sock is None:
        return
    with contextlib.suppress(OSError):  # (already closed, or never connected)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Noted:
    """A connection that the call running in its thread notes, as it connects and as it is sent a
    request (a kept-alive one, opened by another call)."""

    def connect(self) -> None:
        _use(self)  # type: ignore[arg-type]  # (before the socket exists: ``sock`` is set before the handshake)
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _use(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _Connection(_Noted, HTTPConnection):
    pass


class _TLSConnection(_Noted, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TLSPool}


class DeadlineAdapter(HTTPAdapter):
    """A transport adapter whose connections are noted by the :class:`Call` they serve (the one
    running in the thread), directly or through a proxy, and whose answers are read here, whole
    and bounded: the response handed on holds its body in memory (``raw`` a ``BytesIO``)."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().send(request, *args, **kwargs)
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in raw.stream(1 << 16, decode_content=True):
                size += len(chunk)
                if size > MAX_ANSWER:
                    break
                chunks.append(chunk)
        except ReadTimeoutError as e:  # (as requests maps urllib3's errors when it reads a body)
            raw.close()
            raise requests.exceptions.ReadTimeout(e, request=request) from None
        except (HTTPError, OSError) as e:
            raw.close()
            raise requests.exceptions.ConnectionError(e, request=request) from None
        except BaseException:
            raw.close()
            raise
        if size > MAX_ANSWER:
            chunks.clear()
            raw.close()  # (the connection is dropped with whatever is left unread)
            raise AnswerTooLarge(f"an answer longer than {MAX_ANSWER} bytes", request=request)
        raw.release_conn()
        response.raw = io.BytesIO(b"".join(chunks))
        return response

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS  # (made once a proxy, then cached: before any pool)
        return manager
