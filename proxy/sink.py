"""A stream of lines written without ever blocking the event loop: the audit log, the operational log.

A blocking ``write`` on the event loop freezes the whole proxy as soon as whoever reads the stream
stops reading (a paused pager, a stuck log shipper, Docker's blocking log mode with its driver
down): every agent connection hangs, SIGTERM is never handled (red team 45). A :class:`Sink`
writes to its own non-blocking descriptor instead:

- the usual case is one ``write`` system call that takes everything: the lines are in the kernel
  (the pipe, the file's page cache) when it returns;
- what a stream does not take now (a full pipe) waits in memory, in order, and goes out as soon as
  the stream takes writes again (the loop watches the descriptor); past ``limit`` bytes waiting,
  further lines are lost, and counted;
- a write that fails (a full disk, a closed pipe) loses its lines, counted; a line already begun
  is finished first once the stream takes writes again, so no line is ever torn;
- ``path`` (a regular file): reopened when the path no longer names the file written (rotated
  or removed, logrotate's default scheme). The path is looked at every LOOK_INTERVAL (a stat
  before every write cost ~2% of a request's CPU): lines written in between go into the rotated
  file, or, when it was removed, are lost (counted). On an event loop the looks are made by a
  timer, in the loop's own time, for LOOK_IDLE seconds after the last write, so that the look is
  never on a write's way (a path walk before the record of a request, mostly the first after a
  pause, delayed its answer by tens of microseconds); the first write after a longer quiet, or
  with no loop running, looks before it writes. Either way no line is written more than
  LOOK_INTERVAL after the path was last looked at. A removed file whose path cannot be opened
  anew is not written: its lines are counted lost as they come, until a look opens the path;
  and what went into a file removed since the last look is counted at the next look, or at
  :meth:`Sink.close`.

Its writes are made on the event loop's thread; another thread that writes (the operational
log's handler, in principle) sets :attr:`Sink.lock`, which the loop's own writes of what waits
take too. The metrics thread only reads its gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PENDING_LIMIT", "STALL_GRACE", "Sink", "SinkError"]

PENDING_LIMIT = 4 * 1024 * 1024  # bytes that may wait for a stream that takes no writes now
_OPEN = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
STALL_GRACE = 1.0  # seconds a stream may take no writes before it is reported (and unhealthy)
LOOK_INTERVAL = 0.1  # seconds between looks at a file's path (a stat on every write cost ~2% of a request)
LOOK_IDLE = 10.0  # seconds after the last write during which a timer keeps looking at the path
_LOOK_EARLY = 0.01  # the timer looks this much before a look is due: a write never finds it overdue
_REOPEN_RETRY = 1.0  # seconds between attempts to open a rotated file's path anew, while they fail


class SinkError(Exception):
    """The stream cannot be opened: a sentence for the operator."""


Report = Callable[[str, dict[str, Any]], None]  # (level "error"|"warning"|"info", JSON members)


class Sink:
    """See the module. ``name``: what the stream is, in reports. ``on_lost(n)``: ``n`` lines were
    lost. ``report``: how state changes are told (None: silently, for the log's own stream)."""

    def __init__(
        self,
        fd: int,
        *,
        name: str,
        path: str | None = None,
        limit: int = PENDING_LIMIT,
        on_lost: Callable[[int], None] | None = None,
        report: Report | None = None,
        restore: Callable[[], None] | None = None,
        send: Callable[[bytes | bytearray], int] | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.limit = limit
        self.on_lost = on_lost or (lambda n: None)
        self.on_reopen: Callable[[], None] = lambda: None  # the file was opened anew (rotated)
        self.on_reopen_failed: Callable[[], None] = lambda: None  # it could not be (first of a run)
        self._report = report
        self._restore = restore  # undoes what opening changed on a shared descriptor (O_NONBLOCK)
        self._held = bytearray()  # written, not yet taken by the stream
        self._watching = False  # the loop calls _push when the stream takes writes
        self._midline = False  # the stream has the beginning of a line whose end is held
        self.stalled_since: float | None = None  # monotonic time the stream stopped taking writes
        self.failure: str | None = None  # the error of the run of failed writes under way
        self.lost = 0  # lines lost, in all
        self._lost_now = 0  # since the stream stopped taking writes, or began to fail
        self._told = False  # that it stopped
        self.reopened = 0
        self._look_at = 0.0  # (monotonic) when to look at the path next
        # What was said of the path's failure under way (the action taken), None when there is none:
        # said (and counted) again when the action changes, and once more after the path came back.
        self._failing_reopen: str | None = None
        # The file written was removed and its path cannot be opened anew: writes count their lines
        # lost instead (a removed file would only grow out of sight) until a look opens the path.
        self._dead = False
        self._size_at_cut = 0  # a regular file's size when a line was cut in it (see _truncated)
        self._since_look = 0  # lines written since the path was last looked at
        self._last_write = 0.0  # (monotonic) of the last write, for the look timer (LOOK_IDLE)
        self._look_timer: asyncio.TimerHandle | None = None
        self.lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()  # held by the loop's writes
        self._adopt(fd, send)

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open_file(cls, path: str, **kw: Any) -> Sink:
        """``path`` for appending, created if missing: a regular file (followed through rotations),
        or a device or FIFO (written like stdout). Raises SinkError (never blocks: a FIFO with no
        reader is refused, not waited for)."""
        try:
            fd = os.open(path, _OPEN, 0o666)
        except OSError as e:
            if e.errno == errno.ENXIO and _is_fifo(path):
                raise SinkError(f"{path}: a FIFO that nothing reads (start its reader first)") from None
            raise SinkError(f"{path}: {e.strerror or e}") from None
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        return cls(fd, path=path if regular else None, **kw)

    @classmethod
    def of_stream(cls, stream: Any, **kw: Any) -> Sink:
        """``stream``'s descriptor (``sys.stdout``, ``sys.stderr``), written through a descriptor
        of our own. Raises SinkError when there is none: Python makes ``sys.stdout`` None when
        the process started with it closed (``>&-``)."""
        try:
            stream.flush()
            fd = stream.fileno()
            os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            raise SinkError("closed, or not a file descriptor") from None
        own, send, restore = _nonblocking(fd)
        return cls(own, send=send, restore=restore, **kw)

    def _adopt(self, fd: int, send: Callable[[bytes | bytearray], int] | None = None) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self._ident = (st.st_dev, st.st_ino)
        self._pollable = not stat.S_ISREG(st.st_mode)
        self._send = send or functools.partial(os.write, fd)

    # -- writing ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Bytes written and not yet taken by the stream."""
        return len(self._held)

    @property
    def healthy(self) -> bool:
        """The stream takes what is written: the last write did not fail, nothing has waited for
        the stream longer than STALL_GRACE, and the file is not one removed whose path cannot be
        opened anew."""
        since = self.stalled_since
        return self.failure is None and not self._dead and (since is None or time.monotonic() - since < STALL_GRACE)

    def write(self, data: bytes, lines: int = 1) -> None:
        """Write ``data`` (``lines`` whole lines) now if the stream takes it, else hold it (see the
        module). Never blocks, never raises."""
        if self.path is not None:
            now = self._last_write = time.monotonic()
            if now >= self._look_at:  # (no timer looked in time: the first write after a quiet, or no loop)
                self._follow()
                self._keep_looking()
            elif self._look_timer is None:
                self._keep_looking()
            if self._dead:
                self._count(lines)
                return
            self._since_look += lines
        held = self._held
        if held:
            if len(held) + len(data) > self.limit:
                self._lose(lines, f"more than {self.limit} bytes wait for the stream")
                return
            held += data
            if not self._watching:
                self._push()
            return
        try:
            n = self._send(data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._failed(e, lines)
            return
        if n == len(data):
            self._midline = False
            if self.failure is not None or self.stalled_since is not None:
                self._flowing()
            return
        if n:
            self._midline = True  # (the rest is held: the stream's last line is not whole yet)
            self._note_cut()
        held += memoryview(data)[n:]
        self._push()

    def _note_cut(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self._size_at_cut = os.fstat(self.fd).st_size

    def _truncated(self) -> bool:
        """Whether the file was truncated (``copytruncate``) since a line was cut in it: the end of
        that line would begin the emptied file, a fragment."""
        try:
            return self.path is not None and os.fstat(self.fd).st_size < self._size_at_cut
        except OSError:
            return False

    def _drop_begun_line(self, *, counted: bool = False) -> None:
        """The end of the line begun in the stream will not follow its beginning: dropped, and its
        line counted lost (torn where it began), unless it was (``counted``)."""
        held = self._held
        del held[: held.find(b"\n") + 1]
        self._midline = False
        if not counted:
            self._count(1)

    def _push(self) -> None:
        """Write what is held, as far as the stream takes it; then wait for it, or report."""
        held = self._held
        if self._midline and self._truncated():
            self._drop_begun_line()
        while held:
            try:
                n = self._send(held)
            except BlockingIOError:
                n = 0
            except OSError as e:
                self._failed(e, held.count(b"\n"))
                return
            if n == 0:
                self._wait()
                return
            self._midline = held[n - 1] != 0x0A
            del held[:n]
            if self._midline:
                self._note_cut()
        self._unwatch()
        if self.failure is not None or self.stalled_since is not None:
            self._flowing()

    def _wait(self) -> None:
        """The stream takes no writes now: have the loop write the rest once it does."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # (no loop: the next write tries again)
        if self.stalled_since is None:
            self.stalled_since = since = time.monotonic()
            self._lost_now, self._told = 0, False
            if loop is not None:
                loop.call_later(STALL_GRACE, self._still_stalled, since)
        if self._watching or loop is None:
            return
        self._watching = True
        if self._pollable:
            try:
                loop.add_writer(self.fd, self._ready)
                return
            except (OSError, ValueError, NotImplementedError):
                self._pollable = False  # (a descriptor the loop cannot watch: try again shortly)
        loop.call_later(0.05, self._retry)

    def _still_stalled(self, since: float) -> None:
        if self.stalled_since == since and not self._told:
            self._told = True
            self._tell("warning", {"event": "stream_stalled", "stream": self.name,
                                   "detail": "the stream has taken no writes for a second (its reader is not "
                                   f"reading): lines wait in memory, up to {self.limit} bytes, then are lost and "
                                   "counted"})  # fmt: skip

    def _ready(self) -> None:
        with self.lock:
            self._push()

    def _retry(self) -> None:
        with self.lock:
            self._watching = False
            self._push()

    def _unwatch(self) -> None:
        if self._watching and self._pollable:
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                asyncio.get_running_loop().remove_writer(self.fd)
        self._watching = False

    def _failed(self, e: OSError, lines: int) -> None:
        """A write failed: its ``lines`` are lost, except the end of a line the stream has begun
        (held, written first once the stream takes writes), so that no line is torn."""
        held = self._held
        if held and self._midline:
            end = held.find(b"\n") + 1
            del held[end:]
            lines -= 1
        else:
            held.clear()
        self._unwatch()
        if self.failure is None:
            self._lost_now = 0
        first = self.failure is None
        self.failure = f"{type(e).__name__}: {e}"
        if first:
            self._tell("error", {"event": "internal_error", "where": self.name, "error": self.failure,
                                 "action": "lines lost (counted) until the stream takes writes again"})  # fmt: skip
        self._count(lines)

    def _lose(self, lines: int, why: str) -> None:
        if self._lost_now == 0:
            self._tell("error", {"event": "internal_error", "where": self.name, "error": why,
                                 "action": "lines lost (counted) until the stream takes writes again"})  # fmt: skip
        self._count(lines)

    def _count(self, lines: int) -> None:
        if lines > 0:
            self.lost += lines
            self._lost_now += lines
            self.on_lost(lines)

    def _flowing(self) -> None:
        since = self.stalled_since
        fields: dict[str, Any] = {"event": "stream_flowing", "stream": self.name, "lost": self._lost_now}
        if since is not None:
            fields["stalled_seconds"] = round(time.monotonic() - since, 3)
        tell = self._told or self.failure is not None or self._lost_now > 0
        self.stalled_since, self.failure, self._lost_now, self._told = None, None, 0, False
        if tell:  # (a pipe full for a moment, under a burst, is not news)
            self._tell("info", fields)

    def _tell(self, level: str, fields: dict[str, Any]) -> None:
        if self._report is not None:
            self._report(level, fields)

    # -- rotation ----------------------------------------------------------------------------
    def _keep_looking(self) -> None:
        """Have the running loop look at the path just before each look is due, while writes keep
        coming (see the module). No loop running: nothing (the writes look for themselves)."""
        if self._look_timer is not None:
            self._look_timer.cancel()  # (one a loop that ended never ran: replaced)
            self._look_timer = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(_LOOK_EARLY, self._look_at - time.monotonic() - _LOOK_EARLY)
        self._look_timer = loop.call_later(delay, self._timed_look)

    def _timed_look(self) -> None:
        self._look_timer = None
        if self.path is None:  # (closed)
            return
        try:
            with self.lock:
                self._follow()
        finally:  # (_follow handles what the file system says; anything else is the loop's to report)
            if time.monotonic() - self._last_write < LOOK_IDLE:
                self._keep_looking()

    def _follow(self) -> None:
        """Reopen the file when its path names another file or none (see the module). What was
        written to a removed file since the last look is lost: counted. While a removed file's path
        cannot be opened anew, writes are counted lost instead of made."""
        now = time.monotonic()
        self._look_at = now + LOOK_INTERVAL
        known = True  # whether the path was seen naming another file or none
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
            if (st.st_dev, st.st_ino) == self._ident:
                self._since_look = 0
                if self._failing_reopen is not None:  # the path leads to the file again: over
                    self._failing_reopen = None
                    self._tell("info", {"event": "stream_path_back", "stream": self.name, "path": self.path})
                return
            there = "the path names another file"
        except FileNotFoundError:
            there = "nothing is at the path"
        except OSError as e:  # (a symlink loop, a directory on the way turned into a file, a permission)
            # Not known to be the file any more: dealt with as one the path no longer names (red
            # team 68: records went on into a removed file, out of sight, neither counted nor said).
            known, there = False, f"the path cannot be looked at: {e.strerror or e}"
        removed = self._removed()
        written = self._written_since_look()
        lost = written if removed else 0
        self._count(lost)
        self._since_look -= written  # (now: the whole lines that wait, for whichever file comes next)
        why = (
            f"the file was removed ({there})"
            if removed
            else f"the file was renamed or moved ({there})"
            if known
            else there
        )
        try:
            fd = os.open(self.path, _OPEN, 0o666)  # type: ignore[arg-type]
        except OSError as e:
            self._look_at = now + _REOPEN_RETRY
            self._dead = removed
            action = (
                "records are lost and counted until the path can be opened anew; trying again every second"
                if removed
                else "writing to the file as it was, and trying again every second"
            )
            if self._failing_reopen != action:  # (red team 69: a second failure, or a removal, went unsaid)
                self._failing_reopen = action
                self.on_reopen_failed()
                self._tell("error", {"event": "internal_error", "where": self.name, "error": f"{why}; cannot open "
                                     f"it anew: {e.strerror or e}", "action": action, "lost": lost})  # fmt: skip
            return
        self._failing_reopen, self._dead = None, False
        if self._midline and removed:  # (its line was counted with what went into the removed file)
            self._drop_begun_line(counted=True)
        elif self._midline:  # finish the line begun in the old file: it is torn there if that fails
            held = self._held
            end = held.find(b"\n") + 1
            try:
                done = self._send(held[:end]) == end
            except OSError:
                done = False
            if done:
                del held[:end]
                self._midline = False
            else:
                self._drop_begun_line()
        self._unwatch()
        old = self.fd
        self._adopt(fd)
        os.close(old)
        self.reopened += 1
        self.on_reopen()
        self._tell("info", {"event": "stream_reopened", "stream": self.name, "path": self.path, "why": why,
                            "lost": lost})  # fmt: skip
        if self._held:  # whole lines that waited for the old file: into the new one
            self._push()

    def _removed(self) -> bool:
        """Whether the file written has no name left (removed)."""
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError:
            return False

    def _written_since_look(self) -> int:
        """Lines written (or begun) into the file since the path was last looked at: not the whole
        lines still held."""
        waiting = self._held.count(b"\n") - (1 if self._midline else 0)
        return max(0, self._since_look - waiting)

    # -- closing -----------------------------------------------------------------------------
    async def settle(self, timeout: float) -> None:
        """Give the stream up to ``timeout`` seconds to take what is held."""
        deadline = time.monotonic() + timeout
        while self._held and time.monotonic() < deadline:
            if not self._watching:
                self._push()
            await asyncio.sleep(0.02)

    def close(self) -> None:
        """What is still held is lost (counted), and what was written since the last look to a file
        that was removed since; the descriptor is closed."""
        self._unwatch()
        if self._look_timer is not None:
            self._look_timer.cancel()
            self._look_timer = None
        if self.path is not None and (self._dead or self._removed()):
            lost = self._written_since_look()  # (0 when dead: counted as they came)
            if self._midline:  # (counted with what went into the removed file)
                self._drop_begun_line(counted=True)
            if lost:
                self._count(lost)
                self._tell("error", {"event": "internal_error", "where": self.name, "error": "the file was "
                                     "removed since the last look at its path", "action": "the lines written to "
                                     "it since are lost (counted)", "lost": lost})  # fmt: skip
        self.path = None  # (nothing to follow any more)
        if self._held:
            self._lose(self._held.count(b"\n"), "the process exits and the stream takes no writes")
            self._held.clear()
        if self._restore is not None:
            self._restore()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _nonblocking(fd: int) -> tuple[int, Callable[[bytes | bytearray], int] | None, Callable[[], None] | None]:
    """A descriptor of our own for ``fd``'s stream, written without blocking, and what undoes any
    change made to what others share. A regular file: a duplicate (writing never waits for a
    reader). A pipe, FIFO or terminal: opened anew through /proc, an open file description of our
    own, so that O_NONBLOCK does not reach the other holders of ``fd`` (a shell sharing its
    terminal). A socket (systemd's journal): each send says MSG_DONTWAIT. Otherwise the shared
    description is made non-blocking, and made blocking again at close."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return os.dup(fd), None, None
    if stat.S_ISSOCK(st.st_mode):
        sock = socket.socket(fileno=os.dup(fd))
        return sock.fileno(), functools.partial(_send_nowait, sock), functools.partial(_detach, sock)
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        mine = os.fstat(own)
        if (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino):
            return own, None, None
        os.close(own)
    except OSError:
        pass
    own = os.dup(fd)
    was = os.get_blocking(own)
    os.set_blocking(own, False)
    return own, None, (lambda: os.set_blocking(own, was)) if was else None


def _send_nowait(sock: socket.socket, data: bytes | bytearray) -> int:
    return sock.send(data, socket.MSG_DONTWAIT)


def _detach(sock: socket.socket) -> None:
    sock.detach()  # (the descriptor is closed by the Sink, once)
