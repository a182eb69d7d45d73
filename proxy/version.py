"""The Sandgate version: what ``sandgate --version`` prints and ``sandgate_build_info`` carries
(sidecar and webhook). The package's own version is read from here (pyproject.toml's
``[tool.setuptools.dynamic]``), so the two cannot differ; a constant rather than
``importlib.metadata``, whose import alone cost the sidecar's start ~25 ms."""

from __future__ import annotations

__all__ = ["VERSION", "version"]

VERSION = "0.1.0"


def version() -> str:
    return VERSION
