"""Secret sources behind one async interface, and the in-memory store the swap reads from.

Values live in this process's memory only: never in a file, a log line, a metric or an exception
message. Sources: ``env`` and ``file`` (local runs); Vault arrives as another source.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from proxy.policy.model import Policy, Reason, SecretBinding, SecretSourceRef

__all__ = ["SecretError", "SecretSource", "SecretStore", "EnvSource", "FileSource", "check_value"]


class SecretError(Exception):
    """A secret could not be had. ``reason`` is secret_unavailable or secret_invalid; the message
    says what is wrong in words safe to log (never the value)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_value(value: str) -> None:
    """A value must be safe in any header slot: visible ASCII only, so no CR/LF can split a header
    and nothing can be re-interpreted downstream."""
    if not value:
        raise SecretError(Reason.SECRET_INVALID, "value is empty")
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise SecretError(
            Reason.SECRET_INVALID, "value holds bytes that are illegal in a header (whitespace, control or non-ASCII)"
        )


class SecretSource(Protocol):
    async def fetch(self, ref: SecretSourceRef) -> str: ...


class EnvSource:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    async def fetch(self, ref: SecretSourceRef) -> str:
        assert ref.env is not None
        if ref.env not in self._environ:
            raise SecretError(Reason.SECRET_UNAVAILABLE, f"environment variable {ref.env} is not set")
        return self._environ[ref.env]


class FileSource:
    async def fetch(self, ref: SecretSourceRef) -> str:
        assert ref.file is not None
        path = ref.file
        try:
            data = await asyncio.to_thread(_read, path)
        except OSError as e:
            raise SecretError(Reason.SECRET_UNAVAILABLE, f"cannot read {path}: {e.strerror}") from None
        # One trailing newline is how editors save files; anything else is part of the value.
        return data[:-1] if data.endswith("\n") else data


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


@dataclass(frozen=True, slots=True)
class _Entry:
    value: str | None
    error: SecretError | None


class SecretStore:
    """Fetched values by secret name. Lookups are synchronous and never touch the network: the swap
    on the request path reads only memory (no per-request source round trip)."""

    def __init__(self, sources: Mapping[str, SecretSource]) -> None:
        self._sources = dict(sources)
        self._entries: dict[str, _Entry] = {}

    async def load(self, policy: Policy) -> dict[str, SecretError]:
        """Fetch every secret of ``policy``; returns the ones that failed, by name."""
        results = await asyncio.gather(*(self._fetch(s) for s in policy.secrets))
        entries = {s.name: e for s, e in zip(policy.secrets, results, strict=True)}
        self._entries = entries
        return {name: e.error for name, e in entries.items() if e.error is not None}

    async def _fetch(self, secret: SecretBinding) -> _Entry:
        source = self._sources.get(secret.source.kind)
        if source is None:
            return _Entry(
                None,
                SecretError(Reason.SECRET_UNAVAILABLE, f"no {secret.source.kind} source is configured for this proxy"),
            )
        try:
            value = await source.fetch(secret.source)
            check_value(value)
        except SecretError as e:
            return _Entry(None, e)
        return _Entry(value, None)

    def get(self, name: str) -> str:
        entry = self._entries.get(name)
        if entry is None:
            raise SecretError(Reason.SECRET_UNAVAILABLE, "secret has not been fetched")
        if entry.error is not None:
            raise entry.error
        assert entry.value is not None
        return entry.value

    def known_values(self) -> dict[str, str]:
        return {n: e.value for n, e in self._entries.items() if e.value is not None}
