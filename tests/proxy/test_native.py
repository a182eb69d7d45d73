"""The compiled per-request modules (``proxy.native``): a build that does not match the sources
beside it refuses to run, with what to do; and the suite runs what it says it runs.

The guard's cases are checked on a scratch tree (a ``proxy`` package of three small modules whose
"extensions" are empty files: the guard only looks at which exist and at the sources' hashes). The
last tests are about this process: ``./scripts/test`` compiles the modules and sets
``SANDGATE_NATIVE=1``, so the suite in CI runs the compiled code, as the image does.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from proxy import native

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("proxy.a", "proxy.sub.b", "proxy.sub.c")
SUFFIX = EXTENSION_SUFFIXES[0]


def _tree(tmp_path: Path) -> Path:
    for m in MODULES:
        src = tmp_path.joinpath(*m.split(".")).with_suffix(".py")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"NAME = {m!r}\n")
    return tmp_path


def _compile(root: Path, modules: tuple[str, ...] = MODULES) -> None:
    """What the build leaves: the record, an extension per module, the group's shared library."""
    native.record(root, MODULES)
    for m in (*modules, native.GROUP + "__mypyc"):
        base = root.joinpath(*m.split("."))
        base.with_name(base.name + SUFFIX).write_bytes(b"")


def test_no_extensions_is_the_plain_python(tmp_path: Path) -> None:
    assert native.check(_tree(tmp_path), MODULES, "") == "python"


def test_extensions_built_from_the_sources_beside_them_run(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _compile(root)
    assert native.check(root, MODULES, "") == "compiled"


def test_an_edited_source_refuses_its_stale_extension(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _compile(root)
    (root / "proxy" / "sub" / "b.py").write_text("NAME = 'edited'\n")
    with pytest.raises(native.StaleBuild, match=r"proxy\.sub\.b: its source changed after it was compiled") as e:
        native.check(root, MODULES, "")
    assert "./scripts/compile" in str(e.value) and "--clean" in str(e.value)  # (what to do)


@pytest.mark.parametrize("case", ["no-record", "missing-extension", "missing-group", "missing-source", "bad-record"])
def test_a_build_that_cannot_be_checked_is_refused(tmp_path: Path, case: str) -> None:
    root = _tree(tmp_path)
    _compile(root)
    record = root / "proxy" / native.RECORD
    expected = {
        "no-record": "no native_build.json says from what",
        "missing-extension": "proxy.a: recorded as compiled, but its extension is missing",
        "missing-group": "shared library is missing",
        "missing-source": "proxy.sub.c: its source is missing",
        "bad-record": "native_build.json is unreadable",
    }[case]
    if case == "no-record":
        record.unlink()
    elif case == "missing-extension":
        (root / "proxy" / f"a{SUFFIX}").unlink()
    elif case == "missing-group":
        (root / "proxy" / f"_native__mypyc{SUFFIX}").unlink()
    elif case == "missing-source":
        (root / "proxy" / "sub" / "c.py").unlink()
    else:
        record.write_text('{"modules": ["not", "an", "object"]}')
    with pytest.raises(native.StaleBuild, match=expected):
        native.check(root, MODULES, "")


def test_setup_refuses_an_unknown_compile_setting() -> None:
    out = subprocess.run(
        [sys.executable, "setup.py", "--name"],
        cwd=ROOT,
        env={**os.environ, "SANDGATE_COMPILE": "yes"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "SANDGATE_COMPILE must be 1" in out.stderr


@pytest.mark.parametrize(("compile_", "pgo", "expected"), [
    ("1", "yes", "SANDGATE_PGO must be generate, use or unset"),
    ("0", "use", "SANDGATE_PGO is for a compiled build"),
])  # fmt: skip
def test_setup_refuses_a_profile_setting_it_cannot_follow(compile_: str, pgo: str, expected: str) -> None:
    out = subprocess.run(
        [sys.executable, "setup.py", "--name"],
        cwd=ROOT,
        env={**os.environ, "SANDGATE_COMPILE": compile_, "SANDGATE_PGO": pgo},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and expected in out.stderr


def test_the_modules_run_as_the_build_says_and_as_the_suite_expects() -> None:
    """Every per-request module is loaded from an extension when the mode is "compiled", from its
    source when "python" (SANDGATE_NATIVE=0 too, with the extensions beside them); and
    ``./scripts/test`` (CI) runs the compiled code, with SANDGATE_NATIVE=1."""
    mode = native.mode()
    setting = os.environ.get(native.ENV, "")
    if setting:
        assert mode == {"1": "compiled", "0": "python"}[setting]
    for m in native.MODULES:
        path = str(importlib.import_module(m).__file__)
        assert path.endswith(tuple(EXTENSION_SUFFIXES) if mode == "compiled" else ".py"), (m, path)


@pytest.mark.parametrize("setting", ["0", "1", "yes"])
def test_the_setting_chooses_or_refuses(tmp_path: Path, setting: str) -> None:
    """SANDGATE_NATIVE=1 with nothing compiled refuses to start; 0 is the plain Python whatever is
    built; anything else is refused."""
    root = _tree(tmp_path)
    if setting == "0":
        _compile(root)
        (root / "proxy" / "a.py").write_text("NAME = 'edited'\n")  # (stale, but not used)
        sources = native._Sources(root, MODULES)
        spec = sources.find_spec("proxy.a", None)
        assert spec is not None and spec.origin == str(root / "proxy" / "a.py")
        assert sources.find_spec("proxy.other", None) is None
        return
    with pytest.raises(native.StaleBuild, match="not compiled" if setting == "1" else "must be 1"):
        native.check(root, MODULES, setting)


def test_a_plain_build_of_a_compiled_checkout_installs_the_plain_python(tmp_path: Path) -> None:
    """``pip install .`` (no SANDGATE_COMPILE) from a checkout where ./scripts/compile ran: the
    package it installs carries no record of extensions it does not carry, so it runs as plain
    Python instead of refusing every start with StaleBuild (and "run ./scripts/compile", which
    means nothing to an installed package)."""
    src = tmp_path / "src"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    native.record(src)  # what ./scripts/compile leaves beside the sources: the record, the extensions
    for m in (*native.MODULES, native.GROUP + "__mypyc"):
        base = src.joinpath(*m.split("."))
        base.with_name(base.name + SUFFIX).write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDGATE_")}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        env=env, cwd=tmp_path, capture_output=True, check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    assert "proxy/native.py" in names and "proxy/native_build.json" not in names
    assert not [n for n in names if n.endswith(tuple(EXTENSION_SUFFIXES))]
    out = subprocess.run(
        [sys.executable, "-c", "from proxy import native; print(native.mode())"],
        env={**env, "PYTHONPATH": str(tmp_path / "site")}, cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "python", out.stderr[-2000:]
