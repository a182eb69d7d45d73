"""Red team 63: ``sandgate webhook``'s start-up files.

- ``--kubeconfig`` of the wrong shape (``clusters: 5``) or not YAML: a traceback, exit 1 (the
  client library's loader raises TypeError and its parser's errors).
- ``--config /dev/zero``: read without a bound, gigabytes of memory in seconds, never an answer.
- ``--config FIFO`` and ``--tls-cert FIFO``: no ready line and no word, for ever.
- ``--port 0``: the ready line said ``listen=127.0.0.1:0``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

WEBHOOK = [sys.executable, "-m", "sandgate", "webhook", "--host", "127.0.0.1"]


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    issued = trustme.CA().issue_cert("localhost")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "tls.crt")
    issued.private_key_pem.write_to_path(tmp_path / "tls.key")
    return tmp_path / "tls.crt", tmp_path / "tls.key"


def refused(args: list[str]) -> str:
    """stderr of a webhook that must refuse to start: at once, exit 2, one sentence, no traceback."""
    out = subprocess.run([*WEBHOOK, "--port", "0", *args], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr[-800:]
    assert out.returncode == 2, (out.returncode, out.stderr[-400:])
    return out.stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"apiVersion: v1\nkind: Config\nclusters: 5\n", "not a kubeconfig it can read (TypeError in its loader)"),
        (b"\x00\x01\x02", "not a kubeconfig it can read"),
        (b"apiVersion: v1\nkind: Config\n", "Invalid kube-config file"),
    ],
    ids=["shape", "binary", "no-context"],
)
def test_rt63_a_kubeconfig_it_cannot_use_is_a_sentence(
    tmp_path: Path, tls: tuple[Path, Path], content: bytes, words: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(content)
    err = refused(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1]), "--kubeconfig", str(kubeconfig)])
    assert f"cannot configure the Kubernetes client from --kubeconfig {kubeconfig}: " in err and words in err


@pytest.mark.parametrize("flag", ["--config", "--tls-cert", "--tls-key", "--kubeconfig"])
def test_rt63_a_start_up_file_that_is_a_fifo_is_refused_at_once(
    tmp_path: Path, tls: tuple[Path, Path], flag: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = {"--tls-cert": str(tls[0]), "--tls-key": str(tls[1]), "--policy-dir": str(tmp_path)}
    args[flag] = str(fifo)
    err = refused([a for pair in args.items() for a in pair])  # (60 s: it hung for ever)
    assert "not a regular file" in err


def test_rt63_a_config_that_never_ends_is_refused_within_its_bound(tls: tuple[Path, Path]) -> None:
    err = refused(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1]), "--config", "/dev/zero"])
    assert "--config: cannot read /dev/zero: not a regular file" in err


def test_rt63_a_config_over_its_bound_is_refused(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    big = tmp_path / "config.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    err = refused(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1]), "--config", str(big)])
    assert f"--config: cannot read {big}: larger than 1048576 bytes" in err


def test_rt63_the_ready_line_names_the_port_bound(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    p = subprocess.Popen(
        [*WEBHOOK, "--port", "0", "--tls-cert", str(tls[0]), "--tls-key", str(tls[1]), "--policy-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        line = p.stdout.readline().decode()
        found = re.search(r"listen=127\.0\.0\.1:(\d+)", line)
        assert found and found.group(1) != "0", line
    finally:
        p.terminate()
        p.wait(10)
