"""Files a user names at start-up or a source names later (a policy, a CA, a serving certificate, a
kubeconfig, the webhook's settings, a case file, a secret's file): read whole, bounded, and only
when regular.

A FIFO would block the read for good with no word said (red team 37: the policy watcher hung; red
team 63: ``sandgate webhook --config FIFO`` never started, nor said why), and a device may never
end (red team 63: ``sandgate run --upstream-ca /dev/zero`` copied until the disk was full;
``webhook --config /dev/zero`` read gigabytes into memory). The file is opened without blocking,
judged by what it is once open (no race with a path swapped in between), and read to one byte past
the bound at the most.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["MAX_PEM_BYTES", "NOT_REGULAR", "read_bounded", "read_regular"]

NOT_REGULAR = "not a regular file (a FIFO, a socket or a device)"
MAX_PEM_BYTES = 4 << 20  # a PEM file (a CA bundle, a certificate chain, a key): a system bundle is ~0.2 MiB


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``: at most ``limit + 1`` of them (one over the bound
    is enough for the caller to say the file is too large, in its own words). Raises
    :class:`OSError` only: ``EISDIR`` for a directory, ``EINVAL`` (:data:`NOT_REGULAR`) for anything
    else that is not a regular file, and whatever opening or reading it raised."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, NOT_REGULAR, os.fspath(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """:func:`read_regular`, refusing a file larger than ``limit`` bytes (``EFBIG``, saying the
    bound)."""
    data = read_regular(path, limit)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", os.fspath(path))
    return data
