"""Red team, seventeenth pass: the swap's slots, Basic credentials and the query swap, end to end,
against a real ``sandgate proxy`` in the first red team's world (its hostile HTTPS upstream, bound to
``rthostile``, receives the real key after a swap; ``rtquery`` has ``query: true`` and an
``X-Query-Key`` slot). Invariants: the real key only in its templated slot toward its bound host
(I1, I2), never back to the agent (I3), and anything ambiguous refused, not forwarded (I4).

Breaks (both I4, fixed on merging; no real key left its slot or its host in either):

- ``credential-header-by-underscore``: ``X-Api-Key: <placeholder>`` beside ``X_Api_Key: attacker``
  (either order; or a custom slot, ``X-Query-Key`` / ``X_Query_Key``). WSGI, CGI, PHP and Rack read
  both as ``HTTP_X_API_KEY``: two fields of one credential header, which is ``malformed_request``,
  but the swap compared names as written, and the upstream got the real key beside an
  agent-chosen second value. Fix: a slot's fields are counted with ``_`` read as ``-``; only the
  slot's own spelling is swapped.
- ``basic-after-a-tab``: ``Authorization: Basic<TAB>base64(u:<placeholder>)``: a lenient reader
  (Django REST framework's ``split()``) finds the placeholder, the strict decoder split at a space
  only and saw no Basic credentials: forwarded as it was, where the documented rule refuses Basic
  credentials that carry a placeholder and are not strict. Fix: a tab after the scheme is Basic
  credentials that are not valid (400).

Held (the helper's probes, end to end): Basic with the placeholder as user, password or both, ``ph:``,
``:ph``, ``ph:a:b``, ``bAsIc``, extra padding, a UTF-8 or NUL user (swapped and re-encoded); no
colon, ``a:b:ph``, ``a:ph:b``, a CR LF in the user, a no-break space after the scheme (forwarded
with the placeholder only); two spaces, missing padding, base64url, an extra token, ``, Bearer x``,
a Latin-1 byte, a second Authorization field (400); Proxy-Authorization dropped; an Authorization
field in a chunked request's trailers never forwarded; ``Connection: authorization`` drops the
swapped field. The query swap: repeated parameters, ``a;k=``, a fully percent-encoded placeholder,
the placeholder as name and value (only the value swapped), absolute-form targets; not swapped
where a parser would read another value (``a=1;k=ph``, ``ph+``, double encoding, ``k==ph``, a second
``?``, ``%26``, ``%3D``, ``%00``); a fragment refused. A value full of reserved characters swapped
into the query, Basic, Bearer or X-Api-Key and echoed back as JSON, HTML, percent- or form-encoded
text reached the agent as the placeholder or was refused (``secret_value_inbound``).
"""

from __future__ import annotations

import base64
import re

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, HOSTILE_NAME, QUERY, recv_all, tls_to
from tests.support.hostile import HostileServer, Request
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def send(proxy: ProxyProcess, hostile: HostileServer, *fields: str) -> tuple[bytes, list[Request]]:
    """A GET with ``fields`` in a tunnel to the hostile host: what the agent got, what the upstream got."""
    before = len(hostile.requests)
    s = tls_to(proxy, HOSTILE_NAME)
    lines = ["GET /rt17 HTTP/1.1", f"Host: {HOSTILE_NAME}", *fields, "Connection: close"]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return recv_all(s, 5), hostile.requests[before:]


def reason(reply: bytes) -> str | None:
    m = re.search(rb"(?i)\r\nx-sandgate-reason: *([^\r\n]*)", reply)
    return m.group(1).decode() if m else None


@pytest.mark.parametrize(
    "fields",
    [
        [f"X-Api-Key: {HOST.placeholder}", "X_Api_Key: attacker"],
        ["X_Api_Key: attacker", f"X-Api-Key: {HOST.placeholder}"],
        [f"X-Query-Key: {QUERY.placeholder}", "X_Query_Key: attacker"],
    ],
    ids=["hyphen-then-underscore", "underscore-then-hyphen", "custom-slot"],
)
def test_rt17_credential_header_by_underscore(rt: ProxyProcess, hostile: HostileServer, fields: list[str]) -> None:
    reply, got = send(rt, hostile, *fields)
    assert not got, f"forwarded: {got[0].raw_head!r}"
    assert reply.startswith(b"HTTP/1.1 400") and reason(reply) == "malformed_request", reply[:300]


def test_rt17_basic_after_a_tab(rt: ProxyProcess, hostile: HostileServer) -> None:
    reply, got = send(rt, hostile, f"Authorization: Basic\t{b64('u:' + HOST.placeholder)}")
    assert not got, f"forwarded: {got[0].raw_head!r}"
    assert reply.startswith(b"HTTP/1.1 400") and reason(reply) == "malformed_request", reply[:300]


def test_rt17_the_slot_alone_is_still_swapped(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The baseline both breaks stand beside: the slot's own spelling, alone, gets the real key."""
    reply, got = send(rt, hostile, f"X-Api-Key: {HOST.placeholder}")
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert [r.header("x-api-key") for r in got] == [HOST.real]
