"""The admission webhook: AdmissionReview v1 over HTTPS around the pure injector.

Two error channels (as in kopf): a broken webhook call is an HTTP 4xx; a refused object is an
AdmissionReview with ``allowed: false`` and a message naming the field and the fix.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from injector import constants as k
from injector.config import InjectorConfig
from injector.mutate import mutate, policy_name, review_update
from proxy.metrics import INTERNAL_ERRORS, WEBHOOK_ADMISSION_DURATION, WEBHOOK_ADMISSIONS
from proxy.policy.load import PolicyInvalid, parse_policy
from proxy.supervise import Supervisor
from webhook.store import PolicyStore

log = logging.getLogger("sandgate.webhook")

MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit is 3 MiB


@dataclass(frozen=True)
class Settings:
    config: InjectorConfig
    store: PolicyStore
    policy_writers: tuple[str, ...] = ()  # "group:NAME" / "user:NAME" allowed to change policy ConfigMaps
    # Long-lived tasks run beside the server under a Supervisor (the certificate manager): (name, factory).
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
            INTERNAL_ERRORS.removesuffix("_total"), "Background tasks that failed and were restarted, by task.",
            ["task"], registry=self.registry,
        )  # fmt: skip


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)


class BadReview(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_review(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadReview(415, "an AdmissionReview is sent as application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadReview(413, "request body too large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadReview(413, "request body too large") from None
    try:
        review = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadReview(400, "the body is not JSON") from None
    req = review.get("request") if isinstance(review, dict) else None
    if (
        not isinstance(review, dict)
        or review.get("apiVersion") != "admission.k8s.io/v1"
        or review.get("kind") != "AdmissionReview"
        or not isinstance(req, dict)
        or not isinstance(req.get("uid"), str)
    ):
        raise BadReview(400, "expected an admission.k8s.io/v1 AdmissionReview with request.uid")
    return review


def _answer(
    review: dict[str, Any], *, allowed: bool, message: str = "", patch: list[dict[str, Any]] | None = None
) -> web.Response:
    response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return web.json_response({"apiVersion": review["apiVersion"], "kind": review["kind"], "response": response})


async def mutate_handler(request: web.Request) -> web.Response:
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    start = time.perf_counter()
    try:
        review = await _read_review(request)
    except BadReview as e:
        metrics.admissions.labels("unknown", "bad_request").inc()
        return web.json_response({"error": str(e)}, status=e.status)
    req = review["request"]
    operation = str(req.get("operation", ""))
    pod = req.get("object")
    if operation == "CREATE" and not isinstance(pod, dict):
        metrics.admissions.labels(operation, "bad_request").inc()
        return web.json_response({"error": "request.object must be the pod"}, status=400)
    if operation == "UPDATE" and isinstance(pod, dict) and isinstance(req.get("oldObject"), dict):
        verdict = review_update(req["oldObject"], pod, settings.config, subresource=str(req.get("subResource") or ""))
        metrics.admissions.labels(operation, "allowed" if verdict.allowed else "denied").inc()
        return _answer(review, allowed=verdict.allowed, message=verdict.message)
    if operation != "CREATE":
        metrics.admissions.labels(operation or "unknown", "skipped").inc()
        return _answer(review, allowed=True)
    assert isinstance(pod, dict)
    namespace = str(req.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
    name = policy_name(pod)
    # Policy files or ConfigMaps: a blocking read, off the event loop.
    lookup = await asyncio.to_thread(settings.store.get, namespace, name)
    result = mutate(pod, lookup, settings.config, operation=operation, namespace=namespace)
    outcome = "denied" if not result.allowed else ("injected" if result.patch else "skipped")
    metrics.admissions.labels(operation, outcome).inc()
    metrics.duration.observe(time.perf_counter() - start)
    log.info(json.dumps({"event": "admission", "uid": req["uid"], "namespace": namespace, "policy": name, "result": outcome,
                         "dryRun": bool(req.get("dryRun"))}))  # fmt: skip
    return _answer(review, allowed=result.allowed, message=result.message, patch=result.patch)


async def validate_handler(request: web.Request) -> web.Response:
    """Policy ConfigMaps: only the configured writers may change them, and only to valid policies."""
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    try:
        review = await _read_review(request)
    except BadReview as e:
        return web.json_response({"error": str(e)}, status=e.status)
    req = review["request"]
    operation = str(req.get("operation", ""))
    obj = req.get("object") if operation != "DELETE" else req.get("oldObject")
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    old_labels = ((req.get("oldObject") or {}).get("metadata") or {}).get("labels") or {}
    if labels.get(k.POLICY_CONFIGMAP_LABEL) != "true" and old_labels.get(k.POLICY_CONFIGMAP_LABEL) != "true":
        return _answer(review, allowed=True)
    user = req.get("userInfo") or {}
    principals = {f"user:{user.get('username', '')}"} | {f"group:{g}" for g in user.get("groups") or []}
    if not principals & set(settings.policy_writers):
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(
            review,
            allowed=False,
            message=f"{user.get('username', '?')} may not change Sandgate policies; ask the security team",
        )
    if operation == "DELETE":
        return _answer(review, allowed=True)
    text = ((obj or {}).get("data") or {}).get(k.POLICY_CONFIGMAP_KEY)
    if not isinstance(text, str):
        return _answer(
            review,
            allowed=False,
            message=f"data.{k.POLICY_CONFIGMAP_KEY}: a policy ConfigMap holds the EgressPolicy under this key",
        )
    try:
        policy = parse_policy(text, source="policy.yaml")
    except PolicyInvalid as e:
        metrics.admissions.labels(operation, "denied").inc()
        return _answer(review, allowed=False, message="; ".join(str(x) for x in e.errors))
    cm_name = ((obj or {}).get("metadata") or {}).get("name")
    if policy.name != cm_name:
        return _answer(
            review,
            allowed=False,
            message=f"metadata.name: the policy is named {policy.name!r}; name the ConfigMap the same",
        )
    metrics.admissions.labels(operation, "allowed").inc()
    return _answer(review, allowed=True)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS].registry), content_type="text/plain")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.router.add_post("/mutate", mutate_handler)
    app.router.add_post("/validate", validate_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    return app


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def reload_tls(ctx: ssl.SSLContext, cert: Path, key: Path, interval: float = 1.0) -> None:
    """Reload the serving certificate when its files change (cert-manager rotates them in place);
    new connections get the new certificate, no restart. A broken pair keeps the old one."""

    def stamp() -> tuple[float, float]:
        return (cert.stat().st_mtime, key.stat().st_mtime)

    last = stamp()
    while True:
        await asyncio.sleep(interval)
        try:
            now = stamp()
            if now != last:
                last = now
                ctx.load_cert_chain(cert, key)
                log.info(json.dumps({"event": "tls_reload", "result": "success"}))
        except (OSError, ssl.SSLError) as e:
            log.error(json.dumps({"event": "tls_reload", "result": "error", "detail": type(e).__name__}))


async def serve(settings: Settings, cert: Path, key: Path, host: str, port: int) -> int:
    import signal
    import sys

    if not logging.getLogger("sandgate").handlers:  # the CLI may have set it up for its start-up lines
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("sandgate").addHandler(handler)
        logging.getLogger("sandgate").setLevel(logging.INFO)
    try:
        ctx = tls_context(cert, key)
    except (OSError, ssl.SSLError) as e:
        print(f"sandgate webhook: cannot load the TLS certificate and key: {e}", file=sys.stderr)
        return 2
    app = create_app(settings)
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
    reloader = asyncio.create_task(reload_tls(ctx, cert, key))
    supervisor = Supervisor(lambda task: app[METRICS].internal_errors.labels(task).inc())
    for name, factory in settings.background:
        supervisor.start(name, factory)
    print(f"sandgate webhook ready: listen={host}:{port}", flush=True)
    fatal, stopped = asyncio.ensure_future(supervisor.fatal()), asyncio.ensure_future(stop.wait())
    await asyncio.wait([fatal, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    reloader.cancel()
    await supervisor.stop()
    await runner.cleanup()
    if fatal.done():
        print(f"sandgate webhook: background task {fatal.result()} kept failing; exiting", file=sys.stderr)
        return 1
    fatal.cancel()
    return 0
