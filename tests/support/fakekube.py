"""A fake Kubernetes API server: only the endpoints the webhook calls, over real TLS on 127.0.0.1.

It is a fake because no API server runs on these machines (there is no cluster to be had here), and
the webhook's certificate manager and version probe must still be tested end to end through the
official ``kubernetes`` client, its kubeconfig loading, TLS verification and bearer-token auth.
It is kept thin: it implements

- ``GET /version``;
- Secrets: ``GET``, ``POST`` (create; 409 AlreadyExists) and ``PUT`` (update; 409 Conflict when
  ``metadata.resourceVersion`` is stale, 422 when it changes the type; the metadata sent replaces
  the stored one, as the API server's update does), one namespace at a time;
- Mutating/ValidatingWebhookConfigurations: ``GET`` and ``PATCH`` with a JSON Patch;

with the API server's answers that callers depend on (Status objects, resourceVersion, 401 without
the token) and nothing else: no watch, no list, no field validation beyond base64 Secret data.
Every call is recorded as an RBAC request (verb, API group, resource, namespace, name) so tests can
hold what the webhook did against the Role the chart grants it. ``fail`` and ``stale_reads`` inject
the faults a real cluster produces (an API server error, a replica that read before another one
wrote).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import itertools
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import trustme
import yaml
from aiohttp import web

TOKEN = "fake-kube-token"  # a test credential for a test server

CORE = ""
ADMISSION = "admissionregistration.k8s.io"
_CLUSTER_SCOPED = {"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
_KINDS = {
    "secrets": ("v1", "Secret"),
    "mutatingwebhookconfigurations": ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
    "validatingwebhookconfigurations": ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
}


@dataclass(frozen=True)
class Call:
    """One request as RBAC sees it."""

    verb: str  # get | create | update | patch
    group: str
    resource: str
    namespace: str
    name: str


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    return web.json_response(body, status=code)


class FakeKube:
    """Serve on 127.0.0.1 from a background event loop; use as a context manager."""

    def __init__(self, workdir: Path, *, git_version: str = "v1.30.4") -> None:
        self.workdir = workdir
        self.version = git_version
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.stale_reads = 0  # the next N GETs of a Secret answer the version before its last write
        self._before: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._faults: dict[tuple[str, str], list[int]] = {}
        self._rv = itertools.count(1)
        self._lock = threading.Lock()
        self._ca = trustme.CA()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeKube:
        self._thread.start()
        self._runner, self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.kubeconfig = self.workdir / "kubeconfig"
        ca = self.workdir / "fake-kube-ca.pem"
        self._ca.cert_pem.write_to_path(str(ca))
        self.kubeconfig.write_text(
            yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": f"https://127.0.0.1:{self.port}",
                                                          "certificate-authority": str(ca)}}],
                "users": [{"name": "webhook", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "webhook"}}],
            })
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> tuple[web.AppRunner, int]:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/version", self._version)
        app.router.add_get("/version/", self._version)  # the Python client asks with the slash
        app.router.add_post("/api/v1/namespaces/{namespace}/{resource}", self._create)
        app.router.add_route("*", "/api/v1/namespaces/{namespace}/{resource}/{name}", self._item)
        app.router.add_route("*", "/apis/admissionregistration.k8s.io/v1/{resource}/{name}", self._item)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1").configure_cert(ctx)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, int(port)

    # -- what tests use ----------------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> None:
        """Store an object as if it had been applied (the chart's webhook configurations)."""
        resource = next(r for r, (_, kind) in _KINDS.items() if kind == obj["kind"])
        meta = obj.setdefault("metadata", {})
        with self._lock:
            meta.update(resourceVersion=str(next(self._rv)), uid=str(uuid.uuid4()))
            self.objects[(resource, meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)

    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def delete(self, resource: str, name: str, namespace: str = "") -> None:
        with self._lock:
            del self.objects[(resource, namespace, name)]

    def ca_bundles(self, resource: str, name: str) -> list[bytes]:
        """The decoded caBundle of every webhook in one configuration."""
        obj = self.get(resource, name) or {"webhooks": []}
        return [base64.b64decode(w.get("clientConfig", {}).get("caBundle", "")) for w in obj["webhooks"]]

    def fail(self, verb: str, resource: str, status: int = 500, times: int = 1) -> None:
        """The next ``times`` calls of ``verb`` on ``resource`` (or "version") answer ``status``."""
        with self._lock:
            self._faults.setdefault((verb, resource), []).extend([status] * times)

    def writes(self) -> Iterator[Call]:
        return (c for c in list(self.calls) if c.verb != "get")

    # -- handlers ----------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def _fault(self, verb: str, resource: str) -> web.Response | None:
        with self._lock:
            pending = self._faults.get((verb, resource))
            if pending:
                return _status(pending.pop(0), "InternalError", "injected fault")
        return None

    def _record(self, verb: str, resource: str, namespace: str, name: str) -> web.Response | None:
        group = ADMISSION if resource in _CLUSTER_SCOPED else CORE
        with self._lock:
            self.calls.append(Call(verb, group, resource, namespace, name))
        if (fault := self._fault(verb, resource)) is not None:
            return fault
        if resource not in _KINDS or (resource in _CLUSTER_SCOPED) == bool(namespace):
            return _status(404, "NotFound", f"the server could not find the requested resource ({resource})")
        return None

    async def _version(self, _: web.Request) -> web.Response:
        if (fault := self._fault("get", "version")) is not None:
            return fault
        major, minor = self.version.removeprefix("v").split(".")[:2]
        return web.json_response({"major": major, "minor": minor, "gitVersion": self.version,
                                  "platform": "linux/amd64"})  # fmt: skip

    async def _create(self, request: web.Request) -> web.Response:
        ns, resource = request.match_info["namespace"], request.match_info["resource"]
        body = await request.json()
        name = (body.get("metadata") or {}).get("name", "")
        if (refused := self._record("create", resource, ns, "")) is not None:
            return refused
        if (bad := self._invalid(resource, body)) is not None:
            return bad
        with self._lock:
            if (resource, ns, name) in self.objects:
                return _status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            meta = body["metadata"]
            meta.update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion=str(next(self._rv)))
            self.objects[(resource, ns, name)] = body
        return web.json_response(body, status=201)

    async def _item(self, request: web.Request) -> web.Response:
        ns = request.match_info.get("namespace", "")
        resource, name = request.match_info["resource"], request.match_info["name"]
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(request.method)
        if verb is None:
            return _status(405, "MethodNotAllowed", f"{request.method} is not implemented by this fake")
        if (refused := self._record(verb, resource, ns, name)) is not None:
            return refused
        key = (resource, ns, name)
        with self._lock:
            current = copy.deepcopy(self.objects.get(key))
            if verb == "get" and resource == "secrets" and key in self._before and self.stale_reads:
                self.stale_reads -= 1
                current = copy.deepcopy(self._before[key])
        if current is None:
            return _status(404, "NotFound", f'{resource} "{name}" not found')
        if verb == "get":
            return web.json_response(current)
        if verb == "update":
            body = await request.json()
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": '
                                                "the object has been modified; please apply your changes to the latest version")  # fmt: skip
            if (bad := self._invalid(resource, body)) is not None:
                return bad
            if resource == "secrets" and body.get("type", "Opaque") != current.get("type", "Opaque"):
                return _status(422, "Invalid", "type: Invalid value: field is immutable")
            new = body
        else:
            if request.content_type != "application/json-patch+json":
                return _status(
                    415, "UnsupportedMediaType", f"this fake applies JSON Patch only, not {request.content_type}"
                )
            try:
                new = jsonpatch.apply_patch(current, await request.json())
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                return _status(422, "Invalid", str(e))
        with self._lock:
            # An update replaces the object's metadata as sent (labels and annotations left out are
            # gone); a patch changed what it named. The server's own fields are the server's.
            new["metadata"] = {**new.get("metadata", {}), **({"namespace": ns} if ns else {}), "name": name,
                               "resourceVersion": str(next(self._rv)), "uid": current["metadata"].get("uid")}  # fmt: skip
            self._before[key] = self.objects[key]
            self.objects[key] = new
        return web.json_response(new)

    @staticmethod
    def _invalid(resource: str, body: dict[str, Any]) -> web.Response | None:
        if resource != "secrets":
            return None
        data = body.get("data") or {}
        try:
            for value in data.values():
                base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            return _status(422, "Invalid", "data: values must be base64")
        if body.get("type") == "kubernetes.io/tls" and not {"tls.crt", "tls.key"} <= set(data):
            return _status(422, "Invalid", "data[tls.crt], data[tls.key]: Required value")
        return None
