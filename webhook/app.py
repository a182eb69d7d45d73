"""The admission webhook: AdmissionReview v1 over HTTPS around the pure injector.

Two error channels (as in kopf): a broken webhook call is an HTTP 4xx (:mod:`webhook.review`
checks the envelope); a refused object is an AdmissionReview with ``allowed: false`` and a message
naming the field and the fix. A backstop middleware turns any exception that still escapes into a
refusal for that uid (``result="error"``), so the API server never sees a 500 page.

Background work (the certificate reload) runs under :class:`proxy.supervise.Supervisor`: failures
are counted in ``sandgate_internal_errors_total{task}``; a task given up fails ``/readyz`` and ends
the process non-zero.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from injector import constants as k
from injector.config import InjectorConfig
from injector.mutate import BrokenPolicy, mutate, policy_name, review_connect, review_update
from injector.shape import check_pod, field_errors
from proxy.infile import MAX_PEM_BYTES, read_bounded
from proxy.metrics import BUILD_INFO, INTERNAL_ERRORS, WEBHOOK_ADMISSION_DURATION, WEBHOOK_ADMISSIONS
from proxy.policy.model import Policy
from proxy.supervise import Supervisor
from proxy.version import version
from webhook.review import MAX_BODY, AdmissionReview, BadReview, identify, parse_review, response
from webhook.store import PolicyStore, PolicyUnreadable, parse_stored

log = logging.getLogger("sandgate.webhook")

__all__ = ["MAX_BODY", "Metrics", "Settings", "TLSReloader", "create_app", "serve", "tls_context"]


@dataclass(frozen=True)
class Settings:
    config: InjectorConfig
    store: PolicyStore
    policy_writers: tuple[str, ...] = ()  # "group:NAME" / "user:NAME" allowed to change policy ConfigMaps
    # Long-lived tasks run beside the server under the supervisor (the certificate manager): (name, factory).
    background: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = ()


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.admissions = Counter(
            WEBHOOK_ADMISSIONS.removesuffix("_total"), "Admission reviews answered, by operation and result.",
            ["operation", "result"], registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            WEBHOOK_ADMISSION_DURATION, "Time to answer one admission review.", registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        self.internal_errors = Counter(
            INTERNAL_ERRORS.removesuffix("_total"), "Failures of the webhook's background tasks, by task.",
            ["task"], registry=self.registry,
        )  # fmt: skip
        self.build_info = Gauge(BUILD_INFO, "1, labelled with the running Sandgate version.", ["version"],
                                registry=self.registry)  # fmt: skip
        self.build_info.labels(version()).set(1)


Task = Callable[[], Awaitable[None]]

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
TASKS = web.AppKey("tasks", dict[str, Task])
_ADMISSION_PATHS = frozenset({"/mutate", "/validate"})


async def _read_review(request: web.Request) -> AdmissionReview:
    if request.content_type != "application/json":
        raise BadReview(415, "an AdmissionReview is sent as application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadReview(413, "request body too large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadReview(413, "request body too large") from None
    return parse_review(raw)


def _bad_request(metrics: Metrics, e: BadReview) -> web.Response:
    metrics.admissions.labels("unknown", "bad_request").inc()
    return web.json_response({"error": str(e)}, status=e.status)


def _answer(
    review: AdmissionReview,
    *,
    allowed: bool,
    message: str = "",
    patch: list[dict[str, Any]] | None = None,
    warnings: Sequence[str] = (),
) -> web.Response:
    return web.json_response(
        response(review["request"]["uid"], allowed=allowed, message=message, patch=patch, warnings=warnings)
    )


async def mutate_handler(request: web.Request) -> web.Response:
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    start = time.perf_counter()
    try:
        review = await _read_review(request)
    except BadReview as e:
        return _bad_request(metrics, e)
    req = review["request"]
    operation = req["operation"]
    pod, old = req.get("object"), req.get("oldObject")
    if operation == "CREATE" and pod is None:
        return _bad_request(metrics, BadReview(400, "request.object: a CREATE carries the pod"))
    if req["kind"]["kind"] != "Pod" and operation in ("CREATE", "UPDATE"):
        # Only pods are routed here; anything else is a misconfigured webhook: fail closed.
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(
            review,
            allowed=False,
            message=f"request.kind: Sandgate's /mutate admits Pods, not {req['kind']['kind'][:63]!r}",
        )
    if operation == "UPDATE":
        if pod is None or old is None:
            # The API server always sends both; without them the change cannot be judged (was the
            # sidecar taken out?): refused, as /validate refuses a DELETE without oldObject (red team 45).
            missing = " and ".join(n for n, o in (("request.object", pod), ("request.oldObject", old)) if o is None)
            metrics.admissions.labels(operation, "denied").inc()
            return _answer(
                review,
                allowed=False,
                message=f"{missing}: a Pod UPDATE carries the pod before and after the change; "
                "Sandgate cannot judge it without them",
            )
        verdict = review_update(old, pod, settings.config, subresource=req.get("subResource", ""))
        metrics.admissions.labels(operation, "allowed" if verdict.allowed else "denied").inc()
        return _answer(review, allowed=verdict.allowed, message=verdict.message)
    if operation == "CONNECT":
        verdict = review_connect(req.get("subResource", ""), pod)
        metrics.admissions.labels(operation, "allowed" if verdict.allowed else "denied").inc()
        return _answer(review, allowed=verdict.allowed, message=verdict.message)
    if operation != "CREATE" or pod is None:
        metrics.admissions.labels(operation, "skipped").inc()
        return _answer(review, allowed=True)
    namespace = req.get("namespace") or ""
    unreadable = check_pod(pod)
    if unreadable:
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(review, allowed=False, message="; ".join(unreadable))
    name = policy_name(pod)
    # Policy files or ConfigMaps: a blocking read, off the event loop.
    try:
        lookup = await asyncio.to_thread(settings.store.get, namespace, name)
    except PolicyUnreadable as e:
        metrics.admissions.labels(operation, "denied").inc()
        log.warning(json.dumps({"event": "admission", "uid": req["uid"], "namespace": namespace, "result": "denied",
                                "error": "policy_unreadable"}))  # fmt: skip
        return _answer(review, allowed=False, message=str(e))
    result = mutate(pod, lookup, settings.config, operation=operation, namespace=namespace)
    outcome = "denied" if not result.allowed else ("injected" if result.patch else "skipped")
    metrics.admissions.labels(operation, outcome).inc()
    metrics.duration.observe(time.perf_counter() - start)
    log.info(json.dumps({"event": "admission", "uid": req["uid"], "namespace": namespace, "policy": name[:253], "result": outcome,
                         "dryRun": bool(req.get("dryRun"))}))  # fmt: skip
    return _answer(review, allowed=result.allowed, message=result.message, patch=result.patch)


@with_config(ConfigDict(strict=True))
class _ConfigMapMeta(TypedDict, total=False):
    name: str
    labels: dict[str, str] | None


@with_config(ConfigDict(strict=True))
class _ConfigMap(TypedDict, total=False):
    metadata: _ConfigMapMeta | None
    data: dict[str, str] | None
    binaryData: dict[str, str] | None


_CONFIGMAP = TypeAdapter(_ConfigMap)


def _configmap(obj: dict[str, Any] | None, where: str) -> tuple[_ConfigMap, list[str]]:
    try:
        return _CONFIGMAP.validate_python(obj or {}), []
    except ValidationError as e:
        return {}, field_errors(e, maps=frozenset({"labels", "data", "binaryData"}), root=where, limit=3)


async def validate_handler(request: web.Request) -> web.Response:
    """Policy ConfigMaps: only the configured writers may change them, and only to valid policies.

    A policy is a ConfigMap labelled as one, or holding ``policy.yaml`` whatever its label (a
    sidecar's policy volume names its ConfigMap, and the proxy reloads it: one deleted while pods
    use it, made again unlabelled by anyone, would be their policy: red team 27); the ConfigMap
    named by ``vaultCACertConfigMap`` (whom sidecars trust as Vault) is the writers' too."""
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    try:
        review = await _read_review(request)
    except BadReview as e:
        return _bad_request(metrics, e)
    req = review["request"]
    operation = req["operation"]
    if operation == "DELETE" and req.get("oldObject") is None:
        # (The API server sends it; without it, whether a policy goes cannot be told: fail closed.)
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(review, allowed=False, message="request.oldObject: a ConfigMap DELETE carries the ConfigMap")
    cm, problems = _configmap(req.get("object") if operation != "DELETE" else req.get("oldObject"), "the ConfigMap")
    old, old_problems = _configmap(req.get("oldObject"), "the old ConfigMap")
    if problems or old_problems:
        # Whether it is a policy cannot be told: fail closed.
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(review, allowed=False, message="; ".join(problems + old_problems))
    vault_ca = settings.config.vault_cacert_configmap

    def policy(c: _ConfigMap) -> bool:
        labelled = ((c.get("metadata") or {}).get("labels") or {}).get(k.POLICY_CONFIGMAP_LABEL) == "true"
        # (The kubelet takes the sidecar's key from data or binaryData: red team 30.)
        keyed = k.POLICY_CONFIGMAP_KEY in (c.get("data") or {}) or k.POLICY_CONFIGMAP_KEY in (c.get("binaryData") or {})
        return labelled or keyed

    def guarded(c: _ConfigMap) -> bool:
        return policy(c) or (bool(vault_ca) and (c.get("metadata") or {}).get("name") == vault_ca)

    if not guarded(cm) and not guarded(old):
        return _answer(review, allowed=True)
    user = req["userInfo"]
    principals = {f"user:{user.get('username', '')}"} | {f"group:{g}" for g in user.get("groups") or []}
    if not principals & set(settings.policy_writers):
        metrics.admissions.labels(operation, "denied").inc()
        who = user.get("username") or "?"
        return _answer(
            review, allowed=False, message=f"{who[:253]} may not change Sandgate policies; ask the security team"
        )
    if operation == "DELETE" or not (policy(cm) or policy(old)):
        metrics.admissions.labels(operation, "allowed").inc()
        return _answer(review, allowed=True)
    if k.POLICY_CONFIGMAP_KEY in (cm.get("binaryData") or {}):
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(
            review,
            allowed=False,
            message=f"binaryData.{k.POLICY_CONFIGMAP_KEY}: a policy is written under data (as text), where it is checked",
        )
    text = (cm.get("data") or {}).get(k.POLICY_CONFIGMAP_KEY)
    if text is None:
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(
            review,
            allowed=False,
            message=f"data.{k.POLICY_CONFIGMAP_KEY}: a policy ConfigMap holds the EgressPolicy under this key",
        )
    cm_name = (cm.get("metadata") or {}).get("name") or ""
    verdict = parse_stored(cm_name, text, f"data.{k.POLICY_CONFIGMAP_KEY}")
    if not isinstance(verdict, Policy):
        metrics.admissions.labels(operation, "denied").inc()
        errors = (
            verdict.errors
            if isinstance(verdict, BrokenPolicy)
            else (f"metadata.name: {cm_name[:63]!r} is not a policy name",)
        )
        return _answer(review, allowed=False, message="; ".join(errors))
    metrics.admissions.labels(operation, "allowed").inc()
    # Valid but probably not what was meant ("PSOT"): shown to whoever applied it, as policy check does.
    return _answer(review, allowed=True, warnings=[f"sandgate policy: {w}" for w in verdict.warnings])


@web.middleware
async def backstop(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Whatever still escapes a handler becomes a refusal for that uid: never a 500 page, never the
    exception's text (it may quote the object). Logged by type, counted as ``result="error"``."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as e:  # the point: whatever it was, answer the API server
        if request.path not in _ADMISSION_PATHS:
            raise
        try:
            uid, operation = identify(await request.read())  # aiohttp keeps the body read before
        except Exception:  # the body itself may be what failed
            uid, operation = None, "unknown"
        request.app[METRICS].admissions.labels(operation, "error").inc()
        log.error(json.dumps({"event": "internal_error", "task": "admission", "path": request.path, "uid": uid,
                              "error": type(e).__name__}))  # fmt: skip
        if uid is None:
            return web.json_response({"error": "the webhook could not read this request"}, status=400)
        message = ("Sandgate's admission webhook failed on this request (an internal error, logged with its uid); "
                   "nothing was admitted. Retry; if it persists, tell the cluster's Sandgate operators.")  # fmt: skip
        return web.json_response(response(uid, allowed=False, code=500, message=message))


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    if not supervisor.healthy:
        return web.Response(status=503, text=f"not ready: background task {supervisor.failed} was given up")
    return web.Response(text="ok")


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS].registry), content_type="text/plain")


async def _background(app: web.Application) -> AsyncIterator[None]:
    for name, task in app[TASKS].items():
        app[SUPERVISOR].start(name, task)
    yield
    await app[SUPERVISOR].stop()


def create_app(
    settings: Settings,
    *,
    background: Mapping[str, Task] | None = None,
    supervisor: Callable[[Callable[[str], None]], Supervisor] = Supervisor,
) -> web.Application:
    """The webhook's routes; ``background`` tasks run supervised while the app runs (``supervisor``
    builds the :class:`Supervisor` from the failure counter)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[backstop])
    metrics = Metrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[SUPERVISOR] = supervisor(lambda task: metrics.internal_errors.labels(task).inc())
    app[TASKS] = dict(background or {})
    app.cleanup_ctx.append(_background)
    app.router.add_post("/mutate", mutate_handler)
    app.router.add_post("/validate", validate_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A serving context of ``cert`` and ``key``. Raises OSError (naming the file) for one that is
    not a regular file of at most MAX_PEM_BYTES: OpenSSL would wait on a FIFO for good, the event
    loop with it (red team 63)."""
    for path in (cert, key):
        read_bounded(path, MAX_PEM_BYTES)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class TLSReloader:
    """Reloads the serving certificate when its files change (cert-manager rotates them in place):
    new connections get the new certificate, no restart.

    A pair that does not load keeps the old certificate in use (a failed ``load_cert_chain`` can
    leave a context with the new certificate and the old key, so the pair is tried on its own
    first), and is counted through ``on_error``. Files that cannot even be found escape to the
    supervisor: it retries, then gives up and the process exits, so the kubelet restarts it.
    """

    def __init__(
        self, ctx: ssl.SSLContext, cert: Path, key: Path, on_error: Callable[[], None], interval: float = 1.0
    ) -> None:
        self.ctx, self.cert, self.key, self.on_error, self.interval = ctx, cert, key, on_error, interval
        self.seen = self._stamp()  # what the context was loaded from, at start-up

    def _stamp(self) -> tuple[int, int]:
        return (self.cert.stat().st_mtime_ns, self.key.stat().st_mtime_ns)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = self._stamp()
            if now == self.seen:
                continue
            self.seen = now  # a broken pair is retried when its files change again, not every second
            try:
                tls_context(self.cert, self.key)
                self.ctx.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as e:
                self.on_error()
                log.error(json.dumps({"event": "tls_reload", "result": "error", "error": type(e).__name__}))
            else:
                log.info(json.dumps({"event": "tls_reload", "result": "success"}))


async def serve(settings: Settings, cert: Path, key: Path, host: str, port: int) -> int:
    import signal

    if not logging.getLogger("sandgate").handlers:  # the CLI may have set it up for its start-up lines
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("sandgate").addHandler(handler)
        logging.getLogger("sandgate").setLevel(logging.INFO)
    try:
        ctx = tls_context(cert, key)
    except OSError as e:  # (ssl.SSLError too)
        why = f"{e.filename}: {e.strerror}" if e.filename else str(e)
        print(f"sandgate webhook: cannot load the TLS certificate and key: {why}", file=sys.stderr)
        return 2
    app = create_app(settings, background=dict(settings.background))
    reloader = TLSReloader(ctx, cert, key, on_error=app[METRICS].internal_errors.labels("tls-reload").inc)
    app[TASKS]["tls-reload"] = reloader.run
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    except OSError as e:
        print(f"sandgate webhook: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
        await runner.cleanup()
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = runner.addresses[0][1] if runner.addresses else port  # (the one bound, for --port 0)
    print(f"sandgate webhook ready: listen={host}:{port}", flush=True)
    stopped, fatal = asyncio.create_task(stop.wait()), asyncio.create_task(app[SUPERVISOR].fatal())
    await asyncio.wait({stopped, fatal}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    fatal.cancel()
    await runner.cleanup()
    if app[SUPERVISOR].failed is not None:
        print(f"sandgate webhook: background task {app[SUPERVISOR].failed} keeps failing; exiting", file=sys.stderr)
        return 1
    return 0
