"""The Dockerfile is hadolint-clean, and the image's constraints pin every runtime dependency."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_constraints_pin_every_runtime_dependency() -> None:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {re.split(r"==", line)[0].lower().replace("_", "-")
              for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines() if "==" in line}  # fmt: skip
    names = {re.split(r"[<>=!~ \[]", d)[0].lower().replace("_", "-") for d in deps}
    assert names <= pinned, f"not pinned for the image: {sorted(names - pinned)}"
