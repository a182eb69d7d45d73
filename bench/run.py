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
import statistics
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


def squid_config(work: Path, port: int) -> Path:
    """Squid as a CONNECT-only allowlist proxy: the floor of any egress proxy (no interception)."""
    conf = work / "squid.conf"
    conf.write_text(
        f"http_port 127.0.0.1:{port}\n"
        f"acl api dstdomain {HOST}\nacl tls_port port 443\nacl CONNECT method CONNECT\n"
        "http_access allow CONNECT api tls_port\nhttp_access deny all\n"
        "cache deny all\naccess_log none\n"
        f"cache_log {work / 'squid-cache.log'}\npid_filename {work / 'squid.pid'}\ncoredump_dir {work}\n"
        "shutdown_lifetime 0 seconds\n"
    )
    return conf


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


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

    def fresh_request(self) -> float:
        """One request on a new connection: TCP, CONNECT (through a proxy), TLS, request."""
        conn = self.connect()
        t0 = time.perf_counter()
        conn.request("GET", "/v1/small", headers={"Authorization": f"Bearer {PLACEHOLDER}"})
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter() - t0
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {resp.status}")
        return elapsed

    def sse(self, delay_ms: int, warm: bool = False) -> tuple[float, float, float]:
        """(headers, first event, last event) seconds after the request was sent, on a new connection
        or (``warm``) on the kept-alive one."""
        if warm and self.conn is None:
            self.conn = self.connect()
        conn = self.conn if warm and self.conn is not None else self.connect()
        t0 = time.perf_counter()
        conn.request("GET", f"/v1/sse?delay_ms={delay_ms}", headers={"Authorization": f"Bearer {PLACEHOLDER}"})
        resp = conn.getresponse()
        t_headers = time.perf_counter() - t0
        t_first = t_last = 0.0
        buf = b""
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            now = time.perf_counter() - t0
            if not t_first and b"data:" in buf + chunk:
                t_first = now
            buf += chunk
            if b"[DONE]" in buf:
                t_last = now
                break
        resp.read()  # the end of the chunked body, so a kept-alive connection stays usable
        if not warm:
            conn.close()
        return t_headers, t_first, t_last


def throughput(config: Config, concurrency: int, per_client: int) -> float:
    """Requests per second with ``concurrency`` clients on kept-alive connections (threads)."""
    import threading

    def client() -> None:
        c = Config(config.name, config.proxy_port, config.pid, config.ctx)
        for _ in range(per_client):
            c.request()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return concurrency * per_client / (time.perf_counter() - t0)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


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
        sg_log = (work / "sandgate.log").open("wb")  # the proxy's own log, apart from the table
        stoppers.append(sg_log.close)
        t_start = time.monotonic()
        sg = subprocess.Popen(
            [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--listen-port", str(sg_port),
             "--metrics-port", str(sg_metrics), "--confdir", str(work / "sg"), "--upstream-ca", str(ca),
             "--allow-private", "127.0.0.0/8", "--audit-log", str(work / "audit.log"),
             "--vault-addr", bao.addr, "--vault-cacert", bao.cacert, "--require-secrets"],
            env=env, stdout=subprocess.PIPE, stderr=sg_log,
        )  # fmt: skip
        procs.append(sg)
        assert sg.stdout is not None and sg.stdout.readline().startswith(b"sandgate proxy ready")
        sg_ready = time.monotonic() - t_start

        mitm_port = free_port()
        mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or "mitmdump"
        md = subprocess.Popen(
            [mitmdump, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(mitm_port), "--set", f"confdir={work / 'md'}",
             "--set", f"ssl_verify_upstream_trusted_ca={ca}", "--set", "stream_large_bodies=1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(md)
        wait_port(mitm_port)
        while not (work / "md" / "mitmproxy-ca-cert.pem").exists():
            time.sleep(0.05)

        squid = shutil.which("squid") or shutil.which("squid", path="/usr/sbin")
        sq = None
        if squid:
            sq_port = free_port()
            sq = subprocess.Popen([squid, "-N", "-f", str(squid_config(work, sq_port))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            procs.append(sq)
            wait_port(sq_port)
        # One core for the proxies, the rest for the client and the upstream: "per core" rates, and
        # a client that does not compete with the proxy it measures.
        cpus = sorted(os.sched_getaffinity(0))
        pinned = len(cpus) >= 2 and not args.no_pin
        if pinned:
            for pid in (sg.pid, md.pid, *([sq.pid] if sq else [])):
                pin(pid, {cpus[0]})
            for pid in (os.getpid(), up.pid):
                pin(pid, set(cpus[1:]))

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
        if sq is not None:
            configs.append(Config("squid (CONNECT only)", sq_port, sq.pid, ctx(ca)))
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
        sandgate = next(c for c in configs if c.name == "sandgate")
        vault_per_1k = (vault_requests(sg_metrics) - vault_before) / len(sandgate.samples) * 1000
        cpu_per_1k = {
            c.name: (cpu_seconds(c.pid) - cpu_before[c.name]) / len(c.samples) * 1000 for c in configs if c.pid
        }
        # New connection per request, interleaved.
        fresh: dict[str, list[float]] = {c.name: [] for c in configs}
        for _ in range(max(1, args.new_connections // 10)):
            for c in configs:
                fresh[c.name] += [c.fresh_request() for _ in range(10)]
        # SSE: 50 events 2 ms apart; a buffering proxy would deliver the first event with the last.
        sse: dict[str, list[tuple[float, float, float]]] = {c.name: [] for c in configs}
        sse_warm: dict[str, list[tuple[float, float, float]]] = {c.name: [] for c in configs}
        for _ in range(args.sse_streams):
            for c in configs:
                sse[c.name].append(c.sse(2))
                sse_warm[c.name].append(c.sse(2, warm=True))
        # New connections per second, 8 clients each opening a connection per request.
        conn_rates: dict[str, float] = {}
        for c in configs:
            per_client = max(2, args.new_connections // 8)

            def opener(c: Config = c, n: int = per_client) -> None:
                for _ in range(n):
                    c.fresh_request()

            import threading

            threads = [threading.Thread(target=opener) for _ in range(8)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            conn_rates[c.name] = 8 * per_client / (time.perf_counter() - t0)
        # Throughput and proxy CPU at several concurrencies; "direct" shows what the client can drive.
        rates: dict[tuple[str, int], float] = {}
        cpu_at: dict[tuple[str, int], float] = {}
        for conc in (1, 8, 32):
            per_client = max(5, args.throughput_requests // conc)
            for c in configs:
                before = cpu_seconds(c.pid) if c.pid else 0.0
                rates[(c.name, conc)] = throughput(c, conc, per_client)
                if c.pid:
                    cpu_at[(c.name, conc)] = (cpu_seconds(c.pid) - before) / (conc * per_client) * 1000 * 1000
        rss_loaded = {c.name: rss_mib(c.pid) for c in configs if c.pid}
        for c in configs[1:]:
            assert c.pid is not None
            for _ in range(args.rss_requests):
                c.request()
        rss_after = {c.name: rss_mib(c.pid) for c in configs if c.pid}
        soak_before = rss_mib(sg.pid)
        t0 = time.perf_counter()
        throughput(sandgate, 8, max(1, args.soak // 8))
        soak_s = time.perf_counter() - t0
        soak_after = rss_mib(sg.pid)
        swaps_ok = "sandgate_secret_swaps_total" in scrape(sg_metrics)

        direct = configs[0]
        d50, d99 = pct(direct.samples, 0.5), pct(direct.samples, 0.99)
        lines = [
            f"# Sandgate benchmark, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"Keep-alive HTTPS GET of a small JSON body through one connection, {len(direct.samples)} requests per configuration, "
            f"interleaved in batches of {batch}. {os.cpu_count()} CPUs. RSS columns: idle, and after every section below.",
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
        f50, f99 = pct(fresh["direct"], 0.5), pct(fresh["direct"], 0.99)
        lines += ["", f"New connection per request (TCP, CONNECT, TLS both sides), {len(fresh['direct'])} each:", "",
                  "| configuration | p50 ms | p99 ms | added p50 ms | added p99 ms |", "|---|---|---|---|---|"]  # fmt: skip
        for c in configs:
            p50, p99 = pct(fresh[c.name], 0.5), pct(fresh[c.name], 0.99)
            added = " | " if c is direct else f"{p50 - f50:+.2f} | {p99 - f99:+.2f}"
            lines.append(f"| {c.name} | {p50:.2f} | {p99:.2f} | {added} |")
        d_h, d_f, d_l = (median_ms([x[i] for x in sse["direct"]]) for i in range(3))
        lines += ["", f"SSE, 50 events 2 ms apart, {args.sse_streams} streams each (medians; added vs direct):", "",
                  "| configuration | headers ms | first event ms | last event ms | streamed, not buffered |", "|---|---|---|---|---|"]  # fmt: skip
        for c in configs:
            h, f, last = (median_ms([x[i] for x in sse[c.name]]) for i in range(3))
            streamed = "yes" if f < last / 2 else "NO"
            if c is direct:
                lines.append(f"| {c.name} | {h:.2f} | {f:.2f} | {last:.2f} | {streamed} |")
            else:
                lines.append(f"| {c.name} | {h - d_h:+.2f} | {f - d_f:+.2f} | {last - d_l:+.2f} | {streamed} |")
        w_h, w_f, w_l = (median_ms([x[i] for x in sse_warm["direct"]]) for i in range(3))
        lines += ["", "SSE on a kept-alive connection (medians; added vs direct):", "",
                  "| configuration | headers ms | first event ms | last event ms |", "|---|---|---|---|"]  # fmt: skip
        for c in configs:
            h, f, last = (median_ms([x[i] for x in sse_warm[c.name]]) for i in range(3))
            if c is direct:
                lines.append(f"| {c.name} | {h:.2f} | {f:.2f} | {last:.2f} |")
            else:
                lines.append(f"| {c.name} | {h - w_h:+.2f} | {f - w_f:+.2f} | {last - w_l:+.2f} |")
        lines += ["", "New connections per second (8 clients, one request per connection): "
                  + ", ".join(f"{c.name} {conn_rates[c.name]:.0f}" for c in configs) + "."]  # fmt: skip
        lines += ["", "Throughput (requests/s; proxy CPU ms per request) on kept-alive connections:", "",
                  "| configuration | c=1 | c=8 | c=32 |", "|---|---|---|---|"]  # fmt: skip
        for c in configs:
            cells = [
                f"{rates[(c.name, n)]:.0f}" + (f" ({cpu_at[(c.name, n)] / 1000:.2f} ms)" if c.pid else "")
                for n in (1, 8, 32)
            ]
            lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
        lines.append(
            f"(proxies pinned to CPU {cpus[0]}, client and upstream to CPUs {','.join(map(str, cpus[1:]))}; "
            if pinned
            else "(client, upstream and proxies share the CPUs; "
        )
        lines[-1] += '"direct" is what the client can drive, so a proxy row far below it is the proxy\'s limit)'

        lines += [
            "",
            f"RSS (MiB): idle -> after the sections above -> after {args.rss_requests} more keep-alive requests (slope per 10k):",
            "",
        ]
        for c in configs[1:]:
            slope = (rss_after[c.name] - rss_loaded[c.name]) / max(1, args.rss_requests) * 10000
            lines.append(
                f"- {c.name}: {rss_idle[c.name]:.0f} -> {rss_loaded[c.name]:.0f} -> {rss_after[c.name]:.0f} ({slope:+.2f} per 10k)"
            )
        growth = (soak_after - soak_before) / soak_before * 100
        lines += [
            "",
            f"Soak: sandgate RSS {soak_before:.1f} MiB -> {soak_after:.1f} MiB after {8 * max(1, args.soak // 8)} more "
            f"requests (8 clients, {soak_s:.0f} s): {growth:+.1f} %.",
        ]
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
    ap.add_argument(
        "--new-connections", type=int, default=300, help="new-connection requests per configuration (default 300)"
    )
    ap.add_argument("--sse-streams", type=int, default=20, help="SSE streams per configuration (default 20)")
    ap.add_argument(
        "--throughput-requests", type=int, default=2000, help="requests per concurrency level (default 2000)"
    )
    ap.add_argument("--soak", type=int, default=100000, help="requests of the RSS soak (default 100000)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the proxies to one CPU")
    ap.add_argument("--quick", action="store_true", help="tiny counts: checks the benchmark works, measures nothing")
    ap.add_argument("--out", type=Path, help="write the table here (default bench/results/<date>.md; not with --quick)")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rss_requests, args.new_connections, args.sse_streams, args.throughput_requests = (
            100,
            100,
            20,
            2,
            64,
        )
        args.soak = 64
    from sandgate.hermetic import reexec_in_private_network, setup_private_network

    if os.environ.get("SANDGATE_BENCH_INSIDE") != "1":
        argv = [sys.executable, __file__, *sys.argv[1:]]
        return reexec_in_private_network(argv, "SANDGATE_BENCH_INSIDE", {"PYTHONPATH": str(ROOT)})
    netfiles = setup_private_network({HOST: UPSTREAM_IP})
    try:
        table = run(args)
    finally:
        shutil.rmtree(netfiles, ignore_errors=True)
    print(table)
    if not args.quick:
        out = args.out or ROOT / "bench" / "results" / f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
