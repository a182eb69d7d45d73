"""Red team 68: the running proxy under the operating system's adversity (out of file descriptors,
its audit log's path made unreadable). Each test failed on the code before the fix it names.

- A policy version read while the proxy was out of descriptors (EMFILE) was marked handled like an
  invalid one: a revocation in it was never applied, though the file was valid and readable a
  moment later (PolicyUnreadable: read again at every look).
- The ``--audit-log`` file removed and its path left where ``stat`` fails with something other
  than ENOENT (a symlink loop, its directory turned into a file): records went on into the removed
  file, neither counted, logged nor made readiness 0 (proxy/sink.py).
- Out of descriptors, a scrape waiting in the metrics server's backlog made its thread spin a whole
  CPU (socketserver selected the listener again at once after each failed accept).
- Out of descriptors, loading a leaf from its memory file failed, and the leaf key was written to a
  temporary file instead (proxy/datapath/certs.py promises it never touches a disk).

The open-files limit is lowered on the running proxy with ``prlimit`` (what a supervisor or an
operator can do after the start, whose check of ``--max-connections`` cannot see it). Not fixed,
and said in the README instead: past that limit, uvloop (libuv) accepts and closes new agent
connections itself, so they are reset with no answer, record or count; the proxy serves again
once descriptors are free.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import MAIN_POLICY, needs_root, secret_env
from tests.support.listeners import ContactRecorder
from tests.support.proxyproc import ProxyProcess

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")]


def ask(port: int, host: str = "attacker.test") -> bytes:
    """A plain request through the proxy (a host outside MAIN_POLICY's allowlist: answered 403 by
    the proxy itself); what came back, or the error that ended it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        out = b""
        try:
            while b := s.recv(65536):
                out += b
        except OSError as e:
            out += f"<{type(e).__name__}>".encode()
        return out


def nfds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile(pid: int) -> tuple[str, str]:
    soft, hard = subprocess.run(
        ["prlimit", f"--pid={pid}", "--nofile", "-o", "SOFT,HARD", "--noheadings"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return soft, hard


@contextmanager
def out_of_descriptors(p: ProxyProcess, spare: int = 0) -> Iterator[None]:
    """The proxy's open-files limit set to what it holds (plus ``spare``), and what is left of it
    taken by agent connections that began a request head; all given back after."""
    pid = p.proc.pid
    soft, hard = nofile(pid)
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={nfds(pid) + spare}:{hard}"], check=True)
    held = []
    try:
        if not spare:
            for _ in range(8):  # (whatever a connection closing as it was counted left free)
                c = socket.create_connection(("127.0.0.1", p.port), timeout=5)
                c.sendall(b"GET http://attacker.test/ HTTP/1.1\r\n")
                held.append(c)
            time.sleep(0.5)
        yield
    finally:
        for c in held:
            c.close()
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:{hard}"], check=True)


ALLOW = """
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: rt68-reload}
spec:
  allow:
    - host: attacker.test
      ports: [80]
    - host: api.openai.com
      ports: [80]
"""
REVOKED = ALLOW.replace("    - host: attacker.test\n      ports: [80]\n", "")


def test_rt68_a_revocation_read_out_of_descriptors_applies_once_the_file_reads(
    make_proxy: Callable[..., ProxyProcess], attacker: ContactRecorder
) -> None:
    p = make_proxy(ALLOW)
    assert ask(p.port, "api.openai.com").startswith(b"HTTP/1.1 200")
    with out_of_descriptors(p):
        new = p.policy.with_suffix(".new")
        new.write_text(REVOKED)
        new.replace(p.policy)  # the revocation, written at once (as a ConfigMap update is)
        deadline = time.monotonic() + 15
        while '"policy_reload", "result": "error"' not in p.stderr():  # (it looks every second)
            assert time.monotonic() < deadline, p.stderr()[-1000:]
            time.sleep(0.2)
        time.sleep(2)  # two more looks, out of descriptors still
    deadline = time.monotonic() + 15
    while p.metric("sandgate_policy_reloads_total", result="success") < 1:
        assert time.monotonic() < deadline, f"the revocation was never applied: {p.stderr()[-1000:]}"
        time.sleep(0.2)
    before = attacker.count
    answer = ask(p.port, "attacker.test")
    assert b"host_not_allowed" in answer and attacker.count == before, answer[:200]
    # Said once, not at every look while it failed; and it says what happens next.
    errors = [line for line in p.stderr().splitlines() if '"policy_reload"' in line and '"error"' in line]
    assert len(errors) == 1 and "Too many open files" in errors[0] and "reading the file again" in errors[0], errors
    assert p.metric("sandgate_policy_reloads_total", result="error") == 1


def test_rt68_an_invalid_version_is_still_read_once_not_at_every_look(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    """What PolicyUnreadable must not change: a version that reads but is invalid is refused once
    and not read again until the file changes (counted once)."""
    p = make_proxy(ALLOW)
    p.policy.write_text("spec: [this is not a policy")
    deadline = time.monotonic() + 15
    while p.metric("sandgate_policy_reloads_total", result="error") < 1:
        assert time.monotonic() < deadline, p.stderr()[-1000:]
        time.sleep(0.2)
    time.sleep(3)  # three more looks
    assert p.metric("sandgate_policy_reloads_total", result="error") == 1
    assert p.stderr().count('"policy_reload"') == 1


def _symlink_loop(log: Path) -> None:
    log.unlink()
    log.symlink_to(log.name)  # audit.log -> audit.log: ELOOP for stat and open


def _dir_now_a_file(log: Path) -> None:
    shutil.rmtree(log.parent)
    log.parent.write_text("not a directory\n")  # ENOTDIR for stat and open


def _dir_gone(log: Path) -> None:  # ENOENT: the case the proxy already dealt with, for comparison
    shutil.rmtree(log.parent)


@pytest.mark.parametrize(
    "damage", [_symlink_loop, _dir_now_a_file, _dir_gone], ids=["symlink-loop", "dir-now-a-file", "dir-gone"]
)
def test_rt68_records_for_a_removed_audit_log_whose_path_cannot_be_looked_at_are_counted_and_unready(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    log = tmp_path / "auditdir" / "audit.log"
    log.parent.mkdir()
    p = make_proxy(MAIN_POLICY, "--audit-log", str(log))
    assert ask(p.port).startswith(b"HTTP/1.1 403")
    assert log.read_text().count("\n") == 1
    damage(log)
    for _ in range(5):
        assert ask(p.port).startswith(b"HTTP/1.1 403")  # (requests are never held back for their record)
        time.sleep(0.3)
    writes_to = [os.readlink(f"/proc/{p.proc.pid}/fd/{x}") for x in os.listdir(f"/proc/{p.proc.pid}/fd")]
    assert p.metric("sandgate_internal_errors_total", task="audit") >= 5, (writes_to, p.stderr()[-800:])
    assert p.metric("sandgate_proxy_ready") == 0
    assert "cannot open it anew" in p.stderr()


def test_rt68_a_rotated_audit_log_whose_path_cannot_be_looked_at_is_said_and_written_as_it_was(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    """docs/audit.md: after a rotation, a path that cannot be opened anew is logged and counted,
    records go on into the file as it was, and the proxy tries again every second."""
    log = tmp_path / "audit.log"
    p = make_proxy(MAIN_POLICY, "--audit-log", str(log))
    assert ask(p.port).startswith(b"HTTP/1.1 403")
    log.rename(tmp_path / "audit.log.1")
    log.symlink_to(log.name)
    for _ in range(5):
        assert ask(p.port).startswith(b"HTTP/1.1 403")
        time.sleep(0.3)
    assert (tmp_path / "audit.log.1").read_text().count("\n") == 6  # nothing lost: into the file as it was
    said = [line for line in p.stderr().splitlines() if "cannot open it anew" in line]
    assert len(said) == 1 and "the path cannot be looked at" in said[0], p.stderr()[-800:]
    assert p.metric("sandgate_internal_errors_total", task="audit") >= 1
    log.unlink()  # the path opens again: the next look reopens it, and records arrive there
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline, p.stderr()[-800:]
        ask(p.port)
        time.sleep(0.3)
    assert p.metric("sandgate_proxy_ready") == 1


def _thread_ticks(pid: int) -> dict[str, int]:
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        st = Path(f"/proc/{pid}/task/{t}/stat").read_text()
        fields = st[st.rindex(")") + 2 :].split()
        out[t] = int(fields[11]) + int(fields[12])  # utime + stime
    return out


def test_rt68_out_of_descriptors_a_waiting_scrape_does_not_spin_the_metrics_thread(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    p = make_proxy(MAIN_POLICY)
    assert ask(p.port).startswith(b"HTTP/1.1 403")
    with out_of_descriptors(p), socket.create_connection(("127.0.0.1", p.metrics_port), timeout=5) as m:
        m.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        before = _thread_ticks(p.proc.pid)
        time.sleep(2)
        after = _thread_ticks(p.proc.pid)
    busiest = max(after[t] - before.get(t, 0) for t in after) / os.sysconf("SC_CLK_TCK")
    assert busiest < 0.5, f"a thread of the proxy took {busiest:.2f} s of CPU in 2 s, idle but for one scrape"
    deadline = time.monotonic() + 10  # and once descriptors are free, the scrape is answered again
    while True:
        try:
            assert "sandgate_proxy_ready" in p.metrics()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert ask(p.port).startswith(b"HTTP/1.1 403")


IN_CREATE = 0x100


def _handshake(port: int, host: str) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                if not (d := s.recv(1)):
                    return "closed before 200"
                head += d
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with ctx.wrap_socket(s, server_hostname=host) as t:
                return "handshake " + str(t.version())
    except (OSError, ssl.SSLError) as e:
        return f"{type(e).__name__}: {e}"


def test_rt68_out_of_descriptors_no_leaf_key_is_written_to_a_file(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    """Each denied CONNECT to a new name still gets a TLS handshake (its refusal is said inside
    TLS), so a leaf is minted for it; with one or two descriptors to spare, the memory file took the
    last and reading it through /proc failed."""
    tmpdir = tmp_path / "proxytmp"
    tmpdir.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0 and libc.inotify_add_watch(fd, str(tmpdir).encode(), IN_CREATE) >= 0
    try:
        p = make_proxy(MAIN_POLICY, env={**secret_env(), "TMPDIR": str(tmpdir)})
        results = []
        for i, spare in enumerate([1, 2, 3, 1, 2, 3]):
            with out_of_descriptors(p, spare=spare):
                results.append((spare, _handshake(p.port, f"h{i}.nowhere.test")))
            time.sleep(0.3)
        try:
            events = os.read(fd, 65536)
        except BlockingIOError:
            events = b""
    finally:
        os.close(fd)
    created, off = [], 0
    while off < len(events):
        _, _, _, size = struct.unpack_from("iIII", events, off)
        created.append(events[off + 16 : off + 16 + size].rstrip(b"\0").decode())
        off += 16 + size
    assert not created, f"files made in the proxy's TMPDIR: {created} ({results})"
    assert ask(p.port).startswith(b"HTTP/1.1 403")  # it serves on, descriptors free again


class _Context:
    """Stands in for an ``ssl.SSLContext``: what ``_load_chain`` asked it to load, failing for
    the memory file's /proc path with ``fail``."""

    def __init__(self, fail: OSError) -> None:
        self.fail = fail
        self.paths: list[str] = []

    def load_cert_chain(self, path: str) -> None:
        self.paths.append(path)
        if path.startswith("/proc/"):
            raise self.fail


def test_rt68_a_leaf_goes_through_a_file_only_where_there_is_no_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.datapath import certs

    emfile = _Context(OSError(errno.EMFILE, "Too many open files"))
    with pytest.raises(OSError, match="Too many open files"):
        certs._load_chain(emfile, b"PEM")  # type: ignore[arg-type]
    assert len(emfile.paths) == 1  # the memory file only: the failure is the caller's, no file made
    gone = _Context(FileNotFoundError(errno.ENOENT, "No such file or directory"))
    with pytest.raises(FileNotFoundError):  # /proc is there: something else is wrong, no file either
        certs._load_chain(gone, b"PEM")  # type: ignore[arg-type]
    assert len(gone.paths) == 1
    isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda path: path != "/proc/self/fd" and isdir(path))
    certs._load_chain(gone, b"PEM")  # type: ignore[arg-type]  # no /proc: a private file, removed at once
    assert len(gone.paths) == 3 and Path(gone.paths[2]).name.startswith("sandgate-leaf-")
    assert not Path(gone.paths[2]).exists()
