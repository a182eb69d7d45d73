"""setuptools' build hook. The metadata is pyproject.toml's; this only adds the compiled modules.

With ``SANDGATE_COMPILE=1``, the per-request modules listed in ``proxy/native.py`` are compiled with
mypyc into C extensions that sit beside their sources (the sources stay: they are what is read and
checked against), and ``proxy/native_build.json`` records what they were built from. That needs
mypy, setuptools and a C compiler with Python's headers: ``./scripts/compile`` does it in place for
a checkout, and the Dockerfile builds the image's wheel with it. Without it, the plain Python.

The build is profile-guided (GCC's ``-fprofile-generate`` / ``-fprofile-use``), in three steps that
``./scripts/compile`` and the Dockerfile run: ``SANDGATE_PGO=generate`` builds extensions that count
what runs, ``scripts/pgo-train`` runs the data path with them (bench/inproc.py: the counts land in
``.gcda`` files beside the objects, under ``build/mypyc/temp``), and ``SANDGATE_PGO=use`` builds the
extensions laid out by those counts: the code a request runs packed together, the rest apart. A
cold request (its code out of the CPU's caches, as after the agent ran) then reads far less code
from memory: bench/README.md, "A profile-guided build". Code the training never ran is compiled as
without a profile (``-fprofile-partial-training``), and a missing or mismatched profile fails the
build rather than build without it. ``SANDGATE_PGO`` unset: no profile (a plain ``-O3`` build).
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
COMPILE = os.environ.get("SANDGATE_COMPILE", "0")
PGO = os.environ.get("SANDGATE_PGO", "")
# Where the objects go, whoever builds (build_ext here, pip's bdist_wheel in the image): the profile
# of a training run is found by the object's path, so both builds of a profile-guided one must agree.
BUILD_TEMP = "build/mypyc/temp"
# (compile flags, link flags) of each step of a profile-guided build.
PGO_FLAGS: dict[str, tuple[list[str], list[str]]] = {
    "": ([], []),
    "generate": (["-fprofile-generate"], ["-fprofile-generate"]),
    "use": (
        ["-fprofile-use", "-fprofile-correction", "-fprofile-partial-training", "-Werror=missing-profile"],
        [],
    ),
}

if PGO not in PGO_FLAGS:
    raise SystemExit(f"setup.py: SANDGATE_PGO must be generate, use or unset, not {PGO!r}")
if COMPILE == "1":
    from mypyc.build import mypycify

    os.chdir(ROOT)
    native = runpy.run_path(str(ROOT / "proxy" / "native.py"))
    native["record"](ROOT)
    sources = [str(Path(*m.split(".")).with_suffix(".py")) for m in native["MODULES"]]
    extensions = mypycify(sources, group_name=native["GROUP"], opt_level="3", target_dir="build/mypyc/c")
    compile_flags, link_flags = PGO_FLAGS[PGO]
    # The group's library holds all the code; each module's own extension is a one-line shim that
    # points into it (and is not even loaded when another module of the group imports it first).
    (library,) = (ext for ext in extensions if ext.name == native["GROUP"] + "__mypyc")
    library.extra_compile_args = [*library.extra_compile_args, *compile_flags]  # (new lists: they share)
    library.extra_link_args = [*library.extra_link_args, *link_flags]
    setup(ext_modules=extensions, options={"build_ext": {"build_temp": BUILD_TEMP}})
elif COMPILE == "0":
    if PGO:
        raise SystemExit("setup.py: SANDGATE_PGO is for a compiled build (SANDGATE_COMPILE=1)")
    # A checkout where ./scripts/compile ran has a record of its extensions (native_build.json,
    # package data for the compiled build): a plain build carries neither, so not the record either,
    # else the package it installs refuses every start (proxy.native.check: no extension).
    setup(exclude_package_data={"proxy": ["native_build.json"]})
else:
    raise SystemExit(f"setup.py: SANDGATE_COMPILE must be 1 (compile the per-request modules) or 0, not {COMPILE!r}")
