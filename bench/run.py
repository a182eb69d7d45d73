"""Sandgate proxy benchmark: added latency and memory, side by side with the physical limit.

    .venv/bin/python bench/run.py [--requests 2000] [--rss-requests 10000] [--quick]

Runs in a private network namespace (like `sandgate demo`), starts an HTTPS upstream, an OpenBao dev
server holding 5 secrets, the Sandgate sidecar (a policy of 50 allow rules and those 5 secrets,
swapping on every request) and bare `mitmdump`
(the framework's floor), then measures sequential keep-alive HTTPS requests for each, interleaved
in batches so that machine noise hits all three alike. Prints a Markdown table and writes it to
bench/results/.

The client is the same Python http.client for every configuration; its own cost is in "direct"
too, so the "added" columns (config minus direct) are the proxies' cost alone.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_IP = "127.0.0.2"
HOST = "api.openai.com"
PLACEHOLDER = "sk-sandgate-bench-openai"


def policy_text() -> str:
    allow = [f"    - host: {HOST}"] + [f"    - host: svc{i}.example.com" for i in range(49)]
    secrets = [
        f"    - name: s{i}\n      placeholder: {PLACEHOLDER if i == 0 else f'sk-sandgate-bench-{i}'}\n"
        f"      source: {{vault: {{mount: secret, path: bench/s{i}, key: api_key}}}}\n"
        f"      hosts: [{HOST if i == 0 else f'svc{i}.example.com'}]"
        for i in range(5)
    ]
    return (
        "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: bench}\nspec:\n  allow:\n"
        + "\n".join(allow) + "\n  secrets:\n" + "\n".join(secrets) + "\n"
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Config:
    name: str
    proxy_port: int | None
    pid: int | None
    ctx: ssl.SSLContext
    samples: list[float] = field(default_factory=list)
    conn: http.client.HTTPSConnection | None = None

    def connect(self) -> http.client.HTTPSConnection:
        if self.proxy_port is None:
            conn = http.client.HTTPSConnection(HOST, 443, context=self.ctx, timeout=10)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", self.proxy_port, context=self.ctx, timeout=10)
            conn.set_tunnel(HOST, 443)
        return conn

    def request(self, path: str = "/v1/small") -> float:
        if self.conn is None:
            self.conn = self.connect()
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {PLACEHOLDER}"})
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200 or not body:
            raise RuntimeError(f"{self.name}: HTTP {resp.status}")
        return elapsed


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def vault_requests(port: int) -> float:
    lines = scrape(port).splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("sandgate_vault_requests_total{"))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def run(args: argparse.Namespace) -> str:
    from sandgate.demo import make_upstream_certs
    from sandgate.devbao import DevBao

    work = Path(tempfile.mkdtemp(prefix="sandgate-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    stoppers: list[Callable[[], None]] = []
    try:
        ca, cert, key = make_upstream_certs(work, [HOST])
        up = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "upstream.py"), str(cert), UPSTREAM_IP, "443", str(key)],
            stdout=subprocess.PIPE,
        )
        procs.append(up)
        assert up.stdout is not None and up.stdout.readline().strip() == b"ready"

        policy = work / "policy.yaml"
        policy.write_text(policy_text())
        (work / "bao").mkdir()
        bao = DevBao(work / "bao", free_port())
        stoppers.append(bao.stop)
        for i in range(5):
            path, value = f"bench/s{i}", {"api_key": f"sk-REAL-bench-{i}-0123456789"}
            bao.root().secrets.kv.v2.create_or_update_secret(path, value, mount_point="secret")
        sg_port, sg_metrics = free_port(), free_port()
        env = dict(os.environ, VAULT_TOKEN="root")
        t_start = time.monotonic()
        sg = subprocess.Popen(
            [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--listen-port", str(sg_port),
             "--metrics-port", str(sg_metrics), "--confdir", str(work / "sg"), "--upstream-ca", str(ca),
             "--allow-private", "127.0.0.0/8", "--audit-log", str(work / "audit.log"),
             "--vault-addr", bao.addr, "--vault-cacert", bao.cacert, "--require-secrets"],
            env=env, stdout=subprocess.PIPE,
        )  # fmt: skip
        procs.append(sg)
        assert sg.stdout is not None and sg.stdout.readline().startswith(b"sandgate proxy ready")
        sg_ready = time.monotonic() - t_start

        mitm_port = free_port()
        mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or "mitmdump"
        md = subprocess.Popen(
            [mitmdump, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(mitm_port), "--set", f"confdir={work / 'md'}",
             "--set", f"ssl_verify_upstream_trusted_ca={ca}", "--set", "stream_large_bodies=1m"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(md)
        wait_port(mitm_port)
        while not (work / "md" / "mitmproxy-ca-cert.pem").exists():
            time.sleep(0.05)

        def ctx(*cas: Path) -> ssl.SSLContext:
            c = ssl.create_default_context()
            for a in cas:
                c.load_verify_locations(str(a))
            return c

        configs = [
            Config("direct", None, None, ctx(ca)),
            Config("mitmdump (bare)", mitm_port, md.pid, ctx(work / "md" / "mitmproxy-ca-cert.pem")),
            Config("sandgate", sg_port, sg.pid, ctx(work / "sg" / "ca.crt")),
        ]
        for c in configs:  # warm-up: connections, cert minting, caches
            for _ in range(50):
                c.request()
        rss_idle = {c.name: rss_mib(c.pid) for c in configs if c.pid}
        vault_before = vault_requests(sg_metrics)
        cpu_before = {c.name: cpu_seconds(c.pid) for c in configs if c.pid}
        batch = 50
        for _ in range(max(1, args.requests // batch)):
            for c in configs:
                c.samples += [c.request() for _ in range(batch)]
        vault_per_1k = (vault_requests(sg_metrics) - vault_before) / len(configs[2].samples) * 1000
        cpu_per_1k = {
            c.name: (cpu_seconds(c.pid) - cpu_before[c.name]) / len(c.samples) * 1000 for c in configs if c.pid
        }
        for c in configs[1:]:
            assert c.pid is not None
            for _ in range(args.rss_requests):
                c.request()
        rss_after = {c.name: rss_mib(c.pid) for c in configs if c.pid}
        swaps_ok = "sandgate_secret_swaps_total" in scrape(sg_metrics)

        direct = configs[0]
        d50, d99 = pct(direct.samples, 0.5), pct(direct.samples, 0.99)
        lines = [
            f"# Sandgate benchmark, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"Keep-alive HTTPS GET of a small JSON body through one connection, {len(direct.samples)} requests per configuration, "
            f"interleaved in batches of {batch}; RSS after {args.rss_requests} more requests. {os.cpu_count()} CPUs.",
            "",
            "| configuration | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU ms / request | RSS idle MiB | RSS after MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in configs:
            p50, p99 = pct(c.samples, 0.5), pct(c.samples, 0.99)
            added = "" if c is direct else f"{p50 - d50:+.2f} | {p99 - d99:+.2f}"
            cpu = f"{cpu_per_1k[c.name]:.2f}" if c.pid else ""
            rss = f"{rss_idle[c.name]:.0f} | {rss_after[c.name]:.0f}" if c.pid else " | "
            lines.append(f"| {c.name} | {p50:.2f} | {p99:.2f} | {added or ' | '} | {cpu} | {rss} |")
        lines += [
            "",
            f"Sandgate start to ready (5 secrets fetched from OpenBao first): {sg_ready:.2f} s. "
            f"Swaps counted in its metrics: {'yes' if swaps_ok else 'NO'}.",
            f"Vault requests per 1,000 proxied requests (warm cache, 60 s background refresh): {vault_per_1k:.2f}.",
        ]
        return "\n".join(lines) + "\n"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for stop in stoppers:
            stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--requests", type=int, default=2000, help="measured keep-alive requests per configuration (default 2000)"
    )
    ap.add_argument(
        "--rss-requests", type=int, default=10000, help="requests before the second RSS reading (default 10000)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny counts: checks the benchmark works, measures nothing")
    ap.add_argument("--out", type=Path, help="write the table here (default bench/results/<date>.md; not with --quick)")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rss_requests = 100, 100
    from sandgate.hermetic import reexec_in_private_network, setup_private_network

    if os.environ.get("SANDGATE_BENCH_INSIDE") != "1":
        argv = [sys.executable, __file__, *sys.argv[1:]]
        return reexec_in_private_network(argv, "SANDGATE_BENCH_INSIDE", {"PYTHONPATH": str(ROOT)})
    setup_private_network({HOST: UPSTREAM_IP})
    table = run(args)
    print(table)
    if not args.quick:
        out = args.out or ROOT / "bench" / "results" / f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
