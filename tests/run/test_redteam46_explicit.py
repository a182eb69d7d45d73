"""Red team 46, finding 4: explicit-proxy mode hands CMD the real key.

- As root, ``--user`` is read, checked and then ignored: ``sandgate run --explicit-proxy --user
  1000 -- CMD`` runs CMD as root (``_run_explicit`` never drops privileges), and root reads the
  real key from the proxy's and from `run`'s own ``/proc/PID/environ`` (or the proxy's memory:
  PR_SET_DUMPABLE does not stop root).
- Not as root (explicit mode's usual case), CMD runs as the same user as `run`, its parent, whose
  environment holds the real key (``export REAL_OPENAI_KEY=...``, the README's first step) and
  which, unlike the proxy, never makes itself non-dumpable: ``/proc/$PPID/environ`` is readable.

Explicit mode does not hold back a program that ignores HTTPS_PROXY (said on every start), but
the key is another matter: "What CMD gets, in every mode: the placeholders ... never the
variables secrets are read from". Copy into tests/run/; fails on 4e3b4f0 (the second test skips
where uid 1000 cannot run this interpreter).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import OPENAI, needs_root, secret_env
from tests.run.test_run import POLICY

pytestmark = needs_root

PROBE = 'id -u; cat /proc/$PPID/environ | tr "\\0" "\\n"; for p in $(pgrep -f "sandgate proxy"); do tr "\\0" "\\n" < /proc/$p/environ; done; true'


def explicit_run(
    tmp_path: Path, pki: dict[str, Path], *extra: str, preexec: Callable[[], object] | None = None
) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    tmp_path.chmod(0o755)
    policy.chmod(0o644)
    return subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(policy), "--upstream-ca", str(pki["ca"]),
         "--allow-private", "127.0.0.0/8", "--explicit-proxy", *extra, "--", "sh", "-c", PROBE],
        capture_output=True, text=True, env={**os.environ, **secret_env()}, timeout=60, cwd=tmp_path,
        preexec_fn=preexec,
    )  # fmt: skip


def test_explicit_mode_runs_cmd_as_the_user_it_was_given(tmp_path: Path, pki: dict[str, Path]) -> None:
    r = explicit_run(tmp_path, pki, "--user", "1000")
    assert r.returncode in (0, 2), r.stderr[-2000:]
    if r.returncode == 2:
        return  # (refusing --user in explicit mode, with a message, is an answer too)
    assert r.stdout.splitlines()[0] == "1000", f"--user 1000 ignored: CMD ran as uid {r.stdout.splitlines()[0]}"
    assert OPENAI.real not in r.stdout, "CMD read the real key from the proxy's or run's environment"


def test_cmd_cannot_read_the_key_from_runs_environment(tmp_path: Path, pki: dict[str, Path]) -> None:
    """run started by an ordinary user, as the README's quick start does without sudo."""
    check = subprocess.run(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", sys.executable, "-c", "import proxy"],
        capture_output=True, env={**os.environ}, cwd=Path(__file__).parents[2], check=False,
    )  # fmt: skip
    if check.returncode != 0:
        pytest.skip("uid 1000 cannot run this interpreter here")

    def as_user() -> None:
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)

    r = explicit_run(tmp_path, pki, preexec=as_user)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0] == "1000"
    assert OPENAI.real not in r.stdout, "CMD read the real key from its parent's (run's) /proc/PID/environ"
