"""Run ``sandgate proxy`` as a real subprocess and talk to it the way users do."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandgate.procs import die_with_parent, stop_process


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a process a test starts to bind, from BELOW the kernel's
    ephemeral range: a port that bind(0) gave is the kernel's to give again, to the next outgoing
    connection of any process, as soon as it is closed, and the suite makes thousands (a server
    started on it then failed with "address already in use"). Never the same port twice a session."""
    low, _ = _ephemeral_range()
    candidates = range(max(1024, low - 12000), low) if low > 2048 else range(0)
    for port in random.sample(candidates, min(len(candidates), 200)):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # no room below the range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProxyProcess:
    def __init__(self, policy: Path, workdir: Path, env: dict[str, str], extra: Sequence[str] = (), mode: str = "regular",
                 prefix: Sequence[str] = (), listen_port: int | None = None) -> None:  # fmt: skip
        self.policy = policy
        self.workdir = workdir
        self.port = listen_port or free_port()
        self.metrics_port = free_port()
        self.confdir = workdir / "conf"
        self.audit_path = workdir / "audit.log"
        self.stderr_path = workdir / "stderr.log"
        cmd = [
            *prefix, sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--mode", mode,
            "--listen-port", str(self.port), "--metrics-port", str(self.metrics_port), "--confdir", str(self.confdir),
            "--audit-log", str(self.audit_path), *extra,
        ]  # fmt: skip
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, env={**os.environ, **env}, preexec_fn=die_with_parent
        )  # a killed test run leaves no proxy behind
        self.ready_line = self._wait_ready()
        self.stdout_lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_ready(self, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if line.startswith("sandgate proxy ready"):
                return line.strip()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited {self.proc.returncode}: {self.stderr_path.read_text()}")
        raise RuntimeError("proxy did not become ready")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.append(raw.decode(errors="replace"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.confdir / "ca.crt"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The value of one series, 0 when absent."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            sname, _, rest = series.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if sname == name and got == want:
                return float(value)
        return 0.0

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        text = self.audit_path.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line still being written is not a record yet (as for `tail -F`)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def outputs(self) -> dict[str, str]:
        return {"stdout": "".join(self.stdout_lines), "stderr": self.stderr(),
                "audit": self.audit_path.read_text() if self.audit_path.exists() else ""}  # fmt: skip

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self._stderr.close()
