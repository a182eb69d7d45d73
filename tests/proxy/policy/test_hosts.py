"""The one host canonicaliser (A01, A02, A04, A07, A08)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.policy.hosts import HostError, canonical_host, split_authority


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("api.openai.com", "api.openai.com"),
        ("API.OpenAI.COM", "api.openai.com"),
        ("api.openai.com.", "api.openai.com"),
        ("тест.example.com", "xn--e1aybc.example.com"),
        ("xn--e1aybc.example.com", "xn--e1aybc.example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[2001:DB8::0001]", "2001:db8::1"),
    ],
)
def test_a01_a02_a04_canonical_forms(raw: str, canonical: str) -> None:
    assert canonical_host(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "", "api.openai.com..", ".api.openai.com", "api..openai.com", "api.openai.com ", "api openai.com",
        "api.openai.com@attacker.test", "api.openai.com/x", "api%2eopenai.com", "a\x00b.com", "a\tb.com",
        "xn--", "xn--a.com", "xn--zzzz.example", "-bad.example.com", "a" * 64 + ".com",
        "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "256.0.0.1",
        "[fe80::1%eth0]", "[::1", "*.example.com",
    ],
)  # fmt: skip
def test_a02_a04_a08_invalid_hosts_are_rejected(raw: str) -> None:
    with pytest.raises(HostError):
        canonical_host(raw)


def test_a04_homograph_never_equals_the_ascii_name() -> None:
    assert canonical_host("\u0430pi.openai.com") == "xn--pi-6kc.openai.com" != "api.openai.com"


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("api.openai.com", ("api.openai.com", None)),
        ("api.openai.com:443", ("api.openai.com", 443)),
        ("[::1]:8443", ("[::1]", 8443)),
    ],
)
def test_a07_split_authority(authority: str, expected: tuple[str, int | None]) -> None:
    assert split_authority(authority) == expected


@pytest.mark.parametrize(
    "authority", ["h:00443", "h:+443", "h:443 ", "h:65536", "h:-1", "h:0", "h:https", "h:", "::1:443", "[::1]x"]
)
def test_a07_malformed_ports_are_rejected(authority: str) -> None:
    with pytest.raises(HostError):
        split_authority(authority)


@given(st.text(max_size=80))
def test_canonicaliser_is_idempotent_and_total(raw: str) -> None:
    """Any input either fails with HostError or gives a fixed point: canonicalising twice changes nothing."""
    try:
        once = canonical_host(raw)
    except HostError:
        return
    assert canonical_host(once) == once
    assert once == once.lower() and not once.endswith(".")


@given(
    st.from_regex(r"[a-z][a-z0-9]{0,9}(\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?)*\.(com|org|dev)", fullmatch=True).filter(
        lambda n: all(label[2:4] != "--" for label in n.split("."))  # "ab--" labels are reserved (IDNA): refused
    ),
    st.randoms(),
)
def test_a20_case_variants_have_one_canonical_form(name: str, rnd: object) -> None:
    variant = "".join(c.upper() if rnd.random() < 0.5 else c for c in name)  # type: ignore[attr-defined]
    assert canonical_host(variant) == canonical_host(name + ".") == name
