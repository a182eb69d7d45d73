"""``sandgate proxy``: the sidecar process.

Start-up: parse the policy (exit 2 on error) -> fetch its secrets and build the finders -> the CA
(refused if someone else made it) -> metrics -> listeners -> ONE ready line once the CA certificate
is published. Then background work under a supervisor: the policy watcher, the secret refresher,
Vault token renewal, leaf minting for the policy's hosts. A task that keeps failing ends the
process (exit 70) so the kubelet restarts it, rather than serving on a stale policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.audit import AuditLog
from proxy.ca import CA_KEY_FILE, CaError, cannot_publish, ensure_ca, publish_ca_cert
from proxy.core.anyof import REFUSED as STORED_PREFILTERS_REFUSED
from proxy.core.anyof import UNAVAILABLE as SCAN_PREFILTER_UNAVAILABLE
from proxy.core.secret import DEFAULT_MAX_SECRET_BYTES, SecretError
from proxy.identity import pod_identity
from proxy.metrics import Metrics, serve_metrics, stop_metrics
from proxy.native import mode as native_mode
from proxy.netcheck import AddressPolicy
from proxy.policy.load import PolicyInvalid, PolicyUnreadable, parse_policy, read_policy_text
from proxy.policy.model import Policy
from proxy.runtime import Limits, RedactingFilter, Runtime
from proxy.secrets import EnvSource, FileSource, SecretSource, SecretStore
from proxy.sink import Sink, SinkError
from proxy.supervise import Supervisor
from proxy.version import version

log = logging.getLogger("sandgate.proxy")

READY_PREFIX = "sandgate proxy ready"
EXIT_TASK_FAILED = 70  # EX_SOFTWARE: a background task could not be kept running
HEARTBEAT = 1.0  # seconds between the event loop's heartbeats (readiness)
HEARTBEAT_LATE = 5.0  # a loop whose last heartbeat is older than this is stuck: not ready
METRICS_MAX_CONNECTIONS = 16  # connections to the metrics port at a time (one scrape is one)
METRICS_MAX_TIMEOUT = 10.0  # a metrics connection's time for its request head, and for its answer
EXIT_AUDIT_GRACE = 1.0  # seconds the audit stream is given at exit to take the records still held


def default_confdir() -> Path:
    """Per user, private: ``$XDG_RUNTIME_DIR/sandgate-proxy``, else ``<tmp>/sandgate-proxy-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "sandgate-proxy"
    import tempfile

    return Path(tempfile.gettempdir()) / f"sandgate-proxy-{os.geteuid()}"


@dataclass(frozen=True)
class ProxyConfig:
    policy: Path
    mode: str = "regular"  # "regular" (explicit HTTPS_PROXY) | "transparent" (iptables REDIRECT)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 15090
    confdir: Path | None = None  # None: default_confdir(), created private
    ca_cert_out: Path | None = None  # also publish the CA certificate here (written last: it signals ready)
    upstream_ca: tuple[Path, ...] = ()
    allow_private: tuple[str, ...] = ()
    audit_log: Path | None = None
    limits: Limits = field(default_factory=Limits)
    reload_interval: float = 1.0
    require_secrets: bool = False
    vault: object | None = None  # proxy.secrets.vault.VaultSettings (imported only when configured)
    secret_refresh: float = 60.0  # seconds between background refreshes of every secret
    secret_max_stale: float = 300.0  # how long a last good value serves while the source is unreachable
    max_secret_bytes: int = DEFAULT_MAX_SECRET_BYTES
    upstream_relay: tuple[str, int] | None = None  # resolve and dial through this relay (sandgate run's sandbox)


class ConfigError(Exception):
    pass


def read_policy(path: Path) -> tuple[Policy, str]:
    """The policy and the SHA-256 of its text (what ``sha256sum`` of a UTF-8 file prints), for
    ``sandgate_policy_info`` and every audit record. Raises PolicyInvalid, nothing else."""
    text = read_policy_text(str(path))
    return parse_policy(text, source=str(path)), hashlib.sha256(text.encode()).hexdigest()


async def _load_secrets(rt: Runtime, policy: Policy | None, sha256: str | None = None) -> dict[str, str]:
    """Fetch ``policy``'s secrets (None: a refresh of the policy served when its turn comes) and
    serve them with it (see ``Runtime.load``); metrics and logs."""
    failed = await rt.load(policy, sha256)
    if failed is None:
        return {}  # (read for a policy no longer served: nothing of it is, nor counted)
    now = time.time()
    store = rt.store
    for s in rt.policy.secrets:
        # Read when scraped: the store expires a value on the request path, between refreshes, and
        # a gauge set by the refresh said "available" meanwhile (red team 37).
        rt.metrics.secret_available.labels(s.name).set_function(functools.partial(_available, store, s.name))
        rt.metrics.secret_age.labels(s.name).set_function(functools.partial(_age, store, s.name))
        if s.name not in failed:
            rt.metrics.secret_last_success.labels(s.name).set(now)
    _log_failed(rt, failed)
    return {n: str(e) for n, e in failed.items()}


def _log_failed(rt: Runtime, failed: dict[str, SecretError]) -> None:
    for name, err in failed.items():
        state = "serving the last good value" if rt.store.serving(name) else "failing closed"
        log.error(json.dumps({"event": "secret", "secret": name, "reason": err.reason.value, "detail": str(err),
                              "state": state}))  # fmt: skip


def _available(store: SecretStore, name: str) -> float:
    return 1.0 if store.serving(name) else 0.0


def _age(store: SecretStore, name: str) -> float:
    age = store.age(name)
    return age if age is not None else float("nan")


class PolicyFile:
    """The policy file as the proxy last dealt with it: ``handled`` is the stamp the file had before
    the version served (or refused as invalid) was read. It outlives the watcher task: a watcher the
    supervisor restarts compares against what was served, not against the file as it is when it
    starts again, so a change whose reload failed (or that was written during the back-off) is read
    again, not taken as loaded (red team 45: a revocation was lost that way)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handled = self.stamp()  # taken BEFORE the first read: a change after it is read again
        # The stamp and error of the last read that failed (PolicyUnreadable): said once, not
        # at every look while it goes on failing.
        self.unreadable: tuple[tuple[int, ...] | None, str] | None = None

    def stamp(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        # (ctime: a file rewritten in place with its size and mtime kept -- cp -p, rsync -t -- is a
        # change all the same; no one can set ctime: red team 29)
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


async def _watch_policy(cfg: ProxyConfig, rt: Runtime, watched: PolicyFile) -> None:
    """Re-read the policy file when it changes. An invalid version keeps the old one and is counted;
    a version that could not be read (PolicyUnreadable) keeps it too, is counted and logged once,
    and is read again at every look until it reads; anything else that goes wrong here is the
    supervisor's (counted, restarted; the restarted watcher reads that change again, since
    ``watched.handled`` moves only once a version is dealt with)."""
    reading: asyncio.Task[None] | None = None  # the reads of the last reload served
    while True:
        await asyncio.sleep(cfg.reload_interval)
        now = watched.stamp()  # (before the read: a change during it is seen next time round)
        if now == watched.handled:
            continue
        try:
            policy, sha = await asyncio.to_thread(read_policy, cfg.policy)
            # Served at once with the values held (what it takes away applies now); its reads follow
            # in the background, so that the next change of the file is looked at whatever Vault is
            # doing (red team 38: a reload behind the reads of the one before waited 20 s). A later
            # reload's reads replace an earlier one's: what those would give is not served any more.
            failed = await rt.serve_held(policy, sha)
        except PolicyUnreadable as e:  # nothing known of this version: not handled, read at the next look
            said = (now, str(e))
            if watched.unreadable != said:
                watched.unreadable = said
                rt.metrics.policy_reloads.labels("error").inc()
                log.error(json.dumps({"event": "policy_reload", "result": "error", "errors": [str(x) for x in e.errors],
                                      "action": "the policy served stays; reading the file again at every look"}))  # fmt: skip
            continue
        except PolicyInvalid as e:  # (the file's; or one that cannot be served beside the values held)
            watched.handled, watched.unreadable = now, None
            rt.metrics.policy_reloads.labels("error").inc()
            log.error(json.dumps({"event": "policy_reload", "result": "error", "errors": [str(x) for x in e.errors]}))
            continue
        watched.handled, watched.unreadable = now, None
        rt.metrics.policy_reloads.labels("success").inc()
        log.info(json.dumps({"event": "policy_reload", "result": "success", "policy": policy.name, "sha256": sha}))
        _log_failed(rt, failed)  # (a value held that the new bindings make unusable)
        if reading is not None:
            reading.cancel()
        reading = asyncio.ensure_future(_read_reload(rt, policy, sha))
        _READS.add(reading)  # (the loop holds tasks weakly)
        reading.add_done_callback(_READS.discard)


_READS: set[asyncio.Task[None]] = set()


async def _read_reload(rt: Runtime, policy: Policy, sha: str) -> None:
    """A reload's reads (see _watch_policy): a failure is counted and logged as the watcher's."""
    try:
        await _load_secrets(rt, policy, sha)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        rt.metrics.internal_errors.labels("policy-watcher").inc()
        log.error(json.dumps({"event": "internal_error", "task": "policy-watcher", "error": type(e).__name__,
                              "action": "the reload's reads are dropped; the next refresh reads again"}))  # fmt: skip


async def _refresh_secrets(cfg: ProxyConfig, rt: Runtime) -> None:
    """Re-fetch every secret in the background, so rotations arrive without a restart and requests
    never wait for a source."""
    while True:
        await asyncio.sleep(cfg.secret_refresh)
        await _load_secrets(rt, None)


async def _prewarm(agent_tls: object, hosts: list[str]) -> None:
    """The policy's exact hosts get their leaf certificates right after start, one at a time
    (~1.5 ms each), so the first connection to each does not pay for it. Then what the start freed
    goes back to the system (:func:`_give_back_freed`)."""
    for host in hosts:
        agent_tls.prewarm([host])  # type: ignore[attr-defined]
        await asyncio.sleep(0)
    _give_back_freed()


def _give_back_freed() -> None:
    """``malloc_trim(0)``: glibc keeps the pages of what was freed in its heap (the start's
    temporaries, the finders' prefilters compiled once ready, the leaves minted), ~1.5 MiB of the
    idle sidecar's RSS (bench/README.md). Nothing where the C library has no such call (musl)."""
    import ctypes

    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)


class _LogHandler(logging.Handler):
    """The operational log's lines on stderr through a :class:`Sink`: a stderr nobody reads never
    holds the event loop (red team 45); what it does not take waits (64 KiB), then is lost and
    counted (``internal_errors_total{task="log"}``, once the metrics exist)."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink
        if self.lock is not None:  # (the loop's writes of what waits, against emit() from another thread)
            sink.lock = self.lock
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.sink.write(line.encode("utf-8", "backslashreplace"))  # (handle() holds self.lock)


def _setup_logging() -> _LogHandler | None:
    """Sandgate's own operational log: JSON messages on stderr (audit lines have their own stream).
    Returns the handler it installed (None: one was there, or stderr is not a descriptor)."""
    logger = logging.getLogger("sandgate")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if logger.handlers:
        return None
    handler: logging.Handler
    try:
        handler = _LogHandler(Sink.of_stream(sys.stderr, name="stderr", limit=64 * 1024))
    except SinkError:
        handler = logging.StreamHandler(sys.stderr)  # (stderr closed: lines go nowhere, as before)
        handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return handler if isinstance(handler, _LogHandler) else None


def _harden_process() -> None:
    """Secrets live in this process's memory: no core dumps, and no ptrace or /proc/<pid>/mem
    access for same-UID processes (SECURITY-CASES E08, D15)."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        log.warning(json.dumps({"event": "harden", "detail": "prctl(PR_SET_DUMPABLE, 0) failed"}))


def _report(level: str, fields: dict[str, Any]) -> None:
    """A Sink's news (stalled, failing, flowing again, reopened), as one JSON line on stderr."""
    log.log(logging.getLevelName(level.upper()), json.dumps(fields))


def _open_audit(cfg: ProxyConfig, metrics: Metrics) -> Sink:
    """The audit stream (see proxy.sink): ``--audit-log``, else stdout. Raises SinkError. A record
    lost is counted in internal_errors{task="audit"} (the SandgateInternalErrors alert)."""
    lost = metrics.internal_errors.labels("audit").inc
    if cfg.audit_log is not None:
        try:
            sink = Sink.open_file(str(cfg.audit_log), name="audit", on_lost=lost, report=_report)
        except SinkError as e:
            raise SinkError(f"--audit-log {e}") from None
    else:
        try:
            sink = Sink.of_stream(sys.stdout, name="audit", on_lost=lost, report=_report)
        except SinkError:
            raise SinkError(
                "no audit stream: stdout is closed (audit records go there); give --audit-log FILE"
            ) from None
    sink.on_reopen = metrics.audit_reopens.inc
    sink.on_reopen_failed = metrics.internal_errors.labels("audit").inc
    metrics.audit_pending.set_function(lambda: sink.pending)
    return sink


class _Readiness:
    """``sandgate_proxy_ready``, read when scraped (from the metrics thread): 1 while the proxy
    serves, its event loop turns (a heartbeat every HEARTBEAT seconds, none missing for more than
    HEARTBEAT_LATE) and the audit stream takes writes."""

    def __init__(self, audit: Sink) -> None:
        self.audit = audit
        self.serving = False
        self.beat = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self) -> float:
        ok = self.serving and time.monotonic() - self.beat < HEARTBEAT_LATE and self.audit.healthy
        return 1.0 if ok else 0.0

    def start(self) -> None:
        self.serving = True
        self._beat()

    def _beat(self) -> None:
        self.beat = time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(HEARTBEAT, self._beat)

    def stop(self) -> None:
        self.serving = False
        if self._timer is not None:
            self._timer.cancel()


# Descriptors beside the two of each connection (the agent's, the upstream's): the idle pool (64),
# the connections over the cap that are still answered (64), and the process's own (about 20 at
# start: listeners, the event loop, the metrics server, the audit log) with room for DNS and Vault.
FD_RESERVE = 64 + 64 + 128


def _open_files_for(max_connections: int) -> str | None:
    """Raise the soft open-files limit to the hard one; say why the proxy cannot start if even that
    cannot hold ``max_connections``. Past it the kernel reset connections with no answer, no record
    and no count (red team 45)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # (an infinite hard limit is over fs.nr_open)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    need = 2 * max_connections + FD_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    fits = (soft - FD_RESERVE) // 2
    lower = f", or lower --max-connections to {fits}" if fits > 0 else ""
    return (
        f"--max-connections {max_connections} needs about {need} open files (2 a connection, {FD_RESERVE} "
        f"for the rest); the limit is {soft} (ulimit -n): raise it{lower}"
    )


def _fail(message: str, code: int = 2) -> int:
    print(f"sandgate proxy: {message}", file=sys.stderr)
    return code


def _event_loop_policy() -> None:
    """uvloop where installed: a faster loop for the same asyncio code."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _hold_standard_descriptors() -> None:
    """Give a closed stdin, stdout or stderr (``>&-``: some supervisors start daemons so) /dev/null,
    so that no descriptor the process opens later takes its number: the event loop's own did, and
    uvloop aborts on closing a descriptor below 3 (red team 45)."""
    for fd in range(3):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run(cfg: ProxyConfig) -> int:
    if cfg.audit_log is None and sys.stdout is None:  # (Python found descriptor 1 closed at start)
        return _fail("no audit stream: stdout is closed (audit records go there); give --audit-log FILE")
    _hold_standard_descriptors()
    _event_loop_policy()
    return asyncio.run(serve(cfg))


async def serve(
    cfg: ProxyConfig, sources: dict[str, SecretSource] | None = None, stop: asyncio.Event | None = None
) -> int:
    """Run the sidecar until SIGTERM/SIGINT (or ``stop``, for a caller that owns the signals)."""
    log_handler = _setup_logging()
    _harden_process()
    watched = PolicyFile(cfg.policy)
    try:
        policy, sha = read_policy(cfg.policy)
    except PolicyInvalid as e:
        return _fail(f"invalid policy\n{e}")
    try:
        addresses = AddressPolicy(cfg.allow_private)
    except ValueError as e:
        return _fail(f"--allow-private: {e}")
    unwritable = cannot_publish(cfg.ca_cert_out) if cfg.ca_cert_out is not None else None
    if unwritable:
        return _fail(f"--ca-cert-out {cfg.ca_cert_out}: {unwritable}")
    too_few = _open_files_for(cfg.limits.max_connections)
    if too_few:
        return _fail(too_few)
    metrics = Metrics()
    metrics.initialise(policy, sha, version())
    if sources is None:
        sources = {"env": EnvSource(), "file": FileSource()}
        if cfg.vault is not None:
            from proxy.secrets.vault import VaultConfigError, VaultSource

            try:
                vault = VaultSource(cfg.vault, metrics)  # type: ignore[arg-type]
            except VaultConfigError as e:
                return _fail(f"vault: {e}")
            sources["vault"] = vault
            lapse = cfg.secret_refresh + 2 * vault.settings.timeout
            if cfg.secret_max_stale < lapse:
                # A refresh serves a changed value once its slowest read ends (up to the timeout), so a
                # value replaced while another secret's read stalls was fetched up to refresh + 2 x
                # timeout before its successor is served (red team 58).
                log.warning(json.dumps({"event": "config", "detail": (
                    f"--secret-max-stale ({cfg.secret_max_stale:g} s) is under --secret-refresh + 2 x --vault-timeout "
                    f"({lapse:g} s): a secret rotated in Vault while another secret's read hangs can fail closed "
                    "(secret_unavailable) until the hanging read times out")}))  # fmt: skip
    if log_handler is not None:
        log_handler.sink.on_lost = metrics.internal_errors.labels("log").inc
    try:
        audit_sink = _open_audit(cfg, metrics)
    except SinkError as e:
        return _fail(str(e))
    log_sink = None
    if log_handler is not None and cfg.audit_log is None and _same_stream(sys.stdout, sys.stderr):
        # (2>&1: two writers that do not wait could cut each other's lines once the pipe is full;
        # one Sink keeps every line whole and in order)
        log_sink, log_handler.sink = log_handler.sink, audit_sink
    try:
        return await _serve(cfg, sources, stop, policy, sha, addresses, metrics, audit_sink, watched)
    finally:
        if log_handler is not None and log_sink is not None:
            log_handler.sink = log_sink
        audit_sink.close()


def _same_stream(a: Any, b: Any) -> bool:
    try:
        x, y = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


async def _serve(
    cfg: ProxyConfig,
    sources: dict[str, SecretSource],
    stop: asyncio.Event | None,
    policy: Policy,
    sha: str,
    addresses: AddressPolicy,
    metrics: Metrics,
    audit_sink: Sink,
    watched: PolicyFile,
) -> int:
    store = SecretStore(sources, max_stale=cfg.secret_max_stale, max_secret_bytes=cfg.max_secret_bytes)
    audit = AuditLog(audit_sink, pod_identity(), policy_sha256=sha)
    rt = Runtime(policy, store, metrics, audit, addresses, cfg.limits, cfg.mode == "transparent", cfg.upstream_relay)
    rt.hold_prefilters()  # (compiled once ready: until then the finders answer alone, with the same hits)
    # sandgate_policy_info names the policy served: it changes as a reload is served, not when its
    # file is read (red team 37)
    rt.on_policy = lambda served, digest: metrics.initialise(served, digest, version())
    for handler in logging.getLogger("sandgate").handlers:  # handler filters see child loggers' records too
        handler.addFilter(RedactingFilter(rt))
    failed = await _load_secrets(rt, policy)
    if failed and cfg.require_secrets:
        return _fail(f"secrets unavailable (--require-secrets): {', '.join(sorted(failed))}", 3)

    from proxy.datapath.certs import AgentTls, upstream_context
    from proxy.datapath.conn import at_round_end
    from proxy.datapath.resolve import NameserverResolver, RelayResolver, Resolver
    from proxy.datapath.server import Server
    from proxy.datapath.upstream import Pool

    confdir = cfg.confdir or default_confdir()
    try:
        ensure_ca(confdir, private=cfg.confdir is None)
        agent_tls = AgentTls((confdir / CA_KEY_FILE).read_bytes())
        upstream_tls = upstream_context(cfg.upstream_ca)
    except CaError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename or confdir}: {e.strerror}")

    try:
        # (its own thread: a scrape answers, and says not ready, when the loop is stuck)
        metrics_server = serve_metrics(
            cfg.metrics_host, cfg.metrics_port, metrics.registry, max_connections=METRICS_MAX_CONNECTIONS,
            timeout=min(cfg.limits.header_timeout, METRICS_MAX_TIMEOUT),
        )  # fmt: skip
    except OSError as e:
        return _fail(f"cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: {e.strerror}")

    resolver: Resolver = RelayResolver(cfg.upstream_relay) if cfg.upstream_relay else NameserverResolver()
    pool = Pool(upstream_tls, cfg.upstream_relay, cfg.limits.connect_timeout)
    server = Server(rt, agent_tls, pool, resolver)
    hosts = [cfg.listen_host]
    if cfg.mode == "transparent" and cfg.listen_host == "127.0.0.1":
        # ip6tables REDIRECT delivers to ::1: without this listener IPv6 egress would just fail
        # (closed, so still safe), but dual-stack agents would see errors instead of answers.
        hosts.append("::1")
    try:
        addrs = await server.listen(hosts, cfg.listen_port)
    except (OSError, UnicodeError) as e:  # (UnicodeError: a name the idna codec refuses, a..b; red team 45)
        stop_metrics(metrics_server)
        await server.close()
        return _fail(f"cannot listen on {cfg.listen_host}:{cfg.listen_port}: {getattr(e, 'strerror', None) or e}")

    # An audit record is written before the answer it describes goes out (records of one round of
    # the event loop in one write).
    end_audit_hook = at_round_end(audit.flush_due)
    if SCAN_PREFILTER_UNAVAILABLE is not None:  # the same scrubbing, ~10-30x slower on large bodies
        log.warning(json.dumps({"event": "scan_prefilter_unavailable", "detail": SCAN_PREFILTER_UNAVAILABLE}))
    if STORED_PREFILTERS_REFUSED:  # (a corrupt file, another platform's build: see proxy.core.anyof)
        log.warning(json.dumps({"event": "stored_prefilters_refused", "detail": "; ".join(STORED_PREFILTERS_REFUSED),
                                "action": "compiled at start instead (the same sets: ~30-45 ms more to start)"}))  # fmt: skip
    failures = Supervisor(lambda task: metrics.internal_errors.labels(task).inc())
    failures.start("policy-watcher", lambda: _watch_policy(cfg, rt, watched))
    failures.start("secret-refresher", lambda: _refresh_secrets(cfg, rt))
    failures.start("sweeper", server.sweep_loop)
    vault = sources.get("vault")
    if vault is not None and hasattr(vault, "renew_loop"):
        failures.start("vault-renewal", vault.renew_loop)

    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)

    try:
        ca = publish_ca_cert(confdir, cfg.ca_cert_out)
    except OSError as e:  # (checked at start: the directory changed since)
        await failures.stop()
        await server.close()
        end_audit_hook()
        stop_metrics(metrics_server)
        audit.flush()
        await audit_sink.settle(EXIT_AUDIT_GRACE)
        return _fail(f"cannot publish the CA certificate: {e.filename or confdir}: {e.strerror}")
    ready = _Readiness(audit_sink)
    metrics.ready.set_function(ready)
    ready.start()
    listen = ",".join(f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}" for a in addrs)
    metrics_port = metrics_server.server_address[1]  # (the one bound: --metrics-port 0 picks one, red team 63)
    line = (f"{READY_PREFIX}: listen={listen} mode={cfg.mode} metrics={cfg.metrics_host}:{metrics_port} "
            f"ca={ca} policy={policy.name} datapath={native_mode()}")  # fmt: skip
    if cfg.audit_log is None:  # (stdout is the audit stream: the line goes first, the same way)
        audit_sink.write(f"{line}\n".encode("utf-8", "backslashreplace"), 0)
    else:
        print(line, flush=True)
    # What start-up built lives as long as the process: out of every later collection, so that the
    # collector walks only what requests allocate (a full collection walked ~50,000 objects).
    gc.freeze()
    rt.release_prefilters()
    mint = asyncio.ensure_future(_prewarm(agent_tls, sorted({r.host for r in policy.allow if not r.wildcard})))

    fatal = asyncio.ensure_future(failures.fatal())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([fatal, stopped], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    ready.stop()
    if fatal.done():
        log.error(
            json.dumps({"event": "exit", "detail": f"background task {fatal.result()} could not be kept running"})
        )
        code = EXIT_TASK_FAILED
    for t in (fatal, stopped):
        t.cancel()
    await failures.stop()
    await server.close()
    end_audit_hook()
    mint.cancel()
    stop_metrics(metrics_server)
    audit.flush()
    await audit_sink.settle(EXIT_AUDIT_GRACE)  # (what is still held then is lost, and counted, at close)
    return code
