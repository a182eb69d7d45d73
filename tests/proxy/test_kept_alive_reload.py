"""One kept-alive connection across a reload or a rotation: its next request is decided, and its
answer scrubbed, by what is served when that request comes, not by what its connection's first
request was given. (A connection reuses its last request's decision and scrubbing while nothing
they depend on changed: proxy.datapath.exchange, ``_decide`` and ``_choose_scrubbing``.)"""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

from tests.proxy.test_redteam import HOSTILE2_NAME, HOSTILE_NAME, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import PH, _Keeper, _policy, world  # noqa: F401 (fixtures)
from tests.support.clients import Reply, curl, parse_http, tunnel
from tests.support.proxyproc import ProxyProcess
from tests.support.wait import wait_for

# (red team 37's upstream: /rt37/keep stores the credential it is given, /rt37/poll answers with the
# last one stored, once released: here at once.)


def _ask(s: ssl.SSLSocket, path: str, *, key: bool = False) -> Reply:
    """One request on the kept-alive connection ``s``, and its whole answer (the connection stays open)."""
    auth = f"Authorization: Bearer {PH}\r\n" if key else ""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\n{auth}\r\n".encode())
    buf = b""
    while True:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if len(rest) >= length:
                return parse_http(buf.decode(errors="replace"))
        chunk = s.recv(65536)
        assert chunk, f"the proxy closed the connection: {buf!r}"
        buf += chunk


def test_a_reload_that_takes_the_host_away_refuses_the_next_request_on_a_kept_alive_connection(
    world: tuple[ProxyProcess, _Keeper, Path],  # noqa: F811
) -> None:
    p, keeper, key = world
    keeper.release.set()
    s = tunnel(p.port, f"{HOSTILE_NAME}:443", HOSTILE_NAME, p.ca)
    try:
        assert _ask(s, "/rt37/keep", key=True).status == 200
        assert _ask(s, "/rt37/keep", key=True).status == 200  # (the same request again: the decision reused)
        assert keeper.kept[-1] == key.read_text()
        given = len(keeper.kept)
        before = p.metric("sandgate_policy_reloads_total", result="success")
        p.policy.write_text(_policy(key, HOSTILE2_NAME, name="elsewhere").replace(f"{{host: {HOSTILE_NAME}}}, ", ""))
        wait_for(lambda: p.metric("sandgate_policy_reloads_total", result="success") > before)
        reply = _ask(s, "/rt37/keep", key=True)
        assert reply.status == 403 and reply.headers.get("x-sandgate-reason") == "host_not_allowed", reply
        assert len(keeper.kept) == given
    finally:
        s.close()


def test_a_value_rotated_in_is_scrubbed_from_the_next_answer_on_a_kept_alive_connection(
    world: tuple[ProxyProcess, _Keeper, Path],  # noqa: F811
) -> None:
    """The connection's first answers were scrubbed of the value then held; the upstream, given
    the rotated value on another connection, hands it back on this one."""
    p, keeper, key = world
    keeper.release.set()
    s = tunnel(p.port, f"{HOSTILE_NAME}:443", HOSTILE_NAME, p.ca)
    try:
        old = key.read_text()
        assert _ask(s, "/rt37/keep", key=True).status == 200
        reply = _ask(s, "/rt37/poll")
        assert reply.status == 200 and old not in reply.body and "kept" in reply.body, reply
        new = "rtREALb" + secrets.token_hex(16)
        key.write_text(new)

        def rotated() -> bool:
            curl(p.url, p.ca, f"https://{HOSTILE_NAME}/rt37/keep", "-H", f"Authorization: Bearer {PH}")
            return keeper.kept[-1] == new

        wait_for(rotated)
        reply = _ask(s, "/rt37/poll")
        assert reply.status == 200 and "kept" in reply.body, reply
        assert new not in reply.body, reply
    finally:
        s.close()
