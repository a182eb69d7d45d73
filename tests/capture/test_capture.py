"""`sandgate capture` in real network namespaces: rules in force and verified, idempotent, and a
capture that cannot be put in force ends in a non-zero exit (never a half-configured pod).

Each test gets a namespace with a veth (198.18.0.1/24, 2001:2::1/64) so the probe's destination is
routable; REDIRECT keeps the probe on loopback, and the DROP keeps everything else inside.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root

pytestmark = needs_root

PROBES = ["--probe-v4", "198.18.0.99", "--probe-v6", "2001:2::99"]


class Netns:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name, self.peer = f"sg-cap-{tag}", f"sg-cpu-{tag}"
        for ns in (self.name, self.peer):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        a, b = f"sgc{tag}", f"sgp{tag}"
        subprocess.run(
            ["ip", "link", "add", a, "netns", self.name, "type", "veth", "peer", "name", b, "netns", self.peer],
            check=True,
        )
        for cmd in (["addr", "add", "198.18.0.1/24", "dev", a], ["addr", "add", "2001:2::1/64", "dev", a, "nodad"],
                    ["link", "set", a, "up"], ["link", "set", "lo", "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", self.name, *cmd], check=True)

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True, timeout=60, check=False
        )

    def capture(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            sys.executable, "-m", "sandgate", "capture", "--proxy-uid", "1337", "--proxy-port", "15001", *PROBES, *extra
        )

    def close(self) -> None:
        for ns in (self.name, self.peer):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture
def ns() -> Iterator[Netns]:
    n = Netns()
    yield n
    n.close()


def save(ns: Netns, v6: bool = False) -> str:
    tool = ("ip6tables" if v6 else "iptables") + ("-legacy-save" if shutil.which("iptables-legacy-save") else "-save")
    return ns.run(tool).stdout


def test_capture_installs_verified_rules_for_both_families(ns: Netns) -> None:
    r = ns.capture()
    assert r.returncode == 0, r.stderr
    assert "in force for IPv4 and IPv6" in r.stdout
    for v6 in (False, True):
        rules = save(ns, v6)
        for port in (80, 443):
            assert f"--dport {port} -j REDIRECT --to-ports 15001" in rules
        assert "--uid-owner 1337 -j RETURN" in rules and "-A SANDGATE -j DROP" in rules


def test_capture_is_idempotent(ns: Netns) -> None:
    assert ns.capture().returncode == 0
    first = save(ns)
    assert ns.capture().returncode == 0
    assert [ln for ln in save(ns).splitlines() if ln.startswith("-A")] == [
        ln for ln in first.splitlines() if ln.startswith("-A")
    ]


def test_c02_without_ip6tables_capture_fails(ns: Netns) -> None:
    r = ns.capture("--ip6tables", "/nonexistent/ip6tables")
    assert r.returncode == 1 and "FAILED" in r.stderr and "ip6tables" in r.stderr


def test_rules_that_do_not_take_effect_are_caught_by_the_verification(ns: Netns, tmp_path: Path) -> None:
    """An iptables that says yes and does nothing: the verification notices and fails the init."""
    fake = tmp_path / "iptables-liar"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    r = ns.capture("--iptables", str(fake))
    assert r.returncode == 1 and "not listed back" in r.stderr


def test_c01_after_capture_other_ports_and_udp_are_dropped_for_agents(ns: Netns) -> None:
    assert ns.capture().returncode == 0
    probe = (
        "import os, socket\n"
        "os.setgroups([]); os.setgid(1000); os.setuid(1000)\n"
        "s=socket.socket(); s.settimeout(2)\n"
        "try: s.connect(('198.18.0.99', 22)); print('CONNECTED')\n"
        "except OSError as e: print('refused', e.errno)\n"
        "u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try: u.sendto(b'x', ('198.18.0.99', 53)); print('SENT')\n"
        "except OSError as e: print('udp refused', e.errno)\n"
    )
    out = ns.run(sys.executable, "-c", probe).stdout
    assert "CONNECTED" not in out and "SENT" not in out
