"""Red team 45: `sandgate proxy` flags and environment that end in a traceback (exit 1) instead of
the README's "exit 2 on ... a bad flag ... never a traceback", and a file-descriptor limit that
makes connections vanish unrecorded.

- ``--ca-cert-out`` in a directory that does not exist, or naming a directory: the write happens
  after the listeners are up, and its OSError escapes ``serve`` (traceback, exit 1, a stray
  ``.tmp`` file).
- ``--listen-host`` / ``--metrics-host`` with an empty label or a label over 63 characters:
  ``getaddrinfo`` raises UnicodeError (the idna codec), which is not the OSError that is handled.
- ``VAULT_ADDR=https://[::1`` (an unclosed IPv6 bracket): ``urlsplit`` raises ValueError inside
  ``VaultSettings.validate``, which only VaultConfigError is expected from.
- ``--upstream-ca`` that is not PEM: refused (exit 2), but the message names the CONFDIR, not the
  file that is wrong.
- An open-files limit below what ``--max-connections`` needs: connections past it are reset by
  the kernel, with no 503, no audit record and no count (the README: "a connection over
  --max-connections (503 where a request head can be read ...): limit_exceeded").

Copy to tests/proxy/. Every test fails on 991a75a.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.support.proxyproc import free_port

POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: rt45-flags}
spec:
  allow: [{host: api.openai.com}]
"""


def proxy(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    return subprocess.run(
        [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--confdir", str(tmp_path / "conf"),
         "--listen-port", "0", "--metrics-port", "0", *extra],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


def clear_error(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stderr, out.stderr[-600:]
    assert out.returncode == 2, (out.returncode, out.stderr[-300:])
    assert out.stderr.strip().splitlines()[-1].startswith("sandgate proxy: ")  # one line saying what is wrong


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_a_ca_cert_out_that_cannot_be_written_is_a_clear_error(tmp_path: Path, where: str) -> None:
    target = tmp_path / "nowhere" / "ca.crt" if where == "missing-dir" else tmp_path
    out = proxy(tmp_path, "--ca-cert-out", str(target))
    clear_error(out)
    assert "--ca-cert-out" in out.stderr or str(target) in out.stderr


@pytest.mark.parametrize("flag", ["--listen-host", "--metrics-host"])
@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example"], ids=["empty-label", "label-over-63"])
def test_a_host_flag_that_is_no_name_is_a_clear_error(tmp_path: Path, flag: str, host: str) -> None:
    clear_error(proxy(tmp_path, flag, host))


def test_a_vault_addr_with_an_unclosed_ipv6_bracket_is_a_clear_error(tmp_path: Path) -> None:
    out = proxy(tmp_path, env={"VAULT_ADDR": "https://[::1", "VAULT_TOKEN": "t"})
    clear_error(out)
    assert "VAULT_ADDR" in out.stderr


def test_an_upstream_ca_that_is_not_pem_is_named_in_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("garbage\n")
    out = proxy(tmp_path, "--upstream-ca", str(bad))
    clear_error(out)
    assert str(bad) in out.stderr, out.stderr  # today: "sandgate proxy: <confdir>: [X509: NO_CERTIFICATE...]"


@needs_root
def test_connections_past_the_open_files_limit_are_answered_or_the_limit_is_refused_at_start(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    port = free_port()

    def low_nofile() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen(
        [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--confdir", str(tmp_path / "conf"),
         "--listen-port", str(port), "--metrics-port", str(free_port()), "--audit-log", str(tmp_path / "audit.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=low_nofile,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(b"sandgate proxy ready"):
            # Refusing a --max-connections (512 by default) the limit cannot hold is a fine answer.
            assert proc.wait(10) == 2
            return
        for _ in range(80):  # far below --max-connections, far above the 64 descriptors
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET http://api.openai.com/ HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
            try:
                answer = s.recv(200)
            except ConnectionResetError:
                answer = b"(reset)"
        assert answer.startswith(b"HTTP/1.1 503"), f"a connection past the descriptor limit got {answer!r}"
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(10)


# --- what the fixes chose (F9, F10) --------------------------------------------------------------


def test_a_ca_cert_out_that_fails_late_leaves_no_stray_tmp_file(tmp_path: Path) -> None:
    """(The start-up check above refuses a directory; a write that still fails, the directory having
    changed since, cleans up its temporary file.)"""
    from proxy.ca import ensure_ca, publish_ca_cert

    conf = tmp_path / "conf"
    ensure_ca(conf)
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError):
        publish_ca_cert(conf, tmp_path / "out")
    assert not (tmp_path / "out.tmp").exists()


def _run_with_nofile(tmp_path: Path, soft: int, hard: int, *extra: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    script = (
        "import resource, sys; from sandgate.cli import main; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
        "sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", script, "proxy", "--policy", str(policy), "--confdir", str(tmp_path / "conf"),
         "--listen-port", "0", "--metrics-port", "0", *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_an_open_files_limit_that_cannot_hold_max_connections_is_refused_naming_both(tmp_path: Path) -> None:
    out = _run_with_nofile(tmp_path, 1024, 1024)  # --max-connections 512 needs 2 * 512 + 256
    clear_error(out)
    assert "--max-connections 512 needs about 1280 open files" in out.stderr
    assert "the limit is 1024 (ulimit -n): raise it, or lower --max-connections to 384" in out.stderr


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """A shell's usual soft limit (1024) is below what the default 512 connections need; the hard
    one is far above it, and the proxy takes it rather than refusing."""
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)

    def soft_1024() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    proc = subprocess.Popen(
        [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--confdir", str(tmp_path / "conf"),
         "--listen-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=soft_1024,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"sandgate proxy ready")
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
    finally:
        proc.terminate()
        proc.wait(10)
