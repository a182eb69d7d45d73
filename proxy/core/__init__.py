"""What decides, pure: no sockets, no asyncio, no TLS, no metrics (an import-linter contract).

The data path (:mod:`proxy.datapath`) reads bytes and calls these; ``sandgate policy test`` calls the
same ones offline, so the simulator and the proxy cannot disagree.

- :mod:`proxy.core.authority`: one authority per request, from every fact the wire gives.
- :mod:`proxy.core.swap`: which placeholder may be swapped where (slots and their templates).
- :mod:`proxy.core.values`: every form of a real value the proxy looks for, written once.
- :mod:`proxy.core.finder`: where those forms occur in bytes (the automata behind every search).
- :mod:`proxy.core.scrub`: every channel back to the agent (bodies, SSE, WebSocket messages).
- :mod:`proxy.core.decode`: content-encodings, decoded with a bound.
- :mod:`proxy.core.http1`: HTTP/1.1 heads: what is refused, what is forwarded, in which form.
- :mod:`proxy.core.flow`: what was decided about one request, as its audit record will say.
"""
