"""``json_patch(old, new)``: an RFC 6902 patch that turns ``old`` into ``new``, in time linear in
their size.

A generic list diff (what ``jsonpatch.make_patch`` does) is quadratic: a pod whose volumes
alternated ``sandgate-*`` and other names took 10 s at 12,000 volumes, 76 s at 30,000 (~1 MiB,
far below the API server's 3 MiB), on the webhook's only loop (red team 25). Objects are walked
member by member; a list that changed is replaced whole (the injector rewrites whole lists:
containers, volumes, env). Values are compared as JSON compares them (``true`` is not ``1``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["json_patch"]


def json_patch(old: Any, new: Any) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    _diff(old, new, "", ops)
    return ops


def _diff(old: Any, new: Any, path: str, ops: list[dict[str, Any]]) -> None:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        ops.append({"op": "replace", "path": path, "value": new})
        return
    for key in old:
        if key not in new:
            ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
    for key, value in new.items():
        where = f"{path}/{_escape(key)}"
        if key not in old:
            ops.append({"op": "add", "path": where, "value": value})
        elif not _same(old[key], value):
            _diff(old[key], value, where, ops)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)  # (a NaN left where it was is no change: never a NaN put in a patch)
    return bool(a == b)
