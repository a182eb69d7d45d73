"""The files ``sandgate run`` writes as root on the host (``--metrics-out``, ``--audit-log``).

Their paths are usually in CMD's working directory, which CMD's user can write (CMD runs as the
user who called ``sudo``). So they are opened once, before CMD starts, and written through that
descriptor: nothing CMD does to the filesystem during the run can redirect the write. What an
earlier run's CMD (or anyone but root) may have prepared is refused: a symbolic link as the file,
a symbolic link among the directories unless root made it where only root can write, a file with
another hard link, anything but a regular file.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path


class OutputRefused(ValueError):
    pass


MAX_LINKS = 40


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def _open_parent(names: list[str]) -> int:
    """An O_PATH descriptor of the directory ``/names...``, opened a component at a time without
    following a symbolic link an unprivileged user could have made or replaced."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    todo, links = list(names), 0
    try:
        while todo:
            name = todo.pop(0)
            nxt = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            st = os.fstat(nxt)
            if stat.S_ISDIR(st.st_mode):
                os.close(fd)
                fd = nxt
                continue
            os.close(nxt)
            if not stat.S_ISLNK(st.st_mode):
                raise OutputRefused(f"{name} is not a directory")
            here = os.fstat(fd)
            if st.st_uid != 0 or here.st_uid != 0 or here.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise OutputRefused(
                    f"{name} is a symbolic link another user could have made or replaced; give the real path"
                )
            links += 1
            if links > MAX_LINKS:
                raise OutputRefused("too many levels of symbolic links")
            target = os.readlink(name, dir_fd=fd)
            if target.startswith("/"):
                os.close(fd)
                fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            todo[:0] = _components(target)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_output(path: Path, *, append: bool = False) -> int:
    """A writable descriptor for ``path`` (created 0644 if missing; truncated unless ``append``).
    Raises OutputRefused (what is wrong) or OSError."""
    names = _components(os.path.abspath(path))
    if not names:
        raise OutputRefused("not a file")
    parent = _open_parent(names[:-1])
    try:
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else 0)
        for _ in range(3):
            try:
                fd = os.open(names[-1], flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent)
                return fd
            except FileExistsError:
                pass
            try:
                # O_PATH: look at what is there without opening it (a FIFO would block, a device act)
                found = os.open(names[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except FileNotFoundError:
                continue  # removed meanwhile: create it
            try:
                st = os.fstat(found)
                if stat.S_ISLNK(st.st_mode):
                    raise OutputRefused("it is a symbolic link; give the real path")
                if not stat.S_ISREG(st.st_mode):
                    raise OutputRefused("not a regular file")
                if st.st_nlink != 1:
                    raise OutputRefused("the file has another hard link (it may be another file's)")
                fd = os.open(f"/proc/self/fd/{found}", flags)  # the very inode checked above
            finally:
                os.close(found)
            if not append:
                os.ftruncate(fd, 0)
            return fd
        raise OutputRefused("it keeps changing")
    finally:
        os.close(parent)


def write_all(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Follower:
    """What a file gains, copied to a descriptor as it comes (every ``every`` seconds), then the
    rest once stopped. For ``--audit-log``: the proxy (root, perhaps in a gVisor sandbox that cannot
    be handed a descriptor) writes its records in the run's own directory, and this copies them
    through the descriptor opened before CMD started: the proxy never opens the user's path, which
    CMD (or another run's CMD) could have swapped for a link by then (red team 28)."""

    def __init__(self, src: Path, out: int, every: float = 0.2) -> None:
        self.src, self.out, self.every = src, out, every
        self._file: int | None = None
        self._failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandgate-audit-copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._copy()
        self._copy()

    def _copy(self) -> None:
        if self._file is None:
            try:
                self._file = os.open(self.src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return
        while chunk := os.read(self._file, 1 << 16):
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self.out, view) :]
            except OSError as e:
                if not self._failed:
                    print(f"sandgate run: --audit-log: cannot write: {e.strerror}", file=sys.stderr, flush=True)
                self._failed = True
                return

    def stop(self) -> None:
        """The rest copied, then no more."""
        self._stop.set()
        self._thread.join()
        if self._file is not None:
            os.close(self._file)
