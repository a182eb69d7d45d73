"""`sandgate run` sealed: the netns and gVisor modes (root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OPENAI, needs_root, secret_env
from tests.run.test_run import POLICY
from tests.support.upstream import Seen

pytestmark = needs_root


def run(tmp_path: Path, pki: dict[str, Path], mode: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(policy), "--upstream-ca", str(pki["ca"]),
         "--allow-private", "127.0.0.0/8", "--gvisor", mode, "--user", "1000", "--", *cmd],
        capture_output=True, text=True, env={**os.environ, **secret_env()}, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["off", "on"])
def test_swap(tmp_path: Path, pki: dict[str, Path], upstreams: dict[str, Seen], mode: str) -> None:
    script = 'id; env | sort; curl -sS -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $OPENAI_API_KEY" https://api.openai.com/v1/run-test'
    p = run(tmp_path, pki, mode, "sh", "-c", script)
    print(p.stdout, p.stderr)
    assert p.returncode == 0
