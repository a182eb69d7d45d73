"""``sandgate run -- CMD``: run a command under an EgressPolicy on this machine.

This version runs CMD with the proxy in explicit mode: CMD gets ``HTTPS_PROXY``/``HTTP_PROXY``, the
per-run CA in the usual trust variables and the policy's placeholders in its ``agentEnv``
variables. Capture is cooperative: a program that ignores the proxy variables is not stopped. The
network-namespace and gVisor isolation described in the design (the pod model on one machine) is
not built yet, and ``run`` says so on every start.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from injector import constants as k
from proxy.policy.load import PolicyInvalid, load_policy
from sandgate.procs import stop_process

WARNING = (
    "sandgate run: WARNING: explicit-proxy mode only: CMD reaches the network through the proxy because "
    "HTTPS_PROXY tells it to; a program that ignores HTTPS_PROXY is NOT stopped (network-namespace and gVisor "
    "isolation are not built yet)."
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print(
            "sandgate run: give the command after --, e.g. sandgate run --policy p.yaml -- python agent.py",
            file=sys.stderr,
        )
        return 2
    try:
        policy = load_policy(str(args.policy))
    except PolicyInvalid as e:
        print(f"sandgate run: invalid policy\n{e}", file=sys.stderr)
        return 2
    print(WARNING, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="sandgate-run-") as tmp:
        confdir = Path(tmp) / "conf"
        port, metrics_port = _free_port(), _free_port()
        proxy_cmd = [
            sys.executable, "-m", "sandgate", "proxy", "--policy", str(args.policy), "--listen-port", str(port),
            "--metrics-port", str(metrics_port), "--confdir", str(confdir), "--require-secrets",
            *(["--audit-log", str(args.audit_log)] if args.audit_log else []),
            *[a for ca in args.upstream_ca for a in ("--upstream-ca", str(ca))],
            *[a for cidr in args.allow_private for a in ("--allow-private", cidr)],
        ]  # fmt: skip
        proxy = subprocess.Popen(proxy_cmd, stdout=subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent)
        try:
            assert proxy.stdout is not None
            line = proxy.stdout.readline().decode()
            if not line.startswith("sandgate proxy ready"):
                proxy.wait(10)
                print(f"sandgate run: the proxy did not start (exit {proxy.returncode})", file=sys.stderr)
                return 2
            print(f"sandgate run: {line.strip()}", file=sys.stderr, flush=True)
            env = _agent_env(policy, port, confdir / "ca.crt")
            child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
            forward = {
                sig: signal.signal(sig, lambda s, _f: child.send_signal(s)) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                return child.wait()
            finally:
                for sig, previous in forward.items():
                    signal.signal(sig, previous)
        finally:
            stop_process(proxy)


def _agent_env(policy: object, port: int, ca: Path) -> dict[str, str]:
    from proxy.policy.model import Policy

    assert isinstance(policy, Policy)
    # The real values never enter CMD's environment: drop every variable a secret is read from.
    secret_sources = {s.source.env for s in policy.secrets if s.source.kind == "env"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in secret_sources and not name.startswith("VAULT_")
    }
    for name in k.PROXY_ENV:
        env[name] = f"http://127.0.0.1:{port}"
    for name in k.NO_PROXY_ENV:
        env[name] = "localhost,127.0.0.1,::1"
    for name in k.CA_ENV:
        env[name] = str(ca)
    for secret in policy.secrets:
        for name in secret.agent_env:
            env[name] = secret.placeholder
    return env


def _die_with_parent() -> None:
    """In the child, before exec: if `sandgate run` itself is killed (even SIGKILL), the kernel sends
    the child SIGTERM; neither the proxy nor CMD outlives its run."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
