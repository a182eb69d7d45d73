"""Red team 63: ``sandgate run --upstream-ca FILE`` copied FILE for the proxy with no check and no
bound. ``/dev/zero`` was copied until the file system under $TMPDIR was full (12 GiB in 8 s on the
host's root disk), then a traceback; a directory or a FIFO, a traceback. It is now read once at the
start, as the policy is: a regular file of at most 4 MiB, or exit 2 with a sentence.

A 32 MiB tmpfs is $TMPDIR, so that a regression cannot fill a real disk (hence root)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root

pytestmark = needs_root

POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: rt63-run}
spec:
  allow: [{host: api.example.com}]
"""


@pytest.fixture
def small_tmp(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "tmpfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.parametrize("kind", ["dev-zero", "directory", "fifo", "too-large"])
def test_rt63_run_refuses_an_upstream_ca_that_is_no_regular_file(tmp_path: Path, small_tmp: Path, kind: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    ca = {"dev-zero": Path("/dev/zero"), "directory": tmp_path, "fifo": tmp_path / "ca.fifo",
          "too-large": tmp_path / "big.pem"}[kind]  # fmt: skip
    if kind == "fifo":
        os.mkfifo(ca)
    if kind == "too-large":
        ca.write_bytes(b"#" * ((4 << 20) + 1))
    out = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--explicit-proxy", "--policy", str(policy), "--upstream-ca", str(ca),
         "--", "true"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(small_tmp)},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    st = os.statvfs(small_tmp)
    assert (st.f_blocks - st.f_bfree) * st.f_frsize < 1 << 20, "the CA was copied into $TMPDIR"
    assert "Traceback" not in out.stderr, out.stderr[-600:]
    assert out.returncode == 2, (out.returncode, out.stderr[-300:])
    words = {"directory": "Is a directory", "too-large": "larger than 4194304 bytes"}.get(kind, "not a regular file")
    assert f"sandgate run: --upstream-ca {ca}: cannot read: {words}" in out.stderr
