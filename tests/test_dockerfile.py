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


def test_the_image_ships_its_bytecode() -> None:
    """The sidecar runs as a non-root user on a read-only image with PYTHONDONTWRITEBYTECODE: every
    module it imports without a .pyc is compiled from source at every start. The slim base image
    ships its standard library without bytecode and the venv is installed with --no-compile, so
    both are compiled at build time (measured on this machine, a venv installed as the Dockerfile
    does: importing the sidecar took 1.0-1.2 s of CPU with nothing compiled, 0.2-0.3 s compiled)."""
    runs = " ".join(re.findall(r"^RUN (.*?)(?<!\\)$", (ROOT / "Dockerfile").read_text().replace("\\\n", " "), re.M))
    compiles = re.findall(r"python -m compileall ([^&]*)", runs)
    assert any("/opt/sandgate" in c for c in compiles), "the venv's bytecode is not compiled at build time"
    assert any('get_paths()["stdlib"]' in c for c in compiles), "the standard library's bytecode is not compiled"
    # Hash-based: valid whatever mtimes COPY --from gives the files, and reproducible.
    assert all("--invalidation-mode unchecked-hash" in c for c in compiles)
    assert re.search(r"^ENV .*PYTHONDONTWRITEBYTECODE=1", (ROOT / "Dockerfile").read_text(), re.M)


def test_the_image_runs_the_per_request_modules_compiled() -> None:
    """The wheel is built with the per-request modules compiled (setup.py, SANDGATE_COMPILE=1) by
    the build stage's own venv, whose mypy is pinned; the image then requires them compiled
    (SANDGATE_NATIVE=1: a build that lost them refuses to start instead of running slower)."""
    text = (ROOT / "Dockerfile").read_text()
    runs = " ".join(re.findall(r"^RUN (.*?)(?<!\\)$", text.replace("\\\n", " "), re.M))
    assert re.search(
        r"SANDGATE_COMPILE=1 SANDGATE_PGO=use /opt/build/bin/pip wheel --no-deps --no-build-isolation", runs
    )
    assert re.search(r"^ENV .*SANDGATE_NATIVE=1", text, re.M)
    pins = (ROOT / "docker" / "build-constraints.txt").read_text()
    assert re.search(r"^mypy==", pins, re.M) and re.search(r"^setuptools==", pins, re.M)
    assert "COPY --from=build /opt/sandgate /opt/sandgate" in text  # (not /opt/build: no mypy in the image)


def test_the_image_carries_the_fixed_prefilter_sets_compiled() -> None:
    """The scrubbers' fixed Hyperscan sets are stored compiled before the wheel is built (it carries
    proxy/core/prefilters/), and the build fails if the installed sidecar still compiles any at
    import (proxy.core.anyof.COMPILED): ~30-45 ms of every start."""
    text = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", text.replace("\\\n", " "), re.M)
    store = next(i for i, r in enumerate(runs) if "-m proxy.prefilters" in r)
    wheel = next(i for i, r in enumerate(runs) if "pip wheel" in r)
    assert store < wheel
    assert "sys.exit(len(a.COMPILED))" in runs[wheel]
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["proxy"]
    assert "core/prefilters/*.hs" in data


def _ignored(path: str, rules: list[str]) -> bool:
    """Whether .dockerignore's ``rules`` (plain paths and ``!`` exceptions, as ours are; the last
    that matches decides) keep ``path`` out of the build context."""
    out = False
    for rule in rules:
        negated, pattern = rule.startswith("!"), rule.lstrip("!")
        if path == pattern or path.startswith(pattern + "/"):
            out = not negated
    return out


def test_the_images_build_is_profile_guided() -> None:
    """The image's extensions are built as ./scripts/compile builds them: counting what runs
    (SANDGATE_PGO=generate, in place), trained (scripts/pgo-train), the counting extensions removed,
    then the wheel built by those counts (SANDGATE_PGO=use; setup.py fails if it finds none). The
    training run's files are copied in, and .dockerignore lets them through: bench/inproc.py and
    every bench module it imports."""
    text = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", text.replace("\\\n", " "), re.M)
    counting = next(i for i, r in enumerate(runs) if "SANDGATE_PGO=generate" in r)
    assert re.search(
        r"SANDGATE_COMPILE=1 SANDGATE_PGO=generate \S+python setup.py -q build_ext --inplace", runs[counting]
    )
    assert "--build-temp build/mypyc/temp" in runs[counting]  # where setup.py's BUILD_TEMP puts the wheel's objects
    train, remove = runs[counting].index("scripts/pgo-train"), runs[counting].index("-name '*.cpython-*.so' -delete")
    assert train < remove
    wheel = next(i for i, r in enumerate(runs) if "pip wheel" in r)
    assert counting < wheel and "SANDGATE_PGO=use" in runs[wheel]
    setup = (ROOT / "setup.py").read_text()
    assert 'BUILD_TEMP = "build/mypyc/temp"' in setup

    copied = {src for line in re.findall(r"^COPY (?!--from)(.*)$", text, re.M) for src in line.split()[:-1]}
    inproc = (ROOT / "bench" / "inproc.py").read_text()
    needed = {"scripts/pgo-train", "bench/inproc.py"} | {
        f"bench/{m}.py"
        for m in re.findall(r"^from (\w+) import", inproc, re.M)
        if (ROOT / "bench" / f"{m}.py").exists()
    }
    assert needed <= copied, f"not copied into the build stage: {sorted(needed - copied)}"
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    assert not [p for p in needed if _ignored(p, rules)], "left out of the build context by .dockerignore"
    assert "bench/inproc.py" in (ROOT / "scripts" / "pgo-train").read_text()
