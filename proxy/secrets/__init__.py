"""Secret sources behind one async interface, and the in-memory store the swap reads from.

Values live in this process's memory only: never in a file, a log line, a metric or an exception
message. Sources: ``env`` and ``file`` (local runs); Vault arrives as another source.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from proxy.core.secret import (
    DEFAULT_MAX_SECRET_BYTES,
    IN_THE_POLICY,
    SecretError,
    check_value,
    in_texts_in_steps,
    label_texts,
    read_in_placeholders_in_steps,
    reads_as_placeholder,
    slot_formats,
)
from proxy.infile import read_regular
from proxy.policy.model import Policy, Reason, SecretBinding, SecretSourceRef
from proxy.steps import finish

__all__ = [
    "EnvSource",
    "FileSource",
    "Read",
    "SecretError",
    "SecretSource",
    "SecretStore",
    "Staged",
    "check_value",
    "read_regular_file",
]


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
            data = await asyncio.to_thread(read_regular_file, path)
        except OSError as e:
            raise SecretError(Reason.SECRET_UNAVAILABLE, f"cannot read {path}: {e.strerror}") from None
        # One trailing newline is how editors save files; anything else is part of the value.
        return data[:-1] if data.endswith("\n") else data


FILE_READ_MAX = 1 << 20  # bytes of a secret file read at the most (a value is far shorter: see check_value)


def read_regular_file(path: str) -> str:
    """A regular file's first FILE_READ_MAX + 1 bytes: never a FIFO or a device, which could block
    the read for good or never end (red team 29)."""
    return read_regular(path, FILE_READ_MAX).decode("utf-8", "surrogateescape")


_Answer = tuple[str | None, SecretError | None, float]  # (value, None, when) or (None, why not, when)
# An answer and ``begun``, which numbers the reads of a store in the order they began (see
# SecretStore.stage).
Read = tuple[str | None, SecretError | None, float, int]


@dataclass(frozen=True, slots=True)
class Staged:
    """A fetched, not yet served, set of values."""

    entries: dict[str, _Entry]
    failed: dict[str, SecretError]


@dataclass(frozen=True, slots=True)
class _Entry:
    value: str | None
    error: SecretError | None
    fetched_at: float | None = None  # monotonic time of the last successful fetch
    previous: str | None = None  # the value before the last rotation: still scrubbed from responses
    source: SecretSourceRef | None = None  # where the value was read (or failed to be)
    # The read (SecretStore.read's number) whose answer this is, or the last one's before a
    # transient failure (no answer about the value); None: none from this source.
    begun: int | None = None


class SecretStore:
    """Fetched values by secret name, in memory only. Lookups are synchronous and never touch the
    network: the swap reads memory, and ``refresh`` (run in the background) is the only caller of
    the sources, so one fetch per secret serves every waiting request (no per-request round trip,
    no thundering herd, F08).

    When a refresh cannot reach the source, the last good value keeps serving, never more than
    ``max_stale`` seconds after it was fetched (checked on every lookup, not only when a refresh
    runs: nor if the refresh itself were stuck), then the secret fails closed. An answer that the
    secret is gone, forbidden or invalid fails closed at once."""

    def __init__(
        self,
        sources: Mapping[str, SecretSource],
        max_stale: float = 300.0,
        max_secret_bytes: int = DEFAULT_MAX_SECRET_BYTES,
    ) -> None:
        self._sources = dict(sources)
        self.max_secret_bytes = max_secret_bytes
        self._entries: dict[str, _Entry] = {}
        self.max_stale = max_stale
        self.generation = 0  # bumped when the values held change
        self._reads = itertools.count(1)  # numbers the reads as they begin
        self._across_known: tuple[object, dict[str, str]] | None = None  # (values, slots; _across's)

    async def fetch(self, policy: Policy) -> Staged:
        """Fetch every secret of ``policy`` and stage them (:meth:`read`, then :meth:`stage`)."""
        return self.stage(policy, await self.read(policy))

    async def read(self, policy: Policy) -> list[Read]:
        """Read every secret of ``policy`` from its source (start, reload, refresh), in order."""
        placeholders = tuple(s.placeholder for s in policy.secrets)
        begun = next(self._reads)
        results = await asyncio.gather(*(self._fetch(s, placeholders) for s in policy.secrets))
        for name, why in (await self._across(policy, results)).items():
            i = next(i for i, s in enumerate(policy.secrets) if s.name == name)
            results[i] = (None, SecretError(Reason.SECRET_INVALID, why), results[i][2])
        return [(value, error, at, begun) for value, error, at in results]

    async def _across(self, policy: Policy, results: list[_Answer]) -> dict[str, str]:
        """Secret -> why its value, fine alone, cannot be used beside the policy's placeholders
        (:func:`read_in_placeholders_in_steps`) or at all, being in the policy's own text
        (:func:`in_texts_in_steps`), with requests running between their steps; asked again only
        when the values or the policy's texts change (one finder for all the values: like the
        runtime's, a while for many long ones). (What one value holds of another is asked of what
        is served, not of what a read gave: Runtime._serve.)"""
        values = {s.name: r[0] for s, r in zip(policy.secrets, results, strict=True) if r[0] is not None}
        placeholders = tuple(s.placeholder for s in policy.secrets)
        formats = slot_formats(policy.secrets)
        texts = tuple(text for _, text in label_texts(policy))
        key = (tuple(values.items()), tuple(formats.items()), texts)
        if self._across_known is None or self._across_known[0] != key:
            read = await finish(read_in_placeholders_in_steps(values.items(), placeholders, formats))
            why = {name: reads_as_placeholder(values[name]) for name in read}
            for name in await finish(in_texts_in_steps(values.items(), texts)):
                why.setdefault(name, IN_THE_POLICY)
            self._across_known = (key, why)
        return self._across_known[1]

    def stage(self, policy: Policy, results: list[Read]) -> Staged:
        """What :meth:`read` gave, against the values held now (the last good one of a source that
        failed, the one a rotation replaced), without using them yet: :meth:`publish` makes them
        the ones served.

        Reads hold no lock, and one begun first may end last (a reload's, behind a slow Vault,
        with a refresh begun after it): where a read of the same source begun after this one gave
        the entry held, that entry stays (what this read gave is older: a key rotated away, a
        secret since revoked), secret by secret (:func:`_overtaken`). The outcome of overlapping
        reads does not depend on the order they end in."""
        now = time.monotonic()
        entries: dict[str, _Entry] = {}
        failed: dict[str, SecretError] = {}
        for secret, (value, error, at, begun) in zip(policy.secrets, results, strict=True):
            old = self._entries.get(secret.name)
            if error is not None:
                failed[secret.name] = error  # (what this read gave, whether it is used or not)
            if old is not None and _overtaken(old, secret.source, begun):
                entries[secret.name] = old
                continue
            if error is None:
                assert value is not None
                rotated = old is not None and old.value is not None and old.value != value
                # Stamped when its own read ended, not when the last of the policy's did (red team
                # 36: a value read at once, stamped after 8 stalled reads, served 3.5 s too long).
                entries[secret.name] = _Entry(
                    value,
                    None,
                    at,
                    old.value if rotated and old else (old.previous if old else None),
                    secret.source,
                    begun,
                )
                continue
            if (
                error.transient
                and old is not None
                and old.value is not None
                and old.fetched_at is not None
                and now - old.fetched_at <= self.max_stale
                # A value read from another source (a reload moved the secret) is no last good
                # value of this one: only scrubbed from here on.
                and old.source == secret.source
            ):
                entries[secret.name] = old  # stale but within the window: keeps serving
            else:
                # A transient failure is no answer about the value (a read begun before it may still
                # give one): the entry keeps the number of the last answer from this source.
                answered: int | None = begun
                if error.transient:
                    answered = old.begun if old is not None and old.source == secret.source else None
                entries[secret.name] = _Entry(
                    None,
                    error,
                    None,
                    old.value if old and old.value else (old.previous if old else None),
                    secret.source,
                    answered,
                )
        return Staged(entries, failed)

    def stage_held(self, policy: Policy) -> Staged:
        """``policy``'s secrets with the values held now, read from nowhere: what a reload serves
        at once, before its reads (which a slow source may take long over) are done. A secret held
        from the same source keeps its entry; any other is not available until read."""
        entries: dict[str, _Entry] = {}
        for secret in policy.secrets:
            old = self._entries.get(secret.name)
            if old is not None and old.source == secret.source:
                entries[secret.name] = old
                continue
            error = SecretError(Reason.SECRET_UNAVAILABLE, "not read yet since the policy was reloaded", transient=True)
            entries[secret.name] = _Entry(
                None, error, None, old.value if old and old.value else (old.previous if old else None), secret.source
            )
        return Staged(entries, {})

    def invalidated(self, staged: Staged, why: Mapping[str, str]) -> Staged:
        """``staged`` with each secret of ``why`` failing closed as ``secret_invalid`` for that
        reason (what its value carries of another's: Runtime._apart). The value refused stays held
        as the one replaced (:meth:`values_of`): a real key all the same, refused in any request
        and scrubbed from answers (red team 61: one never served was guarded by nothing, and the
        agent could send its encodings anywhere), and asked again beside the others at the next
        load, whatever the read of its source then gives. (The value it replaced, if served, is
        the runtime's to retire.)"""
        if not why:
            return staged
        entries, failed = dict(staged.entries), dict(staged.failed)
        for name, reason in why.items():
            entry = entries[name]
            assert entry.value is not None  # (only a value served is asked)
            error = SecretError(Reason.SECRET_INVALID, reason)
            entries[name] = _Entry(None, error, None, entry.value, entry.source, entry.begun)
            failed[name] = error
        return Staged(entries, failed)

    def replaced_by(self, staged: Staged) -> list[str]:
        """The secrets whose value served now ``staged`` serves another value for."""
        return [
            name
            for name, entry in staged.entries.items()
            if entry.value is not None
            and (old := self._entries.get(name)) is not None
            and old.value is not None
            and old.value != entry.value
        ]

    def served(self) -> list[tuple[str, str]]:
        """(secret, value) of each value served now (fresh or not)."""
        return [(n, e.value) for n, e in self._entries.items() if e.value is not None]

    def publish(self, staged: Staged) -> None:
        before = self.scrub_values()
        self._entries = staged.entries
        if self.scrub_values() != before:
            self.generation += 1  # the values changed: finders are rebuilt (not on every refresh)

    async def load(self, policy: Policy) -> dict[str, SecretError]:
        """Fetch and publish at once (tests and tools; the sidecar publishes with its finders)."""
        staged = await self.fetch(policy)
        self.publish(staged)
        return staged.failed

    @staticmethod
    def values_of(staged: Staged) -> list[tuple[str, str]]:
        """(secret, value) pairs a staged load would serve or still scrub."""
        return _scrub_values(staged.entries)

    async def _fetch(self, secret: SecretBinding, placeholders: tuple[str, ...]) -> _Answer:
        """(value, None, when it was read) or (None, why not, when that was known)."""
        source = self._sources.get(secret.source.kind)
        if source is None:
            hint = " (set VAULT_ADDR and the vault auth flags)" if secret.source.kind == "vault" else ""
            return (
                None,
                SecretError(
                    Reason.SECRET_UNAVAILABLE, f"no {secret.source.kind} source is configured for this proxy{hint}"
                ),
                time.monotonic(),
            )
        try:
            value = await source.fetch(secret.source)
            check_value(value, placeholders, self.max_secret_bytes)
        except SecretError as e:
            return None, e, time.monotonic()
        except Exception as e:
            return (
                None,
                SecretError(
                    Reason.SECRET_UNAVAILABLE,
                    f"the {secret.source.kind} source failed ({type(e).__name__})",
                    transient=True,
                ),
                time.monotonic(),
            )
        at = time.monotonic()
        self._confirm(secret, value, at)
        return value, None, at

    def _confirm(self, secret: SecretBinding, value: str, at: float) -> None:
        """The value held for ``secret`` read again, unchanged, from the same source: fresh as of
        ``at`` at once, not when the policy's last read ends (red team 57: one secret's read stalled
        to its timeout held another's answer back until that secret's value was older than
        --secret-max-stale: it failed closed every cycle, its source healthy). The values and their
        finders do not change; a changed value waits for the whole read, as before."""
        held = self._entries.get(secret.name)
        if held is None or held.value != value or held.source != secret.source or held.fetched_at is None:
            return
        if at > held.fetched_at:
            self._entries = {**self._entries, secret.name: replace(held, fetched_at=at)}

    def get(self, name: str) -> str:
        entry = self._entries.get(name)
        if entry is None:
            raise SecretError(Reason.SECRET_UNAVAILABLE, "secret has not been fetched")
        if entry.value is None:
            assert entry.error is not None
            raise entry.error
        if entry.fetched_at is not None and time.monotonic() - entry.fetched_at > self.max_stale:
            raise SecretError(
                Reason.SECRET_UNAVAILABLE,
                f"the value was last fetched more than {self.max_stale:g} s ago (--secret-max-stale)",
                transient=True,
            )
        return entry.value

    def serving(self, name: str) -> bool:
        entry = self._entries.get(name)
        return (
            entry is not None
            and entry.value is not None
            and (entry.fetched_at is None or time.monotonic() - entry.fetched_at <= self.max_stale)
        )

    def age(self, name: str) -> float | None:
        """Seconds since the value now served was fetched; None when nothing is served."""
        entry = self._entries.get(name)
        if entry is None or entry.value is None or entry.fetched_at is None:
            return None
        return time.monotonic() - entry.fetched_at

    def scrub_values(self) -> list[tuple[str, str]]:
        """(secret, value) pairs to scrub from responses: current values and the ones they replaced."""
        return _scrub_values(self._entries)


def _overtaken(held: _Entry, source: SecretSourceRef, begun: int) -> bool:
    """Whether what read number ``begun`` of ``source`` gave is older than ``held``: the answer of
    a read of the same source begun after it. (An entry held from another source is no answer
    about this one: the policy staged moved the secret, and what this read gave replaces it;
    Runtime.load stages a read only for the policy it still serves.)"""
    return held.source == source and held.begun is not None and held.begun > begun


def _scrub_values(entries: Mapping[str, _Entry]) -> list[tuple[str, str]]:
    out = [(n, e.value) for n, e in entries.items() if e.value is not None]
    out += [(n, e.previous) for n, e in entries.items() if e.previous is not None]
    return out
