"""Red team 26's attacks on `sandgate run` (both sealed modes), kept as the product's tests.

- the files `run` writes as root on the host (``--metrics-out``, ``--audit-log``) cannot be
  redirected by anything CMD (or an earlier run's CMD) does to the filesystem;
- in netns mode CMD sees and can trace no process outside the sandbox (the invoking user's shell
  holding the real key included), and nothing it starts outlives `run`, even when `run` is
  SIGKILLed while CMD ignores SIGTERM.

CMD runs as uid 1000 (the common case: `sudo sandgate run` runs CMD as the invoking user) in a
working directory that uid owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OPENAI, needs_root, secret_env
from tests.run.test_sandbox import GRACE, MODES, POLICY

pytestmark = needs_root

UID = 1000


@pytest.fixture
def home() -> Iterator[Path]:
    """CMD's working directory, owned by CMD's uid (as after `sudo sandgate run` in one's project).
    Not under /tmp: gVisor masks /tmp, and this must be the same directory inside and out."""
    d = Path(tempfile.mkdtemp(prefix="sandgate-rt26-", dir="/var/tmp"))
    os.chown(d, UID, UID)
    (d / "policy.yaml").write_text(POLICY)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def victim() -> Iterator[Path]:
    """A root-only host file CMD must never be able to have `run` write."""
    d = Path(tempfile.mkdtemp(prefix="sandgate-rt26-victim-"))
    f = d / "precious"
    f.write_text("ORIGINAL\n")
    f.chmod(0o600)
    yield f
    shutil.rmtree(d)


def sandgate_run(
    home: Path, pki: dict[str, Path], mode: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(home / "policy.yaml"),
         "--upstream-ca", str(pki["ca"]), "--allow-private", "127.0.0.0/8", "--gvisor", mode, "--user", str(UID),
         *args],
        cwd=home, capture_output=True, text=True, env={**os.environ, **secret_env(), **(env or {})}, timeout=timeout,
    )  # fmt: skip


# -- F1: the files run writes as root ---------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_cmd_cannot_make_metrics_out_overwrite_a_host_file(
    home: Path, pki: dict[str, Path], victim: Path, mode: str
) -> None:
    """CMD replaces the --metrics-out file (in its own directory) with a symlink to a root-only
    file: run writes the metrics where it opened them before CMD started, never through the link."""
    plant = f"rm -f metrics.txt; ln -s {victim} metrics.txt && echo PLANTED"
    r = sandgate_run(home, pki, mode, "--metrics-out", "metrics.txt", "--", "sh", "-c", plant)
    assert r.returncode == 0, r.stderr
    assert "PLANTED" in r.stdout, r.stderr
    assert victim.read_text() == "ORIGINAL\n", "run wrote a root-owned host file through CMD's symlink"


@pytest.mark.parametrize("option", ["--metrics-out", "--audit-log"])
def test_a_link_left_by_an_earlier_run_is_refused_before_cmd_starts(
    home: Path, pki: dict[str, Path], victim: Path, option: str
) -> None:
    """An earlier run's CMD (same uid, same directory) left `out.txt -> victim` and `logs -> the
    victim's directory`: run refuses both before starting anything, and the victim is untouched."""
    (home / "out.txt").symlink_to(victim)
    (home / "logs").symlink_to(victim.parent)
    for p in (home / "out.txt", home / "logs"):
        os.chown(p, UID, UID, follow_symlinks=False)
    for target in ("out.txt", f"logs/{victim.name}"):
        r = sandgate_run(home, pki, "off", option, target, "--", "sh", "-c", "echo CMD-RAN")
        assert r.returncode == 2, r.stderr
        assert "CMD-RAN" not in r.stdout
        assert f"{option} {target}: " in r.stderr and "symbolic link" in r.stderr, r.stderr
        assert victim.read_text() == "ORIGINAL\n"


def test_a_hard_link_to_a_host_file_is_refused(home: Path, pki: dict[str, Path], victim: Path) -> None:
    """Without fs.protected_hardlinks an earlier CMD could hard-link a root file into its
    directory: a --metrics-out file with another link is refused."""
    os.link(victim, home / "out.txt")  # what CMD could do where the sysctl is off
    r = sandgate_run(home, pki, "off", "--metrics-out", "out.txt", "--", "sh", "-c", "echo CMD-RAN")
    assert r.returncode == 2, r.stderr
    assert "CMD-RAN" not in r.stdout and "other hard link" in r.stderr, r.stderr
    assert victim.read_text() == "ORIGINAL\n"


# -- F2, F3: CMD and the processes outside the sandbox ----------------------------------------------
RECON = r"""
import ctypes, glob, json, os, sys
shell, key = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
out = {"uid": os.getuid(), "key_in": [], "others": [], "readable": []}
for p in glob.glob("/proc/[0-9]*"):
    pid = int(p.rsplit("/", 1)[1])
    try:
        uid = os.stat(p).st_uid
        cmdline = open(p + "/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        continue
    if uid != os.getuid():
        out["others"].append(f"{pid} uid {uid}: {cmdline[:80]}")
    for name in ("environ", "maps", "mem"):
        try:
            with open(f"{p}/{name}", "rb") as f:
                data = f.read(1 << 20) if name != "mem" else b""
        except OSError:
            continue
        if uid != os.getuid():
            out["readable"].append(f"{pid} uid {uid} {name}")
        if key.encode() in data:
            out["key_in"].append(f"{pid} {name}")
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
if libc.ptrace(PTRACE_ATTACH, shell, 0, 0) == 0:
    out["ptrace"] = "attached"
    os.waitpid(shell, 0)
    libc.ptrace(PTRACE_DETACH, shell, 0, 0)
else:
    out["ptrace"] = os.strerror(ctypes.get_errno())
try:
    os.kill(shell, 0)
    out["signal"] = "delivered"
except OSError as e:
    out["signal"] = e.strerror
print("RECON " + json.dumps(out))
"""


@pytest.fixture
def users_shell() -> Iterator[int]:
    """A stand-in for the invoking user's shell on the host: uid 1000, the host's network, and the
    real key in its environment (the README's `export REAL_OPENAI_KEY=...; sudo --preserve-env`)."""
    p = subprocess.Popen(
        ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "env", "-i",
         f"{OPENAI.env}={OPENAI.real}", "PATH=/usr/bin:/bin", "sleep", "3026"],
    )  # fmt: skip
    yield p.pid
    p.kill()
    p.wait()


def recon(home: Path, pki: dict[str, Path], mode: str, shell: int) -> dict[str, Any]:
    (home / "recon.py").write_text(RECON)
    r = sandgate_run(home, pki, mode, "--", "/usr/bin/python3", "recon.py", str(shell), OPENAI.real)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RECON "))
    assert OPENAI.real not in r.stderr
    found: dict[str, Any] = json.loads(line.removeprefix("RECON "))
    assert found["uid"] == UID
    return found


@pytest.mark.parametrize("mode", MODES)
def test_cmd_cannot_trace_or_signal_the_users_processes_outside(
    home: Path, pki: dict[str, Path], users_shell: int, mode: str
) -> None:
    """CMD runs as the invoking user; a process of that user outside the sandbox (in the host's
    network namespace) must be out of its reach: attached with ptrace it would be made to connect
    anywhere (red team 26 did it with gdb)."""
    found = recon(home, pki, mode, users_shell)
    assert found["ptrace"] == "No such process", found["ptrace"]
    assert found["signal"] == "No such process", found["signal"]


@pytest.mark.parametrize("mode", MODES)
def test_cmd_cannot_read_the_real_key_from_the_users_processes(
    home: Path, pki: dict[str, Path], users_shell: int, mode: str
) -> None:
    """The user's shell exported the real key; CMD (same uid) scans /proc/*/environ for it."""
    found = recon(home, pki, mode, users_shell)
    assert found["key_in"] == [], found["key_in"]


def test_cmd_sees_no_process_but_its_own(home: Path, pki: dict[str, Path], users_shell: int) -> None:
    """netns mode: not the user's, not the sandbox's init, not the proxy (which holds the real key):
    their environ, maps and mem are not even there to try."""
    found = recon(home, pki, "off", users_shell)
    assert found["others"] == [], found["others"]
    assert found["readable"] == [], found["readable"]


# -- F4, F5: nothing CMD starts outlives run --------------------------------------------------------
def processes(marker: str) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [int(ln.split()[0]) for ln in ps.splitlines()[1:] if marker in ln and "ps -eo" not in ln]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_daemon_in_its_own_user_and_network_namespace_dies_with_run(home: Path, pki: dict[str, Path]) -> None:
    """netns mode: `setsid unshare -Urn sleep` puts a daemon outside the sandbox's network namespace
    (unprivileged user namespaces are allowed; no_new_privs does not stop them)."""
    daemon = "setsid unshare -Urn sleep 3027 </dev/null >/dev/null 2>&1 & sleep 0.5; echo STARTED"
    try:
        r = sandgate_run(home, pki, "off", "--", "sh", "-c", daemon)
        assert r.returncode == 0, r.stderr
        assert "STARTED" in r.stdout
        left = processes("sleep 3027")
        assert left == [], "a daemon CMD started is still running after run returned"
    finally:
        kill_all(processes("sleep 3027"))


def test_sigkill_of_run_takes_down_a_cmd_that_ignores_sigterm(home: Path, pki: dict[str, Path]) -> None:
    """netns mode: `run` SIGKILLed while CMD ignores SIGTERM; within the stop grace (plus the
    kernel's time) the sandbox's processes, its namespace's holder and its veth are gone."""
    err = home / "run.err"
    with err.open("w") as stderr:
        p = subprocess.Popen(
            [sys.executable, "-m", "sandgate", "run", "--policy", str(home / "policy.yaml"), "--gvisor", "off",
             "--user", str(UID), "--stop-grace", str(GRACE), "--",
             "sh", "-c", "trap '' TERM INT HUP; echo started; sleep 3028; sleep 3028"],
            cwd=home, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **secret_env()},
        )  # fmt: skip
    rundir = ""
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "started", err.read_text()
        text = err.read_text()
        holder = re.search(r"network namespace /proc/(\d+)/ns/net", text)
        found = re.search(r"(/tmp/sandgate-run-[^/\s]+)", text)
        assert holder and found, text
        rundir = found.group(1)
        p.kill()
        p.wait(10)
        deadline = time.monotonic() + GRACE + 15
        while left := [
            *processes("sleep 3028"),
            *processes(rundir),
            *([int(holder.group(1))] if Path(f"/proc/{holder.group(1)}").exists() else []),
            *([f"sgh{holder.group(1)}"] if f"sgh{holder.group(1)}:" in subprocess.getoutput("ip -o link") else []),
        ]:
            assert time.monotonic() < deadline, f"left behind after run was SIGKILLed: {left}"
            time.sleep(0.2)
    finally:
        p.kill()
        kill_all(processes("sleep 3028") + (processes(rundir) if rundir else []))
        if rundir:
            shutil.rmtree(rundir, ignore_errors=True)  # a SIGKILLed run cannot remove it; the next run would


def test_without_its_own_pid_namespace_the_sandbox_never_starts_cmd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fail closed: where the namespaces cannot be made, netns mode stops with 125 and says why,
    instead of running CMD with less isolation."""
    from sandgate import sandbox_init
    from sandgate.procs import SignalForwarder

    def refuse(flags: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sandbox_init.os, "unshare", refuse)
    monkeypatch.setattr(sandbox_init.os, "fork", lambda: pytest.fail("forked without namespaces"))
    forward = SignalForwarder()
    try:
        assert sandbox_init._own_namespaces(forward, 1.0) == 125
    finally:
        forward.restore()
    assert "cannot create the sandbox's PID, mount and IPC namespaces" in capsys.readouterr().err


# -- code CMD leaves in its working directory ------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("planted", ["package", "module"])
def test_code_cmd_leaves_in_its_directory_is_never_run_by_the_next_run(
    home: Path, pki: dict[str, Path], mode: str, planted: str
) -> None:
    """What an earlier run's CMD wrote in its working directory, named like our code (a
    ``sandgate`` package or module), is not what ``run`` starts as root (the sandbox's init, the
    proxy, the capture: ``python -m sandgate`` put the working directory first on the path)."""
    payload = 'import os, pathlib; pathlib.Path("marker").write_text(f"ran as uid {os.getuid()}")\n'
    if planted == "package":
        (home / "sandgate").mkdir()
        (home / "sandgate" / "__init__.py").write_text("")
        (home / "sandgate" / "__main__.py").write_text(payload)
    else:
        (home / "sandgate.py").write_text(payload)
    sandgate = Path(sys.executable).parent / "sandgate"  # (as users run it; `python -m` would import it itself)
    r = subprocess.run(
        [str(sandgate), "run", "--policy", str(home / "policy.yaml"), "--upstream-ca", str(pki["ca"]),
         "--allow-private", "127.0.0.0/8", "--gvisor", mode, "--user", str(UID), "--", "sh", "-c", "echo CMD RAN"],
        cwd=home, capture_output=True, text=True, env={**os.environ, **secret_env()}, timeout=120,
    )  # fmt: skip
    assert not (home / "marker").exists(), (home / "marker").read_text()
    assert r.returncode == 0 and "CMD RAN" in r.stdout, r.stderr[-2000:]
