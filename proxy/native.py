"""Which of the sidecar's modules may run compiled, and the guard that they match their sources.

The per-request modules in ``MODULES`` are plain, fully typed Python: the one data path, read,
type-checked and tested as such. ``./scripts/compile`` (and the image's build, through
``setup.py`` with ``SANDGATE_COMPILE=1``) compiles them with mypyc into C extensions that sit beside
their sources, which Python then imports in their place: the same code for about a third less CPU
per request (bench/README.md, "A compiled per-request path").

An extension built from other sources than the ones beside it would run code that nobody reads.
So the build records each module's SHA-256 in ``native_build.json``, and :func:`check` (run when
``proxy`` is imported, before any of these modules) compares. A mismatch, an extension without a
record, or a record without its extension refuses the import and says what to do. There is no
silent fallback either way: the running form is ``mode()``, and the sidecar's ready line says it.

``SANDGATE_NATIVE`` chooses: unset, whatever is built (checked as above); ``1``, the compiled
modules or a refusal to start (the image sets it); ``0``, the plain Python even where compiled
modules are present (the sources are imported in their place: to debug, to profile the Python, or
to rule the compiler out).

Dataclasses. In a compiled module, a dataclass's generated ``__init__`` is still Python, run by the
interpreter: 0.5-1.1 us a construction (a frozen one sets each field through
``object.__setattr__``), where an ``__init__`` written in the class compiles (~0.04 us). So the
data path's per-request values (``Authority``, ``Framing``, ``RequestCheck``, ``SwapResult``,
``Head``, ``AuditRecord``, ...) write theirs; the dataclass still gives ``__eq__`` and ``__repr__``.
Those that were frozen declare their fields ``Final`` instead (mypy refuses an assignment outside
``__init__``, and compiled, the attribute is not writable at all) and ``unsafe_hash=True``, which
with every field Final is safe: they hash as frozen ones did.

No third-party import here: ``setup.py`` reads ``MODULES`` from this file before anything is built.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path
from types import ModuleType

__all__ = ["ENV", "GROUP", "MODULES", "RECORD", "StaleBuild", "built_from", "check", "mode", "record"]

# The per-request path: the connections, the exchange, the authority and the swap, the head checks,
# the scrubbers and the finder they ask, the audit record and the counts (proxy.record). Not the
# policy's load-time work (proxy.core.values makes the forms of its values once per policy), nor the
# shell (sidecar, runtime, metrics).
MODULES: tuple[str, ...] = (
    "proxy.audit",
    "proxy.core.authority",
    "proxy.core.eventstream",
    "proxy.core.finder",
    "proxy.core.flow",
    "proxy.core.http1",
    "proxy.core.scrub",
    "proxy.core.swap",
    "proxy.datapath.client",
    "proxy.datapath.conn",
    "proxy.datapath.exchange",
    "proxy.datapath.tlsio",
    "proxy.datapath.upstream",
    "proxy.record",
)
# mypyc's shared library for the group: proxy/_native__mypyc.<suffix>
GROUP = "proxy._native"
RECORD = "native_build.json"  # in proxy/, beside this file
ENV = "SANDGATE_NATIVE"

_PROGRAM_ROOT = Path(__file__).resolve().parent.parent  # holds the proxy package


class StaleBuild(ImportError):
    """The compiled modules beside the sources were not built from them."""


def _source(root: Path, module: str) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def _extension(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for suffix in EXTENSION_SUFFIXES:
        p = base.with_name(base.name + suffix)
        if p.exists():
            return p
    return None


def built_from(root: Path, modules: tuple[str, ...] = MODULES) -> dict[str, str]:
    """Each module's source SHA-256, as the build records it (``root`` holds the ``proxy`` package)."""
    return {m: hashlib.sha256(_source(root, m).read_bytes()).hexdigest() for m in modules}


def record(root: Path, modules: tuple[str, ...] = MODULES) -> Path:
    """Write the record of what was compiled: called by the build, before the extensions are made."""
    path = root / "proxy" / RECORD
    path.write_text(json.dumps({"modules": built_from(root, modules)}, indent=1, sort_keys=True) + "\n")
    return path


def _state(root: Path, modules: tuple[str, ...]) -> tuple[bool, list[str]]:
    """(compiled?, what is wrong): ``(False, [])`` is the plain Python; ``(True, [])`` the compiled."""
    built = [m for m in modules if _extension(root, m) is not None]
    group = _extension(root, GROUP + "__mypyc") is not None
    path = root / "proxy" / RECORD
    if not path.exists():
        if built or group:
            return True, [f"{m}: compiled, but no {RECORD} says from what" for m in built or [GROUP]]
        return False, []
    try:
        recorded = json.loads(path.read_bytes())["modules"]
        if not isinstance(recorded, dict):
            raise TypeError("modules is not an object")
    except (ValueError, KeyError, TypeError) as e:
        return True, [f"{RECORD} is unreadable ({type(e).__name__})"]
    wrong: list[str] = []
    for m in modules:
        source = _source(root, m)
        if m not in recorded:
            wrong.append(f"{m}: not in {RECORD}")
        elif _extension(root, m) is None:
            wrong.append(f"{m}: recorded as compiled, but its extension is missing")
        elif not source.exists():
            wrong.append(f"{m}: its source is missing, so the extension cannot be checked against it")
        elif hashlib.sha256(source.read_bytes()).hexdigest() != recorded[m]:
            wrong.append(f"{m}: its source changed after it was compiled")
    if not group:
        wrong.append(f"{GROUP}__mypyc: the compiled modules' shared library is missing")
    return True, wrong


class _Sources:
    """SANDGATE_NATIVE=0: each of the modules from its source, not from the extension beside it (a
    meta path finder: ``find_spec`` is all the import system asks of one; importlib.abc's base
    class would bring importlib.resources in, ~6 ms of every start)."""

    def __init__(self, root: Path, modules: tuple[str, ...]) -> None:
        self.root, self.modules = root, frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return spec_from_file_location(fullname, _source(self.root, fullname))


def check(root: Path = _PROGRAM_ROOT, modules: tuple[str, ...] = MODULES, setting: str | None = None) -> str:
    """Refuse to run compiled modules that were not built from the sources beside them; else say
    what the per-request modules run as: "compiled" or "python". ``setting``: SANDGATE_NATIVE's."""
    setting = os.environ.get(ENV, "") if setting is None else setting
    if setting not in ("", "0", "1"):
        raise StaleBuild(f"{ENV} must be 1 (the compiled modules), 0 (the plain Python) or unset, not {setting!r}")
    if setting == "0":
        if not any(isinstance(f, _Sources) for f in sys.meta_path):
            sys.meta_path.insert(0, _Sources(root, modules))
        return "python"
    compiled, wrong = _state(root, modules)
    if setting == "1" and not compiled:
        raise StaleBuild(f"{ENV}=1, but the per-request modules are not compiled: run ./scripts/compile")
    if wrong:
        raise StaleBuild(
            "Sandgate's compiled modules do not match their sources: "
            + "; ".join(wrong)
            + ". Run ./scripts/compile to build them again (about 2 minutes), or ./scripts/compile --clean "
            "to remove them and run the plain Python."
        )
    return "compiled" if compiled else "python"


@functools.cache
def mode() -> str:
    """What this process's per-request modules run as: "compiled" or "python" (checked once, when
    ``proxy`` is imported: hashing the sources costs ~1.3 ms)."""
    return check()
