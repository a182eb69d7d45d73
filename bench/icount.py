"""Instructions per request of the data path, counted by valgrind: for A/B comparisons that the
machine's noise cannot move.

    .venv/bin/python bench/icount.py [--body small|big|sse|openai] [--requests 2000] [DIR]

Runs bench/inproc.py under ``valgrind --tool=callgrind`` twice, side by side, with ``--requests``
and three times as many (one run each, after its warm-up), and prints the difference in
instructions executed per extra request: the start-up, the policy's finders and the warm-up cancel out. It counts the whole
process, so the harness's own work (the agent's and the upstream's TLS, parsing their bytes) is in
the figure too, the same in both versions: compare two checkouts (DIR, default this one: check the
other out with ``git worktree add`` and copy bench/inproc.py into it), not two absolute figures.
Instructions are not time (a cache miss costs more than an addition), but the count is the same run
after run (PYTHONHASHSEED fixed), where bench/inproc.py's times move by several percent between
runs of the same code on a shared machine. Needs valgrind (Debian: ``apt-get install valgrind``);
each count takes a minute or two.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def counts(checkout: Path, body: str, runs: list[int]) -> list[int]:
    """Instructions executed by runs of ``checkout``'s bench/inproc.py, one per number of
    requests in ``runs``, side by side (a count is the same whatever runs beside it)."""
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in runs]  # (not pipes: read one at a time)
        command = [sys.executable, str(checkout / "bench" / "inproc.py"), "--runs", "1", "--body", body]
        valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        procs = [
            subprocess.Popen(
                [*valgrind, *command, "--requests", str(requests)],
                cwd=checkout,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            for requests, log in zip(runs, logs, strict=True)
        ]
        out = []
        for proc, log in zip(procs, logs, strict=True):
            proc.wait()
            log.seek(0)
            stderr = log.read()
            found = re.search(r"Collected : (\d+)", stderr)
            if proc.returncode != 0 or found is None:
                raise SystemExit(f"valgrind printed no count (exit {proc.returncode}):\n{stderr[-2000:]}")
            out.append(int(found[1]))
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", nargs="?", default=str(HERE.parent), help="the checkout to count (default: this one)")
    ap.add_argument("--body", choices=["small", "big", "sse", "openai"], default="small")
    ap.add_argument("--requests", type=int, default=1000, help="requests of the shorter run (default 1000)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    checkout = Path(args.checkout).resolve()
    short, long = counts(checkout, args.body, [args.requests, 3 * args.requests])
    per = (long - short) / (2 * args.requests)
    print(f"{checkout} ({args.body} answer): {per:,.0f} instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
