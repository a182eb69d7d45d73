"""setuptools' build hook. The metadata is pyproject.toml's; this only adds the compiled modules.

With ``SANDGATE_COMPILE=1``, the per-request modules listed in ``proxy/native.py`` are compiled with
mypyc into C extensions that sit beside their sources (the sources stay: they are what is read and
checked against), and ``proxy/native_build.json`` records what they were built from. That needs
mypy, setuptools and a C compiler with Python's headers: ``./scripts/compile`` does it in place for
a checkout, and the Dockerfile builds the image's wheel with it. Without it, the plain Python.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
COMPILE = os.environ.get("SANDGATE_COMPILE", "0")

if COMPILE == "1":
    from mypyc.build import mypycify

    os.chdir(ROOT)
    native = runpy.run_path(str(ROOT / "proxy" / "native.py"))
    native["record"](ROOT)
    sources = [str(Path(*m.split(".")).with_suffix(".py")) for m in native["MODULES"]]
    setup(ext_modules=mypycify(sources, group_name=native["GROUP"], opt_level="3", target_dir="build/mypyc/c"))
elif COMPILE == "0":
    setup()
else:
    raise SystemExit(f"setup.py: SANDGATE_COMPILE must be 1 (compile the per-request modules) or 0, not {COMPILE!r}")
