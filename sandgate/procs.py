"""Stopping a child process the same way everywhere: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


STOP_GRACE = 10.0  # seconds a sandbox gets to end after Ctrl-C/SIGTERM before it is killed


def set_pdeathsig(sig: int) -> None:
    """The kernel sends us ``sig`` when our parent (thread) dies."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig, 0, 0, 0)


def die_with_parent() -> None:
    """``preexec_fn``: if our process dies (even by SIGKILL) the kernel sends the child SIGTERM, so
    nothing we start outlives us."""
    set_pdeathsig(signal.SIGTERM)


def exit_code(returncode: int) -> int:
    """A child's status as a shell reports it: 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class SignalForwarder:
    """SIGINT/SIGTERM (and SIGHUP) are passed on instead of stopping us. Install it BEFORE starting
    the process they are for: a signal that arrives before ``attach`` is held and delivered at
    once, so there is no window in which Ctrl-C is lost or kills us with the child unaware."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.target: Callable[[int], Any] | None = None
        self.pending: list[int] = []
        self.previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}

    def _on_signal(self, sig: int, _frame: object) -> None:
        if self.target is None:
            self.pending.append(sig)
        else:
            self.target(sig)

    def attach(self, target: Callable[[int], Any]) -> None:
        self.target = target
        for sig in self.pending:
            target(sig)
        self.pending.clear()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def relay_lines(stream: Any, out: Any) -> None:
    """Copy what a child keeps writing (the proxy's audit lines, after its ready line) to ``out`` in
    a daemon thread, so its pipe never fills and blocks it."""
    import threading

    def copy() -> None:
        for line in stream:
            out.write(line.decode(errors="replace"))
            out.flush()

    threading.Thread(target=copy, name="relay-lines", daemon=True).start()
