"""The sidecar's data path: asyncio (uvloop) transports, llhttp parsing, TLS run by the connections.

One agent connection is a :class:`proxy.datapath.client.Client`; each request on it an
:class:`proxy.datapath.exchange.Exchange`, which asks :mod:`proxy.core` what to do and carries it
out; upstream connections (:mod:`proxy.datapath.upstream`) are pooled across client connections,
keyed by the checked address. :mod:`proxy.datapath.server` holds the listeners, the connection cap
and the timeouts. Everything this package decides is decided by a pure function in
:mod:`proxy.core` or :mod:`proxy.policy`: this package only moves bytes.
"""
