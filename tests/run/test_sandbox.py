"""`sandgate run` as root: CMD and the proxy sealed in a network namespace of their own, inside one
real gVisor sandbox (runsc, ptrace platform) or without it, with a relay on the host as the only
way out. Everything here is real: runsc, iptables inside gVisor, the veth, the relay, OpenBao is
not needed (the secrets come from the environment, as in the explicit-mode tests).

Each mode runs one hostile agent (probe_agent.py) that tries the legitimate call and every bypass
it knows, so a gVisor start (~5 s) is paid once per mode; the teardown tests then kill things in
the four ways a run ends and look for anything left behind on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandgate import sandbox
from tests.conftest import OPENAI, needs_root, secret_env
from tests.run.test_run import POLICY as RUN_POLICY
from tests.support.leaks import encodings
from tests.support.listeners import ContactRecorder, DnsSink
from tests.support.upstream import Seen

pytestmark = needs_root

MODES = [
    "off",
    pytest.param("on", marks=pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc not installed")),
]
# The explicit-mode tests' policy, plus an allowed host the secret is not bound to and an allowed
# name that resolves to the metadata address (tests/support/isolation.py).
POLICY = RUN_POLICY.replace(
    "allow: [{host: api.openai.com}]",
    "allow: [{host: api.openai.com}, {host: echo.example.com}, {host: metadata.example.com}]",
)
assert POLICY != RUN_POLICY
BAIT_PORT = 18999
VAULT_CANARY = "hvs.sandgate-test-canary-token"  # in run's environment: must reach no process CMD can read
PROBE = Path(__file__).with_name("probe_agent.py")


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """A directory CMD's UID (1000) can enter and read: the working directory of every run."""
    d = Path(tempfile.mkdtemp(prefix="sandgate-sbx-test-"))
    d.chmod(0o755)
    shutil.copy(PROBE, d / "probe_agent.py")
    (d / "probe_agent.py").chmod(0o644)
    (d / "policy.yaml").write_text(POLICY)
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def bait() -> Iterator[tuple[ContactRecorder, list[bytes]]]:
    """TCP and UDP listeners on every host address: if anything from the sandbox reached the host
    other than through the relay, it lands here."""
    tcp = ContactRecorder([("0.0.0.0", BAIT_PORT)])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", BAIT_PORT))
    got: list[bytes] = []

    def recv() -> None:
        while True:
            try:
                got.append(udp.recvfrom(4096)[0])
            except OSError:
                return

    threading.Thread(target=recv, daemon=True).start()
    yield tcp, got
    tcp.close()
    udp.close()


GRACE = 2  # --stop-grace: what a CMD ignoring SIGTERM gets (a stubborn one is killed after it)


def start(world: Path, pki: dict[str, Path], mode: str, *cmd: str, user: str = "1000") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(world / "policy.yaml"),
         "--upstream-ca", str(pki["ca"]), "--allow-private", "127.0.0.0/8", "--gvisor", mode, "--user", user,
         "--stop-grace", str(GRACE), "--", *cmd],
        cwd=world, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **secret_env(), "VAULT_TOKEN": VAULT_CANARY},
    )  # fmt: skip


def host_state() -> tuple[set[str], str]:
    links = {
        line.split(":")[1].strip().split("@")[0]
        for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()
    }
    rules = "".join(
        subprocess.run([tool], capture_output=True, text=True, check=False).stdout
        for tool in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save")
        if shutil.which(tool)
    )
    return links, re.sub(r"^#.*$|\[\d+:\d+\]", "", rules, flags=re.M)


def assert_nothing_left(before: tuple[set[str], str], stderr: str) -> None:
    links, rules = host_state()
    assert links == before[0], f"links left behind: {links ^ before[0]}"
    assert rules == before[1], "the host's iptables rules changed"
    holder = re.search(r"network namespace /proc/(\d+)/ns/net", stderr)
    assert holder, stderr
    assert not Path(f"/proc/{holder.group(1)}").exists(), "the namespace's holder process is still alive"
    rundir = re.search(r"(/tmp/sandgate-run-[^/\s]+)", stderr)
    assert rundir, stderr
    assert not Path(rundir.group(1)).exists(), "the run's directory (runsc state, CA key) is still there"
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    # (This run's: its runsc, gofer and sandbox name its directory; other runs may be going on.)
    left = [ln for ln in ps.splitlines() if rundir.group(1) in ln or "sleep 3017" in ln]
    assert not left, f"processes left behind: {left}"


@dataclass
class Probe:
    """What one hostile agent did in one sandbox, and what the world outside saw meanwhile."""

    mode: str
    result: dict[str, Any]
    stderr: str
    attacker_contacts: int
    dns_queries: int
    bait_tcp: int
    bait_udp: int
    upstream: Seen


@pytest.fixture(scope="module", params=MODES)
def probe(
    request: pytest.FixtureRequest,
    world: Path,
    pki: dict[str, Path],
    upstreams: dict[str, Seen],
    attacker: ContactRecorder,
    dns: DnsSink,
    bait: tuple[ContactRecorder, list[bytes]],
) -> Probe:
    """probe_agent.py run once per mode (a gVisor start is ~5 s): the tests below read its report."""
    mode = str(request.param)
    attacker_before, dns_before, udp_before = attacker.count, dns.count, len(bait[1])
    tcp_before = bait[0].count
    p = start(world, pki, mode, "/usr/bin/python3", "probe_agent.py", str(BAIT_PORT), str(sandbox.RELAY_PORT),
              sandbox.SANDBOX_V6_GW)  # fmt: skip
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    if mode == "on":
        assert "gVisor sandbox in network namespace" in err
    time.sleep(0.5)  # UDP datagrams, had any left the sandbox, would have arrived by now
    r = json.loads(out.strip().splitlines()[-1])
    assert r["uid"] == 1000
    assert r["gateways"][0], "the probe found no IPv4 gateway: the bypass checks would prove nothing"
    return Probe(mode, r, err, attacker.count - attacker_before, dns.count - dns_before,
                 bait[0].count - tcp_before, len(bait[1]) - udp_before, upstreams["api"])  # fmt: skip


def test_cmd_holds_placeholders_and_the_ca_never_a_real_value(probe: Probe) -> None:
    env = probe.result["env"]
    assert env["OPENAI_API_KEY"] == OPENAI.placeholder
    assert env["SSL_CERT_FILE"].endswith("/shared/ca.crt")
    assert not any(k.startswith("VAULT_") or k.endswith("_PROXY") or k.endswith("_proxy") for k in env)
    assert OPENAI.env not in env
    dumped = json.dumps(env)
    assert all(form not in dumped for form in encodings(OPENAI.real))


def test_cmd_cannot_read_secrets_in_other_processes_environments(probe: Probe) -> None:
    """gVisor lets any process read /proc/PID/environ of another UID's process: nothing secret may
    be in the sandbox init's or the proxy's environment (they get it through --env-file)."""
    seen = probe.result["other_environments"]
    if probe.mode == "on":
        assert "PATH=" in seen, "gVisor no longer exposes other environments: this check has no teeth here"
    assert all(form not in seen for form in encodings(OPENAI.real))
    assert VAULT_CANARY not in seen


def test_swap_reaches_the_bound_upstream_and_the_answer_is_scrubbed(probe: Probe) -> None:
    r = probe.result
    assert r["swap"][0] == 200, r["swap"]
    seen = [q for q in probe.upstream.requests if q["path"] == "/v1/sandbox-swap"]
    assert seen and seen[-1]["headers"]["authorization"] == f"Bearer {OPENAI.real}"
    assert OPENAI.real not in r["swap"][1]


def test_unbound_and_disallowed_hosts_are_refused(probe: Probe) -> None:
    r = probe.result
    assert r["unbound"][0] == 403 and "secret_not_bound" in r["unbound"][1]
    assert r["other_host"][0] == 403 and "host_not_allowed" in r["other_host"][1]
    assert probe.attacker_contacts == 0


def test_c01_direct_sockets_to_other_ports_and_the_relay_get_nowhere(probe: Probe) -> None:
    r = probe.result
    assert r["tcp_other_port"] != "connected" and r["tcp_relay"] != "connected", r
    assert probe.bait_tcp == 0, "a TCP connection from the sandbox reached the host"
    assert r["forged_dns_other"][0] == 403 and "host_not_allowed" in r["forged_dns_other"][1]


def test_c02_ipv6_gets_nowhere(probe: Probe) -> None:
    assert probe.result["tcp_v6"] != "connected", probe.result["tcp_v6"]
    assert "IPv4 and IPv6" in probe.stderr  # capture is in force for both families


def test_c03_udp_never_leaves_the_sandbox(probe: Probe) -> None:
    assert probe.bait_udp == 0, "a UDP datagram from the sandbox reached the host"


def test_c04_dns_answers_nothing_and_no_query_leaves(probe: Probe) -> None:
    """Every name is the sink, answered inside the sandbox; no query reaches a resolver outside;
    an answer the agent forges itself does not change where a request goes (the proxy resolves
    through the relay)."""
    r = probe.result
    assert r["resolve_allowed"] == r["resolve_other"] == [sandbox.SINK]
    assert probe.dns_queries == 0
    assert r["forged_dns_allowed"][0] == 200, r["forged_dns_allowed"]
    assert any(q["path"] == "/v1/forged" for q in probe.upstream.requests)


def test_c08_raw_sockets_are_refused(probe: Probe) -> None:
    assert probe.result["raw"].startswith("PermissionError"), probe.result["raw"]


def test_c09_cmd_cannot_change_netfilter_or_routes(probe: Probe) -> None:
    for attempt in probe.result["netfilter"]:
        assert not attempt.endswith(": exit 0"), attempt
    # and capture still worked for everything the probe did after trying
    assert probe.result["tcp_relay"] != "connected"


def test_c10_cmd_cannot_become_the_proxy_uid(probe: Probe) -> None:
    assert probe.result["setuid0"].startswith("PermissionError"), probe.result["setuid0"]


def test_c13_metadata_address_is_refused(probe: Probe) -> None:
    """An allowed name that resolves to the metadata address, dialled directly by the agent with
    that name's SNI: the proxy resolves for itself (through the relay) and refuses."""
    status, text = probe.result["metadata"]
    assert status == 403 and "private_address" in text, probe.result["metadata"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("how", "script", "expected"),
    [
        ("success", "exit 0", 0),
        ("failure", "exit 7", 7),
        ("sigkill", "echo started; kill -KILL $$", 137),
        ("sigterm", "echo started; setsid sleep 3017 & sleep 300", 143),
        ("stubborn", "trap '' TERM INT; echo started; sleep 300", 137),  # killed after --stop-grace
    ],
)
def test_teardown_leaves_nothing(
    world: Path, pki: dict[str, Path], upstreams: dict[str, Seen], mode: str, how: str, script: str, expected: int
) -> None:
    """However CMD ends (success, failure, SIGKILL of CMD, SIGTERM to `run` with a daemon that
    escaped into its own session), its status is run's and no process, namespace, veth, iptables
    rule, runsc container or state directory remains."""
    before = host_state()
    p = start(world, pki, mode, "sh", "-c", script)
    if how in ("sigterm", "stubborn"):
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "started"
        p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == expected, err
    assert_nothing_left(before, err)


@pytest.mark.parametrize("grace", ["0", "-1", "soon", "3601"])
def test_a_stop_grace_that_is_no_number_of_seconds_is_a_usage_error(world: Path, grace: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(world / "policy.yaml"), "--stop-grace", grace, "--", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert p.returncode == 2 and "--stop-grace" in p.stderr, p.stderr


def test_cmd_may_not_run_as_root(world: Path, pki: dict[str, Path]) -> None:
    p = start(world, pki, "off", "true", user="0")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2
    assert "must not run as root" in err


def test_gvisor_on_without_runsc_is_an_error(world: Path, pki: dict[str, Path]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(world / "policy.yaml"), "--gvisor", "on", "--", "true"],
        capture_output=True, text=True, env={**os.environ, "PATH": "/nonexistent"}, timeout=30,
    )  # fmt: skip
    assert p.returncode == 2
    assert "runsc not found" in p.stderr


def test_cmd_never_starts_when_a_secret_is_unavailable(world: Path, pki: dict[str, Path]) -> None:
    """Fail closed: the proxy refuses to start without its secrets (--require-secrets), so CMD is
    never run, and run says why with 125."""
    p = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(world / "policy.yaml"), "--gvisor", "off",
         "--user", "1000", "--", "sh", "-c", "echo CMD-RAN"],
        cwd=world, capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != OPENAI.env},
        timeout=120,
    )  # fmt: skip
    assert p.returncode == 125, p.stderr
    assert "CMD-RAN" not in p.stdout
    assert "secrets unavailable" in p.stderr and "not starting CMD" in p.stderr


def _file_policy(world: Path, key: Path) -> Path:
    policy = world / "file-policy.yaml"
    policy.write_text(POLICY.replace(f"source: {{env: {OPENAI.env}}}", f"source: {{file: {key}}}"))
    return policy


def test_a_secret_file_cmds_user_can_read_is_refused(world: Path) -> None:
    key = world / "user-key"
    key.write_text(OPENAI.real + "\n")
    key.chmod(0o600)
    os.chown(key, 1000, 1000)  # the user's own file, as after `sudo sandgate run`
    try:
        p = subprocess.run(
            [sys.executable, "-m", "sandgate", "run", "--policy", str(_file_policy(world, key)), "--gvisor", "off",
             "--user", "1000", "--", "true"],
            cwd=world, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        key.unlink()
    assert p.returncode == 2
    assert f"{key} is readable by uid 1000, who runs CMD" in p.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_root_only_secret_file_reaches_the_proxy_not_cmd(
    world: Path, pki: dict[str, Path], upstreams: dict[str, Seen], mode: str
) -> None:
    """Under /tmp (invisible inside gVisor) and root's: read by run on the host, handed to the proxy
    through --env-file, swapped on the wire; CMD cannot open it."""
    key = Path(tempfile.mkdtemp()) / "root-key"
    key.write_text(OPENAI.real + "\n")
    key.chmod(0o600)
    script = (
        f'cat {key} 2>/dev/null && echo READ-THE-FILE; curl -sS -o /dev/null -w "%{{http_code}}" '
        '-H "Authorization: Bearer $OPENAI_API_KEY" https://api.openai.com/v1/from-file'
    )
    try:
        p = subprocess.run(
            [sys.executable, "-m", "sandgate", "run", "--policy", str(_file_policy(world, key)), "--upstream-ca",
             str(pki["ca"]), "--allow-private", "127.0.0.0/8", "--gvisor", mode, "--user", "1000", "--", "sh", "-c",
             script],
            cwd=world, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:
        shutil.rmtree(key.parent)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("200") and "READ-THE-FILE" not in p.stdout and OPENAI.real not in p.stdout
    seen = [q for q in upstreams["api"].requests if q["path"] == "/v1/from-file"]
    assert seen and seen[-1]["headers"]["authorization"] == f"Bearer {OPENAI.real}"
