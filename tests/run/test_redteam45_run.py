"""Red team 45: `sandgate run --user` takes any string of digits.

``_user`` checks ``isdigit()`` only. A UID or GID the kernel cannot take (4294967295 is
``(uid_t)-1``, 2^32 and above do not fit) is found out only at the very end, when the sandbox's
init calls ``setgid``/``setuid`` for CMD: the whole sandbox (namespace, veth, relay, capture,
proxy) is built, then ``subprocess.SubprocessError: Exception occurred in preexec_fn`` is printed
as a traceback and run exits 1. The epilog promises "2 usage or policy error" (and 127 when CMD
cannot be run). A UID is 0..4294967294 to the kernel (Kubernetes: 0..2147483647).

Copy to tests/run/. Fails on 991a75a.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_root, secret_env
from tests.run.test_run import POLICY

pytestmark = needs_root


def run_as(tmp_path: Path, user: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(policy), "--gvisor", "off", "--user", user,
         "--", "true"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **secret_env()},
    )  # fmt: skip


@pytest.mark.parametrize("user", ["4294967295", "99999999999999999999", "1000:4294967296"])
def test_a_user_the_kernel_cannot_take_is_a_usage_error(tmp_path: Path, user: str) -> None:
    done = run_as(tmp_path, user)
    assert "Traceback" not in done.stderr, done.stderr[-500:]
    assert done.returncode == 2, (done.returncode, done.stderr[-300:])
    assert "--user" in done.stderr


@pytest.mark.parametrize(("user", "words"), [("1000:0", "must not run in group 0"), ("0:1000", "must not run as root")])
def test_rt63_cmd_never_runs_as_root_nor_in_roots_group(tmp_path: Path, user: str, words: str) -> None:
    """Red team 63: ``--user 1000:0`` ran CMD in group 0 (root's group: what it may read or write,
    CMD could). UID 0 was refused; GID 0 is too."""
    done = run_as(tmp_path, user)
    assert done.returncode == 2 and words in done.stderr, (done.returncode, done.stderr[-300:])
