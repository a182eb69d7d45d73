"""``sandgate _sandbox-init PLAN``: PID 1 of a ``sandgate run`` sandbox (network namespace or gVisor).

It does what the injector's init container and sidecar do in a pod, in that order: install
capture (``sandgate capture``, the proxy's UID 0 exempt, DNS blocked), start the proxy in
transparent mode behind the relay, then run CMD as an unprivileged UID with no_new_privs. CMD's
exit status becomes ours; SIGINT/SIGTERM go to CMD; the proxy is stopped after CMD, once
``--metrics-out`` (if asked) has its final scrape.

The plan is a JSON file written by ``sandgate run`` (see sandgate.run). It holds no secret: the
proxy reads its Vault token / secret variables from our environment, which CMD never gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from sandgate.procs import SignalForwarder, die_with_parent, exit_code, relay_lines, stop_process


def say(msg: str) -> None:
    print(f"sandgate run: {msg}", file=sys.stderr, flush=True)


def _private_files(files: dict[str, str]) -> None:
    """Network-namespace mode: our own mount namespace, so /etc/hosts and /etc/resolv.conf are the
    sandbox's and nobody else's. (gVisor mode gets them as bind mounts in the OCI spec.)"""
    os.unshare(os.CLONE_NEWNS)
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    for dest, source in files.items():
        subprocess.run(["mount", "--bind", source, dest], check=True)


def _drop_to(uid: int, gid: int) -> Any:
    def preexec() -> None:
        import ctypes

        die_with_parent()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        pr_set_no_new_privs = 38
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
            os._exit(126)

    return preexec


def main(plan_path: str) -> int:
    # Installed first: as PID 1 of a gVisor sandbox, a signal without a handler would be ignored.
    forward = SignalForwarder()
    plan = json.loads(Path(plan_path).read_text())
    if plan.get("private_files"):
        _private_files(plan["private_files"])
    capture = subprocess.run(
        [sys.executable, "-m", "sandgate", "capture", "--proxy-uid", "0", "--proxy-port", str(plan["proxy_port"]),
         "--ports", ",".join(map(str, plan["ports"])), "--dns", "block"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if capture.returncode != 0:
        say(f"capture failed, not starting CMD:\n{capture.stderr.strip()}")
        return 125
    say(capture.stdout.strip().removeprefix("sandgate capture: "))
    from sandgate.dnsserver import DnsServer, sink

    DnsServer(sink(plan["sink"]))  # lives as long as we do
    proxy = subprocess.Popen(
        [sys.executable, "-m", "sandgate", "proxy", *plan["proxy_args"]],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline().decode().strip()
        if not line.startswith("sandgate proxy ready"):
            proxy.wait(30)
            say(f"the proxy did not start (exit {proxy.returncode}), not starting CMD")
            return 125
        say(line)
        relay_lines(proxy.stdout, sys.stderr)  # its audit lines, unless --audit-log took them
        try:
            child = subprocess.Popen(
                plan["cmd"], env=plan["cmd_env"], cwd=plan["cwd"], preexec_fn=_drop_to(plan["uid"], plan["gid"])
            )
        except OSError as e:
            say(f"cannot run {plan['cmd'][0]} in {plan['cwd']} as uid {plan['uid']}: {e.strerror}")
            return 127
        forward.attach(child.send_signal)
        rc = exit_code(child.wait())
        if plan.get("metrics_out"):
            scrape_metrics(plan["metrics_url"], Path(plan["metrics_out"]))
        return rc
    finally:
        stop_process(proxy)


def fetch_metrics(url: str) -> bytes:
    """``--metrics-out``: the proxy's final /metrics; a failure is said (and gives nothing), not fatal."""
    try:
        return bytes(urllib.request.urlopen(url, timeout=5).read())
    except OSError as e:
        say(f"--metrics-out: could not scrape the proxy: {e}")
        return b""


def scrape_metrics(url: str, out: Path) -> None:
    """The final scrape into ``out``, in the run's own directory (only root can write there)."""
    out.write_bytes(fetch_metrics(url))
