"""The installed Sandgate version: what ``sandgate --version`` prints and ``sandgate_build_info``
carries (sidecar and webhook)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

__all__ = ["version"]


def version() -> str:
    try:
        return _dist_version("sandgate")
    except PackageNotFoundError:
        return "unknown"
