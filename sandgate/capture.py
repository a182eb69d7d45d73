"""``sandgate capture``: the pod's init step that puts all agent TCP egress through the proxy.

In the pod's network namespace (run as root with NET_ADMIN/NET_RAW, before any agent code), for
IPv4 and IPv6 alike:

- nat OUTPUT: the proxy's UID and loopback destinations are left alone; every other TCP connection
  to each captured port is REDIRECTed to the proxy, one rule per port (gVisor has no multiport);
- filter OUTPUT: loopback, the proxy's UID, redirected traffic (now addressed to loopback), DNS to
  the pod's own resolvers (unless ``--dns block``) and IPv6 neighbour discovery pass; everything
  else is dropped (other TCP ports, UDP, QUIC, ICMP).

Then it checks that capture is really in force: the rules are listed back, and a probe process
running as another UID connects to a captured port of a documentation address (which can only
succeed if REDIRECT took it to loopback) and fails to reach an uncaptured one. Any failure exits
non-zero: a pod never starts half-configured.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_FAMILIES = {4: ("127.0.0.0/8", socket.AF_INET), 6: ("::1/128", socket.AF_INET6)}
CHAIN = "SANDGATE"  # our rules live in a chain of their own in nat and filter, jumped to from OUTPUT


class CaptureError(Exception):
    pass


@dataclass(frozen=True)
class CaptureSpec:
    proxy_uid: int
    proxy_port: int
    ports: tuple[int, ...]
    iptables: str
    ip6tables: str | None  # None: IPv6 is absent in this network namespace
    dns: str = "allow-resolvers"  # or "block"
    probe_uid: int = 65534
    probe_v4: str = "192.0.2.1"  # TEST-NET-1: never a real host
    probe_v6: str = "2001:db8::1"  # documentation prefix


def ipv6_present() -> bool:
    try:
        return Path("/proc/net/if_inet6").read_text().strip() != ""
    except OSError:
        return False


def find_tool(name: str, override: str | None) -> str:
    if override:
        if not (shutil.which(override) or Path(override).is_file()):
            raise CaptureError(f"{override} not found")
        return override
    # gVisor implements only the legacy (x_tables) interface; prefer it where both exist.
    for candidate in (f"{name}-legacy", name):
        if shutil.which(candidate):
            return candidate
    raise CaptureError(f"{name} not found: without it the agent's traffic would not be captured")


def resolvers() -> list[str]:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return []
    return [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]


def rules(spec: CaptureSpec, family: int) -> list[list[str]]:
    """The rules for one family, as argument lists after the tool name."""
    loopback, _ = _FAMILIES[family]
    uid = str(spec.proxy_uid)
    out = [
        ["-t", "nat", "-A", CHAIN, "-p", "tcp", "-m", "owner", "--uid-owner", uid, "-j", "RETURN"],
        ["-t", "nat", "-A", CHAIN, "-p", "tcp", "-d", loopback, "-j", "RETURN"],
    ]
    out += [["-t", "nat", "-A", CHAIN, "-p", "tcp", "--dport", str(p), "-j", "REDIRECT", "--to-ports", str(spec.proxy_port)]
            for p in spec.ports]  # fmt: skip
    out += [
        ["-t", "filter", "-A", CHAIN, "-o", "lo", "-j", "ACCEPT"],
        ["-t", "filter", "-A", CHAIN, "-d", loopback, "-j", "ACCEPT"],
        ["-t", "filter", "-A", CHAIN, "-m", "owner", "--uid-owner", uid, "-j", "ACCEPT"],
    ]
    if family == 6:
        # Neighbour discovery is sent by the kernel, owned by no UID: without it IPv6 breaks for the proxy too.
        for icmp in ("neighbour-solicitation", "neighbour-advertisement"):
            out.append(["-t", "filter", "-A", CHAIN, "-p", "ipv6-icmp", "--icmpv6-type", icmp, "-j", "ACCEPT"])
    if spec.dns == "allow-resolvers":
        for ns in resolvers():
            if (":" in ns) == (family == 6):
                for proto in ("udp", "tcp"):
                    out.append(["-t", "filter", "-A", CHAIN, "-p", proto, "-d", ns, "--dport", "53", "-j", "ACCEPT"])
    out.append(["-t", "filter", "-A", CHAIN, "-j", "DROP"])
    return out


def _run(tool: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=30)


def install(spec: CaptureSpec) -> None:
    """(Re)write our chains from scratch, so a restarted init container converges to the same rules."""
    for family, tool in ((4, spec.iptables), (6, spec.ip6tables)):
        if tool is None:
            continue
        for table in ("nat", "filter"):
            _run(tool, ["-t", table, "-N", CHAIN])  # fails harmlessly when it exists
            _must(tool, ["-t", table, "-F", CHAIN])
            if f"-j {CHAIN}" not in _run(tool, ["-t", table, "-S", "OUTPUT"]).stdout:
                _must(tool, ["-t", table, "-A", "OUTPUT", "-j", CHAIN])
        for rule in rules(spec, family):
            if "--icmpv6-type" in rule and _run(tool, rule).returncode != 0:
                # gVisor's ip6tables has no icmpv6 match. These rules only ACCEPT (neighbour
                # discovery for the proxy's own IPv6); without them egress is closed all the same.
                print(f"sandgate capture: note: {tool} cannot match ICMPv6 types here; IPv6 neighbour discovery "
                      "is not let through", file=sys.stderr)  # fmt: skip
                continue
            _must(tool, rule)


def _must(tool: str, args: list[str]) -> None:
    res = _run(tool, args)
    if res.returncode != 0:
        raise CaptureError(f"{tool} {' '.join(args)} failed: {res.stderr.strip()}")


def _probe(family: int, address: str, port: int, uid: int, timeout: float = 2.0) -> int:
    """Connect as ``uid`` in a forked child; returns 0 on success, else the errno (or ETIMEDOUT)."""
    pid = os.fork()
    if pid == 0:  # the child: drop to the probe UID, try once, report through the exit code
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(_FAMILIES[family][1], socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect((address, port))
            code = 0
        except TimeoutError:
            code = errno.ETIMEDOUT
        except OSError as e:
            code = (e.errno or 1) & 0xFF
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def verify(spec: CaptureSpec) -> None:
    for family, tool in ((4, spec.iptables), (6, spec.ip6tables)):
        if tool is None:
            continue
        listed = _run(tool, ["-t", "nat", "-S", CHAIN]).stdout + _run(tool, ["-t", "filter", "-S", CHAIN]).stdout
        for p in spec.ports:
            if f"--dport {p} -j REDIRECT --to-ports {spec.proxy_port}" not in listed:
                raise CaptureError(f"IPv{family}: the REDIRECT rule for port {p} is not listed back")
        if "-j DROP" not in listed:
            raise CaptureError(f"IPv{family}: the final DROP rule is not listed back")
        address = spec.probe_v4 if family == 4 else spec.probe_v6
        loopback = "127.0.0.1" if family == 4 else "::1"
        with _listener(_FAMILIES[family][1], loopback, spec.proxy_port):
            got = _probe(family, address, spec.ports[0], spec.probe_uid)
            if got != 0:
                raise CaptureError(
                    f"IPv{family}: a connection to {address}:{spec.ports[0]} was not redirected to the proxy ({os.strerror(got)})"
                )
        uncaptured = next(p for p in range(9, 1024) if p not in spec.ports)
        if _probe(family, address, uncaptured, spec.probe_uid) == 0:
            raise CaptureError(f"IPv{family}: a connection to {address}:{uncaptured} got through; egress is not closed")


@contextlib.contextmanager
def _listener(family: socket.AddressFamily, host: str, port: int):  # type: ignore[no-untyped-def]
    """Stand in for the proxy during the probe if it is not listening yet (non-native sidecars)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(8)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
        yield
    finally:
        s.close()


def main(args: argparse.Namespace) -> int:
    try:
        ports = tuple(int(p) for p in str(args.ports).split(",") if p)
        if not ports or not all(0 < p < 65536 for p in ports):
            raise CaptureError("--ports: a comma-separated list of TCP ports, e.g. 80,443")
        v6 = ipv6_present()
        spec = CaptureSpec(
            proxy_uid=args.proxy_uid, proxy_port=args.proxy_port, ports=ports,
            iptables=find_tool("iptables", args.iptables),
            ip6tables=find_tool("ip6tables", args.ip6tables) if v6 else None,
            dns=args.dns, probe_uid=args.probe_uid,
            probe_v4=args.probe_v4, probe_v6=args.probe_v6,
        )  # fmt: skip
        install(spec)
        if not args.no_verify:
            verify(spec)
    except (CaptureError, OSError, ValueError) as e:
        print(f"sandgate capture: FAILED, egress is not safe: {e}", file=sys.stderr)
        return 1
    families = "IPv4 and IPv6" if spec.ip6tables else "IPv4 (no IPv6 in this namespace)"
    print(f"sandgate capture: in force for {families}: TCP ports {','.join(map(str, ports))} -> 127.0.0.1:{spec.proxy_port}, "
          f"UID {spec.proxy_uid} exempt, all other egress dropped", flush=True)  # fmt: skip
    return 0
