"""The data path's own CPU per request, without sockets: for comparing two versions of the code.

    .venv/bin/python bench/inproc.py [--requests 20000] [--runs 7] [--body small|big|sse|openai] [--profile FILE]

bench/run.py measures the sidecar as a black box, and its CPU rows move 25-40 % from one hour to the
next on a shared machine: the kernel's work for every socket write, other tenants, cache misses. A
code change worth 5 % does not show there. This drives the real data path (``Client``, ``Exchange``,
``Upstream``: the policy, the authority checks, the swap, the scrubbing, the metrics and the audit
log, on a uvloop event loop) in one process, with in-memory transports in place of sockets: the
agent and the upstream are ``ssl.SSLObject`` pairs, so both TLS sessions run as in production. Only
the time spent inside the data path's callbacks is counted (not the agent's nor the upstream's
TLS), and each run's figure is the least over its repetitions (noise only ever adds).

It is not a substitute for bench/run.py (no system calls, no scheduling, no real network): it tells
whether a change made the data path's own work cheaper, to the microsecond.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client import HOST, PLACEHOLDER, request_bytes  # noqa: E402  (bench/, this script's directory)
from run import REAL_KEY, main_policy, real_key  # noqa: E402
from upstream import BIG, SMALL, answer  # noqa: E402

UPSTREAM_IP = "198.18.0.10"  # never dialled: the pool holds an in-memory upstream for it


class Pipe(asyncio.Transport):
    """A transport whose writes land in ``sink`` (read by the other end when the harness pumps)."""

    def __init__(self) -> None:
        super().__init__()
        self.sink = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sink += data

    def take(self) -> bytes:
        data = bytes(self.sink)
        self.sink.clear()
        return data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


# A request as the openai Python SDK sends it, and an answer as OpenAI's API gives it: real heads have
# a dozen or two fields where the other bodies' have two to four, and every field is handled. The
# answer's request id, ray id, rate-limit counters and cookie change from one answer to the next.
_OPENAI_BODY = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini","temperature":0}'
OPENAI_REQUEST = (
    f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: gzip, deflate\r\n"
    "Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
    "User-Agent: OpenAI/Python 1.55.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.55.0\r\n"
    "X-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\n"
    f"X-Stainless-Runtime-Version: 3.12.1\r\nAuthorization: Bearer {PLACEHOLDER}\r\nX-Stainless-Async: false\r\n"
    f"x-stainless-retry-count: 0\r\nContent-Length: {len(_OPENAI_BODY)}\r\n\r\n"
).encode() + _OPENAI_BODY
OPENAI_ANSWER = (
    b'{"id":"chatcmpl-AbC123xyzAbC123xyzAbC123xyz","object":"chat.completion","created":1733241600,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":'
    b'"Hi! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":'
    b'{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":0,'
    b'"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_0ba0d124f1"}'
)
OPENAI_ANSWER_HEAD = (
    b"HTTP/1.1 200 OK\r\nDate: Thu, 03 Dec 2026 16:00:00 GMT\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: keep-alive\r\naccess-control-expose-headers: X-Request-ID\r\n"
    b"openai-organization: user-abc123\r\nopenai-processing-ms: 312\r\nopenai-version: 2020-10-01\r\n"
    b"x-ratelimit-limit-requests: 10000\r\nx-ratelimit-limit-tokens: 200000\r\n"
    b"x-ratelimit-remaining-requests: %d\r\nx-ratelimit-remaining-tokens: %d\r\n"
    b"x-ratelimit-reset-requests: 8.64s\r\nx-ratelimit-reset-tokens: 7ms\r\n"
    b"x-request-id: req_%032x\r\n"
    b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\nCF-Cache-Status: DYNAMIC\r\n"
    b"Set-Cookie: __cf_bm=Zm9vYmFyYmF6cXV4LmV4YW1wbGU-%d-1.0.1.1-abcdefghijklmnopqrstuvwxyz; path=/; "
    b"expires=Thu, 03-Dec-26 16:30:00 GMT; domain=.api.openai.com; HttpOnly; Secure; SameSite=None\r\n"
    b"X-Content-Type-Options: nosniff\r\nServer: cloudflare\r\nCF-RAY: %016x-FRA\r\n"
    b'alt-svc: h3=":443"; ma=86400\r\nx-bench-auth: %s\r\n\r\n'
)


class Harness:
    def __init__(self, work: Path, body: str) -> None:
        self.work, self.body = work, body
        self.in_proxy = 0.0  # seconds inside the data path's callbacks
        self.agent_plain = bytearray()  # what the agent has read
        self.agent_out = b""  # TLS bytes the agent has yet to send to the sidecar
        self.up_out = b""  # and the upstream
        self.n = 0  # answers given

    async def setup(self) -> None:
        from proxy.audit import AuditLog
        from proxy.ca import CA_KEY_FILE, ensure_ca, publish_ca_cert
        from proxy.datapath.certs import AgentTls, upstream_context
        from proxy.datapath.client import Client
        from proxy.datapath.conn import at_round_end
        from proxy.datapath.server import Server
        from proxy.datapath.tlsio import TlsSession
        from proxy.datapath.upstream import Pool
        from proxy.metrics import Metrics
        from proxy.netcheck import AddressPolicy
        from proxy.runtime import Limits, Runtime
        from proxy.secrets import EnvSource, SecretStore
        from proxy.sidecar import read_policy
        from proxy.sink import Sink
        from sandgate.demo import make_upstream_certs

        w = self.work
        text = main_policy()
        for i in range(5):
            text = text.replace(
                f"{{vault: {{mount: secret, path: bench/s{i}, key: api_key}}}}", f"{{env: INPROC_S{i}}}"
            )
            os.environ[f"INPROC_S{i}"] = real_key(i)
        (w / "policy.yaml").write_text(text)
        policy, sha = read_policy(w / "policy.yaml")
        metrics = Metrics()
        metrics.initialise(policy, sha, "bench")
        self.audit_file = Sink.open_file(str(w / "audit.log"), name="audit")  # as the sidecar opens --audit-log
        audit = AuditLog(self.audit_file, {}, policy_sha256=sha)
        rt = Runtime(policy, SecretStore({"env": EnvSource()}), metrics, audit, AddressPolicy(["198.18.0.0/15"]),
                     Limits(), False)  # fmt: skip
        failed = await rt.load(policy, sha)
        assert not failed, failed
        self.unhook = at_round_end(audit.flush_due)
        ensure_ca(w / "conf")
        ca, cert, key = make_upstream_certs(w, [HOST])
        pool = Pool(upstream_context([ca]), None)
        # (no resolver: the agent's destination is entered as checked below, so none is asked)
        self.server = Server(rt, AgentTls((w / "conf" / CA_KEY_FILE).read_bytes()), pool, resolver=None)  # type: ignore[arg-type]

        # The upstream: an in-memory TLS server answering every request head with a canned answer.
        self.up_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.up_ctx.load_cert_chain(cert, key)
        self.up_ctx.set_alpn_protocols(["http/1.1"])
        self.pooled_upstream()

        # The agent: CONNECT, then TLS with the sidecar's leaf for the host.
        agent_ctx = ssl.create_default_context(cafile=str(publish_ca_cert(w / "conf")))
        self.agent = TlsSession(agent_ctx, server_side=False, server_hostname=HOST)
        self.client_pipe = Pipe()
        self.client = Client(self.server)
        self.client.checked[(HOST, 443)] = UPSTREAM_IP  # what the resolver would have answered
        self.client.connection_made(self.client_pipe)
        self.to_proxy(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
        assert self.client_pipe.take().startswith(b"HTTP/1.1 200")
        self.agent_out = self.agent.handshake()
        while not (self.agent.established and self.client.facts is not None):
            self.pump()
        predial = self.client._predial  # (the dial a permitted CONNECT starts: it takes the pooled upstream)
        while predial is not None and not predial[1].done():  # (a few loop turns; more on a loaded machine)
            await asyncio.sleep(0)

    def pooled_upstream(self) -> None:
        """A kept-alive upstream connection (in memory) in the sidecar's pool. (Again whenever the
        sidecar closed the last one: it does after an answer scrubbed in slices, SLICE_TIME at a
        time, on a loaded machine; dialling instead would leave the process.)"""
        from proxy.datapath.tlsio import TlsSession
        from proxy.datapath.upstream import Upstream

        self.up_server = TlsSession(self.up_ctx, server_side=True)
        self.up_pipe = Pipe()
        self.up = Upstream(self.server.pool, (UPSTREAM_IP, 443, HOST), None)
        self.up.connection_made(self.up_pipe)
        self.up_buf = b""
        while not self.up.ready.done():
            self.pump()
        self.server.pool.put(self.up)

    def to_proxy(self, data: bytes) -> None:
        t0 = time.perf_counter()
        self.client.data_received(data)
        self.in_proxy += time.perf_counter() - t0

    def from_upstream(self, data: bytes) -> None:
        t0 = time.perf_counter()
        self.up.data_received(data)
        self.in_proxy += time.perf_counter() - t0

    def pump(self) -> bool:
        """Move every byte waiting in either direction, once; whether any moved."""
        moved = False
        if hasattr(self, "agent"):
            out, self.agent_out = self.agent_out, b""
            if out:
                self.to_proxy(out)
            data = self.client_pipe.take()
            if data:
                plain, back, _ = self.agent.receive(data)
                self.agent_plain += plain
                self.agent_out += back
            moved = bool(out or data)
        data = self.up_pipe.take()
        if data:
            plain, back, _ = self.up_server.receive(data)
            self.up_out += back
            self.up_buf += plain
            while (i := self.up_buf.find(b"\r\n\r\n")) >= 0:
                head, self.up_buf = self.up_buf[:i], self.up_buf[i + 4 :]
                self.up_out += self.up_server.send(self.answer(head))
        out, self.up_out = self.up_out, b""
        if out:
            self.from_upstream(out)
        return moved or bool(data or out)

    def answer(self, head: bytes) -> bytes:
        auth = b"real" if b"Bearer " + REAL_KEY.encode() in head else b"placeholder"
        if self.body == "openai":
            self.n += 1  # what changes from one answer to the next: counters, ids, a cookie
            n = self.n
            return (
                OPENAI_ANSWER_HEAD % (len(OPENAI_ANSWER), 9999 - n % 9999, 199976 - n, n, 1733241600 + n, n, auth)
                + OPENAI_ANSWER
            )
        if self.body == "big":
            return answer("200 OK", "application/octet-stream", auth, BIG)
        if self.body == "sse":
            events = b"".join(b'data: {"token":"t%d"}\n\n' % i for i in range(10)) + b"data: [DONE]\n\n"
            return answer("200 OK", "text/event-stream", auth, None) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)
        return answer("200 OK", "application/json", auth, SMALL)

    async def requests(self, n: int) -> float:
        """``n`` kept-alive requests, one after another; microseconds inside the data path per request."""
        req = (
            OPENAI_REQUEST
            if self.body == "openai"
            else request_bytes("/v1/big" if self.body == "big" else "/v1/sse" if self.body == "sse" else "/v1/small")
        )
        self.in_proxy = 0.0
        for i in range(n):
            if self.up.closed:
                self.pooled_upstream()
            self.agent_out += self.agent.send(req)
            self.agent_plain.clear()
            for _ in range(64):
                if not self.pump():
                    await asyncio.sleep(0)  # waiting on a task of the data path (the first dial)
                if self.agent_plain.endswith(b"\r\n0\r\n\r\n") or self.complete():
                    break
            else:
                raise RuntimeError(f"no complete answer: {bytes(self.agent_plain[:300])!r}")
            if b"x-bench-auth: real" not in self.agent_plain:
                raise RuntimeError(f"the key was not swapped: {bytes(self.agent_plain[:300])!r}")
            if i % 64 == 0:
                await asyncio.sleep(0)  # the loop's own callbacks (audit flush backstop, timers)
        return self.in_proxy / n * 1e6

    def complete(self) -> bool:
        head_end = self.agent_plain.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = bytes(self.agent_plain[:head_end]).lower()
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                return len(self.agent_plain) - head_end - 4 >= int(line.split(b":")[1])
        return False

    async def close(self) -> None:
        await asyncio.sleep(0)  # the audit log's pending flush
        self.unhook()
        self.audit_file.close()


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sandgate-inproc-") as d:
        h = Harness(Path(d), args.body)
        await h.setup()
        await h.requests(500)  # warm-up: caches, first-use paths
        gc.freeze()  # as the sidecar does once ready: start-up objects out of every collection
        # Objects a request leaves in reference cycles: freed only by a collection, late (memory held,
        # the collector's walks); 0 when every exchange is freed as it ends.
        gc.collect()
        gc.disable()
        await h.requests(200)
        cyclic = gc.collect() / 200
        gc.enable()
        runs = []
        profiler = cProfile.Profile() if args.profile else None
        for _ in range(args.runs):
            if profiler:
                profiler.enable()
            runs.append(await h.requests(args.requests))
            if profiler:
                profiler.disable()
        await h.close()
    if profiler:
        profiler.dump_stats(args.profile)
    print(f"data path CPU per kept-alive request ({args.body} answer, {args.requests} requests x {args.runs} runs): "
          f"least {min(runs):.1f} us, median {statistics.median(runs):.1f} us  "
          f"(all: {' '.join(f'{r:.1f}' for r in runs)})")  # fmt: skip
    print(f"objects left to the garbage collector per request: {cyclic:g}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000, help="requests per run (default 20000)")
    ap.add_argument("--runs", type=int, default=7, help="runs; the least is the figure (default 7)")
    ap.add_argument("--body", choices=["small", "big", "sse", "openai"], default="small",
                    help="the answer: small JSON (default), 64 KiB, an SSE stream of 11 events, or a chat "
                         "completion with the heads the openai SDK and OpenAI's API send (16 and 24 fields)")  # fmt: skip
    ap.add_argument("--profile", help="write a cProfile of the measured runs here (it slows them)")
    args = ap.parse_args()
    import uvloop

    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
