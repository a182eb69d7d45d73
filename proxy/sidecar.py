"""``sandgate proxy``: mitmproxy embedded with a lean addon chain and Sandgate's addons.

Start-up order: parse the policy (exit 2 on error) -> fetch its secrets -> write the CA -> start
metrics -> bring up the listener -> print ONE ready line once the CA certificate is published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import certifi

from proxy.audit import AuditLog
from proxy.ca import ensure_ca, publish_ca_cert
from proxy.metrics import Metrics
from proxy.netcheck import AddressPolicy
from proxy.policy.load import PolicyInvalid, load_policy
from proxy.policy.model import Decision, Policy, Reason, Verdict
from proxy.runtime import FlowInfo, Limits, Runtime
from proxy.secrets import EnvSource, FileSource, SecretSource, SecretStore
from proxy.secrets.vault import VaultConfigError, VaultSettings, VaultSource

log = logging.getLogger("sandgate.proxy")

READY_PREFIX = "sandgate proxy ready"


@dataclass(frozen=True)
class ProxyConfig:
    policy: Path
    mode: str = "regular"  # "regular" (explicit HTTPS_PROXY) | "transparent" (iptables REDIRECT)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9090
    confdir: Path = Path("/tmp/sandgate")
    ca_cert_out: Path | None = None  # also publish the CA certificate here (written last: it signals ready)
    upstream_ca: tuple[Path, ...] = ()
    allow_private: tuple[str, ...] = ()
    audit_log: Path | None = None
    limits: Limits = field(default_factory=Limits)
    reload_interval: float = 1.0
    require_secrets: bool = False
    vault: VaultSettings | None = None
    secret_refresh: float = 60.0  # seconds between background refreshes of every secret
    secret_max_stale: float = 300.0  # how long a last good value serves while the source is unreachable
    upstream_relay: tuple[str, int] | None = None  # resolve and dial through this relay (sandgate run's sandbox)


class ConfigError(Exception):
    pass


def _trust_bundle(cfg: ProxyConfig) -> Path:
    """System CAs plus ``--upstream-ca``: mitmproxy takes one file, so we write the union."""
    parts = []
    for candidate in (Path("/etc/ssl/certs/ca-certificates.crt"), Path(certifi.where())):
        if candidate.exists():
            parts.append(candidate.read_bytes())
            break
    for extra in cfg.upstream_ca:
        try:
            parts.append(extra.read_bytes())
        except OSError as e:
            raise ConfigError(f"--upstream-ca {extra}: {e.strerror}") from None
    out = cfg.confdir / "upstream-trust.pem"
    out.write_bytes(b"\n".join(parts))
    return out


class Ready:
    """Signals readiness from `running`, i.e. after listeners are up and the cert store is loaded."""

    def __init__(self, cfg: ProxyConfig, rt: Runtime, ready: asyncio.Future[str]) -> None:
        self.cfg, self.rt, self.ready = cfg, rt, ready

    def running(self) -> None:
        from mitmproxy import ctx

        addrs = ctx.master.addons.get("proxyserver").listen_addrs()
        if not addrs:
            if not self.ready.done():
                self.ready.set_exception(ConfigError(f"cannot listen on {self.cfg.listen_host}:{self.cfg.listen_port}"))
            return
        ca = publish_ca_cert(self.cfg.confdir, self.cfg.ca_cert_out)
        listen = ",".join(f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}" for a in addrs)
        self.rt.metrics.ready.set(1)
        line = f"{READY_PREFIX}: listen={listen} mode={self.cfg.mode} metrics={self.cfg.metrics_host}:{self.cfg.metrics_port} ca={ca} policy={self.rt.policy.name}"
        if not self.ready.done():
            self.ready.set_result(line)


def _options(cfg: ProxyConfig, trust: Path) -> dict[str, object]:
    mode = "transparent" if cfg.mode == "transparent" else "regular"
    hosts = [cfg.listen_host]
    if mode == "transparent" and cfg.listen_host == "127.0.0.1":
        # ip6tables REDIRECT delivers to ::1: without this listener, IPv6 egress would just fail
        # (closed, so still safe), but dual-stack agents would see errors instead of answers.
        hosts.append("::1")
    return dict(
        mode=[f"{mode}@{h}:{cfg.listen_port}" if h else f"{mode}@{cfg.listen_port}" for h in hosts],
        listen_host=cfg.listen_host,
        confdir=str(cfg.confdir),
        connection_strategy="lazy",  # never dial before the policy has decided
        rawtcp=False,  # non-HTTP bytes are closed, never passed through
        http2=False,  # agents get HTTP/1.1: cheaper, and one authority per connection
        http3=False,
        validate_inbound_headers=True,  # smuggling protection stays on (B19)
        ssl_insecure=False,
        ssl_verify_upstream_trusted_ca=str(trust),
        upstream_cert=False,  # our certs name only what the client asked for
        store_streamed_bodies=False,
        tcp_timeout=int(cfg.limits.idle_timeout),  # silent connections are closed
    )


async def _watch_policy(cfg: ProxyConfig, rt: Runtime) -> None:
    def stamp() -> tuple[int, int, int] | None:
        try:
            st = os.stat(cfg.policy)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    last = stamp()
    while True:
        await asyncio.sleep(cfg.reload_interval)
        now = stamp()
        if now == last:
            continue
        last = now
        try:
            policy = await asyncio.to_thread(load_policy, str(cfg.policy))
        except PolicyInvalid as e:
            rt.metrics.policy_reloads.labels("error").inc()
            log.error(json.dumps({"event": "policy_reload", "result": "error", "errors": [str(x) for x in e.errors]}))
            continue
        await _load_secrets(rt, policy)
        rt.policy = policy  # one reference swap: requests see the old or the new policy, never a mix
        rt.metrics.policy_reloads.labels("success").inc()
        log.info(json.dumps({"event": "policy_reload", "result": "success", "policy": policy.name}))


async def _load_secrets(rt: Runtime, policy: Policy) -> dict[str, str]:
    failed = await rt.store.load(policy)
    now = time.time()
    for s in policy.secrets:
        serving = rt.store.serving(s.name)
        rt.metrics.secret_available.labels(s.name).set(1 if serving else 0)
        age = rt.store.age(s.name)
        rt.metrics.secret_age.labels(s.name).set(age if age is not None else float("nan"))
        if s.name not in failed:
            rt.metrics.secret_last_success.labels(s.name).set(now)
    for name, err in failed.items():
        state = "serving the last good value" if rt.store.serving(name) else "failing closed"
        log.error(
            json.dumps(
                {"event": "secret", "secret": name, "reason": err.reason.value, "detail": str(err), "state": state}
            )
        )
    return {n: str(e) for n, e in failed.items()}


async def _refresh_secrets(cfg: ProxyConfig, rt: Runtime) -> None:
    """Re-fetch every secret in the background, so rotations arrive without a restart and requests
    never wait for a source."""
    while True:
        await asyncio.sleep(cfg.secret_refresh)
        await _load_secrets(rt, rt.policy)


_LIMIT_DETAILS = {
    "headers": "request headers too large",
    "body": "request body too large",
    "header-time": "request headers not received in time",
}


def _on_limit(rt: Runtime, kind: str) -> None:
    rt.record(
        FlowInfo(None, None, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), detail=_LIMIT_DETAILS.get(kind, kind)),
        None,
        None,
    )


def _setup_logging() -> None:
    """Sandgate's own operational log: JSON messages on stderr, apart from mitmproxy's logging."""
    logger = logging.getLogger("sandgate")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _harden_process() -> None:
    """Secrets live in this process's memory: no core dumps, and no ptrace or /proc/<pid>/mem
    access for same-UID processes (SECURITY-CASES E08, D15)."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        log.warning(json.dumps({"event": "harden", "detail": "prctl(PR_SET_DUMPABLE, 0) failed"}))


async def serve(cfg: ProxyConfig, sources: dict[str, SecretSource] | None = None) -> int:
    _setup_logging()
    _harden_process()
    try:
        policy = load_policy(str(cfg.policy))
    except PolicyInvalid as e:
        print(f"sandgate proxy: invalid policy\n{e}", file=sys.stderr)
        return 2
    try:
        addresses = AddressPolicy(cfg.allow_private)
    except ValueError as e:
        print(f"sandgate proxy: --allow-private: {e}", file=sys.stderr)
        return 2
    metrics = Metrics()
    if sources is None:
        sources = {"env": EnvSource(), "file": FileSource()}
        if cfg.vault is not None:
            try:
                sources["vault"] = VaultSource(cfg.vault, metrics)
            except VaultConfigError as e:
                print(f"sandgate proxy: vault: {e}", file=sys.stderr)
                return 2
    audit_stream = open(cfg.audit_log, "a", encoding="utf-8") if cfg.audit_log else None  # noqa: SIM115
    store = SecretStore(sources, max_stale=cfg.secret_max_stale)
    rt = Runtime(
        policy,
        store,
        metrics,
        AuditLog(audit_stream),
        addresses,
        cfg.limits,
        cfg.mode == "transparent",
        cfg.upstream_relay,
    )
    failed = await _load_secrets(rt, policy)
    if failed and cfg.require_secrets:
        print(f"sandgate proxy: secrets unavailable (--require-secrets): {', '.join(sorted(failed))}", file=sys.stderr)
        return 3
    try:
        ensure_ca(cfg.confdir)
        trust = _trust_bundle(cfg)
    except (ConfigError, OSError) as e:
        print(f"sandgate proxy: {e}", file=sys.stderr)
        return 2

    from prometheus_client import start_http_server

    try:
        metrics_server, _ = start_http_server(cfg.metrics_port, cfg.metrics_host, registry=metrics.registry)
    except OSError as e:
        print(
            f"sandgate proxy: cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: {e.strerror}",
            file=sys.stderr,
        )
        return 2

    from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
    from mitmproxy.master import Master

    from proxy import mitm_patches
    from proxy.addons import Chain

    mitm_patches.install(
        cfg.limits.max_header_bytes,
        cfg.limits.max_request_body,
        lambda kind: _on_limit(rt, kind),
        cfg.limits.header_timeout,
    )
    # mitmproxy's own logs can carry request data (headers, bodies in error texts): silenced unless
    # a developer asks for them with SANDGATE_MITM_LOG_LEVEL (e.g. DEBUG), never in production.
    mitm_logger = logging.getLogger("mitmproxy")
    mitm_logger.setLevel(os.environ.get("SANDGATE_MITM_LOG_LEVEL", "CRITICAL"))
    if "SANDGATE_MITM_LOG_LEVEL" in os.environ:
        mitm_logger.addHandler(logging.StreamHandler(sys.stderr))
    from mitmproxy.options import Options

    master = Master(Options())
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    master.addons.add(
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        Chain(rt, Ready(cfg, rt, ready)),
    )
    master.options.update(**_options(cfg, trust))  # options exist once the addons that declare them are added
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, master.shutdown)
    run = asyncio.create_task(master.run())
    background = [asyncio.create_task(_watch_policy(cfg, rt)), asyncio.create_task(_refresh_secrets(cfg, rt))]
    vault = sources.get("vault")
    if isinstance(vault, VaultSource):
        background.append(asyncio.create_task(vault.renew_loop()))
    done, _ = await asyncio.wait([run, ready], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    code = 0
    if ready in done and ready.exception() is None:
        print(ready.result(), flush=True)
        await run
    else:
        err = ready.exception() if ready.done() else None
        print(f"sandgate proxy: {err or f'cannot listen on {cfg.listen_host}:{cfg.listen_port}'}", file=sys.stderr)
        master.shutdown()
        if not run.done():
            await run
        code = 2
    for task in background:
        task.cancel()
    metrics_server.shutdown()
    if audit_stream:
        audit_stream.close()
    return code
