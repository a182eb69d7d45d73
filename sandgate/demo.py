"""``sandgate demo``: the whole idea in one command, on one machine, with no network.

It runs in a private network namespace (``unshare``) whose /etc/hosts points api.openai.com and
tools.example.com at loopback stand-ins, so nothing can leave the machine. There it starts a fake
OpenAI-style API (a streamed chat completion that records the Authorization it saw) and runs an
agent that holds only a placeholder key under ``sandgate run`` with a demo policy. The agent:

1. calls the API with its placeholder and gets a streamed answer (the proxy swapped in the key);
2. sends the placeholder to tools.example.com, allowed but not bound to the key: refused;
3. calls a host outside the allowlist: refused;
4. opens a connection that skips the proxy: it gets nowhere (as root: gVisor or a network
   namespace; without root the demo says plainly that explicit-proxy mode cannot stop it).

The real key lives in an embedded OpenBao (the Vault API) dev server; the proxy reads it with a
token whose OpenBao policy allows that one path. Then the demo prints what the upstream saw (the
real key, masked), the denials, and the proxy's metrics.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sandgate.devbao import DevBao
from sandgate.hermetic import reexec_in_private_network, setup_private_network

POLICY = """\
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata:
  name: demo-agent
spec:
  mode: enforce
  allow:
    - host: api.openai.com
      methods: [GET, POST]
      paths: ["/v1/*"]
    - host: tools.example.com
  secrets:
    - name: openai
      placeholder: sk-sandgate-demo-openai
      source:
        vault: {mount: secret, path: demo/openai, key: api_key}
      hosts: [api.openai.com]
      headers: [authorization]
      agentEnv: [OPENAI_API_KEY]
"""

HOSTS = {"api.openai.com": "127.0.0.2", "tools.example.com": "127.0.0.3"}


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def main() -> int:
    if os.environ.get("SANDGATE_DEMO_INSIDE") == "1":
        return asyncio.run(_inside())
    say("starting in a private network namespace: nothing leaves this machine")
    # Without real root the private namespace lives in a user namespace that maps one UID: no
    # unprivileged user to run the agent as, no runsc. The run is then explicit-proxy, and says so.
    explicit = {"SANDGATE_DEMO_EXPLICIT": "1"} if os.geteuid() != 0 else {}
    rc = reexec_in_private_network([sys.executable, "-P", "-m", "sandgate", "demo"], "SANDGATE_DEMO_INSIDE", explicit)
    if rc != 0:
        print(f"sandgate demo: failed (exit {rc})", file=sys.stderr)
    return rc


def make_upstream_certs(d: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A throwaway CA and one server certificate for ``names``: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo upstream CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo upstream")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_path, cert_path, key_path = d / "upstream-ca.pem", d / "upstream.pem", d / "upstream.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)  # the demo's agent runs as another user in this directory
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


async def _start_upstreams(cert: Path, key: Path, seen: list[dict[str, str]]) -> Any:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(
            {"host": request.host, "path": request.path, "authorization": request.headers.get("Authorization", "")}
        )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ["Keys", " stay", " outside", " the", " sandbox", "."]:
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": word}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.02)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def tool(request: web.Request) -> web.Response:
        seen.append(
            {"host": request.host, "path": request.path, "authorization": request.headers.get("Authorization", "")}
        )
        return web.json_response({"ok": True})

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runners = []
    for host, ip in HOSTS.items():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_route("*", "/{tail:.*}", tool)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, ip, 443, ssl_context=ctx).start()
        runners.append(runner)
        say(f"stand-in upstream for {host} on {ip}:443")
    return runners


def _mask(value: str) -> str:
    return value[:8] + "…" + value[-4:] if len(value) > 16 else "…"


async def _inside() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sandgate-demo-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # the agent runs as an unprivileged user and starts here
        netfiles = setup_private_network(HOSTS)
        ca, cert, key = make_upstream_certs(workdir, list(HOSTS))
        seen: list[dict[str, str]] = []
        runners = await _start_upstreams(cert, key, seen)
        policy = workdir / "policy.yaml"
        policy.write_text(POLICY)
        agent = workdir / "agent.py"
        shutil.copyfile(Path(__file__).with_name("demo_agent.py"), agent)
        agent.chmod(0o644)
        real_key = "sk-demo-REAL-" + secrets.token_hex(16)
        audit, metrics_file = workdir / "audit.log", workdir / "metrics.txt"
        (workdir / "bao").mkdir(mode=0o700)
        bao = await asyncio.to_thread(DevBao, workdir / "bao", 18200)
        try:
            token = await asyncio.to_thread(_provision, bao, real_key)
            say(f"OpenBao {bao.version} (embedded dev server) holds the key at secret/demo/openai; "
                "the proxy's token may read only that path")  # fmt: skip
            say("running the agent under `sandgate run` with policy 'demo-agent' (1 secret, bound to api.openai.com); "
                "it holds only OPENAI_API_KEY=sk-sandgate-demo-openai")  # fmt: skip
            run = await asyncio.create_subprocess_exec(
                sys.executable, "-P", "-m", "sandgate", "run", "--policy", str(policy), "--upstream-ca", str(ca),
                "--allow-private", "127.0.0.0/8", "--audit-log", str(audit), "--metrics-out", str(metrics_file),
                *(["--explicit-proxy"] if _explicit() else []), "--", _agent_python(), str(agent),
                cwd=workdir, env=dict(os.environ, VAULT_ADDR=bao.addr, VAULT_CACERT=bao.cacert, VAULT_TOKEN=token),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert run.stdout is not None
            agent_lines: list[str] = []
            async with asyncio.timeout(120):
                while line := (await run.stdout.readline()).decode():
                    print(line, end="", flush=True)  # progress, as it happens
                    agent_lines.append(line.strip())
                agent_rc = await run.wait()
        finally:
            for r in runners:
                await r.cleanup()
            bao.stop()
            shutil.rmtree(netfiles, ignore_errors=True)
        metrics = metrics_file.read_text() if metrics_file.exists() else ""
        _report(seen, real_key, audit, metrics, agent_lines, time.monotonic() - started)
        return agent_rc


def _agent_python() -> str:
    """The agent is standard-library Python run as an unprivileged user, who may not be able to
    execute our interpreter (e.g. pyenv's, under /root): prefer the system's."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def _provision(bao: DevBao, real_key: str) -> str:
    """Write the key and return a token that can read that one secret and nothing else."""
    root = bao.root()
    root.secrets.kv.v2.create_or_update_secret("demo/openai", {"api_key": real_key}, mount_point="secret")
    root.sys.create_or_update_policy("demo-agent", 'path "secret/data/demo/openai" { capabilities = ["read"] }')
    return str(root.auth.token.create(policies=["demo-agent"], ttl="1h", renewable=True)["auth"]["client_token"])


def _explicit() -> bool:
    return os.environ.get("SANDGATE_DEMO_EXPLICIT") == "1"


def _isolation() -> str:
    import argparse

    from sandgate.run import isolation

    return {
        "gvisor": "gVisor sandbox (runsc) with its own network namespace; the proxy's relay is the only way out",
        "netns": "network namespace of its own (runsc not installed, so no gVisor); the proxy's relay is the only way out",
        "explicit": "explicit proxy only (not root): a program that ignores HTTPS_PROXY is not stopped",
    }[isolation(argparse.Namespace(explicit_proxy=_explicit(), gvisor="auto"))]


def _report(
    seen: list[dict[str, str]], real_key: str, audit: Path, metrics: str, agent: list[str], elapsed: float
) -> None:
    print("\n=== Sandgate demo report ===")
    print(f"Isolation: {_isolation()}")
    print("What the upstreams saw:")
    for s in seen:
        auth = s["authorization"]
        shown = (
            "Bearer " + _mask(auth.split(" ", 1)[1]) + "  (the REAL key, swapped in by the proxy)"
            if real_key in auth
            else auth or "(no Authorization)"
        )
        print(f"  {s['host']}{s['path']}: Authorization: {shown}")
    print("Decisions (audit log):")
    for raw in audit.read_text().splitlines():
        rec = json.loads(raw)
        extra = f" swapped={rec['secrets']}" if rec["secrets"] else ""
        extra += f" secret={rec['secret']}" if rec.get("secret") else ""
        print(
            f"  {rec['decision']:<8} {rec['reason'] or '':<18} {rec['method']} {rec['host']}{rec['path'] or ''}{extra}"
        )
    step4 = [i for i, ln in enumerate(agent) if ln.startswith("[agent] 4.")]
    outcome = agent[step4[0] + 1].removeprefix("[agent]    -> ") if step4 and step4[0] + 1 < len(agent) else ""
    print(f"Bypass attempt (step 4): {outcome or 'no result (the agent stopped early)'}")
    print("Metrics (sandgate_* from the proxy's /metrics):")
    for m in metrics.splitlines():
        if m.startswith(
            ("sandgate_egress_requests_total", "sandgate_secret_swaps_total", "sandgate_secret_blocked_total")
        ):
            print(f"  {m}")
    print("Secret store: OpenBao; Vault reads counted in sandgate_vault_requests_total:")
    for m in metrics.splitlines():
        if m.startswith("sandgate_vault_requests_total"):
            print(f"  {m}")
    leaked = real_key in audit.read_text() or real_key in metrics
    print(f"Real key in audit log or metrics: {'YES (bug!)' if leaked else 'no'}")
    print(f"Done in {elapsed:.1f} s.")
