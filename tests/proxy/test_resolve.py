"""The sidecar's resolver: asks the nameservers and keeps an answer exactly as long as its TTL says."""

from __future__ import annotations

import asyncio
import socket

import pytest

from proxy.datapath.resolve import NameserverResolver
from sandgate.dnsserver import DnsServer, table


def free_udp_and_tcp_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class World:
    def __init__(self, ttl: int) -> None:
        self.hosts = {"api.example.test": "198.18.0.1"}
        self.queries: list[bytes] = []
        self.port = free_udp_and_tcp_port()
        self.server = DnsServer(lambda n, t: table(self.hosts)(n, t), port=self.port, on_query=self.queries.append,
                                ttl=ttl)  # fmt: skip

    def resolver(self) -> NameserverResolver:
        return NameserverResolver(timeout=2, nameserver=("127.0.0.1", self.port))


@pytest.fixture
def world(request: pytest.FixtureRequest) -> World:
    w = World(getattr(request, "param", 60))
    request.addfinalizer(w.server.close)
    return w


@pytest.mark.parametrize("world", [2], indirect=True)
async def test_an_answer_is_reused_for_its_ttl_and_asked_again_after(world: World) -> None:
    r = world.resolver()
    assert await r.resolve("api.example.test") == ["198.18.0.1"]
    asked = len(world.queries)
    assert asked == 2  # A and AAAA
    world.hosts["api.example.test"] = "198.18.0.2"
    assert await r.resolve("API.example.test") == ["198.18.0.1"]  # within the TTL (names are case-blind)
    assert len(world.queries) == asked
    await asyncio.sleep(2.2)
    assert await r.resolve("api.example.test") == ["198.18.0.2"]  # expired: asked again
    assert len(world.queries) > asked


@pytest.mark.parametrize("world", [0], indirect=True)
async def test_a_zero_ttl_answer_is_never_kept(world: World) -> None:
    r = world.resolver()
    assert await r.resolve("api.example.test") == ["198.18.0.1"]
    world.hosts["api.example.test"] = "198.18.0.3"  # a rebinding attempt: the next dial must see it
    assert await r.resolve("api.example.test") == ["198.18.0.3"]


async def test_a_caller_changing_its_list_does_not_change_the_kept_answer(world: World) -> None:
    r = world.resolver()
    first = await r.resolve("api.example.test")
    first.append("203.0.113.66")
    assert await r.resolve("api.example.test") == ["198.18.0.1"]
