"""A differential test on the real proxy (issue: key safety in every wire form): generated requests,
over a grammar of the forms attacks come in, go through a real sidecar to recording upstreams, and
an independent model says whether the real key may be delivered.

The oracle: a real value reaches an upstream ONLY when every authority fact (CONNECT authority, SNI,
Host, an absolute-form target's scheme, host and port) names the bound host and port, and the
placeholder stood exactly in a templated slot -- and then it IS delivered (the proxy is not merely
refusing everything). No response ever hands the agent a real value, in any encoding.

Bounded in CI (a few hundred examples); ``pytest --long`` runs thousands.
"""

from __future__ import annotations

import base64
import socket
import ssl
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import OPENAI, needs_root
from tests.support.leaks import encodings
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root

BOUND = "api.openai.com"
PH, REAL = OPENAI.placeholder, OPENAI.real

# Every spelling of a name that the wire may carry, and whether it IS the bound host there.
SAME = [BOUND, BOUND.upper(), "Api.OpenAI.Com", BOUND + "."]
CONFUSABLE = [
    "".join("\uff0e" if c == "." else chr(ord(c) + 0xFEE0) for c in BOUND),  # full-width
    BOUND.replace(".", "\u3002"),  # ideographic full stops
    "\u0430pi.openai.com",  # Cyrillic a
    "api.openai.com..",
    "api%2eopenai.com",
    "xn--pi-6kc.openai.com",  # the Cyrillic homograph as an A-label: another host
]
OTHERS = [
    "echo.example.com",
    "files.example.org",
    "attacker.test",
    "127.0.0.2",
    "[::1]",
    f"x@{BOUND}",
    f"{BOUND}@attacker.test",
]
HOSTS = st.sampled_from(SAME + CONFUSABLE + OTHERS)
PORTS = st.sampled_from([None, 443, 8443, 444, "0443"])


def is_bound(host: str, port: object) -> bool:
    return host.lower().removesuffix(".") == BOUND and port in (None, 443)


@dataclass(frozen=True)
class Slot:
    header: str
    value: str
    templated: bool  # the placeholder fills the slot's template exactly


SLOTS = st.sampled_from(
    [
        Slot("Authorization", f"Bearer {PH}", True),
        Slot("authorization", f"bearer {PH}", True),
        Slot("AUTHORIZATION", f"BEARER {PH}", True),
        Slot("Authorization", "Basic " + base64.b64encode(f"x-access-token:{PH}".encode()).decode(), True),
        Slot("Authorization", "Basic " + base64.b64encode(f"{PH}:".encode()).decode(), True),
        Slot("x-api-key", PH, True),
        Slot("X-Api-Key", PH, True),
        Slot("Authorization", f"Token {PH}", False),
        Slot("Authorization", PH, False),
        Slot("Authorization", f"Bearer {PH}x", False),
        Slot("Authorization", f"Bearer  {PH}", False),
        Slot("Authorization", f"Bearer {PH.upper()}", False),
        Slot("Cookie", f"session={PH}", False),
        Slot("X-Other", PH, False),
    ]
)


@dataclass(frozen=True)
class Request:
    connect: tuple[str, object]
    sni: str | None
    host_headers: tuple[str, ...]
    target_form: str  # "origin" | "https" | "http" | "asterisk"
    target_host: tuple[str, object]
    slot: Slot
    duplicate_slot: bool


def mostly(good: st.SearchStrategy[object], bad: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Five times in six the agreeing form: requests are near-valid, so that both outcomes (the key
    delivered, the key withheld) are exercised, and each disagreement is tried on its own."""
    return st.integers(0, 5).flatmap(lambda n: bad if n == 0 else good)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    connect = draw(mostly(st.just((BOUND, 443)), st.tuples(st.sampled_from([BOUND, "echo.example.com", "attacker.test"]),
                                                           st.sampled_from([443, 8443]))))  # fmt: skip
    sni = draw(
        mostly(st.sampled_from(SAME), st.one_of(st.none(), st.sampled_from(["echo.example.com", "attacker.test"])))
    )
    n_hosts = draw(mostly(st.just(1), st.sampled_from([0, 2])))
    host_headers = tuple(
        f"{h}:{p}" if p is not None else h
        for h, p in (draw(mostly(st.tuples(st.sampled_from(SAME), st.sampled_from([None, 443])), st.tuples(HOSTS, PORTS)))
                     for _ in range(n_hosts))  # type: ignore[misc]
    )  # fmt: skip
    return Request(
        connect=connect,  # type: ignore[arg-type]
        sni=sni,  # type: ignore[arg-type]
        host_headers=host_headers,
        target_form=draw(mostly(st.sampled_from(["origin", "https"]), st.sampled_from(["http", "asterisk"]))),  # type: ignore[arg-type]
        target_host=draw(
            mostly(st.tuples(st.sampled_from(SAME), st.sampled_from([None, 443])), st.tuples(HOSTS, PORTS))
        ),  # type: ignore[arg-type]
        slot=draw(mostly(SLOTS.filter(lambda slot: slot.templated), SLOTS)),  # type: ignore[arg-type]
        duplicate_slot=draw(mostly(st.just(False), st.just(True))),  # type: ignore[arg-type]
    )


def model_delivers(r: Request) -> bool:
    """When the real key may (and must) reach api.openai.com: every fact names it, on 443, over TLS,
    and the placeholder fills a template in exactly one credential header."""
    host, port = r.connect
    if host != BOUND or port != 443 or r.sni is None or not is_bound(r.sni, None):
        return False
    if len(r.host_headers) != 1:
        return False
    h, _, p = r.host_headers[0].rpartition(":") if r.host_headers[0].count(":") == 1 else (r.host_headers[0], "", "")
    if not is_bound(h, int(p) if p.isdigit() and not p.startswith("0") else (p or None)):
        return False
    if r.target_form in ("http", "asterisk"):
        return False
    if r.target_form == "https" and not is_bound(*r.target_host):
        return False
    return r.slot.templated and not r.duplicate_slot


def target(r: Request, marker: str) -> tuple[str, str]:
    path = f"/diff/{marker}"
    host, port = r.target_host
    authority = f"{host}:{port}" if port is not None else host
    if r.target_form == "origin":
        return "GET", path
    if r.target_form == "asterisk":
        return "OPTIONS", "*"
    return "GET", f"{r.target_form}://{authority}{path}"


def send(proxy: ProxyProcess, r: Request, marker: str) -> bytes:
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    host, port = r.connect
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    if not raw.recv(4096).startswith(b"HTTP/1.1 200"):
        raw.close()
        return b""
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    ctx.check_hostname = False  # the agent may be lying about names; we want to see what the proxy does
    ctx.verify_mode = ssl.CERT_NONE
    try:
        s = ctx.wrap_socket(raw, server_hostname=r.sni)
    except (ssl.SSLError, OSError):
        raw.close()
        return b""
    method, tgt = target(r, marker)
    lines = [f"{method} {tgt} HTTP/1.1", *(f"Host: {h}" for h in r.host_headers), f"{r.slot.header}: {r.slot.value}"]
    if r.duplicate_slot:
        lines.append(f"{r.slot.header}: {r.slot.value}")
    lines.append("Connection: close")
    received = b""
    try:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        while chunk := s.recv(65536):
            received += chunk
    except (ssl.SSLError, OSError):
        pass
    s.close()
    return received


def delivered(upstreams: dict[str, Seen], marker: str) -> list[dict[str, object]]:
    return [req for seen in upstreams.values() if isinstance(seen, Seen) for req in seen.requests
            if marker in str(req.get("path", ""))]  # fmt: skip


def carries_real(seen: dict[str, object]) -> bool:
    """The real value in what an upstream received: raw, or inside Basic credentials."""
    headers = seen.get("headers") or {}
    texts = [str(v) for v in headers.values()] + [str(seen.get("path"))]  # type: ignore[attr-defined]
    for v in list(texts):
        scheme, _, token = v.partition(" ")
        if scheme.lower() == "basic":
            texts.append(base64.b64decode(token + "==").decode(errors="replace"))
    return any(REAL in t for t in texts)


def examples(request: pytest.FixtureRequest) -> int:
    return 3000 if request.config.getoption("--long") else 250


@pytest.fixture
def budget(request: pytest.FixtureRequest) -> int:
    return examples(request)


def test_a_real_key_goes_only_where_every_fact_agrees_and_never_back(
    proxy: ProxyProcess, upstreams: dict[str, Seen], budget: int
) -> None:
    outcomes = {"delivered": 0, "withheld": 0}

    @settings(max_examples=budget, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(requests())
    def check(r: Request) -> None:
        outcomes["delivered" if model_delivers(r) else "withheld"] += 1
        marker = uuid.uuid4().hex
        received = send(proxy, r, marker)
        text = received.decode("latin-1")
        assert not [f for f in encodings(REAL) if f in text], f"a real value came back to the agent for {r}"
        got = delivered(upstreams, marker)
        with_key = [g for g in got if carries_real(g)]
        if model_delivers(r):
            assert with_key and received.startswith(b"HTTP/1.1 200"), (
                f"the key was not delivered for {r}: {received[:200]!r}"
            )
            assert all(g.get("upstream") == "api" for g in with_key)
        else:
            assert not with_key, f"the real key was delivered for {r}"

    check()
    assert outcomes["delivered"] >= budget // 20 and outcomes["withheld"] >= budget // 4, outcomes
