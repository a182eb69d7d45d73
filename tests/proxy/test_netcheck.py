"""Which addresses the sidecar may dial (A08, A09, C13)."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.netcheck import AddressPolicy, is_private


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1", "::1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "fd00::1", "169.254.169.254", "fd00:ec2::254",
        "fe80::1", "100.64.0.1", "224.0.0.1", "255.255.255.255", "0.0.0.0", "::", "198.18.0.1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
        "2002:a9fe:a9fe::1", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "64:ff9b:1::1",
    ],
)  # fmt: skip
def test_a09_non_public_addresses_are_private(addr: str) -> None:
    assert is_private(ipaddress.ip_address(addr))


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_are_dialable(addr: str) -> None:
    assert AddressPolicy().permitted(ipaddress.ip_address(addr))


def test_allow_private_opens_exactly_the_given_ranges() -> None:
    p = AddressPolicy(["10.20.0.0/16"])
    assert p.permitted(ipaddress.ip_address("10.20.3.4"))
    assert p.permitted(ipaddress.ip_address("::ffff:10.20.3.4"))
    assert not p.permitted(ipaddress.ip_address("10.21.0.1"))
    assert not p.permitted(ipaddress.ip_address("169.254.169.254"))
