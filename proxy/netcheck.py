"""Which destination addresses the sidecar may dial (SECURITY-CASES A08, A09, C13).

Anything that is not globally routable is ``private_address``: loopback, RFC 1918, link-local
(the 169.254.169.254 metadata service), CGNAT, multicast, reserved, unspecified, benchmarking; and
IPv6 forms that embed such an IPv4 address (v4-mapped, NAT64, 6to4) or hide one (Teredo).
Operators open specific ranges with ``--allow-private CIDR``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_6TO4 = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _6TO4:
        return ip.sixtofour
    return None


def is_private(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return True
        v4 = _embedded_v4(ip)
        if v4 is not None:
            return is_private(v4)
        if ip in _TEREDO or ip in _NAT64_LOCAL:
            return True
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


class AddressPolicy:
    def __init__(self, allow_private: Iterable[str] = ()) -> None:
        self.allow_private: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in allow_private)

    def permitted(self, ip: IPAddress) -> bool:
        if any(ip.version == net.version and ip in net for net in self.allow_private):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return self.permitted(ip.ipv4_mapped)
        return not is_private(ip)
