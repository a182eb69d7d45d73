"""One version: the installed package's metadata and what the sidecar reports are the same string."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from proxy.version import version


def test_the_reported_version_is_the_installed_packages() -> None:
    out = subprocess.run([sys.executable, "-m", "sandgate", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"sandgate {importlib.metadata.version('sandgate')}" == f"sandgate {version()}"
