"""resolve_authority: every authority source x agree/disagree x scheme x port x the forms a host
can take on the wire (A01, A02, A07, A08, A11, A12, A15, A16, B05, B08 and the forms no catalogue
lists: absolute-form targets, Unicode that UTS-46 would fold, IP literals)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.authority import Authority, ConnFacts, Refusal, parse_connect, resolve_authority
from proxy.policy.hosts import HostError, canonical_host, wire_host
from proxy.policy.model import Reason

API = "api.openai.com"
TUNNEL = ConnFacts(tls=True, connect=(API, 443), sni=API)  # regular mode, inside CONNECT api.openai.com:443
TUNNEL_8443 = ConnFacts(tls=True, connect=(API, 8443), sni=API)
PLAIN_TUNNEL = ConnFacts(tls=False, connect=(API, 80))  # CONNECT api.openai.com:80, then plain HTTP
TRANSPARENT = ConnFacts(tls=True, original=("198.18.0.9", 443), sni=API)
TRANSPARENT_PLAIN = ConnFacts(tls=False, original=("198.18.0.9", 80))
PROXY_PLAIN = ConnFacts(tls=False)  # regular mode, "GET http://host/ HTTP/1.1" to the proxy

FULLWIDTH = "".join("\uff0e" if c == "." else chr(ord(c) + 0xFEE0) for c in "api.openai.com")
IDEOGRAPHIC = "api\u3002openai\u3002com"  # ideographic full stops
KELVIN = "\u212a.example.com"  # KELVIN SIGN: str.lower() and UTS-46 both fold it onto "k"

OK = [
    # (conn, method, target, hosts) -> (host, port, forwarded target)
    (TUNNEL, "GET", "/v1/models", [API], (API, 443, "/v1/models")),
    (TUNNEL, "GET", "/v1/models?x=1", ["API.OpenAI.COM"], (API, 443, "/v1/models?x=1")),
    (TUNNEL, "GET", "/", [API + "."], (API, 443, "/")),
    (TUNNEL, "GET", "/", [API + ":443"], (API, 443, "/")),
    (TUNNEL, "GET", f"https://{API}/v1/models", [API], (API, 443, "/v1/models")),
    (TUNNEL, "GET", f"HTTPS://{API.upper()}:443/v1?q", [API], (API, 443, "/v1?q")),
    (TUNNEL, "GET", f"https://{API}", [API], (API, 443, "/")),
    (TUNNEL, "GET", f"https://{API}?q=1", [API], (API, 443, "/?q=1")),
    (TUNNEL, "OPTIONS", "*", [API], (API, 443, "*")),
    (TUNNEL_8443, "GET", "/", [f"{API}:8443"], (API, 8443, "/")),
    (TUNNEL_8443, "GET", f"https://{API}:8443/x", [f"{API}:8443"], (API, 8443, "/x")),
    (PLAIN_TUNNEL, "GET", "/", [API], (API, 80, "/")),
    (PLAIN_TUNNEL, "GET", f"http://{API}/x", [API], (API, 80, "/x")),
    (ConnFacts(tls=True, connect=("198.18.0.7", 443)), "GET", "/", ["198.18.0.7"], ("198.18.0.7", 443, "/")),
    (ConnFacts(tls=True, connect=("2001:db8::1", 443)), "GET", "/", ["[2001:DB8::1]"], ("2001:db8::1", 443, "/")),
    (TRANSPARENT, "GET", "/v1", [API], (API, 443, "/v1")),
    (TRANSPARENT, "GET", f"https://{API}/v1", [API], (API, 443, "/v1")),
    (ConnFacts(tls=True, original=("198.18.0.9", 8443), sni=API), "GET", "/", [f"{API}:8443"], (API, 8443, "/")),
    (ConnFacts(tls=True, original=("198.18.0.9", 443)), "GET", "/", ["198.18.0.9"], ("198.18.0.9", 443, "/")),
    (TRANSPARENT_PLAIN, "GET", "/", [API], (API, 80, "/")),
    (TRANSPARENT_PLAIN, "GET", "/", ["198.18.0.9"], ("198.18.0.9", 80, "/")),
    (PROXY_PLAIN, "GET", f"http://{API}/v1", [API], (API, 80, "/v1")),
    (PROXY_PLAIN, "GET", f"http://{API}:8080/v1", [f"{API}:8080"], (API, 8080, "/v1")),
]


@pytest.mark.parametrize(("conn", "method", "target", "hosts", "expected"), OK, ids=[f"ok-{i}" for i in range(len(OK))])
def test_agreeing_facts_give_one_authority_in_origin_form(
    conn: ConnFacts, method: str, target: str, hosts: list[str], expected: tuple[str, int, str]
) -> None:
    got = resolve_authority(conn, method, target, hosts)
    assert isinstance(got, Authority), got
    assert (got.host, got.port, got.target) == expected and got.tls == conn.tls


MISMATCH = Reason.AUTHORITY_MISMATCH
MALFORMED = Reason.MALFORMED_REQUEST
PROTOCOL = Reason.PROTOCOL_NOT_ALLOWED
REFUSED = [
    # issue 11, finding 1: the request line's authority was ignored
    ("absolute-https-elsewhere", TUNNEL, "GET", "https://attacker.test/v1/models", [API], MISMATCH),
    ("absolute-http-elsewhere", TUNNEL, "GET", "http://attacker.test/v1/models", [API], MISMATCH),
    ("absolute-other-port", TUNNEL, "GET", f"https://{API}:8443/v1/models", [API], MISMATCH),
    ("absolute-http-inside-tls", TUNNEL, "GET", f"http://{API}/v1/models", [API], MISMATCH),
    ("absolute-https-in-plain-tunnel", PLAIN_TUNNEL, "GET", f"https://{API}/", [API], MISMATCH),
    ("absolute-userinfo", TUNNEL, "GET", f"https://x@{API}/", [API], MALFORMED),
    ("absolute-userinfo-attacker", TUNNEL, "GET", f"https://{API}@attacker.test/", [API], MALFORMED),
    ("absolute-fullwidth", TUNNEL, "GET", f"https://{FULLWIDTH}/", [API], MALFORMED),
    ("absolute-pct-host", TUNNEL, "GET", "https://api%2eopenai.com/", [API], MALFORMED),
    ("absolute-ftp", TUNNEL, "GET", f"ftp://{API}/", [API], MALFORMED),
    ("absolute-transparent-elsewhere", TRANSPARENT, "GET", "https://attacker.test/", [API], MISMATCH),
    ("fragment", TUNNEL, "GET", "/v1#frag", [API], MALFORMED),
    ("relative-target", TUNNEL, "GET", "v1/models", [API], MALFORMED),
    ("non-ascii-target", TUNNEL, "GET", "/v1/é", [API], MALFORMED),
    ("asterisk-not-options", TUNNEL, "GET", "*", [API], MALFORMED),
    # issue 11, finding 2: Unicode folded onto the bound name
    ("host-fullwidth", TUNNEL, "GET", "/", [FULLWIDTH], MALFORMED),
    ("host-ideographic-dots", TUNNEL, "GET", "/", [IDEOGRAPHIC], MALFORMED),
    (
        "host-kelvin",
        ConnFacts(tls=True, connect=("k.example.com", 443), sni="k.example.com"),
        "GET",
        "/",
        [KELVIN],
        MALFORMED,
    ),
    ("host-cyrillic", TUNNEL, "GET", "/", ["\u0430pi.openai.com"], MALFORMED),
    ("sni-fullwidth", ConnFacts(tls=True, connect=(API, 443), sni=FULLWIDTH), "GET", "/", [API], MALFORMED),
    (
        "sni-transparent-kelvin",
        ConnFacts(tls=True, original=("198.18.0.9", 443), sni=KELVIN),
        "GET",
        "/",
        ["k.example.com"],
        MALFORMED,
    ),
    # Host header forms (A15)
    ("two-hosts", TUNNEL, "GET", "/", [API, API], MALFORMED),
    ("no-host", TUNNEL, "GET", "/", [], MALFORMED),
    ("empty-host", TUNNEL, "GET", "/", [""], MALFORMED),
    ("host-comma", TUNNEL, "GET", "/", [f"{API}, attacker.test"], MALFORMED),
    ("host-userinfo", TUNNEL, "GET", "/", [f"{API}@attacker.test"], MALFORMED),
    ("host-slash", TUNNEL, "GET", "/", [f"{API}/.attacker.test"], MALFORMED),
    ("host-hash", TUNNEL, "GET", "/", [f"{API}#@attacker.test"], MALFORMED),
    ("host-pct", TUNNEL, "GET", "/", ["api%2eopenai.com"], MALFORMED),
    ("host-trailing-space", TUNNEL, "GET", "/", [f"{API} "], MALFORMED),
    ("host-two-dots", TUNNEL, "GET", "/", [f"{API}.."], MALFORMED),
    ("host-nul", TUNNEL, "GET", "/", [f"{API}\x00"], MALFORMED),
    # Ports (A07)
    ("host-port-differs", TUNNEL, "GET", "/", [f"{API}:8443"], MISMATCH),
    ("host-port-padded", TUNNEL, "GET", "/", [f"{API}:0443"], MALFORMED),
    ("host-port-plus", TUNNEL, "GET", "/", [f"{API}:+443"], MALFORMED),
    ("host-port-huge", TUNNEL, "GET", "/", [f"{API}:65536"], MALFORMED),
    ("host-port-name", TUNNEL, "GET", "/", [f"{API}:https"], MALFORMED),
    ("host-no-port-on-8443", TUNNEL_8443, "GET", "/", [API], MISMATCH),
    ("transparent-port-differs", TRANSPARENT, "GET", "/", [f"{API}:8443"], MISMATCH),
    # Host vs CONNECT vs SNI (A11, A12)
    ("host-differs-from-connect", TUNNEL, "GET", "/", ["attacker.test"], MISMATCH),
    (
        "sni-differs-from-connect",
        ConnFacts(tls=True, connect=(API, 443), sni="attacker.test"),
        "GET",
        "/",
        [API],
        MISMATCH,
    ),
    ("no-sni-to-a-name", ConnFacts(tls=True, connect=(API, 443)), "GET", "/", [API], PROTOCOL),
    (
        "sni-ip",
        ConnFacts(tls=True, connect=("198.18.0.7", 443), sni="198.18.0.7"),
        "GET",
        "/",
        ["198.18.0.7"],
        MALFORMED,
    ),
    ("transparent-sni-vs-host", TRANSPARENT, "GET", "/", ["attacker.test"], MISMATCH),
    (
        "transparent-host-vs-sni",
        ConnFacts(tls=True, original=("198.18.0.9", 443), sni="attacker.test"),
        "GET",
        "/",
        [API],
        MISMATCH,
    ),
    ("transparent-no-sni", ConnFacts(tls=True, original=("198.18.0.9", 443)), "GET", "/", [API], PROTOCOL),
    (
        "transparent-ip-host-not-the-destination",
        ConnFacts(tls=True, original=("198.18.0.9", 443)),
        "GET",
        "/",
        ["198.18.0.10"],
        MISMATCH,
    ),
    ("transparent-plain-ip-not-the-destination", TRANSPARENT_PLAIN, "GET", "/", ["198.18.0.10"], MISMATCH),
    # CONNECT inside a tunnel or a transparent connection (A12 b)
    ("connect-in-tunnel", TUNNEL, "CONNECT", f"{API}:443", [API], PROTOCOL),
    ("connect-in-transparent", TRANSPARENT_PLAIN, "CONNECT", "attacker.test:443", ["attacker.test"], PROTOCOL),
    # Regular mode, no tunnel
    ("proxy-origin-form", PROXY_PLAIN, "GET", "/", [API], MALFORMED),
    ("proxy-https-without-connect", PROXY_PLAIN, "GET", f"https://{API}/", [API], PROTOCOL),
    ("proxy-host-differs", PROXY_PLAIN, "GET", f"http://{API}/", ["attacker.test"], MISMATCH),
    ("proxy-port-differs", PROXY_PLAIN, "GET", f"http://{API}:8080/", [API], MISMATCH),
]


@pytest.mark.parametrize(
    ("conn", "method", "target", "hosts", "reason"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_every_disagreement_or_unmapped_form_is_refused(
    conn: ConnFacts, method: str, target: str, hosts: list[str], reason: Reason
) -> None:
    got = resolve_authority(conn, method, target, hosts)
    assert isinstance(got, Refusal), got
    assert got.reason is reason, got


def test_a16_one_connection_serves_one_authority() -> None:
    assert isinstance(resolve_authority(TRANSPARENT, "GET", "/", [API], pinned=(API, 443)), Authority)
    other = ConnFacts(tls=True, original=("198.18.0.9", 443), sni="x.example.com")
    got = resolve_authority(other, "GET", "/", ["x.example.com"], pinned=(API, 443))
    assert isinstance(got, Refusal) and got.reason is MISMATCH


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("api.openai.com:443", (API, 443)),
        ("API.OPENAI.COM.:443", (API, 443)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("198.18.0.7:8443", ("198.18.0.7", 8443)),
        ("api.openai.com", MALFORMED),
        (f"{FULLWIDTH}:443", MALFORMED),
        (f"{IDEOGRAPHIC}:443", MALFORMED),
        ("\u212a.example.com:443", MALFORMED),
        ("api.openai.com:0443", MALFORMED),
        ("0x7f.1:443", MALFORMED),
        ("x@api.openai.com:443", MALFORMED),
        (":443", MALFORMED),
    ],
)
def test_connect_authority_is_ascii_canonical_with_a_port(target: str, expected: object) -> None:
    got = parse_connect(target)
    if isinstance(expected, Reason):
        assert isinstance(got, Refusal) and got.reason is expected
    else:
        assert got == expected


# -- properties ---------------------------------------------------------------------------------

LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", fullmatch=True)
NAMES = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
CONFUSABLE = st.sampled_from(["\uff0e", "\u3002", "\uff61", "\u212a", "\u0430", "\u0131", "\u017f", "\uff41", "\u00e9"])


@given(st.text(max_size=40))
def test_wire_host_output_is_always_canonical_ascii(raw: str) -> None:
    try:
        host = wire_host(raw)
    except HostError:
        return
    assert raw.isascii() and host.isascii() and canonical_host(host) == host


@given(NAMES, st.integers(min_value=0, max_value=30), CONFUSABLE)
def test_a_name_with_any_character_ascii_lacks_is_never_accepted(name: str, at: int, char: str) -> None:
    at %= len(name) + 1
    with pytest.raises(HostError):
        wire_host(name[:at] + char + name[at:])


HOSTS = st.one_of(NAMES, st.sampled_from([API, API.upper(), API + ".", "Api.OpenAI.com", API + ".."]))


@given(HOSTS, HOSTS, st.sampled_from([TUNNEL, TRANSPARENT]), st.booleans())
def test_a_request_is_served_only_for_the_host_every_fact_names(
    host: str, target_host: str, conn: ConnFacts, absolute: bool
) -> None:
    """Differential: whatever Host and target say, the authority returned is the connection's, and
    only when Host and target name it too (case and one trailing dot aside)."""
    target = f"https://{target_host}/x" if absolute else "/x"
    got = resolve_authority(conn, "GET", target, [host])

    def names_api(h: str) -> bool:
        return h.lower().removesuffix(".") == API

    agree = names_api(host) and (not absolute or names_api(target_host))
    if isinstance(got, Authority):
        assert agree and got.host == API and got.port == 443
    else:
        assert not agree
