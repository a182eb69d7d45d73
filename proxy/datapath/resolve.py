"""Name resolution for the proxy: the nameservers only, never ``/etc/hosts``.

In a pod the kubelet mounts one ``/etc/hosts`` read-write into every container, the agent's
included: a resolver that read it would let the agent choose where a bound host's name points.
So names are asked of the nameservers in ``/etc/resolv.conf`` (with its search list and ndots, as
the system resolver would) through dnspython, which never reads the hosts file; inside a sealed
``sandgate run`` sandbox they are asked of the relay. Answers are cached for their TTL; every dial
still checks the address it uses (:mod:`proxy.netcheck`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver

from proxy.relay import resolve_via_relay

__all__ = ["NameserverResolver", "RelayResolver", "Resolver"]


class Resolver(Protocol):
    async def resolve(self, name: str) -> list[str]:
        """Addresses of ``name``; ``OSError`` when it has none."""
        ...


class NameserverResolver:
    def __init__(self, timeout: float = 5.0, max_names: int = 4096, nameserver: tuple[str, int] | None = None) -> None:
        """``nameserver``: ask this (address, port) only, instead of ``/etc/resolv.conf``'s."""
        r = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            r.nameservers, r.port = [nameserver[0]], nameserver[1]
        r.use_search_by_default = True  # like the system resolver: the search list and ndots apply
        r.lifetime = timeout
        r.cache = dns.resolver.LRUCache(4096)
        self._r = r
        # name -> (monotonic expiry, addresses): an answer is reused for its TTL, as dnspython's
        # own cache would, without its per-lookup cost (two lookups, two tasks and name parsing
        # were ~0.1 ms of every new connection's CPU). Failures are never kept.
        self._answers: dict[str, tuple[float, list[str]]] = {}
        self._max_names = max_names

    async def resolve(self, name: str) -> list[str]:
        lowered = name.lower()
        if lowered == "localhost" or lowered.endswith(".localhost"):
            return ["127.0.0.1", "::1"]  # RFC 6761: never asked of anyone (and private_address anyway)
        kept = self._answers.get(lowered)
        if kept is not None:
            if kept[0] > time.monotonic():
                return list(kept[1])
            del self._answers[lowered]

        async def query(rdtype: str) -> tuple[list[str], float | None]:
            try:
                answer = await self._r.resolve(name, rdtype, raise_on_no_answer=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.resolver.NoAnswer):
                return [], None
            except dns.exception.DNSException as e:  # timeouts and the like
                raise OSError(f"cannot resolve: {type(e).__name__}") from None
            if answer.rrset is None:
                return [], None
            # (the answer's own expiry: one from dnspython's cache has already aged)
            return [r.to_text() for r in answer.rrset], answer.expiration - time.time()

        (v4, left4), (v6, left6) = await asyncio.gather(query("A"), query("AAAA"))
        addresses = v4 + v6
        if not addresses:
            raise OSError("the name does not resolve")
        left = min(t for t in (left4, left6) if t is not None)
        if left > 0:
            if len(self._answers) >= self._max_names:
                self._answers.pop(next(iter(self._answers)))  # the oldest entry
            self._answers[lowered] = (time.monotonic() + left, addresses)
        return list(addresses)


class RelayResolver:
    """Inside ``sandgate run``'s sandbox: the relay on the host resolves (see proxy/relay.py)."""

    def __init__(self, relay: tuple[str, int]) -> None:
        self._relay = relay

    async def resolve(self, name: str) -> list[str]:
        return await resolve_via_relay(self._relay, name)
