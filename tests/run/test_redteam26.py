"""Red team 26's attacks on `sandgate run` (both sealed modes), kept as the product's tests.

- the files `run` writes as root on the host (``--metrics-out``, ``--audit-log``) cannot be
  redirected by anything CMD (or an earlier run's CMD) does to the filesystem;
- in netns mode CMD sees and can trace no process outside the sandbox (the invoking user's shell
  holding the real key included), and nothing it starts outlives `run`, even when `run` is
  SIGKILLed while CMD ignores SIGTERM.

CMD runs as uid 1000 (the common case: `sudo sandgate run` runs CMD as the invoking user) in a
working directory that uid owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root, secret_env
from tests.run.test_sandbox import MODES, POLICY

pytestmark = needs_root

UID = 1000


@pytest.fixture
def home() -> Iterator[Path]:
    """CMD's working directory, owned by CMD's uid (as after `sudo sandgate run` in one's project).
    Not under /tmp: gVisor masks /tmp, and this must be the same directory inside and out."""
    d = Path(tempfile.mkdtemp(prefix="sandgate-rt26-", dir="/var/tmp"))
    os.chown(d, UID, UID)
    (d / "policy.yaml").write_text(POLICY)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def victim() -> Iterator[Path]:
    """A root-only host file CMD must never be able to have `run` write."""
    d = Path(tempfile.mkdtemp(prefix="sandgate-rt26-victim-"))
    f = d / "precious"
    f.write_text("ORIGINAL\n")
    f.chmod(0o600)
    yield f
    shutil.rmtree(d)


def sandgate_run(
    home: Path, pki: dict[str, Path], mode: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(home / "policy.yaml"),
         "--upstream-ca", str(pki["ca"]), "--allow-private", "127.0.0.0/8", "--gvisor", mode, "--user", str(UID),
         *args],
        cwd=home, capture_output=True, text=True, env={**os.environ, **secret_env(), **(env or {})}, timeout=timeout,
    )  # fmt: skip


# -- F1: the files run writes as root ---------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_cmd_cannot_make_metrics_out_overwrite_a_host_file(
    home: Path, pki: dict[str, Path], victim: Path, mode: str
) -> None:
    """CMD replaces the --metrics-out file (in its own directory) with a symlink to a root-only
    file: run writes the metrics where it opened them before CMD started, never through the link."""
    plant = f"rm -f metrics.txt; ln -s {victim} metrics.txt && echo PLANTED"
    r = sandgate_run(home, pki, mode, "--metrics-out", "metrics.txt", "--", "sh", "-c", plant)
    assert r.returncode == 0, r.stderr
    assert "PLANTED" in r.stdout, r.stderr
    assert victim.read_text() == "ORIGINAL\n", "run wrote a root-owned host file through CMD's symlink"


@pytest.mark.parametrize("option", ["--metrics-out", "--audit-log"])
def test_a_link_left_by_an_earlier_run_is_refused_before_cmd_starts(
    home: Path, pki: dict[str, Path], victim: Path, option: str
) -> None:
    """An earlier run's CMD (same uid, same directory) left `out.txt -> victim` and `logs -> the
    victim's directory`: run refuses both before starting anything, and the victim is untouched."""
    (home / "out.txt").symlink_to(victim)
    (home / "logs").symlink_to(victim.parent)
    for p in (home / "out.txt", home / "logs"):
        os.chown(p, UID, UID, follow_symlinks=False)
    for target in ("out.txt", f"logs/{victim.name}"):
        r = sandgate_run(home, pki, "off", option, target, "--", "sh", "-c", "echo CMD-RAN")
        assert r.returncode == 2, r.stderr
        assert "CMD-RAN" not in r.stdout
        assert f"{option} {target}: " in r.stderr and "symbolic link" in r.stderr, r.stderr
        assert victim.read_text() == "ORIGINAL\n"


def test_a_hard_link_to_a_host_file_is_refused(home: Path, pki: dict[str, Path], victim: Path) -> None:
    """Without fs.protected_hardlinks an earlier CMD could hard-link a root file into its
    directory: a --metrics-out file with another link is refused."""
    os.link(victim, home / "out.txt")  # what CMD could do where the sysctl is off
    r = sandgate_run(home, pki, "off", "--metrics-out", "out.txt", "--", "sh", "-c", "echo CMD-RAN")
    assert r.returncode == 2, r.stderr
    assert "CMD-RAN" not in r.stdout and "other hard link" in r.stderr, r.stderr
    assert victim.read_text() == "ORIGINAL\n"
