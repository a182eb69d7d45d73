"""The Vault client's name resolution: the nameservers only, never ``/etc/hosts`` (which the kubelet
mounts read-write into every container of the pod, the agent's included).

A ``requests`` transport adapter (the documented extension point, ``build_connection_pool_key_attributes``)
resolves the URL's host with dnspython and connects to the address it got, while TLS still sends
and verifies the name (``server_hostname`` / ``assert_hostname``) and the request keeps its Host.
Names under ``localhost`` are loopback without asking anyone (RFC 6761); IP literals are used as
they are. With a proxy (``--vault-proxy``: the relay of ``sandgate run``, which accepts Vault by its
name only) the name is the proxy's to resolve: it goes in the ``CONNECT`` as it is.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.exception
import dns.resolver
from requests.adapters import HTTPAdapter

__all__ = ["NameserverAdapter", "resolve_name"]


def resolve_name(name: str, timeout: float, resolver: dns.resolver.Resolver | None = None) -> str:
    """One address for ``name``: IPv4 first, then IPv6. Raises ``OSError`` when it has none."""
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    lowered = name.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return "127.0.0.1"
    r = resolver or dns.resolver.Resolver(configure=True)
    r.use_search_by_default = True
    r.lifetime = timeout
    for rdtype in ("A", "AAAA"):
        try:
            answer = r.resolve(name, rdtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as e:
            raise OSError(f"cannot resolve the Vault address ({type(e).__name__})") from None
        if answer.rrset:
            return str(answer.rrset[0].to_text())
    raise OSError("the Vault address does not resolve")


class NameserverAdapter(HTTPAdapter):
    def __init__(self, timeout: float, proxied: bool = False, **kwargs: Any) -> None:
        self._timeout = timeout
        self._proxied = proxied
        self._resolver = dns.resolver.Resolver(configure=True)
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(  # type: ignore[override]  # urllib3 takes more pool keys than the stub says
        self, request: Any, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(params)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        if self._proxied:
            return host_params, pool_kwargs
        name = host_params["host"]
        address = resolve_name(name, self._timeout, self._resolver)
        if address != name:
            host_params["host"] = address
            if host_params["scheme"] == "https":
                pool_kwargs["server_hostname"] = name
                pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs

    def add_headers(self, request: Any, **kwargs: Any) -> None:
        # The connection goes to an address; the request still names the host it is for.
        from urllib.parse import urlsplit

        netloc = urlsplit(request.url).netloc.rpartition("@")[2]
        request.headers.setdefault("Host", netloc)
