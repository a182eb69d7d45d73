"""The audit stream and the operational log never hold the event loop (red team 45, F3-F5, F7).

A :class:`proxy.sink.Sink` writes without blocking: what a stream takes is in the kernel before
the answers of its round leave; what it does not take (a full pipe) waits in order, bounded, and
goes out once the stream takes writes again; what is lost (past the bound, a failed write) is
counted, and no line is ever torn. Unit tests drive a Sink over real pipes and files; the
subprocess tests stop reading a real proxy's stdout or stderr.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from proxy import sink as sink_module
from proxy.audit import AuditLog, AuditRecord
from proxy.sink import Sink
from tests.conftest import OPENAI, needs_root, secret_env
from tests.support.proxyproc import free_port
from tests.support.wait import wait_for

POLICY = f"""apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: audit-stream}}
spec:
  allow:
    - host: api.openai.com
      ports: [80, 443]
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{env: {OPENAI.env}}}
      hosts: [api.openai.com]
"""


def record(i: int) -> AuditRecord:
    return AuditRecord("denied", "host_not_allowed", "GET", f"h{i}.test", 80, "/" + "x" * 200, policy="p")


def pipe_sink(**kw: object) -> tuple[Sink, int, list[int]]:
    """A Sink on the write end of a new pipe (as stdout would be), its read end, and the lines it lost."""
    r, w = os.pipe()
    lost: list[int] = []
    with os.fdopen(w, "wb", buffering=0) as out:
        s = Sink.of_stream(out, name="audit", on_lost=lost.append, **kw)  # (its own descriptor: out may close)
    return s, r, lost


def read_all(fd: int, until: float = 5.0) -> bytes:
    os.set_blocking(fd, False)
    data = bytearray()
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def drain(fd: int, want: int, timeout: float = 10.0) -> bytes:
    """Read ``fd`` on the loop (its writes of what waits run meanwhile) until ``want`` lines came."""
    os.set_blocking(fd, False)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < want and time.monotonic() < deadline:
        try:
            data += os.read(fd, 1 << 16)
        except BlockingIOError:
            await asyncio.sleep(0.005)
    return bytes(data)


async def test_a_pipe_nobody_reads_holds_the_records_in_order_and_gets_them_all_once_read() -> None:
    s, r, lost = pipe_sink()
    log = AuditLog(s, {})
    t0 = time.monotonic()
    for i in range(1000):  # ~300 KB: the pipe takes 64 KiB
        log.write(record(i))
        log.flush()
    assert time.monotonic() - t0 < 2  # never waited for a reader
    assert s.pending > 100_000 and not lost
    assert s.healthy  # (for a second: a pipe full for a moment under a burst is not news)
    await asyncio.sleep(sink_module.STALL_GRACE + 0.1)
    assert not s.healthy  # readiness says 0 from here
    data = await drain(r, 1000)
    hosts = [json.loads(line)["host"] for line in data.splitlines()]
    assert hosts == [f"h{i}.test" for i in range(1000)]  # every one, whole, in order
    assert s.pending == 0 and s.healthy
    s.close()
    os.close(r)


async def test_past_the_bound_records_are_lost_and_counted_and_no_line_is_torn() -> None:
    s, r, lost = pipe_sink(limit=20_000)
    log = AuditLog(s, {})
    for i in range(1000):
        log.write(record(i))
        log.flush()
    assert s.pending <= 20_000
    assert sum(lost) == s.lost > 0
    data = await drain(r, 1000 - s.lost, timeout=5)
    lines = data.splitlines()
    assert len(lines) + s.lost == 1000
    hosts = [json.loads(line)["host"] for line in lines]  # (each parses: none torn)
    assert hosts == sorted(hosts, key=lambda h: int(h[1:-5]))  # in order, with one gap
    s.close()
    os.close(r)


def test_a_closed_pipe_loses_records_counted_and_the_writer_goes_on() -> None:
    s, r, lost = pipe_sink()
    os.close(r)  # the reader is gone: EPIPE (SIGPIPE is ignored by Python)
    reports: list[tuple[str, dict[str, object]]] = []
    s._report = lambda level, fields: reports.append((level, fields))
    log = AuditLog(s, {})
    for i in range(5):
        log.write(record(i))
    assert sum(lost) == 5 and not s.healthy
    assert [f["error"] for level, f in reports if level == "error"] == ["BrokenPipeError: [Errno 32] Broken pipe"]
    s.close()


def test_a_write_that_fails_midway_never_tears_a_line() -> None:
    """A full disk: a write takes part of the data, the next one fails (ENOSPC). The line begun is
    finished first once there is room again; the lines after it are lost, counted."""
    out = bytearray()
    room = [150]  # bytes the "disk" still takes

    def send(data: bytes | bytearray) -> int:
        if room[0] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), room[0])
        room[0] -= n
        out.extend(data[:n])
        return n

    r, w = os.pipe()
    lost: list[int] = []
    s = Sink(w, name="audit", send=send, on_lost=lost.append)
    line = b'{"n":%d,"pad":"' + b"y" * 80 + b'"}\n'
    s.write(b"".join(line % i for i in range(3)), 3)  # the second line is cut at byte 150
    assert sum(lost) == 1 and not s.healthy  # the third lost; the second's end held
    room[0] = 10_000
    s.write(line % 3, 1)
    assert [json.loads(x)["n"] for x in out.splitlines()] == [0, 1, 3]
    assert s.healthy
    s.close()
    os.close(r)


def test_a_rotated_file_is_opened_anew_at_its_path_and_counted(tmp_path: Path) -> None:
    """logrotate's create scheme: renamed, then (by the rotator or by us) a new file at the path.
    The path is looked at every LOOK_INTERVAL: what is written in between goes into the renamed
    file, where a shipper following the path by name still reads it."""
    path = tmp_path / "audit.log"
    s = Sink.open_file(str(path), name="audit")
    reopened: list[bool] = []
    s.on_reopen = lambda: reopened.append(True)
    s.write(b"one\n")
    path.rename(tmp_path / "audit.log.1")
    s.write(b"two\n")  # (within LOOK_INTERVAL of the last look)
    time.sleep(sink_module.LOOK_INTERVAL)
    s.write(b"three\n")
    assert (tmp_path / "audit.log.1").read_bytes() == b"one\ntwo\n"
    assert path.read_bytes() == b"three\n" and reopened == [True] and s.reopened == 1
    path.rename(tmp_path / "audit.log.2")
    path.write_bytes(b"")  # the rotator made the new file
    time.sleep(sink_module.LOOK_INTERVAL)
    s.write(b"four\n")
    assert path.read_bytes() == b"four\n" and s.reopened == 2 and s.lost == 0
    s.close()


def test_records_written_into_a_removed_file_are_counted_lost(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lost: list[int] = []
    s = Sink.open_file(str(path), name="audit", on_lost=lost.append)
    s.write(b"one\n")
    path.unlink()
    s.write(b"two\nthree\n", 2)  # into the removed file: gone
    time.sleep(sink_module.LOOK_INTERVAL)
    s.write(b"four\n")
    assert path.read_bytes() == b"four\n" and s.reopened == 1
    assert lost == [3]  # everything written since the last look ("one" too): gone with the file
    s.close()


class _Stats:
    """Counts the looks at one path (``os.stat`` of it), passing every call on."""

    def __init__(self, path: Path) -> None:
        self.path, self.looks, self._stat = str(path), 0, os.stat

    def __call__(self, p: object, *a: object, **kw: object) -> os.stat_result:
        if p == self.path:
            self.looks += 1
        return self._stat(p, *a, **kw)  # type: ignore[arg-type]


async def test_on_an_event_loop_a_timer_looks_at_the_path_and_a_write_never_waits_for_a_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar's case: the look at the path (a path walk) is made by a timer in the loop's own
    time, not before the write of the record an answer waits for. A rotation is followed within
    LOOK_INTERVAL whether or not anything is written meanwhile."""
    path = tmp_path / "audit.log"
    s = Sink.open_file(str(path), name="audit")
    s.write(b"one\n")  # (the first write looks, and starts the timer)
    stats = _Stats(path)
    monkeypatch.setattr(sink_module.os, "stat", stats)
    path.rename(tmp_path / "audit.log.1")
    await asyncio.sleep(3 * sink_module.LOOK_INTERVAL)
    assert s.reopened == 1 and path.read_bytes() == b""  # opened anew at its path, with no write since
    looks = stats.looks
    assert looks >= 2  # (it went on looking)
    for n in range(20):
        s.write(b"%d\n" % n)
    assert stats.looks == looks  # no write looked
    assert path.read_bytes() == b"".join(b"%d\n" % n for n in range(20))
    assert (tmp_path / "audit.log.1").read_bytes() == b"one\n"
    s.close()
    looks = stats.looks
    await asyncio.sleep(2 * sink_module.LOOK_INTERVAL)
    assert stats.looks == looks  # closed: no more looks


async def test_after_a_quiet_the_looks_stop_and_the_first_write_looks_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timer keeps an idle proxy awake; a rotation made while it was quiet still sends the next
    record to the new file (the write looks first, as without a loop)."""
    monkeypatch.setattr(sink_module, "LOOK_IDLE", 3 * sink_module.LOOK_INTERVAL)
    path = tmp_path / "audit.log"
    s = Sink.open_file(str(path), name="audit")
    s.write(b"one\n")
    await asyncio.sleep(sink_module.LOOK_IDLE + 2 * sink_module.LOOK_INTERVAL)
    stats = _Stats(path)
    monkeypatch.setattr(sink_module.os, "stat", stats)
    await asyncio.sleep(3 * sink_module.LOOK_INTERVAL)
    assert stats.looks == 0  # quiet: no looks
    path.rename(tmp_path / "audit.log.1")
    s.write(b"two\n")
    assert stats.looks == 1 and s.reopened == 1
    assert path.read_bytes() == b"two\n" and (tmp_path / "audit.log.1").read_bytes() == b"one\n"
    s.close()


def test_a_path_that_cannot_be_opened_anew_is_reported_once_and_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "LOOK_INTERVAL", 0.0)
    monkeypatch.setattr(sink_module, "_REOPEN_RETRY", 0.0)
    d = tmp_path / "logs"
    d.mkdir()
    s = Sink.open_file(str(d / "audit.log"), name="audit")
    failed: list[bool] = []
    s.on_reopen_failed = lambda: failed.append(True)
    s.write(b"one\n")
    (d / "audit.log").rename(tmp_path / "kept.log")
    d.rmdir()  # nowhere to open it anew
    s.write(b"two\n")
    s.write(b"three\n")
    assert failed == [True]  # reported (and counted) once, not per write
    assert (tmp_path / "kept.log").read_bytes() == b"one\ntwo\nthree\n"  # into the file as it was
    d.mkdir()
    s.write(b"four\n")
    assert (d / "audit.log").read_bytes() == b"four\n" and s.reopened == 1
    s.close()


def _counting(path: Path) -> tuple[Sink, list[int]]:
    """A Sink on ``path`` and the counts of lines it lost, as they were told."""
    lost: list[int] = []
    return Sink.open_file(str(path), name="audit", on_lost=lost.append), lost


def test_while_a_removed_files_path_cannot_be_opened_anew_its_records_are_counted_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team 56: the file removed and its directory with it. Records went on into the removed
    file, counted lost only if the path could be opened again one day: not when the proxy ended
    first. They are counted as they come now (and not written: a removed file grows out of sight)."""
    monkeypatch.setattr(sink_module, "LOOK_INTERVAL", 0.0)
    monkeypatch.setattr(sink_module, "_REOPEN_RETRY", 0.0)
    d = tmp_path / "logs"
    d.mkdir()
    s, lost = _counting(d / "audit.log")
    s.write(b"one\n")
    (d / "audit.log").unlink()
    d.rmdir()
    for n in range(5):
        s.write(b"%d\n" % n)
    assert sum(lost) == 6  # "one" (gone with the file) and the five
    assert not s.healthy  # (sandgate_proxy_ready says 0)
    d.mkdir()
    s.write(b"back\n")
    assert (d / "audit.log").read_bytes() == b"back\n" and sum(lost) == 6 and s.reopened == 1
    assert s.healthy
    s.close()


def test_records_written_to_a_removed_file_since_the_last_look_are_counted_lost_at_close(tmp_path: Path) -> None:
    """Red team 56: rm, records within LOOK_INTERVAL, SIGTERM: the last look never came."""
    path = tmp_path / "audit.log"
    s, lost = _counting(path)
    s.write(b"one\n")
    path.unlink()
    s.write(b"two\n")
    s.write(b"three\n")
    s.close()
    assert sum(lost) == 3


def _filling(s: Sink, room: list[int]) -> None:
    """``s``'s file takes ``room[0]`` more bytes, then fails as a full disk does (ENOSPC)."""
    fd = s.fd

    def send(data: bytes | bytearray) -> int:
        n = min(len(data), room[0])
        if n == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= n
        return os.write(fd, bytes(data[:n]))

    s._send = send


def test_a_line_cut_by_a_full_disk_then_rotated_is_counted_lost_and_the_new_file_is_whole(tmp_path: Path) -> None:
    """Red team 56: the end of a line a full disk cut waited to be written, and a rotation dropped
    it uncounted. The line stays torn in the rotated file; its record is counted lost."""
    path = tmp_path / "audit.log"
    s, lost = _counting(path)
    room = [len(b"one\ntw")]
    _filling(s, room)
    s.write(b"one\n")
    s.write(b"two\n")  # cut after "tw": the rest waits
    path.rename(tmp_path / "audit.log.1")
    time.sleep(sink_module.LOOK_INTERVAL)
    s.write(b"three\n")
    assert (tmp_path / "audit.log.1").read_bytes() == b"one\ntw"
    assert path.read_bytes() == b"three\n" and sum(lost) == 1
    s.close()


@pytest.mark.parametrize("then", ["reopened", "closed"])
def test_a_line_cut_in_a_file_then_removed_is_counted_lost_once(tmp_path: Path, then: str) -> None:
    path = tmp_path / "audit.log"
    s, lost = _counting(path)
    _filling(s, [len(b"one\ntw")])
    s.write(b"one\n")
    s.write(b"two\n")  # cut after "tw"
    path.unlink()
    if then == "reopened":
        time.sleep(sink_module.LOOK_INTERVAL)
        s.write(b"three\n")
        assert path.read_bytes() == b"three\n"
    s.close()
    assert sum(lost) == 2  # "one" and "two", gone with the file; each once


def test_a_line_cut_by_a_full_disk_never_begins_a_file_copytruncate_emptied(tmp_path: Path) -> None:
    """Red team 56: copytruncate while a line's end waited for room: that end began the emptied
    file, a fragment. It is dropped, and its record counted lost."""
    path = tmp_path / "audit.log"
    s, lost = _counting(path)
    room = [len(b"one\ntw")]
    _filling(s, room)
    s.write(b"one\n")
    s.write(b"two\n")
    (tmp_path / "audit.log.1").write_bytes(path.read_bytes())  # logrotate's copytruncate
    os.truncate(path, 0)
    room[0] = 1 << 20  # room again
    s.write(b"three\n")
    assert path.read_bytes() == b"three\n" and sum(lost) == 1
    s.close()


def test_a_fifo_with_a_reader_is_written_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    with pytest.raises(sink_module.SinkError, match="a FIFO that nothing reads"):
        Sink.open_file(str(fifo), name="audit")
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    s = Sink.open_file(str(fifo), name="audit")
    for _ in range(2000):
        s.write(b"x" * 99 + b"\n")  # ~200 KB into a 64 KiB FIFO: held, not waited for
    assert s.pending > 0
    s.close()
    os.close(r)


def test_a_socket_stream_is_sent_to_without_waiting_and_stays_blocking_for_its_other_holders() -> None:
    """stdout as a socket (systemd's journal): each send says MSG_DONTWAIT; the descriptor the
    process shares with others is left as it was."""
    a, b = socket.socketpair()
    with a, b:
        s = Sink.of_stream(a.makefile("wb", buffering=0), name="audit")
        for _ in range(10_000):  # ~1 MB into a socket buffer nobody reads
            s.write(b"x" * 99 + b"\n")
        assert s.pending > 0 and a.getblocking()
        s.close()
        assert a.fileno() >= 0  # (ours was a duplicate: the caller's socket is still open)


def test_a_pipe_that_cannot_be_opened_anew_is_made_nonblocking_and_restored_at_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reopening through /proc fails for a pipe another user made (without the runtime's fchown):
    the shared description is made non-blocking then, and blocking again at close."""
    real_open = os.open

    def no_proc(path: object, *a: object, **k: object) -> int:
        if str(path).startswith("/proc/self/fd/"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *a, **k)  # type: ignore[arg-type]

    r, w = os.pipe()
    monkeypatch.setattr(os, "open", no_proc)
    s = Sink.of_stream(os.fdopen(w, "wb", buffering=0, closefd=False), name="audit")
    monkeypatch.undo()
    assert not os.get_blocking(w)
    for _ in range(2000):
        s.write(b"x" * 99 + b"\n")  # ~200 KB into a 64 KiB pipe: held, not waited for
    assert s.pending > 0
    s.close()
    assert os.get_blocking(w)
    os.close(w)
    os.close(r)


def test_the_log_handler_never_waits_for_stderr() -> None:
    from proxy.sidecar import _LogHandler

    s, r, lost = pipe_sink(limit=64 * 1024)
    handler = _LogHandler(s)
    logger = __import__("logging").getLogger("sandgate.test-stderr")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        t0 = time.monotonic()
        for i in range(5000):  # ~500 KB, nobody reading
            logger.warning(json.dumps({"event": "x", "i": i, "pad": "z" * 60}))
        assert time.monotonic() - t0 < 5
        assert sum(lost) > 0
        data = read_all(r, until=1)
        lines = data[: data.rfind(b"\n") + 1].splitlines()  # (the last may still be arriving: its end waits)
        assert len(lines) > 100 and all(json.loads(x)["event"] == "x" for x in lines)  # whole lines only
    finally:
        logger.removeHandler(handler)
        s.close()
        os.close(r)


# -- a real proxy ---------------------------------------------------------------------------------


def start(tmp_path: Path, *extra: str, stdout: int | None = subprocess.PIPE, stderr: int | None = None,
          ) -> tuple[subprocess.Popen[bytes], int, int]:  # fmt: skip
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--confdir", str(tmp_path / "conf"),
         "--listen-port", str(port), "--metrics-port", str(metrics_port), *extra],
        stdout=stdout, stderr=stderr if stderr is not None else subprocess.DEVNULL,
        env={**os.environ, **secret_env()},
    )  # fmt: skip
    return proc, port, metrics_port


def metric(port: int, name: str, **labels: str) -> float:
    import urllib.request

    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.rpartition(" ")[0] == want:
                return float(line.rpartition(" ")[2])
    return 0.0


def denied(port: int, host: str, path: bytes = b"/x") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET http://%s%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (host.encode(), path, host.encode()))
        return s.recv(200).split(b"\r\n")[0]


@needs_root
def test_a_stdout_nobody_reads_says_not_ready_and_gets_every_record_in_order_once_read(tmp_path: Path) -> None:
    """While stdout's reader stops: the agent's answers go on, readiness says 0 and the bytes
    waiting show; once it reads again, every record is there, whole and in order, and readiness
    comes back. Nothing is lost below the bound, so nothing is counted lost."""
    proc, port, metrics_port = start(tmp_path)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"sandgate proxy ready")
        for i in range(400):  # ~180 KB of records: the pipe takes 64 KiB
            assert denied(port, f"h{i}.test").startswith(b"HTTP/1.1 403")
        wait_for(lambda: metric(metrics_port, "sandgate_proxy_ready") == 0, timeout=5)
        assert metric(metrics_port, "sandgate_audit_pending_bytes") > 0
        assert metric(metrics_port, "sandgate_internal_errors_total", task="audit") == 0
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.extend(json.loads(proc.stdout.readline())["host"]  # type: ignore[union-attr]
                                                            for _ in range(400)), daemon=True)  # fmt: skip
        reader.start()
        reader.join(20)
        assert got == [f"h{i}.test" for i in range(400)]
        wait_for(lambda: metric(metrics_port, "sandgate_proxy_ready") == 1, timeout=5)
        assert metric(metrics_port, "sandgate_audit_pending_bytes") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


@needs_root
def test_a_stderr_nobody_reads_never_freezes_the_proxy(tmp_path: Path) -> None:
    """Each request below is refused (secret_value_outbound, a real value in its path) with a
    warning on stderr: past
    what the pipe and the log's 64 KiB take, lines are lost and counted; the proxy answers on,
    and SIGTERM ends it."""
    proc, port, metrics_port = start(tmp_path, "--audit-log", str(tmp_path / "audit.log"), stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"sandgate proxy ready")
        for i in range(2000):  # ~250 KB of warnings
            try:
                status = denied(port, "api.openai.com", f"/leak/{OPENAI.real}/{i}".encode())
            except OSError as e:
                pytest.fail(f"request {i} got no answer ({type(e).__name__}): the proxy froze on a full stderr")
            assert status.startswith(b"HTTP/1.1 403"), status
        assert metric(metrics_port, "sandgate_internal_errors_total", task="log") > 0
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not end the proxy within 10 s")
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert all(json.loads(line) for line in err.splitlines())  # whole lines only
        assert OPENAI.real not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_root
def test_an_audit_log_fifo_that_nothing_reads_is_refused_with_its_name(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    proc, _, _ = start(tmp_path, "--audit-log", str(fifo), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2
    assert (
        err.decode().strip()
        == f"sandgate proxy: --audit-log {fifo}: a FIFO that nothing reads (start its reader first)"
    )


@needs_root
def test_stdout_and_stderr_on_one_pipe_keep_every_line_whole(tmp_path: Path) -> None:
    """``2>&1``: records and log lines share one pipe. Two writers that never wait could cut each
    other's lines once the pipe is full; the proxy writes both through one stream, in order."""
    proc, port, _ = start(tmp_path, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"sandgate proxy ready")
        for i in range(1000):  # a record and a warning each: ~450 KB, nobody reading
            assert denied(port, "api.openai.com", f"/leak/{OPENAI.real}/{i}".encode()).startswith(b"HTTP/1.1 403")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in out.splitlines()]  # (each parses: none cut by another)
    assert sum(1 for x in lines if x.get("schema")) > 100
    assert sum(1 for x in lines if x.get("event") == "secret_value_outbound") > 100


@needs_root
@pytest.mark.asyncio(loop_scope="session")
async def test_readiness_says_0_while_the_event_loop_is_stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics thread answers while the loop does not: ready follows the loop's heartbeat, not
    a flag set once at start (red team 45: a frozen proxy said ready 1)."""
    from proxy.sidecar import HEARTBEAT_LATE, ProxyConfig, serve

    for k, v in secret_env().items():
        monkeypatch.setenv(k, v)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    metrics_port = free_port()
    cfg = ProxyConfig(policy=policy, listen_port=free_port(), metrics_port=metrics_port, confdir=tmp_path / "conf",
                      audit_log=tmp_path / "audit.log")  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(cfg, stop=stop))
    for _ in range(200):
        if (tmp_path / "conf" / "ca.crt").exists():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert await asyncio.to_thread(metric, metrics_port, "sandgate_proxy_ready") == 1
    seen: list[float] = []
    scrape = threading.Timer(HEARTBEAT_LATE + 1.5, lambda: seen.append(metric(metrics_port, "sandgate_proxy_ready")))
    scrape.start()
    time.sleep(HEARTBEAT_LATE + 2.5)  # the loop is stuck (a blocking call on it)
    scrape.join()
    assert seen == [0]
    await asyncio.sleep(0.2)  # (a heartbeat)
    assert await asyncio.to_thread(metric, metrics_port, "sandgate_proxy_ready") == 1
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0
