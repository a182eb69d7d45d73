"""A private network for one process tree: only loopback, our own /etc/hosts, no resolver.

The demo, the benchmark and the test suite run their upstreams and the proxy in here, so that
nothing they do can reach another machine and no DNS query can leave (names resolve from the
hosts file; /etc/resolv.conf points at 127.0.0.1:53, where nothing answers unless a test listens).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def reexec_in_private_network(argv: Sequence[str], marker: str, extra_env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` again under ``unshare`` (new network and mount namespaces; a user namespace too
    when not root), with ``marker=1`` in its environment. Returns its exit code."""
    unshare = shutil.which("unshare")
    if unshare is None:
        print("needs `unshare` (util-linux) to run in a private network namespace", file=sys.stderr)
        return 2
    flags = ["-n", "-m"] if os.geteuid() == 0 else ["-r", "-n", "-m"]
    env = {**os.environ, **(extra_env or {}), marker: "1"}
    return subprocess.run([unshare, *flags, *argv], env=env, check=False).returncode


def unshare_self() -> None:
    """Move this (single-threaded) process into new network and mount namespaces. Root only."""
    os.unshare(os.CLONE_NEWNET | os.CLONE_NEWNS)


def setup_private_network(hosts: Mapping[str, str]) -> Path:
    """Inside fresh namespaces: loopback up, mounts private, /etc/hosts = ``hosts`` (name -> IP),
    /etc/resolv.conf -> 127.0.0.1. Returns the directory holding the two files: remove it when done
    (not before: a mount on top of a bind mount whose file is gone fails with ENOENT)."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    d = Path(tempfile.mkdtemp(prefix="sandgate-net-"))
    (d / "hosts").write_text(
        "127.0.0.1 localhost\n::1 localhost ip6-localhost\n" + "".join(f"{ip} {name}\n" for name, ip in hosts.items())
    )
    (d / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--bind", str(d / "hosts"), "/etc/hosts"], check=True)
    subprocess.run(["mount", "--bind", str(d / "resolv.conf"), "/etc/resolv.conf"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return d
