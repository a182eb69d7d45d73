"""The Vault client resolves names through the nameservers only (issue: the proxy resolved through the
pod's /etc/hosts, which the kubelet mounts read-write into every container, the agent's included)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from proxy.secrets.nameservers import NameserverAdapter, resolve_name
from tests.conftest import needs_root
from tests.support.upstream import Seen

pytestmark = needs_root


def session() -> requests.Session:
    s = requests.Session()
    s.mount("https://", NameserverAdapter(5))
    return s


def test_an_agent_edited_etc_hosts_does_not_move_the_vault_client(
    upstreams: dict[str, Seen], pki: dict[str, Path]
) -> None:
    hosts = Path("/etc/hosts")
    original = hosts.read_text()
    try:
        # The agent points the Vault name at an address of its choosing.
        hosts.write_text(original.replace("127.0.0.10 vault.example.com", "127.0.0.6 vault.example.com"))
        r = session().get("https://vault.example.com:8200/v1/sys/health", verify=str(pki["ca"]), timeout=5)
    finally:
        hosts.write_text(original)
    assert r.status_code == 200
    seen = upstreams["vault-names"].requests[-1]
    assert seen["path"] == "/v1/sys/health" and seen["headers"]["host"] == "vault.example.com:8200"


def test_tls_still_verifies_the_name_not_the_address(pki: dict[str, Path], upstreams: dict[str, Seen]) -> None:
    # The certificate names vault.example.com; an IP URL to the same server must not verify.
    with pytest.raises(requests.exceptions.SSLError):
        session().get("https://127.0.0.10:8200/", verify=str(pki["ca"]), timeout=5)


@pytest.mark.parametrize(
    ("name", "address"),
    [("localhost", "127.0.0.1"), ("vault.localhost", "127.0.0.1"), ("127.0.0.10", "127.0.0.10"), ("[::1]", "::1")],
)
def test_loopback_names_and_literals_are_not_asked_of_anyone(name: str, address: str) -> None:
    assert resolve_name(name, 1) == address


def test_a_name_that_does_not_resolve_is_an_oserror() -> None:
    with pytest.raises(OSError, match="does not resolve"):
        resolve_name("nowhere.example.invalid", 2)
