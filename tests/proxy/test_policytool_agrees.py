"""``sandgate policy test`` says what the running proxy does (docs/policy.md: "Runs each case's
request through the proxy's own decision and swap code"): generated requests go through a real
sidecar, and the offline simulation of the same request must give the same decision, reason and
swap.

Red team 63 found it judging a request by its URL alone: a Host field naming another allowed host,
userinfo, ``Upgrade: h2c`` and ``Content-Length: abc`` were "allowed" where the proxy refused them,
and ``Authorization: "Bearer <placeholder> "`` was "not swapped" where the proxy swapped the key in
(the parser strips the blanks around a field value): a policy repository's CI asserting "no key
here" passed while the proxy sent it.
"""

from __future__ import annotations

import base64
import socket
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.policy.load import parse_policy
from proxy.policytool import simulate
from tests.conftest import ALL_SECRETS, MAIN_POLICY, MAPS, OPENAI, needs_root
from tests.support.clients import raw_request, tunnel
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root

BOUND, OTHER, BLOCKED = "api.openai.com", "echo.example.com", "blocked.test"
# (scheme, host, port) of a URL: the bound host on its ports (plain HTTP too), hosts allowed where
# another secret is bound or none is, and one outside the allowlist
DESTINATIONS = [("https", BOUND, 443), ("https", BOUND, 443), ("https", BOUND, 8443), ("http", BOUND, 80), ("https", OTHER, 443),
                ("https", "x.example.com", 443), ("https", "files.example.org", 443), ("https", BLOCKED, 443)]  # fmt: skip
SECRETS = {s.name: s for s in ALL_SECRETS}


@dataclass(frozen=True)
class Req:
    method: str
    url: tuple[str, str, int]
    host_fields: tuple[str, ...] | None  # None: the URL's authority, as clients write it
    credentials: tuple[tuple[str, str], ...]  # (field name, value) of fields that carry placeholders
    query: str  # "" or "key=<placeholder>"
    upgrade: str | None
    connection_upgrade: bool
    content_length: str | None
    chunked: bool

    @property
    def authority(self) -> str:
        scheme, host, port = self.url
        return host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"

    @property
    def fields(self) -> list[tuple[str, str]]:
        out = list(self.credentials)
        out += [("Host", h) for h in self.host_fields or ()]
        out += [("Upgrade", self.upgrade)] if self.upgrade else []
        out += [("Connection", "upgrade")] if self.connection_upgrade else []
        out += [("Content-Length", self.content_length)] if self.content_length is not None else []
        out += [("Transfer-Encoding", "chunked")] if self.chunked else []
        return out


_BLANKS = st.sampled_from(["", " ", "\t", "  "])
_HOST_FIELDS = st.one_of(
    st.none(),
    st.none(),
    st.lists(st.sampled_from([BOUND, BOUND.upper(), f"{BOUND}:443", f"{BOUND}:8443", f"{BOUND}:80", OTHER, "",
                              "u@" + BOUND, "x.example.com"]), min_size=1, max_size=2).map(tuple),
)  # fmt: skip


@st.composite
def credential(draw: st.DrawFn) -> tuple[str, str]:
    ph = SECRETS[draw(st.sampled_from(["openai", "openai", "github", "maps"]))].placeholder
    name = draw(st.sampled_from(["Authorization"] * 3 + ["authorization", "X-Api-Key", "X_Api_Key", "X-Other"]))
    shape = draw(st.sampled_from(["Bearer {}"] * 3 + ["bearer {}", "{}", "Basic", "token {}", "Bearer x{}"]))
    value = base64.b64encode(f"user:{ph}".encode()).decode() if shape == "Basic" else shape.format(ph)
    value = "Basic " + value if shape == "Basic" else value
    return name, draw(_BLANKS) + value + draw(_BLANKS)


@st.composite
def requests(draw: st.DrawFn) -> Req:
    upgrade = draw(st.sampled_from([None] * 6 + ["h2c", "websocket"]))
    query = draw(st.sampled_from(["", "", f"key={MAPS.placeholder}", f"key={OPENAI.placeholder}"]))
    return Req(
        method=draw(
            st.sampled_from(["GET", "POST", "DELETE", "TRACE", "PATCH", "OPTIONS", "HEAD", "CONNECT", "PURGE", "FOO"])
        ),
        url=draw(st.sampled_from(DESTINATIONS)),
        host_fields=draw(_HOST_FIELDS),
        credentials=tuple(draw(st.lists(credential(), max_size=2))),
        query=query,
        upgrade=upgrade,
        # (a WebSocket handshake the proxy lets through would need an upstream that takes it)
        connection_upgrade=upgrade == "h2c" and draw(st.booleans()),
        content_length=draw(st.sampled_from([None] * 8 + ["0", "abc", "-1", "0, 0"])),
        chunked=draw(st.integers(0, 7)) == 0,
    )


@st.composite
def swapping(draw: st.DrawFn) -> Req:
    """A request the proxy swaps: openai's placeholder in one of its slots (blanks around it), to
    its bound host."""
    slot = draw(st.sampled_from(["Authorization", "X-Api-Key"]))
    value = draw(_BLANKS) + ("Bearer " if slot == "Authorization" else "") + OPENAI.placeholder + draw(_BLANKS)
    url = draw(st.sampled_from(DESTINATIONS[:3]))
    return Req(draw(st.sampled_from(["GET", "POST"])), url, None, ((slot, value),), "", None, False, None, False)


def through_the_proxy(proxy: ProxyProcess, upstreams: dict[str, Seen], r: Req) -> tuple[str, str | None, list[str]]:
    """(decision, reason, swapped) as the running proxy acted on ``r``."""
    marker = uuid.uuid4().hex
    scheme, host, port = r.url
    origin = f"/v1/{marker}" + (f"?{r.query}" if r.query else "")
    target = origin if scheme == "https" else f"http://{r.authority}{origin}"
    lines = [f"{r.method} {target} HTTP/1.1"]
    if r.host_fields is None:
        lines.append(f"Host: {r.authority}")
    lines += [f"{n}: {v}" for n, v in r.fields]
    body = b"0\r\n\r\n" if r.chunked and r.content_length is None else b""
    if scheme == "https":
        sock: socket.socket = tunnel(proxy.port, f"{host}:{port}", host, proxy.ca)
    else:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    reply = raw_request(sock, ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode() + body)
    seen = [q for s in upstreams.values() if isinstance(s, Seen) for q in s.requests if marker in str(q.get("path"))]
    if reply.reason is not None:
        return "denied", reply.reason, []
    assert 200 <= reply.status < 300 and seen, (reply.status, reply.body[:200])
    texts = [str(v) for v in dict(seen[-1].get("headers") or {}).values()] + [str(seen[-1].get("path"))]
    for text in list(texts):
        scheme, _, token = text.partition(" ")
        if scheme.lower() == "basic":
            texts.append(base64.b64decode(token + "=" * (-len(token) % 4)).decode(errors="replace"))
    return "allowed", None, sorted(s.name for s in ALL_SECRETS if any(s.real in t for t in texts))


def test_policy_test_decides_and_swaps_as_the_running_proxy(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    policy = parse_policy(MAIN_POLICY)
    outcomes: dict[str, int] = {}

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(st.one_of(swapping(), requests()))
    def check(r: Req) -> None:
        scheme, _, _ = r.url
        url = f"{scheme}://{r.authority}/v1/x" + (f"?{r.query}" if r.query else "")
        decision, swapped, _ = simulate(policy, r.method, url, r.fields)
        offline = (decision.verdict.value, decision.reason.value if decision.reason else None, sorted(swapped))
        live = through_the_proxy(proxy, upstreams, r)
        assert offline == live, f"policy test says {offline}, the proxy did {live}, for {r}"
        outcomes[live[1] or f"allowed {live[2]}"] = outcomes.get(live[1] or f"allowed {live[2]}", 0) + 1

    check()
    # (the generated requests reach the outcomes that matter: a swap, none, and the head's refusals)
    for outcome in ("allowed ['openai']", "authority_mismatch", "malformed_request", "protocol_not_allowed"):
        assert outcomes.get(outcome, 0) >= 3, outcomes
    print(outcomes)


@pytest.mark.parametrize(
    ("fields", "url", "expected"),
    [
        ([("Host", OTHER)], f"https://{BOUND}/v1/x", ("denied", "authority_mismatch")),
        ([], f"https://u:p@{BOUND}/v1/x", ("denied", "malformed_request")),
        ([("Upgrade", "h2c"), ("Connection", "upgrade")], f"https://{BOUND}/v1/x", ("denied", "protocol_not_allowed")),
        ([("Content-Length", "abc")], f"https://{BOUND}/v1/x", ("denied", "malformed_request")),
        ([("X-Api-Key", "a\r\nb")], f"https://{BOUND}/v1/x", ("denied", "malformed_request")),
        ([("Authorization", f"Bearer {OPENAI.placeholder} ")], f"https://{BOUND}/v1/x", ("allowed", None)),
        (
            [("X-Note", "café"), ("Authorization", f"Bearer {OPENAI.placeholder}")],
            f"https://{BOUND}/",
            ("allowed", None),
        ),
    ],
    ids=[
        "host-field-names-another-host",
        "userinfo",
        "h2c",
        "content-length-abc",
        "control-in-a-value",
        "blank-after",
        "utf-8-in-a-value",
    ],
)
def test_rt63_policy_test_judges_the_head_as_the_proxy_does(
    fields: list[tuple[str, str]], url: str, expected: tuple[str, str | None]
) -> None:
    decision, swapped, _ = simulate(parse_policy(MAIN_POLICY), "GET", url, fields)
    assert (decision.verdict.value, decision.reason.value if decision.reason else None) == expected
    if expected[0] == "allowed":
        assert swapped == ["openai"], "the proxy strips the blanks around a field value, and swaps"
