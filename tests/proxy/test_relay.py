"""The upstream relay (proxy/relay.py) on its own, and a real proxy that reaches upstreams only
through it, as it does inside a `sandgate run` sandbox."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from proxy.netcheck import AddressPolicy
from proxy.relay import Relay, RelayError, resolve_via_relay
from sandgate.run import _RelayThread
from tests.conftest import MAIN_POLICY, OPENAI, needs_root
from tests.support.clients import curl
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root


@pytest.fixture
def relay() -> Iterator[tuple[Relay, tuple[str, int]]]:
    r = Relay("127.0.0.1", [443], AddressPolicy(["127.0.0.0/8"]), exact=[("api.openai.com", 8443)])
    t = _RelayThread(r, "127.0.0.1")
    addr = t.start_relay(0)
    yield r, addr
    t.stop()


def ask(addr: tuple[str, int], head: str, source: str = "127.0.0.1") -> bytes:
    with socket.socket() as s:
        s.settimeout(5)
        s.bind((source, 0))
        s.connect(addr)
        s.sendall(head.encode())
        try:
            return s.recv(4096)
        except ConnectionResetError:
            return b""  # closed with data unread: nothing answered


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("example.com:443", b"400"),  # a name: the relay never resolves for a tunnel
        ("10.1.2.3:443", b"403"),  # private, not in --allow-private
        ("169.254.169.254:443", b"403"),  # link-local metadata
        ("127.0.0.2:22", b"403"),  # a port the policy does not use
        ("127.0.0.2:8443", b"403"),  # the exact destination is the name, not its address
    ],
)
def test_refused_tunnels(relay: tuple[Relay, tuple[str, int]], target: str, status: bytes) -> None:
    r, addr = relay
    reply = ask(addr, f"CONNECT {target} HTTP/1.1\r\n\r\n")
    assert reply.split(b" ")[1] == status, reply
    assert r.tunnels == 0


def test_tunnel_to_a_checked_address_and_to_the_exact_destination(
    relay: tuple[Relay, tuple[str, int]], upstreams: dict[str, Seen]
) -> None:
    r, addr = relay
    assert ask(addr, "CONNECT 127.0.0.2:443 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert ask(addr, "CONNECT api.openai.com:8443 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert r.tunnels == 2


def test_only_the_sandbox_address_is_served(relay: tuple[Relay, tuple[str, int]]) -> None:
    r, addr = relay
    assert ask(addr, "CONNECT 127.0.0.2:443 HTTP/1.1\r\n\r\n", source="127.0.0.9") == b""
    assert r.refused == 1 and r.tunnels == 0


def test_resolve(relay: tuple[Relay, tuple[str, int]]) -> None:
    _, addr = relay
    assert asyncio.run(resolve_via_relay(addr, "api.openai.com")) == ["127.0.0.2"]
    with pytest.raises(RelayError, match="could not resolve"):
        asyncio.run(resolve_via_relay(addr, "nothing.invalid"))


def test_proxy_behind_the_relay_swaps_pins_and_still_refuses_private_addresses(
    make_proxy: Callable[..., ProxyProcess], relay: tuple[Relay, tuple[str, int]], upstreams: dict[str, Seen]
) -> None:
    """The proxy resolves through the relay and sends it CONNECT <checked IP> (the relay refuses
    names, so a 200 proves the pin); an allowed name resolving to a private address is still
    refused by the proxy itself with private_address, before any tunnel."""
    r, addr = relay
    p = make_proxy(MAIN_POLICY, "--upstream-relay", f"{addr[0]}:{addr[1]}")  # 127.0.0.0/8 allowed, 10/8 not
    ok = curl(p.url, p.ca, "https://api.openai.com/v1/relayed", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert ok.status == 200, ok
    assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {OPENAI.real}"
    assert r.tunnels == 1
    private = curl(p.url, p.ca, "https://internal.example.com/")
    assert private.status == 403 and private.headers.get("x-sandgate-reason") == "private_address"
    assert r.tunnels == 1
