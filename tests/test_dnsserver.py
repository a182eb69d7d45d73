"""The DNS server of Sandgate's local worlds (sandgate/dnsserver.py): the sandbox's sink resolver and
the private networks' name table, message by message with dnspython; the sandbox tests exercise the
sink through real getaddrinfo calls."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype

from sandgate.dnsserver import answer, sink, table

SINK = "198.51.100.1"


def ask(name: str, rdtype: str, lookup: object) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    q.id = 7
    reply = answer(q.to_wire(), lookup)  # type: ignore[arg-type]
    assert reply is not None
    return dns.message.from_wire(reply)


def addresses(reply: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in reply.answer for r in rrset]


def test_every_a_query_is_the_sink() -> None:
    for name in ("api.openai.com", "exfil-c2VjcmV0.attacker.test"):
        reply = ask(name, "A", sink(SINK))
        assert reply.id == 7 and reply.rcode() == dns.rcode.NOERROR and addresses(reply) == [SINK]


def test_other_types_get_an_empty_answer_from_the_sink() -> None:
    for rdtype in ("AAAA", "TXT", "MX"):
        reply = ask("api.openai.com", rdtype, sink(SINK))
        assert reply.rcode() == dns.rcode.NOERROR and addresses(reply) == []


def test_the_table_answers_its_names_by_family_and_nothing_else() -> None:
    names = table({"api.openai.com": "127.0.0.2", "v6.example.com": "::1"})
    assert addresses(ask("API.openai.com", "A", names)) == ["127.0.0.2"]
    assert addresses(ask("api.openai.com", "AAAA", names)) == []
    assert addresses(ask("v6.example.com", "AAAA", names)) == ["::1"]
    assert ask("attacker.test", "A", names).rcode() == dns.rcode.NXDOMAIN


def test_responses_and_garbage_get_no_reply() -> None:
    q = dns.message.make_query("x.test", "A")
    response = answer(q.to_wire(), sink(SINK))
    assert response is not None
    assert answer(response, sink(SINK)) is None  # not a query: never echo, never loop
    assert answer(b"\x00\x01garbage", sink(SINK)) is None
