"""Red team 46, finding 2: netns mode leaves CMD in `run`'s session, with the user's terminal as
its controlling terminal. CMD pushes a command line into the terminal's input queue (TIOCSTI, which
the kernel allows on one's controlling terminal: ``dev.tty.legacy_tiocsti`` is 1 on most kernels);
when `sandgate run` returns, the user's shell reads it as typed and runs it, outside the sandbox,
as whoever started `run` (root, from a root shell; the invoking user under sudo without use_pty).

gVisor mode holds (gVisor's host tty answers ENOTTY). Copy into tests/run/; fails on 4e3b4f0.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root, secret_env
from tests.run.test_sandbox import POLICY

pytestmark = needs_root

INJECT = r"""
import fcntl, sys, termios
line = sys.argv[1] + "\n"
with open("/dev/tty", "wb", buffering=0) as tty:   # our controlling terminal: the user's
    for ch in line.encode():
        fcntl.ioctl(tty, termios.TIOCSTI, bytes([ch]))
print("typed", flush=True)
"""


@pytest.fixture
def home() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sandgate-rt46-tty-", dir="/var/tmp"))
    d.chmod(0o755)
    (d / "policy.yaml").write_text(POLICY)
    (d / "inject.py").write_text(INJECT)
    (d / "inject.py").chmod(0o644)
    yield d
    shutil.rmtree(d)


def run_on_a_terminal(home: Path, pki: dict[str, Path], mode: str) -> str:
    """`sandgate run` started from a shell on a terminal (its controlling tty), as a user does; the
    shell goes on reading commands from the terminal once run has returned."""
    marker = home / "ran-outside"
    run = shlex.join([
        sys.executable, "-m", "sandgate", "run", "--policy", str(home / "policy.yaml"), "--upstream-ca", str(pki["ca"]),
        "--allow-private", "127.0.0.0/8", "--gvisor", mode, "--user", "1000", "--",
        "/usr/bin/python3", "inject.py", f"id -u > {marker}; exit",
    ])  # fmt: skip
    master, slave = os.openpty()
    # The shell: a new session, the pty its controlling terminal (not pty.fork: os.fork in a
    # process with threads, pytest's, may deadlock the child).
    shell = subprocess.Popen(
        ["sh", "-c", f"{run}; echo RUN-RETURNED; exec sh"], stdin=slave, stdout=slave, stderr=slave, cwd=home,
        env={**os.environ, **secret_env()}, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 120
    returned = 0.0
    try:
        while time.monotonic() < deadline and not (returned and (marker.exists() or time.monotonic() > returned + 3)):
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
            if not returned and b"RUN-RETURNED" in out:
                returned = time.monotonic()  # (the shell now reads the terminal: give it 3 s)
    finally:
        with contextlib.suppress(OSError):
            os.write(master, b"\x04")  # (end the shell if it is still reading)
        time.sleep(0.3)
        shell.kill()
        shell.wait()
        os.close(master)
    return out.decode(errors="replace")


def test_cmd_cannot_type_into_the_users_shell(home: Path, pki: dict[str, Path]) -> None:
    out = run_on_a_terminal(home, pki, "off")
    assert "RUN-RETURNED" in out, out[-2000:]
    marker = home / "ran-outside"
    assert not marker.exists(), (
        f"a command CMD typed ran in the user's shell after run returned, as uid {marker.read_text().strip()}, "
        "outside the sandbox"
    )
