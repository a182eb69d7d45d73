"""A pod on one machine: an agent network namespace with capture rules, joined by a veth to an
"internet" namespace holding the upstreams (198.18.0.0/15 and 2001:2::/48, benchmarking ranges).

Capture is installed by ``sandgate capture``, exactly as in a pod: REDIRECT of ports 80 and 443 for
every UID but the proxy's, IPv4 and IPv6, and everything else the agent sends dropped.
Everything created here is removed by ``close()``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

AGENT_V4, UP_V4, ATTACKER_V4, ECHO_V4 = "198.18.0.1", "198.18.0.2", "198.18.0.66", "198.18.0.3"
AGENT_V6, UP_V6 = "2001:2::1", "2001:2::2"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


class Pod:
    def __init__(self, proxy_uid: int, proxy_port: int, hosts: dict[str, list[str]]) -> None:
        tag = secrets.token_hex(3)
        self.agent, self.up = f"sg-pod-{tag}", f"sg-up-{tag}"
        self._veth = (f"sga{tag}", f"sgu{tag}")
        self._etc = Path("/etc/netns") / self.agent
        try:
            self._build(proxy_uid, proxy_port, hosts)
        except BaseException:
            self.close()
            raise

    def _build(self, proxy_uid: int, proxy_port: int, hosts: dict[str, list[str]]) -> None:
        for ns in (self.agent, self.up):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        a, u = self._veth
        sh("ip", "link", "add", a, "netns", self.agent, "type", "veth", "peer", "name", u, "netns", self.up)
        sh("ip", "-n", self.agent, "addr", "add", f"{AGENT_V4}/24", "dev", a)
        sh("ip", "-n", self.agent, "addr", "add", f"{AGENT_V6}/64", "dev", a, "nodad")
        for addr in (UP_V4, ATTACKER_V4, ECHO_V4):
            sh("ip", "-n", self.up, "addr", "add", f"{addr}/24", "dev", u)
        sh("ip", "-n", self.up, "addr", "add", f"{UP_V6}/64", "dev", u, "nodad")
        sh("ip", "-n", self.agent, "link", "set", a, "up")
        sh("ip", "-n", self.up, "link", "set", u, "up")
        self._etc.mkdir(parents=True, exist_ok=True)
        (self._etc / "hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost\n"
            + "".join(f"{ip} {name}\n" for name, ips in hosts.items() for ip in ips)
        )
        (self._etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        # The pod's nameserver (the cluster DNS of a real pod): the proxy resolves through it only.
        import json
        import sys

        self._dns = subprocess.Popen(
            ["ip", "netns", "exec", self.agent, sys.executable, "-m", "tests.support.dnsd", json.dumps(hosts)],
            stdout=subprocess.PIPE, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert self._dns.stdout is not None and self._dns.stdout.readline().startswith(b"dns ready")
        # The same capture a pod gets, with the probe aimed at this test's own address range.
        self.run(sys.executable, "-m", "sandgate", "capture", "--proxy-uid", str(proxy_uid), "--proxy-port", str(proxy_port),
                 "--dns", "block", "--probe-v4", "198.18.0.99", "--probe-v6", "2001:2::99")  # fmt: skip

    def run(self, *cmd: str, check: bool = True, uid: int | None = None, input: bytes | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        prefix = ["ip", "netns", "exec", self.agent]
        if uid is not None:
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return subprocess.run([*prefix, *cmd], capture_output=True, check=check, input=input, timeout=timeout)

    def prefix_up(self) -> list[str]:
        return ["ip", "netns", "exec", self.up]

    _dns: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        if self._dns is not None:
            self._dns.terminate()
            self._dns.wait(10)
        for ns in (self.agent, self.up):
            sh("ip", "netns", "del", ns, check=False)  # removes the veth pair and every rule with it
        if self._etc.exists():
            shutil.rmtree(self._etc)


def world_readable_dir(prefix: str) -> Path:
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o711)
    return d
