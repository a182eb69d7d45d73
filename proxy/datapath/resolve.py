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
    def __init__(self, timeout: float = 5.0) -> None:
        r = dns.asyncresolver.Resolver(configure=True)
        r.use_search_by_default = True  # like the system resolver: the search list and ndots apply
        r.lifetime = timeout
        r.cache = dns.resolver.LRUCache(4096)
        self._r = r

    async def resolve(self, name: str) -> list[str]:
        lowered = name.lower()
        if lowered == "localhost" or lowered.endswith(".localhost"):
            return ["127.0.0.1", "::1"]  # RFC 6761: never asked of anyone (and private_address anyway)

        async def query(rdtype: str) -> list[str]:
            try:
                answer = await self._r.resolve(name, rdtype, raise_on_no_answer=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.resolver.NoAnswer):
                return []
            except dns.exception.DNSException as e:  # timeouts and the like
                raise OSError(f"cannot resolve: {type(e).__name__}") from None
            return [r.to_text() for r in answer.rrset] if answer.rrset is not None else []

        v4, v6 = await asyncio.gather(query("A"), query("AAAA"))
        addresses = v4 + v6
        if not addresses:
            raise OSError("the name does not resolve")
        return addresses


class RelayResolver:
    """Inside ``sandgate run``'s sandbox: the relay on the host resolves (see proxy/relay.py)."""

    def __init__(self, relay: tuple[str, int]) -> None:
        self._relay = relay

    async def resolve(self, name: str) -> list[str]:
        return await resolve_via_relay(self._relay, name)
