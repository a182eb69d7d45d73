"""The sandbox resolver's answers (sandgate/sandbox_dns.py), message by message, with mitmproxy's
DNS codec on both sides; the sandbox tests exercise it through real getaddrinfo calls."""

from __future__ import annotations

import ipaddress

from mitmproxy import dns
from mitmproxy.net.dns import response_codes, types

from sandgate.sandbox_dns import answer

SINK = "198.51.100.1"


def query(name: str, qtype: int) -> bytes:
    return dns.DNSMessage(
        id=7, query=True, op_code=0, authoritative_answer=False, truncation=False, recursion_desired=True,
        recursion_available=False, reserved=0, response_code=0,
        questions=[dns.Question(name, qtype, 1)], answers=[], authorities=[], additionals=[],
    ).packed  # fmt: skip


def test_every_a_query_is_the_sink() -> None:
    for name in ("api.openai.com", "exfil-c2VjcmV0.attacker.test"):
        reply = dns.DNSMessage.unpack(answer(query(name, types.A), SINK) or b"")
        assert reply.id == 7 and not reply.query and reply.response_code == response_codes.NOERROR
        assert [a.ipv4_address for a in reply.answers] == [ipaddress.IPv4Address(SINK)]


def test_other_types_get_an_empty_answer() -> None:
    for qtype in (types.AAAA, types.TXT, types.MX):
        reply = dns.DNSMessage.unpack(answer(query("api.openai.com", qtype), SINK) or b"")
        assert reply.response_code == response_codes.NOERROR and reply.answers == []


def test_responses_and_garbage_get_no_reply() -> None:
    response = answer(query("x.test", types.A), SINK)
    assert response is not None
    assert answer(response, SINK) is None  # not a query: never echo, never loop
    assert answer(b"\x00\x01garbage", SINK) is None
