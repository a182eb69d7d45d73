"""The webhook's safety nets, in process: the backstop that answers the API server whatever
escapes a handler, and the supervisor that keeps (or gives up) its background work.

An internal error cannot be provoked from outside once every input is checked, so these tests
plant one: a policy store that raises (as a Kubernetes API outage would), a background task that
always fails. Both are stand-ins for bugs, said so here."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from injector.config import InjectorConfig
from proxy.supervise import Supervisor
from webhook.app import METRICS, SUPERVISOR, Metrics, Settings, backstop, create_app
from webhook.store import Lookup

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "agent"},
    "spec": {"containers": [{"name": "agent", "image": "x"}]},
}


class ExplodingStore:
    """Stands in for a store whose backend fails unexpectedly; the text must never reach a log."""

    def get(self, namespace: str, name: str) -> Lookup:
        raise RuntimeError("secret-looking detail sk-live-123")


def review(uid: str) -> dict[str, Any]:
    request = {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
               "namespace": "sandbox-a", "operation": "CREATE", "object": POD, "userInfo": {"username": "tenant"}}  # fmt: skip
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


async def test_an_escaping_exception_is_a_refusal_for_that_uid_counted_as_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestClient(TestServer(create_app(Settings(config=InjectorConfig(), store=ExplodingStore())))) as client:
        uid = str(uuid.uuid4())
        with caplog.at_level(logging.ERROR, logger="sandgate.webhook"):
            r = await client.post("/mutate", json=review(uid))
        assert r.status == 200
        body = await r.json()
        metrics = await (await client.get("/metrics")).text()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    resp = body["response"]
    assert resp["uid"] == uid and resp["allowed"] is False and resp["status"]["code"] == 500
    assert "internal error" in resp["status"]["message"] and "sk-live" not in resp["status"]["message"]
    assert "RuntimeError" in caplog.text and "sk-live" not in caplog.text
    assert 'sandgate_webhook_admissions_total{operation="CREATE",result="error"} 1.0' in metrics


async def test_when_even_the_uid_cannot_be_read_the_backstop_answers_400() -> None:
    async def fails_first(request: web.Request) -> web.Response:
        raise KeyError("before the body was read")

    app = web.Application(middlewares=[backstop])
    app[METRICS] = Metrics()
    app.router.add_post("/mutate", fails_first)
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/mutate", data=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status == 400 and "error" in await r.json()
        assert (await client.post("/mutate", json=review("uid-1"))).status == 200  # the uid, read from the body


async def test_a_background_failure_is_counted_and_a_task_given_up_fails_readiness() -> None:
    async def broken() -> None:
        raise OSError("the files are gone")

    app = create_app(
        Settings(config=InjectorConfig(), store=ExplodingStore()),
        background={"tls-reload": broken},
        supervisor=lambda on_failure: Supervisor(on_failure, max_failures=3, first_backoff=0.001),
    )
    async with TestClient(TestServer(app)) as client:
        assert await asyncio.wait_for(app[SUPERVISOR].fatal(), 5) == "tls-reload"
        r = await client.get("/readyz")
        assert r.status == 503 and "tls-reload" in await r.text()
        assert (await client.get("/healthz")).status == 200  # alive: serve() is what ends the process
        metrics = await (await client.get("/metrics")).text()
    assert 'sandgate_internal_errors_total{task="tls-reload"} 3.0' in metrics


async def test_a_namespace_whose_policies_the_webhook_may_not_read_is_refused_saying_how_to_fix_it() -> None:
    """webhook.policyNamespaces binds the webhook's reads to the listed namespaces: elsewhere the
    API server answers 403, and the pod's refusal names the list, not a missing policy."""
    from tests.webhook.test_store import FakeCoreV1
    from webhook.store import ConfigMapStore

    class Forbidden(FakeCoreV1):
        def read_namespaced_config_map(self, name: str, namespace: str, _request_timeout: float | None = None) -> Any:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=403, reason="Forbidden")

    store = ConfigMapStore(Forbidden({}))
    async with TestClient(TestServer(create_app(Settings(config=InjectorConfig(), store=store)))) as client:
        body = await (await client.post("/mutate", json=review("uid-403"))).json()
        metrics = await (await client.get("/metrics")).text()
    resp = body["response"]
    assert resp["allowed"] is False and "webhook.policyNamespaces" in resp["status"]["message"]
    assert "'sandbox-a'" in resp["status"]["message"]
    assert 'sandgate_webhook_admissions_total{operation="CREATE",result="denied"} 1.0' in metrics
