"""State the data path shares: the current policy (swapped atomically on reload), the secret
store and the finders built from its values, limits, metrics and audit. One per sidecar process."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.audit import AuditLog
from proxy.core.finder import Finder, Pattern
from proxy.core.flow import FlowInfo
from proxy.core.scrub import fields_clean, views
from proxy.core.secret import (
    holding_others_in_steps,
    in_texts_in_steps,
    label_texts,
    read_in_placeholders_in_steps,
    slot_formats,
)
from proxy.core.swap import real_value_in
from proxy.core.values import build_finder, outbound_runs_of
from proxy.metrics import Metrics
from proxy.netcheck import AddressPolicy
from proxy.policy.errors import PolicyError, PolicyInvalid
from proxy.policy.model import Policy, SecretBinding
from proxy.record import Recorder
from proxy.secrets import SecretError, SecretStore, Staged
from proxy.steps import finish

log = logging.getLogger("sandgate.proxy")

RETIRED_PER_HOST = 64  # values a host was given and is no longer bound to, still scrubbed (see Runtime)


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 64 * 1024  # request head: request line and header fields
    max_request_body: int = 32 * 1024 * 1024
    max_connections: int = 512
    header_timeout: float = 30.0  # seconds from a request head's first byte to its end (and TLS handshakes)
    idle_timeout: float = 300.0  # seconds of silence before a connection is closed
    connect_timeout: float = 10.0  # upstream TCP + TLS
    max_decoded_body: int = 1 << 30  # a compressed response that must be scrubbed decodes to at most this


@dataclass(slots=True)
class Runtime:
    policy: Policy
    store: SecretStore
    metrics: Metrics
    audit: AuditLog
    addresses: AddressPolicy
    limits: Limits
    transparent: bool
    relay: tuple[str, int] | None = None  # see proxy.relay: names resolve there and every dial goes through it
    # Every value held, and the runs of a long one (outbound_runs_of): none may leave.
    outbound: Finder = field(default_factory=lambda: Finder([]))
    _bound: dict[tuple[str, int], tuple[Finder, frozenset[str]]] = field(default_factory=dict)
    _foreign: dict[tuple[str, int, bool], Finder] = field(default_factory=dict)
    _cached_for: object = None  # the policy the two caches above were built for
    _key: object = None
    _values: list[tuple[str, str, str]] = field(default_factory=list)  # (secret, real value, placeholder)
    # The patterns_of made for each of _values (build_finder's and Finder.for_values' known): a
    # rotation remakes one value's; a host's first answer does not remake any.
    _made: dict[tuple[str, str, str], list[Pattern]] = field(default_factory=dict)
    # Values a host was bound to and is no longer (a reload unbound it, renamed or removed the
    # secret, rotated it twice): the host may still echo what it was given, so its answers are
    # scrubbed of them, and none may leave (red team 29). The last RETIRED_PER_HOST per host.
    _retired: dict[str, dict[tuple[str, str, str], None]] = field(default_factory=dict)
    _current: list[tuple[str, str, str]] = field(default_factory=list)  # _values without the retired
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Bumped by every load that serves a policy or values: an answer under way compares it with the
    # one it chose its scrubbing by (see bound_values).
    epoch: int = 0
    # Called as a policy read from a file (with its SHA-256) is served: the metrics' policy_info.
    on_policy: Callable[[Policy, str], None] | None = None
    _held: list[Finder] | None = None  # finders whose prefilters wait for release_prefilters()
    _apart_known: tuple[object, dict[str, str]] | None = None  # (what _apart asked, its answer)
    # Count and audit one decision, exactly once (proxy.record.Recorder's record, compiled: the
    # data path calls it for every request, with no Python frame in between).
    record: Callable[[FlowInfo, str | None, str | None], None] = field(init=False)
    _recorder: Recorder = field(init=False)

    def __post_init__(self) -> None:
        m = self.metrics
        counts = (m.egress_requests.counts, m.secret_blocked.counts, m.secret_swaps.counts)
        self._recorder = Recorder(*counts, self.audit, self.redact_all, self.outbound, self.policy.name)
        self.record = self._recorder.record

    async def load(self, policy: Policy | None = None, sha256: str | None = None) -> dict[str, SecretError] | None:
        """Read ``policy``'s secrets (None: a refresh of the policy served) and serve them with it.
        Returns the failures by name.

        The values, the finders for them (built in small steps, so requests keep flowing) and the
        policy are served together: no request is ever swapped with a value its response is not
        scrubbed of. A new policy is served at once with the values held now (the secrets it keeps
        from the same source; any other fails closed until read), so that what it takes away
        applies whatever Vault is doing (red team 37: a restricting reload waited 23 s behind a
        slow Vault); then its reads. Reads hold no lock: what they give is served only if their
        policy still is, so a refresh that read before a reload never puts the old policy back
        (red team 30), nor does a reload that a later one overtook: None then; and a read that ends
        after one begun later serves none of the secrets that one answered (a reload's read behind
        a slow Vault, a refresh's begun after it: see SecretStore.stage)."""
        if policy is not None and policy is not self.policy:
            await self.serve_held(policy, sha256)
        target = self.policy if policy is None else policy
        results = await self.store.read(target)
        async with self._lock:
            if target is not self.policy:
                return None  # (another policy is served now: its own load reads for it)
            staged = await self._serve(target, self.store.stage(target, results), sha256)
            return staged.failed

    async def serve_held(self, policy: Policy, sha256: str | None = None) -> dict[str, SecretError]:
        """Serve ``policy`` now with the values held for the secrets it keeps from the same source
        (any other fails closed until :meth:`load` has read it); returns the values it fails closed
        (:meth:`_apart`). Raises :class:`PolicyInvalid`, and serves nothing, when a placeholder it
        brings reads as a value held (:meth:`_reading_held`)."""
        async with self._lock:
            errors = await self._reading_held(policy)
            if errors:
                raise PolicyInvalid(errors)
            return (await self._serve(policy, self.store.stage_held(policy), sha256)).failed

    async def _reading_held(self, policy: Policy) -> list[PolicyError]:
        """Why ``policy`` cannot be served beside the values held now (every one stays in the
        outbound guard, a replaced one too, so that answers echoing it are still scrubbed):
        - a text of its own that metrics labels and audit fields carry as it is holds one
          (:meth:`_labels_holding`);
        - a placeholder it brings is part of a value served for a secret it keeps: that secret
          would fail closed at its next read, the reload counted a success (red team 60);
        - a placeholder it brings, alone or in its slot templates, reads as one as clients send it
          (:meth:`_placeholders_reading`): every request carrying it would be refused as
          ``secret_value_outbound`` (red team 58).
        (The placeholders served, in their slots, were asked when their values were read.)"""
        if not self._values:
            return []
        held = {str(i): v for i, (_, v, _) in enumerate(self._values)}
        errors = await self._labels_holding(policy, held)
        served = slot_formats(self.policy.secrets).items()
        formats = slot_formats(policy.secrets)
        new = [(i, s) for i, s in enumerate(policy.secrets) if (s.placeholder, formats[s.placeholder]) not in served]
        kept = {s.name for s in policy.secrets}
        errors += [
            PolicyError(
                f"spec.secrets[{i}].placeholder",
                f"is part of the value served for secret {name!r}: that secret would fail closed (secret_invalid, its"
                " value holding a placeholder); choose another placeholder",
            )
            for i, secret in new
            for name, value in self.store.served()
            if name in kept and secret.placeholder in value
        ]
        return errors + await self._placeholders_reading(new, formats, held) if new else errors

    def _whose(self, keys: set[str]) -> str:
        """The secrets of the values held at ``keys`` (indexes into _values, as strings)."""
        return ", ".join(sorted({repr(self._values[int(k)][0]) for k in keys}))

    async def _labels_holding(self, policy: Policy, held: dict[str, str]) -> list[PolicyError]:
        """Errors for the texts of ``policy`` that metrics labels and audit fields carry as they are
        (:func:`~proxy.core.secret.label_texts`) and that hold a value held (red team 60)."""
        texts = label_texts(policy)
        if texts == label_texts(self.policy):
            return []
        found = await finish(in_texts_in_steps(held.items(), (t for _, t in texts)))
        if not found:
            return []
        errors = []
        for where, text in texts:
            one = await finish(in_texts_in_steps(((k, held[k]) for k in found), [text]))
            if one:
                errors.append(PolicyError(where, f"holds a real value the proxy holds (of secret {self._whose(one)}),"
                                          " which metrics labels and audit lines would carry as they are"))  # fmt: skip
        # (each text is asked alone as among the others; were none named, still refused)
        return errors or [PolicyError("metadata", "the policy's texts hold a real value the proxy holds")]

    async def _placeholders_reading(
        self, new: list[tuple[int, SecretBinding]], formats: dict[str, tuple[str, ...]], held: dict[str, str]
    ) -> list[PolicyError]:
        """Errors for the placeholders ``new`` (by index in the policy) that read as a value held,
        alone or in their slot ``formats``."""
        found = await finish(read_in_placeholders_in_steps(held.items(), (s.placeholder for _, s in new), formats))
        if not found:
            return []
        errors = []
        for i, secret in new:  # (rare: an operator's mistake; one placeholder at a time, to name it)
            one = await finish(read_in_placeholders_in_steps(((k, held[k]) for k in found), [secret.placeholder]))
            where, what, fix = f"spec.secrets[{i}].placeholder", "reads as", "placeholder"
            if not one:
                one = await finish(
                    read_in_placeholders_in_steps(((k, held[k]) for k in found), [secret.placeholder], formats)
                )
                where, what, fix = f"spec.secrets[{i}].headers", "the placeholder in one of these templates reads as", "template"  # fmt: skip
            if one:
                errors.append(PolicyError(
                    where,
                    f"{what} a real value the proxy holds (of secret {self._whose(one)}: served, or replaced and still"
                    " scrubbed from answers): every request carrying the placeholder would be refused as"
                    f" secret_value_outbound; choose another {fix}",
                ))  # fmt: skip
        # (each is found alone as it was among the others; were none named, still refused)
        return errors or [PolicyError("spec.secrets", "a placeholder reads as a real value the proxy holds")]

    async def _serve(self, policy: Policy, staged: Staged, sha256: str | None) -> Staged:
        """Serve ``policy`` with ``staged``'s values and finders for them (the caller holds the
        lock); returns what was served (:meth:`_apart` may have failed a value closed)."""
        staged = await self._apart(policy, staged)
        placeholders = {s.name: s.placeholder for s in policy.secrets}
        values = [(n, v, placeholders[n]) for n, v in self.store.values_of(staged) if n in placeholders]
        current = list(values)
        dropped: list[tuple[str, str]] = []
        retired = self._retire(policy, current, dropped)
        values += [v for v in dict.fromkeys(v for by_host in retired.values() for v in by_host) if v not in values]
        key = (tuple(values), id(policy))
        finder = self.outbound
        if key != self._key:
            made = {v: self._made[v] for v in values if v in self._made}
            finder = await finish(build_finder(values, outbound_runs_of, prefilter=False, known=made))
        # From here to the end, nothing awaits: one step for every request.
        replaced = self.store.replaced_by(staged)
        self.store.publish(staged)
        for name in replaced:
            log.info(json.dumps({"event": "secret_rotated", "secret": name, "detail": "a new value is served; the one it"
                                 " replaced stays guarded (refused in any request, counted as secret_value_outbound,"
                                 " and scrubbed from answers) until the proxy restarts, or until"
                                 f" {RETIRED_PER_HOST} newer values have retired on its host (logged as"
                                 " secret_unguarded)"}))  # fmt: skip
        for host, name in dict.fromkeys(dropped):
            log.warning(json.dumps({"event": "secret_unguarded", "secret": name, "host": host, "detail": "a value this"
                                    f" secret had is no longer one of the last {RETIRED_PER_HOST} values retired on this"
                                    " host (replaced by rotations, or unbound by reloads): no longer scrubbed from its"
                                    " answers, nor refused in requests unless another host still guards it"}))  # fmt: skip
        self.policy = policy
        self._recorder.policy = policy.name
        if sha256 is not None:
            self.audit.policy_sha256 = sha256
        self._retired, self._current = retired, current
        if key != self._key:
            self.outbound, self._key, self._cached_for = finder, key, None
            self._recorder.held = finder
            self._values, self._made = values, made
            self._prefilter_later(finder)
        self.epoch += 1
        if sha256 is not None and self.on_policy is not None:
            self.on_policy(policy, sha256)
        return staged

    async def _apart(self, policy: Policy, staged: Staged) -> Staged:
        """``staged`` with ``secret_invalid`` for each value that holds another secret's value, or
        is held in one, and would go where that one is not bound
        (:func:`~proxy.core.secret.holding_others_in_steps`). Asked of what would be served, not of
        what a read gave: a reload serves the values held under its own bindings at once, and a
        secret whose read failed keeps serving its last good value (red team 60: a reload moved a
        value ``tok-<openai's key>-x`` to another host while Vault was down, and it went there).
        Values held for scrubbing count too: one a rotation replaced may go where its secret is
        bound; one a reload unbound (retired), nowhere."""
        hosts = {s.name: frozenset(s.hosts) for s in policy.secrets}
        served = {n: e.value for n, e in staged.entries.items() if e.value is not None}
        kept = [(n, e.previous, hosts.get(n, frozenset())) for n, e in staged.entries.items() if e.previous is not None]
        known = {*served.items(), *((n, v) for n, v, _ in kept)}
        placeholders = {s.name: s.placeholder for s in policy.secrets}
        now = [(n, v, placeholders[n]) for n, v in self.store.values_of(staged) if n in placeholders]
        retired = dict.fromkeys(v for by_host in self._retire(policy, now).values() for v in by_host)
        kept += [(n, v, frozenset()) for n, v, _ in retired if (n, v) not in known]
        key = (tuple(served.items()), tuple(hosts.items()), tuple(kept))
        if self._apart_known is None or self._apart_known[0] != key:
            self._apart_known = (key, await finish(holding_others_in_steps(served, hosts, kept)))
        why = {
            name: f"value holds a value of secret {other!r} (its current one, or one replaced or unbound and still guarded), or is"
            " held in it, and that secret is not bound to every host this one is: swapped in, it would carry that"
            " key there"
            for name, other in self._apart_known[1].items()
        }
        return self.store.invalidated(staged, why)

    def _bindings(self, policy: Policy, values: list[tuple[str, str, str]]) -> dict[str, set[tuple[str, str, str]]]:
        """Host -> the values bound to it (by a secret's ``hosts``)."""
        by_name: dict[str, list[tuple[str, str, str]]] = {}
        for v in values:
            by_name.setdefault(v[0], []).append(v)
        out: dict[str, set[tuple[str, str, str]]] = {}
        for secret in policy.secrets:
            for b in secret.hosts:
                out.setdefault(b.host, set()).update(by_name.get(secret.name, ()))
        return out

    def _retire(
        self, policy: Policy, values: list[tuple[str, str, str]], dropped: list[tuple[str, str]] | None = None
    ) -> dict[str, dict[tuple[str, str, str], None]]:
        """The retired values once ``policy`` with ``values`` is served: those retired before, and
        what was served until now bound to a host that ``policy`` no longer binds it to (a value
        bound again is current, not retired); the last RETIRED_PER_HOST per host (and all one load
        retires). ``dropped`` gets (host, secret) for each value that cap lets go."""
        retired = {host: dict(held) for host, held in self._retired.items()}
        now = self._bindings(policy, values)
        for host, held in self._bindings(self.policy, self._current).items():
            batch = sorted(held - now.get(host, set()))
            if not batch:
                continue
            kept = retired.setdefault(host, {})
            kept.update(dict.fromkeys(v for v in batch if v not in kept))  # (in the order they retired)
            while len(kept) > max(RETIRED_PER_HOST, len(batch)):  # (all of one reload's, at least)
                oldest = next(iter(kept))
                del kept[oldest]
                if dropped is not None:
                    dropped.append((host, oldest[0]))
        for host, kept in retired.items():
            for v in now.get(host, ()):
                kept.pop(v, None)
        return {host: kept for host, kept in retired.items() if kept}

    def _caches(self) -> None:
        if self._cached_for is not self.policy:
            self._bound, self._foreign, self._cached_for = {}, {}, self.policy

    def bound_finder(self, host: str, port: int) -> Finder:
        """The values of the secrets bound to ``host`` on any port: what a response from host:port is
        scrubbed of. (Any port: a host keeps what it was sent on its bound port, and its other
        ports -- its plain-HTTP one, an admin port -- may serve it back: red team 3.)"""
        return self.bound_scrubbing(host, port)[0]

    def bound_values(self, host: str, port: int) -> frozenset[str]:
        """The values :meth:`bound_finder` finds. An answer under way when a load served new ones
        (a rotation; a reload that bound a secret to its host) may carry them: the upstream can be
        given a value on another request meanwhile, and hand it back on this one (red team 37)."""
        return self.bound_scrubbing(host, port)[1]

    def bound_scrubbing(self, host: str, port: int) -> tuple[Finder, frozenset[str]]:
        """(:meth:`bound_finder`, :meth:`bound_values`), from one cache entry."""
        self._caches()
        bound = self._bound.get((host, port))
        if bound is None:
            names = {s.name for s in self.policy.secrets if any(b.host == host for b in s.hosts)}
            # From the values, not from self.outbound's patterns: those are one per form, named after
            # the first secret that has it, and a second secret with the same value would lose them.
            retired = self._retired.get(host, {})
            values = [v for v in self._values if v[0] in names or v in retired]
            bound = (
                Finder.for_values(values, runs=True, prefilter=False, known=self._made),
                frozenset(v[1] for v in values),
            )
            self._prefilter_later(bound[0])
            if len(self._bound) < 4096:
                self._bound[(host, port)] = bound
        return bound

    def _prefilter_later(self, finder: Finder) -> None:
        """Compile ``finder``'s prefilter at the event loop's next turn (~11 ms for a policy's 5
        values with their runs): the start's ready line, and the answer whose first request to a
        bound host built the finder, do not wait for it. Until it is there the automaton answers
        alone: the same hits, slower on large bodies. Outside an event loop (tests, tools): at once.
        (Not in a worker thread, though Hyperscan compiles without the GIL: the thread's malloc
        arena kept what the compile had used, ~2 MiB of the sidecar's idle RSS.)"""
        if self._held is not None:
            self._held.append(finder)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            finder.add_prefilter()
            return
        loop.call_soon(self._add_prefilter, finder)

    def hold_prefilters(self) -> None:
        """Compile no prefilter until :meth:`release_prefilters` (the sidecar's start: they wait for
        its ready line)."""
        if self._held is None:
            self._held = []

    def release_prefilters(self) -> None:
        """Compile the prefilters held since :meth:`hold_prefilters`, and from now on each at once."""
        held, self._held = self._held or [], None
        for finder in held:
            self._prefilter_later(finder)

    def _add_prefilter(self, finder: Finder) -> None:
        try:
            finder.add_prefilter()
        except Exception as e:
            # (the finder goes on without it: correct, slower on large bodies; counted, as a bug is)
            self.metrics.internal_errors.labels("data_path").inc()
            log.error(json.dumps({"event": "internal_error", "task": "data_path", "error": type(e).__name__,
                                  "action": "a finder searches without its prefilter (the same hits, slower)"}))  # fmt: skip

    def foreign_finder(self, host: str, port: int, tls: bool) -> Finder:
        """Placeholders of the secrets NOT bound to this destination: in a body headed there, each is
        ``secret_not_bound`` (the exfiltration attempt to count)."""
        self._caches()
        key = (host, port, tls)
        finder = self._foreign.get(key)
        if finder is None:
            finder = Finder(
                Pattern(s.name, s.placeholder.encode(), b"")
                for s in self.policy.secrets
                if not (tls and s.bound_to(host, port))
            )
            if len(self._foreign) < 4096:
                self._foreign[key] = finder
        return finder

    def redact(self, text: str | None) -> str | None:
        """``text`` with every real value held (in each form the outbound guard knows, and a run of
        a long one) replaced by ``[redacted:<secret>]`` (a run's pieces that follow one another: one
        mark); a value found only in an escaped form makes the whole text ``[redacted]``. An agent
        that puts a value in a path or a host name is refused for it, and the record (or log line,
        or answer) of that refusal must not be where it leaks."""
        if not text or not self.outbound:
            return text
        data = text.encode("utf-8", "surrogateescape")
        hits = self.outbound.hits(data)
        # Read upper-cased too (ASCII only: the same offsets): a host name the proxy lower-cased
        # turns base32's form of a value, which it refused, into one a nameserver still decodes
        # (red team 72); so does any other text that holds a name.
        upper = data.upper()
        if upper != data:
            taken = [(h.start, h.end) for h in hits]
            more = [h for h in self.outbound.hits(upper) if all(h.end <= a or h.start >= b for a, b in taken)]
            if more:
                hits = sorted([*hits, *more], key=lambda h: h.start)
        if hits:
            parts: list[bytes] = []
            pos = 0
            for h in hits:
                if h.start < pos:
                    continue  # (overlaps one just redacted)
                if h.start == pos and parts and h.pattern.part:
                    pos = h.end  # (the next piece of the run just redacted)
                    continue
                parts += [data[pos : h.start], b"[redacted:%s]" % h.pattern.secret.encode()]
                pos = h.end
            data = b"".join([*parts, data[pos:]])
        if any(self.outbound.search(v) is not None for v in views(data)):
            return "[redacted]"
        return data.decode("utf-8", "surrogateescape") if hits else text

    def redact_name(self, name: str | None) -> str | None:
        """A host name as a record or a log line may hold it: :meth:`redact`, and the whole name
        ``[redacted]`` if a value is left in it that only a name's readings show (a form cut over
        labels or broken by hyphens: :func:`proxy.core.swap.real_value_in`)."""
        if not name or not self.outbound:
            return name
        name = self.redact(name)
        assert name is not None
        return "[redacted]" if real_value_in(self.outbound, name, (), (name,)) is not None else name

    def redact_all(self, *texts: str | None) -> tuple[str | None, ...]:
        """:meth:`redact` of each text; the usual case (nothing to redact) in one search."""
        present = [t for t in texts if t]
        if not present or not self.outbound:
            return texts
        if fields_clean(
            self.outbound, [t.encode("utf-8", "surrogateescape") for t in present + [t.upper() for t in present]]
        ):
            return texts  # (upper-cased too: see redact)
        return tuple(self.redact(t) for t in texts)


class RedactingFilter(logging.Filter):
    """On the "sandgate" logger: no log line ever carries a real value the proxy holds."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__()
        self.rt = rt

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.rt.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True
