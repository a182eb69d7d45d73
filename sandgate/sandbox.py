"""The pod model on one machine: a sealed network namespace (optionally a gVisor sandbox) holding
the proxy and CMD, and a relay on the host that is the sandbox's only way out.

Host side (``sandgate run``, root):

- a network namespace held by a small process (``unshare --net sleep``) that dies with ``run``
  (PR_SET_PDEATHSIG): when it goes, the kernel removes the namespace, and with it the veth pair;
- a veth pair: host end ``198.18.N.1/30`` (IPv6 disabled, forwarding off on that interface, so
  nothing from the sandbox is routed anywhere), sandbox end ``198.18.N.2/30`` plus a ULA IPv6
  address, default routes v4 and v6 on it (so any address is routable, and capture decides);
- the relay (proxy.relay) on ``198.18.N.1``, answering only ``198.18.N.2``.

Nothing is added to the host's iptables, sysctls (other than on our own veth) or routes.

Inside (``sandgate _sandbox-init``, root in the namespace or in gVisor): ``sandgate capture``
(proxy UID 0 exempt, DNS blocked), the proxy in transparent mode with ``--upstream-relay``, then
CMD as an unprivileged UID with no_new_privs, the placeholders in its environment, the per-run CA
in its trust variables, and a resolver (sandgate.dnsserver) that answers every name with one sink
address: capture sends every connection on a captured port to the proxy, which decides from SNI
and Host and resolves through the relay. No DNS query leaves the sandbox.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandgate.procs import die_with_parent, stop_process

SUBNETS = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking space: never a real network
SINK = "198.51.100.1"  # TEST-NET-2: the sandbox resolver's answer to every name; capture redirects it
SANDBOX_V6 = "fd53:616e:6467:6174::2"  # ULA, on the sandbox end only (the host end has IPv6 off)
SANDBOX_V6_GW = "fd53:616e:6467:6174::1"
PROXY_PORT = 15001
METRICS_PORT = 15090
RELAY_PORT = 15002  # on the host end of this run's own /30: never shared with another run


class SandboxError(Exception):
    pass


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *args] if netns is None else ["nsenter", f"--net={netns}", "ip", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    if res.returncode != 0:
        raise SandboxError(f"{' '.join(cmd)}: {res.stderr.strip()}")


def _sysctl(path: str, value: str) -> None:
    """Set a per-interface sysctl of the host end (it goes away with the interface)."""
    try:
        Path("/proc/sys", path).write_text(value)
    except OSError as e:
        raise SandboxError(f"sysctl {path}: {e.strerror}") from None


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    nets = []
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            nets.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    return nets


def pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates: list[ipaddress.IPv4Network] = list(SUBNETS.subnets(new_prefix=30))
    for _ in range(64):
        net = random.choice(candidates)
        if not any(net.overlaps(u) for u in used):
            return net
    raise SandboxError("no free /30 in 198.18.0.0/15 for the sandbox's link")


@dataclass
class SandboxNet:
    holder: subprocess.Popen[bytes]
    host_if: str
    sandbox_if: str
    host_ip: str
    sandbox_ip: str

    @property
    def netns(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    @classmethod
    def create(cls) -> SandboxNet:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise SandboxError("`unshare` (util-linux) is needed to create the sandbox's network namespace")
        holder = subprocess.Popen(
            [unshare, "--net", "--", "sleep", "infinity"], preexec_fn=die_with_parent, stdin=subprocess.DEVNULL
        )
        ours = os.readlink("/proc/self/ns/net")
        try:
            deadline = time.monotonic() + 10
            while os.readlink(f"/proc/{holder.pid}/ns/net") == ours:
                if holder.poll() is not None or time.monotonic() > deadline:
                    raise SandboxError("could not create a network namespace (unshare --net failed)")
                time.sleep(0.005)
            net = pick_subnet()
        except BaseException:
            stop_process(holder, grace=1)
            raise
        me = cls(holder, f"sgh{holder.pid}", f"sgs{holder.pid}", str(net[1]), str(net[2]))
        try:
            me._wire(net.prefixlen)
        except BaseException:
            me.close()  # a half-wired link is removed too
            raise
        return me

    def _wire(self, prefix: int) -> None:
        ns = self.netns
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.sandbox_if, "netns", str(self.holder.pid))
        _sysctl(f"net/ipv6/conf/{self.host_if}/disable_ipv6", "1")
        _sysctl(f"net/ipv4/conf/{self.host_if}/forwarding", "0")
        _ip("addr", "add", f"{self.host_ip}/{prefix}", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("link", "set", "lo", "up", netns=ns)
        _ip("addr", "add", f"{self.sandbox_ip}/{prefix}", "dev", self.sandbox_if, netns=ns)
        _ip("-6", "addr", "add", f"{SANDBOX_V6}/64", "dev", self.sandbox_if, "nodad", netns=ns)
        _ip("link", "set", self.sandbox_if, "up", netns=ns)
        _ip("route", "add", "default", "via", self.host_ip, netns=ns)
        # gVisor wants a gateway on every default route; this one never answers (IPv6 is off on
        # the host end): only capture decides where the sandbox's IPv6 connections go.
        _ip("-6", "route", "add", "default", "via", SANDBOX_V6_GW, "dev", self.sandbox_if, netns=ns)

    def members(self) -> list[int]:
        """PIDs of every process in the sandbox's network namespace, the holder included."""
        try:
            ns = os.readlink(self.netns)
        except OSError:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "net") == ns:
                        pids.append(int(entry.name))
        return pids

    def close(self) -> None:
        # Whatever CMD left behind (daemons, setsid'd children) dies with the sandbox.
        for pid in self.members():
            if pid != self.holder.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        stop_process(self.holder, grace=1)
        # The kernel frees a dead namespace (and the veth end in it) asynchronously, sometimes
        # seconds later: delete our end now, which removes the pair at once. (Not /sys/class/net
        # to check: it shows the namespace sysfs was mounted in, not necessarily ours.)
        res = subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, text=True, check=False)
        if res.returncode != 0 and "Cannot find device" not in res.stderr:
            print(f"sandgate run: could not remove {self.host_if}: {res.stderr.strip()}", file=sys.stderr)


HOSTS_FILE = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
RESOLV_CONF = "# sandgate run: every name resolves to the sink; the proxy decides where it goes\nnameserver 127.0.0.1\n"


# -- gVisor ------------------------------------------------------------------------------------------
CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETUID", "CAP_SETGID",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE",
]  # fmt: skip


def oci_spec(
    args: list[str], env: dict[str, str], cwd: str, netns: str, binds: list[tuple[str, str, bool]]
) -> dict[str, Any]:
    """The host's root read-only, /run and /tmp private, ``binds`` (source, destination, writable)."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
    ]
    for source, dest, writable in binds:
        mounts.append(
            {"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rw" if writable else "ro"]}
        )
    return {
        "ociVersion": "1.0.0",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cwd,
            "capabilities": {kind: CAPS for kind in ("bounding", "effective", "inheritable", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 65536, "soft": 65536}],
        },
        "root": {"path": "/", "readonly": True},
        "hostname": "sandgate",
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "network", "path": netns},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ]
        },
    }


@dataclass
class Runsc:
    """One runsc container with a private state directory (``--root``), so that ``runsc list``
    shows only ours and teardown can always ``delete --force`` it."""

    runsc: str
    state: Path
    bundle: Path
    name: str

    def flags(self) -> list[str]:
        return [f"--root={self.state}", "--platform=ptrace", "--network=sandbox", "--net-raw", "--ignore-cgroups"]

    def write_bundle(self, spec: dict[str, Any]) -> None:
        self.bundle.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        (self.bundle / "config.json").write_text(json.dumps(spec, indent=1))

    def start(self, **popen: Any) -> subprocess.Popen[bytes]:
        # runsc refuses to start its netstack "in the root network namespace" after reading
        # /proc/sys/net (an old check, wrong here: the sandbox has its own namespace). A private
        # mount namespace with a tmpfs over /proc/sys/net satisfies it (ENVIRONMENT.md).
        cmd = [
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs sandgate /proc/sys/net && exec "$@"', "sh",
            self.runsc, *self.flags(), "run", f"--bundle={self.bundle}", self.name,
        ]  # fmt: skip
        return subprocess.Popen(cmd, preexec_fn=die_with_parent, **popen)

    def kill(self, sig: int, within: float = 10.0) -> None:
        """Signal the sandbox's PID 1 (which passes it to CMD). Right after start the container
        may not exist yet: retry for ``within`` seconds rather than lose the signal."""
        deadline = time.monotonic() + within
        while True:
            res = subprocess.run(
                [self.runsc, *self.flags(), "kill", self.name, str(sig)], capture_output=True, check=False, timeout=30
            )
            if res.returncode == 0 or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def containers(self) -> list[str]:
        res = subprocess.run(
            [self.runsc, *self.flags(), "list", "-q"], capture_output=True, text=True, check=False, timeout=30
        )
        return res.stdout.split()

    def delete(self) -> None:
        subprocess.run(
            [self.runsc, *self.flags(), "delete", "--force", self.name], capture_output=True, check=False, timeout=60
        )
        shutil.rmtree(self.state, ignore_errors=True)
