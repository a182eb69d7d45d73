"""Red team 63: files and ports named at start-up, in the proxy and ``sandgate policy``.

- ``sandgate proxy --upstream-ca FIFO``, ``sandgate policy check FIFO`` and ``policy test POLICY
  --cases FIFO`` waited for a writer for ever, saying nothing (a policy that is a FIFO was already
  refused at once).
- ``--metrics-port 0``: the ready line said ``metrics=127.0.0.1:0``; nothing told where /metrics was.
(Its YAML 1.1 numbers: tests/proxy/policy/test_yaml_numbers.py.)
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.proxy.test_redteam45_proxy_flags import POLICY, clear_error, proxy

SANDGATE = [sys.executable, "-m", "sandgate"]


def test_rt63_an_upstream_ca_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "ca.fifo"
    os.mkfifo(fifo)
    out = proxy(tmp_path, "--upstream-ca", str(fifo))  # (60 s: it hung for ever)
    clear_error(out)
    assert f"{fifo}: not a regular file" in out.stderr


def test_rt63_an_upstream_ca_bundle_with_comments_is_still_read(tmp_path: Path) -> None:
    """(The CA file is now read here and handed over as text: a system bundle's comments, in UTF-8,
    must not stop it.)"""
    import trustme

    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes("# Issuer: CN=Ünïcödé Root\n".encode() + trustme.CA().cert_pem.bytes())
    p = subprocess.Popen(
        [*SANDGATE, "proxy", "--policy", str(_policy(tmp_path)), "--confdir", str(tmp_path / "conf"),
         "--listen-port", "0", "--metrics-port", "0", "--audit-log", str(tmp_path / "audit.log"),
         "--upstream-ca", str(bundle)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        assert p.stdout.readline().startswith(b"sandgate proxy ready")
    finally:
        p.terminate()
        p.wait(10)


def _policy(tmp_path: Path, text: str = POLICY) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_rt63_the_ready_line_names_the_metrics_port_bound(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [*SANDGATE, "proxy", "--policy", str(_policy(tmp_path)), "--confdir", str(tmp_path / "conf"),
         "--listen-port", "0", "--metrics-port", "0", "--audit-log", str(tmp_path / "audit.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        line = p.stdout.readline().decode()
        found = re.search(r" metrics=127\.0\.0\.1:(\d+) ", line)
        assert found and found.group(1) != "0", line
        with socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        p.terminate()
        p.wait(10)


@pytest.mark.parametrize("which", ["check", "test-cases", "test-policy"])
def test_rt63_sandgate_policy_refuses_a_fifo_at_once(tmp_path: Path, which: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    policy = _policy(tmp_path)
    args = {
        "check": ["check", str(fifo)],
        "test-cases": ["test", str(policy), "--cases", str(fifo)],
        "test-policy": ["test", str(fifo), "--cases", str(policy)],
    }[which]
    out = subprocess.run([*SANDGATE, "policy", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not a regular file" in out.stdout + out.stderr, (out.stdout, out.stderr)


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--upstream-relay", "a b:1", "a blank in the host"),
        ("--upstream-relay", "a..b:1", "not an address or a host name"),
        ("--max-secret-bytes", "7", "a secret value has 8 characters at least"),
    ],
)
def test_rt63_a_flag_value_that_could_never_work_is_refused_at_start(
    tmp_path: Path, flag: str, value: str, words: str
) -> None:
    """Red team 63: each was taken; every relayed dial then failed, or every secret was invalid."""
    out = proxy(tmp_path, flag, value)
    assert out.returncode == 2 and words in out.stderr, out.stderr[-300:]


@pytest.mark.parametrize(
    ("flag", "value"), [("--proxy-port", "0"), ("--proxy-port", "70000"), ("--proxy-uid", "-1"), ("--probe-uid", "x")]
)
def test_rt63_capture_refuses_a_port_or_uid_it_cannot_use(flag: str, value: str) -> None:
    """Red team 63: ``--proxy-port 0`` was said "in force", redirecting to port 0. (Refused by the
    parser, before any rule: no root needed.)"""
    args = {"--proxy-uid": "1337", "--proxy-port": "15001", flag: value}
    out = subprocess.run(
        [*SANDGATE, "capture", *[a for kv in args.items() for a in kv]], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and flag in out.stderr and "Traceback" not in out.stderr, out.stderr[-300:]
