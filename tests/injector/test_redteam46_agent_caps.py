"""Red team 46, finding 3: what the injector leaves an agent's container under gVisor, the runtime
it sets, is enough to leave the capture.

- Capabilities: the injector never drops the container runtime's default capabilities from agents'
  containers (containerd's CRI, like Docker's, puts CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD,
  NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL and AUDIT_WRITE in
  the bounding, permitted and effective sets of every container that does not drop them). Under
  runc a non-root entrypoint loses them at execve; under runsc (20221219, Debian's package) the
  container's process starts with them as given, uid 1000 or not. So the agent holds CAP_SETUID
  and calls ``setuid(1337)``: the proxy's UID, whose traffic the capture lets go anywhere. (The
  injector refuses *adding* SETUID, SETGID, NET_RAW: D09. The defaults carry them anyway.) The same
  holds for user init containers and for a ``kubectl debug`` container ``review_update`` admits.
- User namespaces: gVisor checks CAP_NET_ADMIN in the caller's own user namespace, so the agent's
  ``unshare -Ur iptables -F SANDGATE`` removes the capture for the whole pod (see
  tests/run/test_redteam46_userns.py for the same in `sandgate run`). Nothing in the pod the
  injector writes stops it (no seccomp profile; runsc applies one only with ``--oci-seccomp``).

The end-to-end test builds the pod as the CRI builds it for runsc: one gVisor sandbox, the
mutated pod's own ``sandgate-capture`` arguments run in it (a stand-in for the native sidecar, uid
1337, already listening on its port), then the mutated agent container as a second container of
that sandbox, with the user, no_new_privs and capabilities containerd derives from its
securityContext. Copy into tests/injector/; every test here fails on 4e3b4f0.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from injector import constants as k
from injector.mutate import mutate, review_update
from tests.conftest import NETWORK
from tests.injector.test_mutate import CONFIG, POLICY
from tests.support.listeners import ContactRecorder

# containerd's defaultUnixCaps (oci/spec.go), what CRI gives a container before its add/drop.
RUNTIME_DEFAULT = frozenset(
    {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
     "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}
)  # fmt: skip
# What the injector itself names as ways to undo or sidestep the capture (mutate._FORBIDDEN_CAPS).
ESCAPES = {"NET_ADMIN", "NET_RAW", "SETUID", "SETGID", "SYS_ADMIN"}


def agent_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "agents"},
        "spec": {
            "initContainers": [{"name": "fetch", "image": "example.com/fetch:1"}],
            "containers": [{"name": "agent", "image": "example.com/agent:1"}],
        },
    }


def injected() -> dict[str, Any]:
    r = mutate(agent_pod(), POLICY, CONFIG, namespace="agents")
    assert r.allowed and r.pod is not None, r.message
    return r.pod


def runtime_caps(container: dict[str, Any]) -> set[str]:
    """The capabilities containerd's CRI puts in the container's effective set."""
    caps = (container.get("securityContext") or {}).get("capabilities") or {}
    add = {str(c).upper().removeprefix("CAP_") for c in caps.get("add") or []}
    drop = {str(c).upper().removeprefix("CAP_") for c in caps.get("drop") or []}
    out = set(RUNTIME_DEFAULT) if "ALL" not in drop else set()
    return (out | add) - drop


def agents_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [c for c in (spec.get("initContainers") or []) + spec["containers"] if c["name"] not in k.OUR_CONTAINERS]


@pytest.mark.parametrize("name", ["agent", "fetch"])
def test_agent_containers_keep_no_capability_that_undoes_the_capture(name: str) -> None:
    container = next(c for c in agents_of(injected()) if c["name"] == name)
    left = runtime_caps(container) & ESCAPES
    assert not left, (
        f"{name}: the runtime's defaults leave {sorted(left)} (securityContext: {container['securityContext']})"
    )


def test_a_debug_container_review_update_admits_keeps_no_such_capability() -> None:
    """What `kubectl debug --profile=restricted --custom ids.json` (the README's example) sends,
    less the profile's drop: runAsUser, runAsGroup, allowPrivilegeEscalation: false."""
    old = injected()
    new = json.loads(json.dumps(old))
    debug = {
        "name": "debugger",
        "image": "busybox",
        "targetContainerName": "agent",
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False},
    }
    new["spec"]["ephemeralContainers"] = [debug]
    r = review_update(old, new, CONFIG, subresource="ephemeralcontainers")
    if not r.allowed:
        return  # (refused: nothing to run)
    left = runtime_caps(debug) & ESCAPES
    assert not left, f"an admitted debug container keeps {sorted(left)}"


# -- end to end: the mutated pod in one gVisor sandbox ---------------------------------------------
SETUID = r"""
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
def reach():
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
print("as", os.getuid(), reach(), flush=True)
try:
    os.setuid(1337)  # the proxy's UID
except OSError as e:
    print("setuid", e, flush=True)
print("as", os.getuid(), reach(), flush=True)
"""
USERNS = r"""
import os, socket, subprocess, sys
host, port, iptables = sys.argv[1], int(sys.argv[2]), sys.argv[3]
env = dict(os.environ, XTABLES_LOCKFILE="/tmp/xtables.lock")
r = subprocess.run(["unshare", "-Ur", "sh", "-c", f"{iptables} -t filter -F SANDGATE; {iptables} -t nat -F SANDGATE"],
                   env=env, capture_output=True, text=True)
print("flush", r.returncode, r.stderr[-200:], flush=True)
try:
    socket.create_connection((host, port), timeout=3).close()
    print("as", os.getuid(), "connected", flush=True)
except OSError as e:
    print("as", os.getuid(), e, flush=True)
"""
BAIT_PORT = 18947
SIDECAR_STANDIN = """
import socket, time
a = socket.socket(); a.bind(("127.0.0.1", 15001)); a.listen()
b = socket.socket(socket.AF_INET6); b.bind(("::1", 15001)); b.listen()
time.sleep(600)
"""


class Pod:
    """One runsc sandbox with the CRI's annotations: the first container stands for the pod's init
    steps (the sidecar listening as its UID, then capture with the mutated pod's own arguments);
    the agent joins it as a second container, sharing its network stack, as under containerd."""

    def __init__(self, work: Path) -> None:
        from sandgate import sandbox
        from sandgate.run import _masked_but_needed

        self.sandbox, self.work = sandbox, work
        self.net = sandbox.SandboxNet.create()
        self.state = work / "state"
        self.state.mkdir()
        self.binds = [(d, d, False) for d in _masked_but_needed()] + [(str(work), str(work), False)]
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        self.started: list[str] = []
        self.name = f"rt46-{os.getpid()}"

    def runsc(self, *args: str, log: Path) -> int:
        flags = [
            f"--root={self.state}",
            "--platform=ptrace",
            "--network=sandbox",
            "--net-raw",
            "--ignore-cgroups",
            "--oci-seccomp",
        ]  # fmt: skip  (docs/install.md's runsc.toml)
        with log.open("a") as out:
            return subprocess.run(
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount -t tmpfs sandgate /proc/sys/net && exec "$@"', "sh", "runsc", *flags, *args],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=120, check=False,
            ).returncode  # fmt: skip

    def bundle(self, name: str, spec: dict[str, Any]) -> Path:
        d = self.work / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(spec))
        return d

    def start(self, capture_args: list[str]) -> None:
        (self.work / "sidecar.py").write_text(SIDECAR_STANDIN)
        self.work.chmod(0o755)
        (self.work / "sidecar.py").chmod(0o644)
        init = (
            f"setpriv --reuid=1337 --regid=1337 --clear-groups /usr/bin/python3 {self.work}/sidecar.py & sleep 1; "
            f"{sys.executable} -P -m sandgate {' '.join(capture_args)} && touch {self.work}/captured; sleep 600"
        )
        spec = self.sandbox.oci_spec(["/bin/sh", "-c", init], self.env, "/", self.net.netns, self.binds)
        spec["root"]["readonly"] = True
        spec["mounts"].append(
            {"destination": str(self.work), "type": "bind", "source": str(self.work), "options": ["rbind", "rw"]}
        )
        spec["annotations"] = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": self.name}
        log = self.work / "pod.log"
        assert self.runsc("create", f"--bundle={self.bundle('pod', spec)}", self.name, log=log) == 0, log.read_text()
        self.started.append(self.name)
        assert self.runsc("start", self.name, log=log) == 0, log.read_text()
        deadline = time.monotonic() + 60
        while not (self.work / "captured").exists():
            assert time.monotonic() < deadline, f"capture did not come up: {log.read_text()[-2000:]}"
            time.sleep(0.2)

    def agent(self, container: dict[str, Any], args: list[str]) -> str:
        """The agent container as containerd's CRI hands it to runsc."""
        sc = container["securityContext"]
        spec = self.sandbox.oci_spec(args, self.env, "/", self.net.netns, self.binds)
        caps = ["CAP_" + c for c in sorted(runtime_caps(container))]
        spec["process"]["user"] = {"uid": sc["runAsUser"], "gid": sc["runAsGroup"]}
        spec["process"]["noNewPrivileges"] = sc.get("allowPrivilegeEscalation") is False
        spec["process"]["capabilities"] = {kind: caps for kind in ("bounding", "effective", "permitted")}
        if (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault":
            spec.setdefault("linux", {})["seccomp"] = RUNTIME_DEFAULT_NAMESPACES
        spec["annotations"] = {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": self.name,
        }
        name = f"{self.name}-agent{len(self.started)}"
        log = self.work / f"{name}.log"
        log.write_text("")
        log.chmod(0o666)
        assert self.runsc("create", f"--bundle={self.bundle(name, spec)}", name, log=log) == 0, log.read_text()
        self.started.append(name)
        self.runsc("start", name, log=log)
        self.runsc("wait", name, log=self.work / "wait.log")
        return log.read_text()

    def close(self) -> None:
        for name in reversed(self.started):
            with contextlib.suppress(Exception):
                self.runsc("delete", "--force", name, log=self.work / "delete.log")
        self.net.close()


@pytest.fixture
def pod() -> Iterator[Pod]:
    if not NETWORK or shutil.which("runsc") is None:
        pytest.skip("needs root and runsc")
    work = Path(tempfile.mkdtemp(prefix="sandgate-rt46-pod-", dir="/var/tmp"))
    p = Pod(work)
    try:
        yield p
    finally:
        p.close()
        shutil.rmtree(work, ignore_errors=True)


# What containerd's default seccomp profile (RuntimeDefault; contrib/seccomp/seccomp_default.go)
# says of namespaces, for a container without CAP_SYS_ADMIN: unshare, setns and clone with
# CLONE_NEWUSER refused, clone3 ENOSYS. (Its allowlist of every other syscall aside: this test's
# runsc is not containerd, which writes the whole profile into the OCI spec.)
RUNTIME_DEFAULT_NAMESPACES = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [
        {"names": ["unshare", "setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ],
}  # fmt: skip

HOW = {
    # the injector's own output
    "setuid-to-the-proxy-uid": (SETUID, False),
    "user-namespace": (USERNS, False),
    # the same container with `capabilities: {drop: [ALL]}` added: dropping capabilities alone does not close this
    "user-namespace-with-all-capabilities-dropped": (USERNS, True),
}


@pytest.mark.parametrize("how", list(HOW))
def test_the_mutated_agent_container_cannot_leave_the_capture_under_gvisor(pod: Pod, how: str) -> None:
    mutated = injected()
    capture = next(c for c in mutated["spec"]["initContainers"] if c["name"] == k.CAPTURE)
    agent = next(c for c in mutated["spec"]["containers"] if c["name"] == "agent")
    script, drop_all = HOW[how]
    if drop_all:
        agent["securityContext"]["capabilities"] = {"drop": ["ALL"]}
    port = BAIT_PORT + list(HOW).index(how)  # (one port each: a closed listener's port lingers)
    bait = ContactRecorder([("0.0.0.0", port)])
    try:
        pod.start(capture["args"])
        iptables = shutil.which("iptables-legacy") or shutil.which("iptables") or "iptables"
        out = pod.agent(agent, ["/usr/bin/python3", "-c", script, pod.net.host_ip, str(port), iptables])
        time.sleep(0.3)
        contacts = bait.count
    finally:
        bait.close()
    assert "as 1000" in out, out  # (the agent ran, as the injector's UID)
    assert contacts == 0, f"the agent reached a host outside the pod, past the capture:\n{out}"
