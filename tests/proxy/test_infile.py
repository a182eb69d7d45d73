"""proxy.infile: the one reader of files a user names (a policy, a CA, a serving certificate, a
kubeconfig, the webhook's settings, a cases file, a secret's file). Red team 63: each of those had
its own read, and ``--upstream-ca /dev/zero`` filled a disk, ``--config /dev/zero`` read gigabytes
into memory, a FIFO hung a start for good."""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path

import pytest

from proxy.infile import NOT_REGULAR, read_bounded, read_regular


def test_a_regular_file_is_read_whole_and_one_byte_past_the_bound_at_most(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    assert read_regular(f, 100) == b"x" * 100
    assert read_regular(f, 10) == b"x" * 11  # (one over: the caller says "too large" in its words)
    assert read_bounded(f, 100) == b"x" * 100
    with pytest.raises(OSError) as e:
        read_bounded(f, 99)
    assert e.value.errno == errno.EFBIG and e.value.strerror == "larger than 99 bytes" and e.value.filename == str(f)


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


def _socket(tmp_path: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "sock"))
    return tmp_path / "sock"


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda d: d, errno.EISDIR, "Is a directory"),
        (_fifo, errno.EINVAL, NOT_REGULAR),  # (opened without blocking: no writer is waited for)
        (lambda d: Path("/dev/zero"), errno.EINVAL, NOT_REGULAR),  # (never read: it would never end)
        (lambda d: Path("/dev/null"), errno.EINVAL, NOT_REGULAR),
        (_socket, errno.ENXIO, None),  # (a socket cannot even be opened)
        (lambda d: d / "missing", errno.ENOENT, None),
    ],
    ids=["directory", "fifo", "dev-zero", "dev-null", "socket", "missing"],
)
def test_anything_but_a_regular_file_is_refused_at_once(tmp_path: Path, make, code: int, words: str | None) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    for read in (read_regular, read_bounded):
        with pytest.raises(OSError) as e:
            read(path, 1 << 20)
        assert e.value.errno == code and e.value.filename == str(path)
        if words is not None:
            assert e.value.strerror == words


@pytest.mark.parametrize("kind", ["fifo", "directory", "missing"])
def test_a_vault_cacert_that_is_no_regular_file_is_named_at_start(tmp_path: Path, kind: str) -> None:
    """(Its check said "no such file" of a FIFO and of a directory alike.)"""
    from proxy.secrets.vault import VaultConfigError, VaultSettings

    path = {"fifo": _fifo(tmp_path), "directory": tmp_path, "missing": tmp_path / "missing"}[kind]
    words = {"fifo": NOT_REGULAR, "directory": "Is a directory", "missing": "No such file or directory"}[kind]
    with pytest.raises(VaultConfigError, match=f"--vault-cacert {path}: {re.escape(words)}"):
        VaultSettings(addr="https://vault.example:8200", token="hvs.x", cacert=str(path)).validate()
