"""Admission webhook benchmark: latency and throughput of `sandgate webhook` over real HTTPS.

    .venv/bin/python bench/webhook.py [--requests 2000] [--concurrency 8] [--quick]

Sends AdmissionReviews for a plain pod (the full injection path: policy lookup, checks, mutation,
JSON patch) over kept-alive TLS connections, first one at a time (latency), then from several
client threads (admissions per second). Loopback only. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parents[1]
POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: default}
spec:
  allow: [{host: api.openai.com}]
  secrets:
    - {name: openai, source: {vault: {mount: secret, path: a/openai, key: k}}, hosts: [api.openai.com], agentEnv: [OPENAI_API_KEY]}
"""


def review() -> bytes:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "bench"},
           "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}]}}  # fmt: skip
    req = {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
           "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE", "namespace": "bench",
           "userInfo": {"username": "bench"}, "object": pod}  # fmt: skip
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}).encode()


def client(port: int, ctx: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)


def one(conn: http.client.HTTPSConnection) -> float:
    body = review()
    t0 = time.perf_counter()
    conn.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - t0
    if resp.status != 200 or b'"patch"' not in data:
        raise RuntimeError(f"unexpected answer {resp.status}: {data[:200]!r}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="tiny counts: checks the benchmark works")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.concurrency = 50, 2
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-webhook-") as tmp:
        d = Path(tmp)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        leaf.private_key_pem.write_to_path(d / "tls.key")
        leaf.cert_chain_pems[0].write_to_path(d / "tls.crt")
        (d / "policies").mkdir()
        (d / "policies" / "default.yaml").write_text(POLICY)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandgate", "webhook", "--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key"),
             "--host", "127.0.0.1", "--port", str(port), "--policy-dir", str(d / "policies"), "--kubernetes-version", "1.30"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        # The webhook on one CPU, the client on the others: "admissions per second on one core".
        cpus = sorted(os.sched_getaffinity(0))
        pinned = len(cpus) >= 2
        if pinned:
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                os.sched_setaffinity(int(task.name), {cpus[0]})
            os.sched_setaffinity(0, set(cpus[1:]))
        try:
            assert proc.stdout is not None and proc.stdout.readline().startswith(b"sandgate webhook ready")
            if pinned:  # threads started since
                for task in Path(f"/proc/{proc.pid}/task").iterdir():
                    os.sched_setaffinity(int(task.name), {cpus[0]})
            ctx = ssl.create_default_context()
            ca.configure_trust(ctx)
            conn = client(port, ctx)
            for _ in range(50):
                one(conn)
            samples = sorted(one(conn) for _ in range(args.requests))
            p50, p99 = (
                samples[len(samples) // 2] * 1000,
                samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
            )

            per_thread = max(1, args.requests // args.concurrency)

            def worker() -> None:
                c = client(port, ctx)
                for _ in range(per_thread):
                    one(c)

            threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rate = per_thread * args.concurrency / (time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait(10)
    print("| webhook over HTTPS (keep-alive) | p50 ms | p99 ms | admissions/s |")
    print("|---|---|---|---|")
    print(f"| sequential, {args.requests} | {p50:.2f} | {p99:.2f} | |")
    print(f"| {args.concurrency} clients | | | {rate:.0f} |")
    print(
        f"(webhook pinned to CPU {cpus[0]}, client to CPUs {','.join(map(str, cpus[1:]))})"
        if pinned
        else "(the client shares the CPUs with the webhook: the rate is a floor)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
