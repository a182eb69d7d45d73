"""One authority per request (SECURITY-CASES A07, A11, A12, A15, A16, B05, B08).

Every fact the wire gives about where a request goes must name the same canonical host and port:
the CONNECT authority (regular mode) or the original destination's port (transparent mode), the TLS
SNI, the ``Host`` header, and the scheme, host and port of an absolute-form request target. Any
disagreement is ``authority_mismatch`` and any fact that is not in canonical ASCII form is
``malformed_request``, decided here, before any DNS lookup or dial. A request that agrees is
forwarded in origin-form, with the one authority it was judged on.

Hosts are read with :func:`proxy.policy.hosts.wire_host`: never Unicode-mapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from proxy.policy.hosts import HostError, is_ip_literal, wire_authority, wire_host
from proxy.policy.model import Reason

__all__ = ["Authority", "ConnFacts", "Refusal", "parse_connect", "resolve_authority"]


# Immutable values with their __init__ written out (see proxy.native, "Dataclasses").


@dataclass(slots=True, unsafe_hash=True)  # (hashable: every field is Final)
class ConnFacts:
    """What a client connection knows before its first request."""

    tls: Final[bool]  # the agent speaks TLS to us on this connection (a tunnel's inner TLS, or transparent)
    connect: Final[tuple[str, int] | None]  # regular mode: the CONNECT authority (canonical)
    original: Final[tuple[str, int] | None]  # transparent mode: the original destination (IP, port)
    sni: Final[str | None]  # the ClientHello's server name as sent; None when there was none

    def __init__(
        self,
        tls: bool,
        connect: tuple[str, int] | None = None,
        original: tuple[str, int] | None = None,
        sni: str | None = None,
    ) -> None:
        self.tls, self.connect, self.original, self.sni = tls, connect, original, sni


@dataclass(slots=True, unsafe_hash=True)
class Authority:
    host: Final[str]  # canonical
    port: Final[int]
    tls: Final[bool]
    target: Final[str]  # origin-form (path and query) to forward; "*" for OPTIONS *

    def __init__(self, host: str, port: int, tls: bool, target: str) -> None:
        self.host, self.port, self.tls, self.target = host, port, tls, target


@dataclass(slots=True, unsafe_hash=True)
class Refusal:
    reason: Final[Reason]
    detail: Final[str]  # fixed words, safe to log and to show the agent
    host: Final[str | None]  # the connection's authority, when known (for the audit record)
    port: Final[int | None]

    def __init__(self, reason: Reason, detail: str, host: str | None = None, port: int | None = None) -> None:
        self.reason, self.detail, self.host, self.port = reason, detail, host, port


def parse_connect(target: str) -> tuple[str, int] | Refusal:
    """A CONNECT request-target: ``host:port`` (authority-form; the port is required)."""
    try:
        host, port = wire_authority(target)
    except HostError as e:
        return Refusal(Reason.MALFORMED_REQUEST, f"CONNECT authority: {e.fixed}")
    if port is None:
        return Refusal(Reason.MALFORMED_REQUEST, "CONNECT authority needs a port: host:443")
    return host, port


_NOT_VISIBLE = re.compile(r"[\x00-\x20\x7f]")


def _split_target(target: str) -> tuple[str | None, str | None, str] | Refusal:
    """(scheme, authority, origin-form) of a request-target; scheme and authority are None for
    origin-form and asterisk-form."""
    if not target or not target.isascii() or _NOT_VISIBLE.search(target) is not None:
        return Refusal(Reason.MALFORMED_REQUEST, "request target must be visible ASCII")
    if "#" in target:
        return Refusal(Reason.MALFORMED_REQUEST, "request target must not carry a fragment")
    if target.startswith("/") or target == "*":
        return None, None, target
    scheme, sep, rest = target.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        return Refusal(Reason.MALFORMED_REQUEST, "request target must be origin-form (/path) or an http(s) URL")
    end = len(rest)
    for delim in "/?":
        i = rest.find(delim)
        if i != -1:
            end = min(end, i)
    authority, path = rest[:end], rest[end:]
    if "@" in authority:
        return Refusal(Reason.MALFORMED_REQUEST, "request target must not carry userinfo")
    if not path.startswith("/"):
        path = "/" + path
    return scheme, authority, path


_HOST_FIELDS: dict[str, tuple[str, int | None]] = {}  # Host field -> wire_authority's answer (not its errors)
HOST_FIELDS_MAX = 1024


def _host_field(raw: str) -> tuple[str, int | None]:
    """:func:`wire_authority` of a Host field, remembered (a connection's requests name the same
    host; it raises :class:`HostError` as that does, every time)."""
    known = _HOST_FIELDS.get(raw)
    if known is None:
        known = wire_authority(raw)
        if len(_HOST_FIELDS) >= HOST_FIELDS_MAX:
            _HOST_FIELDS.clear()
        _HOST_FIELDS[raw] = known
    return known


def resolve_authority(
    conn: ConnFacts, method: str, target: str, host_values: list[str], pinned: tuple[str, int] | None = None
) -> Authority | Refusal:
    """The one authority of a request on ``conn``, or why it has none.

    ``host_values``: every ``Host`` field of the request, raw. ``pinned``: the authority an earlier
    request on this connection was served for (one connection, one authority)."""
    in_tunnel = conn.tls or conn.connect is not None or conn.original is not None
    if method == "CONNECT":
        return Refusal(
            Reason.PROTOCOL_NOT_ALLOWED if in_tunnel else Reason.MALFORMED_REQUEST, "CONNECT is not allowed here"
        )
    if len(host_values) != 1:
        return Refusal(Reason.MALFORMED_REQUEST, "exactly one Host header is required")
    try:
        host, host_port = _host_field(host_values[0])
    except HostError as e:
        return Refusal(Reason.MALFORMED_REQUEST, f"Host header: {e.fixed}")
    split = _split_target(target)
    if isinstance(split, Refusal):
        return split
    scheme, target_authority, origin = split
    if origin == "*" and method != "OPTIONS":
        return Refusal(Reason.MALFORMED_REQUEST, "the asterisk target is only for OPTIONS")
    default_port = 443 if conn.tls else 80

    # The connection's own authority: what the agent connected to.
    if conn.connect is not None:
        c_host, c_port = conn.connect
        if conn.tls:
            if conn.sni is not None:
                sni = _sni(conn.sni, c_host, c_port)
                if isinstance(sni, Refusal):
                    return sni
                if sni != c_host:
                    return Refusal(Reason.AUTHORITY_MISMATCH, "SNI differs from the CONNECT authority", c_host, c_port)
            elif not is_ip_literal(c_host):
                return Refusal(Reason.PROTOCOL_NOT_ALLOWED, "TLS without SNI to a host name", c_host, c_port)
    elif conn.original is not None:
        o_ip, c_port = conn.original
        if conn.tls and conn.sni is not None:
            sni = _sni(conn.sni, None, c_port)
            if isinstance(sni, Refusal):
                return sni
            c_host = sni
        elif conn.tls and not is_ip_literal(host):
            return Refusal(Reason.PROTOCOL_NOT_ALLOWED, "TLS without SNI to a host name", host, c_port)
        else:
            c_host = host
        if is_ip_literal(c_host) and c_host != o_ip:
            return Refusal(Reason.AUTHORITY_MISMATCH, "an IP literal host differs from the destination", c_host, c_port)
    else:
        # Regular mode without a tunnel: a plain-HTTP request to the proxy names its destination.
        if scheme is None or target_authority is None:
            return Refusal(Reason.MALFORMED_REQUEST, "a request to the proxy must name an http:// URL")
        if scheme != "http":
            return Refusal(Reason.PROTOCOL_NOT_ALLOWED, "use CONNECT for https")
        try:
            c_host, t_port = wire_authority(target_authority)
        except HostError as e:
            return Refusal(Reason.MALFORMED_REQUEST, f"request target: {e.fixed}")
        c_port = t_port or 80

    if host != c_host or (host_port or default_port) != c_port:
        return Refusal(Reason.AUTHORITY_MISMATCH, "Host differs from the connection's destination", c_host, c_port)
    if target_authority is not None:
        if scheme != ("https" if conn.tls else "http"):
            return Refusal(
                Reason.AUTHORITY_MISMATCH, "the target's scheme differs from the connection's", c_host, c_port
            )
        try:
            t_host, t_port = wire_authority(target_authority)
        except HostError as e:
            return Refusal(Reason.MALFORMED_REQUEST, f"request target: {e.fixed}", c_host, c_port)
        if t_host != c_host or (t_port or default_port) != c_port:
            return Refusal(
                Reason.AUTHORITY_MISMATCH, "the target's authority differs from the connection's", c_host, c_port
            )
    if pinned is not None and pinned != (c_host, c_port):
        return Refusal(Reason.AUTHORITY_MISMATCH, "one connection, one authority", c_host, c_port)
    return Authority(c_host, c_port, conn.tls, origin)


def _sni(raw: str, host: str | None, port: int) -> str | Refusal:
    try:
        sni = wire_host(raw)
    except HostError as e:
        return Refusal(Reason.MALFORMED_REQUEST, f"SNI: {e.fixed}", host, port)
    if is_ip_literal(sni):
        return Refusal(Reason.MALFORMED_REQUEST, "SNI must be a host name, not an IP address", host, port)
    return sni
