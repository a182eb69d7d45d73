"""The one place Sandgate reaches into mitmproxy internals, and why.

mitmproxy 12's HTTP/1 server buffers request heads without a bound (its source says "FIXME:
protect against header size DoS"), and has no request-body limit that would not also cut large
responses (``body_size_limit`` applies to both directions). We wrap two methods of
``Http1Server`` (the agent-facing side only):

- ``read_headers``: more than ``max_header_bytes`` buffered without the end of the head -> 431;
- ``read_body``: more than ``max_request_body`` bytes of request body -> 413;
- ``read_headers`` again: a request head still incomplete ``header_timeout`` seconds after its
  first byte -> 408 (slowloris, SECURITY-CASES F03; silent connections are closed by mitmproxy's
  ``tcp_timeout``).

Either way the agent gets our JSON denial and the connection is closed without reading further.

- ``send``: mitmproxy's own error pages quote exception text (upstream addresses, TLS details,
  parser messages with header bytes). Toward the agent they carry one fixed sentence per status
  (SECURITY-CASES B14); the details stay in the proxy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

_GENERIC = {
    400: "malformed request",
    413: "request too large",
    502: "the upstream could not be reached or answered badly",
    504: "the upstream timed out",
}


@dataclass
class _Settings:
    max_header_bytes: int = 64 * 1024
    max_request_body: int = 32 * 1024 * 1024
    header_timeout: float = 30.0
    on_limit: Callable[[str], None] = lambda kind: None


_settings = _Settings()
_installed = False


def _denial(status: int, phrase: str, detail: str) -> bytes:
    body = json.dumps({"error": "sandgate_denied", "reason": "limit_exceeded", "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\nx-sandgate-reason: limit_exceeded\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _skip_debug_typechecks() -> None:
    """mitmproxy type-checks every field of every request and response it builds, in
    ``MessageData.__post_init__``, only ``if __debug__`` (it is gone under ``python -O``): ~3 % of
    the proxy's CPU per keep-alive request. The values come from mitmproxy's own parser, and our
    code is checked by mypy; run it as in optimised mode. (Asserts elsewhere stay on.)"""
    from mitmproxy import http as mitm_http

    if "__post_init__" in vars(mitm_http.MessageData):
        mitm_http.MessageData.__post_init__ = lambda self: None  # type: ignore[method-assign]


def _cached_hook_dispatch() -> None:
    """mitmproxy walks every addon (and its children) with getattr and a context manager for every
    event, and follows every flow hook with an "update" event for its UIs, which no addon of ours
    handles: 8 dispatches per keep-alive request, ~5 % of the proxy's CPU. Same order, same
    per-addon error isolation (safecall), same AddonHalt; the callables of each event are looked
    up once, again whenever the addon chain changes."""
    import inspect

    from mitmproxy import addonmanager, exceptions

    async def trigger_event(self: Any, event: Any) -> None:
        cache: dict[str, Any] = self.__dict__.setdefault("_sg_hooks", {})
        if cache.get("") != self.chain:
            cache.clear()
            cache[""] = list(self.chain)
        groups = cache.get(event.name)
        if groups is None:
            groups = [fs for fs in ([f for _, f in self._iter_hooks(a, event)] for a in self.chain) if fs]
            cache[event.name] = groups
        for funcs in groups:
            try:
                with addonmanager.safecall():
                    for func in funcs:
                        res = func(*event.args())
                        if res is not None and inspect.isawaitable(res):
                            await res
            except exceptions.AddonHalt:
                return

    addonmanager.AddonManager.trigger_event = trigger_event  # type: ignore[method-assign]


ORIGINAL_HEADERS: dict[str, Any] = {}  # mitmproxy's own methods, kept for the equivalence test


def _faster_headers() -> None:
    """mitmproxy looks headers up ~35 times per proxied request (body-size rules, its HTTP/1 writer,
    our checks) through generic MultiDict code; a missing header even goes through a raised and
    caught KeyError (``"x" in headers``). The same semantics, in one pass over the fields."""
    from mitmproxy import http as mitm_http

    def _key(name: str | bytes) -> bytes:
        if isinstance(name, str):
            return name.encode("utf-8", "surrogateescape").lower()
        if isinstance(name, bytes):
            return name.lower()
        raise TypeError(f"Expected str or bytes, but got {type(name).__name__}.")

    def get_all(self: Any, name: str | bytes) -> list[str]:
        key = _key(name)
        return [v.decode("utf-8", "surrogateescape") for k, v in self.fields if k.lower() == key]

    def get(self: Any, name: str | bytes, default: Any = None) -> Any:
        values = get_all(self, name)
        return ", ".join(values) if values else default

    def getitem(self: Any, name: str | bytes) -> str:
        values = get_all(self, name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def contains(self: Any, name: object) -> bool:
        if not isinstance(name, str | bytes):
            return False
        key = _key(name)
        return any(k.lower() == key for k, _ in self.fields)

    headers = mitm_http.Headers
    if "get_all" in ORIGINAL_HEADERS:
        return
    for name in ("get_all", "get", "__getitem__", "__contains__"):
        ORIGINAL_HEADERS[name] = getattr(headers, name)
    headers.get_all = get_all  # type: ignore[method-assign]
    headers.get = get  # type: ignore[method-assign]
    headers.__getitem__ = getitem  # type: ignore[method-assign]
    headers.__contains__ = contains  # type: ignore[method-assign]


def install(
    max_header_bytes: int, max_request_body: int, on_limit: Callable[[str], None], header_timeout: float = 30.0
) -> None:
    """``on_limit(kind)`` is called once per refused request, kind "headers", "body" or "header-time"."""
    global _installed
    _settings.max_header_bytes, _settings.max_request_body = max_header_bytes, max_request_body
    _settings.on_limit, _settings.header_timeout = on_limit, header_timeout
    if _installed:
        return
    _skip_debug_typechecks()
    _cached_hook_dispatch()
    _faster_headers()
    server = _http1.Http1Server
    original_headers = server.read_headers
    original_body = server.read_body

    def read_headers(self: Any, event: events.ConnectionEvent) -> Generator[commands.Command, Any, None]:
        self._sg_body_bytes = 0
        if isinstance(event, events.DataReceived) and not getattr(self, "_sg_head_started", None):
            self._sg_head_started = time.monotonic()
        yield from original_headers(self, event)
        if not (isinstance(event, events.DataReceived) and self.state == self.read_headers):
            self._sg_head_started = None  # the head is complete, or the connection is done
            return
        if len(self.buf) > _settings.max_header_bytes:
            _settings.on_limit("headers")
            yield commands.SendData(
                self.conn, _denial(431, "Request Header Fields Too Large", "request headers too large")
            )
            yield commands.CloseConnection(self.conn)
            self.state = self.done
        elif len(self.buf) and time.monotonic() - self._sg_head_started > _settings.header_timeout:
            _settings.on_limit("header-time")
            yield commands.SendData(self.conn, _denial(408, "Request Timeout", "request headers not received in time"))
            yield commands.CloseConnection(self.conn)
            self.state = self.done

    def read_body(self: Any, event: events.Event) -> Generator[commands.Command, Any, None]:
        if isinstance(event, events.DataReceived):
            self._sg_body_bytes = getattr(self, "_sg_body_bytes", 0) + len(event.data)
            if self._sg_body_bytes > _settings.max_request_body:
                declared = self.request.headers.get("content-length", "") if self.request else ""
                if not (declared.isdigit() and int(declared) > _settings.max_request_body):
                    _settings.on_limit("body")  # a declared oversize body was already counted by the gate
                if not self.response:
                    yield commands.SendData(self.conn, _denial(413, "Content Too Large", "request body too large"))
                yield commands.CloseConnection(self.conn)
                self.state = self.done
                return
        yield from original_body(self, event)

    original_send = server.send

    def send(self: Any, event: Any) -> Generator[commands.Command, Any, None]:
        if isinstance(event, ResponseProtocolError):
            status = event.code.http_status_code()
            event = ResponseProtocolError(
                event.stream_id, _GENERIC.get(status or 0, "the proxy could not complete the request"), event.code
            )
        yield from original_send(self, event)

    server.send = send  # type: ignore[method-assign]
    server.read_headers = read_headers  # type: ignore[method-assign]
    server.read_body = read_body  # type: ignore[method-assign]
    _installed = True


def abort_flow_connections(flow: Any) -> None:
    """Tear down a flow's client and server connections right now, mid-body, from inside a stream
    callback (where no command can be yielded). The upstream sees an incomplete request, the agent
    a closed connection: nothing after the offending chunk is forwarded."""
    from mitmproxy import ctx

    handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
    if handler is None:
        return
    for conn in (flow.server_conn, flow.client_conn):
        if conn in handler.transports:
            handler.close_connection(conn)


def restore_server_address(server: Any, address: tuple[str, int]) -> None:
    """Give an open upstream connection back its logical address (host name, port).

    The gate dials the IP it checked by putting it in ``server.address`` in ``server_connect``.
    mitmproxy matches reusable upstream connections by address, so once connected the name must
    come back, or every request would open a new upstream connection. mitmproxy refuses to change
    the address of an open connection (a guard for addons, not an invariant of the connection), so
    we set the field underneath that guard.
    """
    object.__setattr__(server, "address", address)
