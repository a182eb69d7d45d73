"""``python -m proxy.prefilters``: store the scrubbers' fixed prefilter sets compiled.

The scrubbers build Hyperscan sets of fixed literals at import (:mod:`proxy.core.anyof`): what a
client reads as another character, the bytes a view drops. Compiling them took ~30-45 ms of every
start of the sidecar. This writes them, compiled, into ``proxy/core/prefilters/`` (the image's
build and ``./scripts/compile`` run it), where the import reads them instead. Only sets marked
``store=True`` are written: fixed tables of the source, never a set built from a secret's value.

Exit status: 0 written; 1 when Hyperscan is not installed (nothing to store).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

from proxy.core import anyof

# The modules that build the fixed sets as they are imported.
BUILDERS = ("proxy.core.mojibake", "proxy.core.fold", "proxy.core.scrub")


def store(directory: str = anyof.STORE) -> int:
    """Compile every fixed set afresh and write it to ``directory`` (emptied of ``*.hs`` first:
    sets of an older source are never read again, since their names no longer come up). Returns
    how many were written."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".hs"):
            os.unlink(os.path.join(directory, name))
    for module in BUILDERS:
        if module in sys.modules:
            raise RuntimeError(f"{module} was imported before the store was emptied: run this in a process of its own")
        importlib.import_module(module)
    sets = anyof.stored_sets()
    for name, data in sets.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(directory, name + ".hs"))
    return len(sets)


def main() -> int:
    if anyof.UNAVAILABLE is not None:
        print(f"prefilters: nothing to store: {anyof.UNAVAILABLE}", file=sys.stderr)
        return 1
    count = store()
    print(f"prefilters: {count} fixed sets stored in {anyof.STORE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
