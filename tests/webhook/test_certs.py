"""The webhook's own certificate: created once, shared by replicas, trusted through both caBundles,
rotated without a failed handshake, and served by the real webhook.

The pure core (:func:`webhook.certs.plan`) is tested with tables and a hypothesis property; the
manager end to end through the official Kubernetes client against tests/support/fakekube.py (a fake
API server over real TLS: no real one runs here), with the names, arguments and RBAC the chart
renders; the real ``sandgate webhook`` process is then asked for a TLS handshake by a client that
trusts only what the caBundle holds.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandgate.cli import build_parser
from tests.support.fakekube import FakeKube
from tests.support.proxyproc import free_port
from webhook.certs import CertificateManager, MissingSecret, Pair, Timing, TLSState, dns_names, issue, plan
from webhook.kubeapi import KubeAPI, KubeError, kubernetes_version

CHART = Path(__file__).resolve().parents[2] / "charts" / "sandgate"
NS = "sandgate-system"
_PEM = Encoding.PEM
TIMING = Timing(validity=dt.timedelta(days=365), settle=dt.timedelta(minutes=5))
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "sandbox-a"},
       "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}]}}  # fmt: skip
POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: default}
spec:
  allow: [{host: api.openai.com}]
"""


# -- the chart's objects: what the manager is told and what it may touch --------------------------


@pytest.fixture(scope="module")
def chart() -> dict[str, Any]:
    files = helm_python.Chart.load(str(CHART)).render(values={}, name="sandgate", namespace=NS)
    objs = [d for name, text in files.items() if name.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return {"objs": objs, "args": args, "parsed": build_parser().parse_args(args)}


@pytest.fixture
def kube(tmp_path: Path, chart: dict[str, Any]) -> Iterator[FakeKube]:
    with FakeKube(tmp_path) as fake:
        for obj in chart["objs"]:
            if obj["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "Secret"):
                fake.put(copy.deepcopy(obj))
        yield fake


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def manager(kube: FakeKube, chart: dict[str, Any], files: Path, clock: Clock | None = None) -> CertificateManager:
    a = chart["parsed"]
    files.mkdir(parents=True, exist_ok=True)
    return CertificateManager(
        KubeAPI.connect(kube.kubeconfig), namespace=a.namespace, secret=a.tls_secret, service=a.service,
        webhook_configuration=a.webhook_configuration, cert_file=files / "tls.crt", key_file=files / "tls.key",
        timing=TIMING, clock=clock or Clock(dt.datetime.now(dt.UTC)),
    )  # fmt: skip


def secret(kube: FakeKube, chart: dict[str, Any]) -> dict[str, bytes]:
    obj = kube.get("secrets", chart["parsed"].tls_secret, NS)
    assert obj is not None
    return {k: base64.b64decode(v) for k, v in obj["data"].items()}


def bundles(kube: FakeKube, chart: dict[str, Any]) -> list[bytes]:
    name = chart["parsed"].webhook_configuration
    return kube.ca_bundles("mutatingwebhookconfigurations", name) + kube.ca_bundles(
        "validatingwebhookconfigurations", name
    )


def cas(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def trusted_by(cert_pem: bytes, bundle: bytes, name: str) -> bool:
    """What the API server does: verify the chain to a caBundle root and the Service name."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    for ca in cas(bundle):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):  # not this CA
            continue
        return name in names and cert.not_valid_before_utc <= dt.datetime.now(dt.UTC) < cert.not_valid_after_utc
    return False


def allowed_by_rbac(call: Any, objs: list[dict[str, Any]]) -> bool:
    """Kubernetes RBAC over the chart's Role (in its namespace) and ClusterRole."""
    for role in (o for o in objs if o["kind"] in ("Role", "ClusterRole")):
        if role["kind"] == "Role" and call.namespace != role["metadata"]["namespace"]:
            continue
        for rule in role["rules"]:
            if (call.group in rule["apiGroups"] and call.resource in rule["resources"] and call.verb in rule["verbs"]
                    and ("resourceNames" not in rule or (call.name and call.name in rule["resourceNames"]))):  # fmt: skip
                return True
    return False


# -- the manager against the fake API server -----------------------------------------------------


async def test_first_start_fills_the_charts_secret_and_puts_its_ca_in_both_configurations(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    rendered = next(o for o in chart["objs"] if o["kind"] == "Secret")
    assert "data" not in rendered and rendered["metadata"]["name"] == chart["parsed"].tls_secret
    m = manager(kube, chart, tmp_path / "a")
    await m.reconcile()
    data = secret(kube, chart)
    assert len(cas(data["ca.crt"])) == 1 and "next.crt" not in data
    hooks = bundles(kube, chart)
    webhooks = sum(len(o["webhooks"]) for o in chart["objs"] if o["kind"].endswith("WebhookConfiguration"))
    assert len(hooks) == webhooks >= 3 and all(b == data["ca.crt"] for b in hooks)  # both configurations
    for name in dns_names(chart["parsed"].service, NS):
        assert trusted_by(data["tls.crt"], hooks[0], name)
    assert (tmp_path / "a" / "tls.crt").read_bytes() == data["tls.crt"]
    assert (tmp_path / "a" / "tls.key").read_bytes() == data["tls.key"]
    assert (tmp_path / "a" / "tls.key").stat().st_mode & 0o077 == 0
    assert [c.verb for c in kube.writes() if c.resource == "secrets"] == ["update"]
    assert all(allowed_by_rbac(c, chart["objs"]) for c in kube.calls), kube.calls


async def test_the_webhooks_writes_keep_what_helm_owns_of_the_secret(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    """An update replaces the whole object: Helm's labels and annotations (its claim on the Secret:
    without them the next `helm upgrade` refuses it) and the type (immutable) are carried over."""
    name = chart["parsed"].tls_secret
    helm = {"meta.helm.sh/release-name": "sandgate", "meta.helm.sh/release-namespace": NS}
    live = kube.get("secrets", name, NS)
    assert live is not None
    live["metadata"]["annotations"] = helm
    kube.put(live)
    clock = Clock(dt.datetime.now(dt.UTC) - dt.timedelta(days=250))
    m = manager(kube, chart, tmp_path / "a", clock)
    await m.reconcile()
    clock.now = dt.datetime.now(dt.UTC)
    await m.reconcile()  # and a renewal's first step
    after = kube.get("secrets", name, NS)
    assert after is not None and "next.crt" in after["data"]
    rendered = next(o for o in chart["objs"] if o["kind"] == "Secret")
    assert after["type"] == rendered["type"] == "Opaque"
    assert after["metadata"]["labels"] == rendered["metadata"]["labels"]
    assert after["metadata"]["annotations"].keys() == {*helm, "sandgate.dev/tls-changed-at"}


async def test_a_second_replica_reuses_the_secret(kube: FakeKube, chart: dict[str, Any], tmp_path: Path) -> None:
    await manager(kube, chart, tmp_path / "a").reconcile()
    writes = list(kube.writes())
    await manager(kube, chart, tmp_path / "b").reconcile()
    assert list(kube.writes()) == writes  # nothing updated or patched again
    assert (tmp_path / "b" / "tls.crt").read_bytes() == (tmp_path / "a" / "tls.crt").read_bytes()


async def test_two_replicas_racing_to_fill_it_end_up_serving_the_winners_certificate(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    await manager(kube, chart, tmp_path / "a").reconcile()
    winner = secret(kube, chart)
    kube.stale_reads = 1  # replica b read the empty Secret before a's update landed, then writes too
    await manager(kube, chart, tmp_path / "b").reconcile()
    updates = [c for c in kube.calls if c.verb == "update"]
    assert len(updates) == 2 and secret(kube, chart) == winner  # b's was refused (409): it read again
    assert (tmp_path / "b" / "tls.crt").read_bytes() == winner["tls.crt"]
    assert all(allowed_by_rbac(c, chart["objs"]) for c in kube.calls)


async def test_an_expiring_certificate_is_rotated_and_every_step_keeps_the_served_one_trusted(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    """prepare (both CAs trusted, old cert served) -> promote (new cert served) -> trim (new CA only),
    with the real webhook process serving the files the manager writes."""
    svc = f"{chart['parsed'].service}.{NS}.svc"
    now = dt.datetime.now(dt.UTC)
    clock = Clock(now - dt.timedelta(days=250))  # issued 250 days ago: a third of 365 days is left
    a, b = manager(kube, chart, tmp_path / "a", clock), manager(kube, chart, tmp_path / "b", clock)
    await a.reconcile()
    await b.reconcile()
    old = secret(kube, chart)
    with WebhookProcess(tmp_path / "serve", cert=tmp_path / "a" / "tls.crt", key=tmp_path / "a" / "tls.key") as web:
        assert web.served(bundles(kube, chart)[0], svc) == old["tls.crt"]

        clock.now = now
        await a.reconcile()  # prepare
        data = secret(kube, chart)
        assert len(cas(data["ca.crt"])) == 2 and data["tls.crt"] == old["tls.crt"] and "next.crt" in data
        assert all(b == data["ca.crt"] for b in bundles(kube, chart))
        await b.reconcile()
        assert (tmp_path / "b" / "tls.crt").read_bytes() == old["tls.crt"]  # still the old one everywhere
        assert web.served(bundles(kube, chart)[0], svc) == old["tls.crt"]

        clock.now = now + TIMING.settle / 2
        await a.reconcile()
        assert secret(kube, chart) == data  # not yet: API servers may not all have the new CA

        clock.now = now + TIMING.settle
        await a.reconcile()  # promote
        promoted = secret(kube, chart)
        assert promoted["tls.crt"] == data["next.crt"] and "next.crt" not in promoted
        assert promoted["ca.crt"] == data["ca.crt"] and all(b == data["ca.crt"] for b in bundles(kube, chart))
        # No restart: the server picks the new pair up; both old and new verify against the bundle meanwhile.
        assert web.wait_served(bundles(kube, chart)[0], svc, promoted["tls.crt"])
        await b.reconcile()
        assert (tmp_path / "b" / "tls.crt").read_bytes() == promoted["tls.crt"]

        clock.now = now + 2 * TIMING.settle
        await a.reconcile()  # trim
        trimmed = secret(kube, chart)
        assert cas(trimmed["ca.crt"]) == [cas(data["ca.crt"])[1]] and trimmed["tls.crt"] == promoted["tls.crt"]
        assert all(b == trimmed["ca.crt"] for b in bundles(kube, chart))
        assert web.served(trimmed["ca.crt"], svc) == promoted["tls.crt"]
        with pytest.raises(ssl.SSLCertVerificationError):
            web.served(cas(data["ca.crt"])[0].public_bytes(_PEM), svc)  # the old CA alone no longer works
    assert all(allowed_by_rbac(c, chart["objs"]) for c in kube.calls), kube.calls


def empty(kube: FakeKube, name: str) -> None:
    """`kubectl patch secret NAME --type=json -p '[{"op":"remove","path":"/data"}]'`"""
    live = kube.get("secrets", name, NS)
    assert live is not None
    del live["data"]
    kube.put(live)


async def test_an_emptied_secret_is_rebuilt_without_untrusting_the_served_certificate(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    m = manager(kube, chart, tmp_path / "a")
    await m.reconcile()
    before = secret(kube, chart)
    empty(kube, chart["parsed"].tls_secret)
    await m.reconcile()
    after = secret(kube, chart)
    assert after["tls.crt"] == before["tls.crt"]  # still served, still trusted: a rotation starts
    assert cas(before["ca.crt"])[0] in cas(after["ca.crt"]) and "next.crt" in after
    assert all(b == after["ca.crt"] for b in bundles(kube, chart))


async def test_a_deleted_secret_is_reported_and_not_created_while_the_certificate_is_served_on(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    m = manager(kube, chart, tmp_path / "a")
    await m.reconcile()
    served = (tmp_path / "a" / "tls.crt").read_bytes()
    kube.delete("secrets", chart["parsed"].tls_secret, NS)
    with pytest.raises(MissingSecret, match="helm upgrade"):
        await m.reconcile()
    assert not any(c.verb == "create" for c in kube.calls)
    assert (tmp_path / "a" / "tls.crt").read_bytes() == served and all(b for b in bundles(kube, chart))


async def test_a_damaged_secret_with_no_replica_to_rebuild_it_is_replaced(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    kube.put({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": chart["parsed"].tls_secret, "namespace": NS},
              "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm90IGEga2V5"}})  # fmt: skip
    await manager(kube, chart, tmp_path / "a").reconcile()
    data = secret(kube, chart)
    assert trusted_by(data["tls.crt"], bundles(kube, chart)[0], f"{chart['parsed'].service}.{NS}.svc")


async def test_a_valid_secret_it_did_not_write_is_adopted_as_is(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    """Upgrading from a chart that rendered the Secret and caBundle: the new webhook serves that
    certificate, which the old pods serve and the API server already trusts, instead of a new CA."""
    ca, pair = issue(dns_names(chart["parsed"].service, NS), dt.datetime.now(dt.UTC), TIMING.validity)
    kube.put({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": chart["parsed"].tls_secret, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "Helm"}},
              "data": {"tls.crt": base64.b64encode(pair.cert).decode(), "tls.key": base64.b64encode(pair.key).decode(),
                       "ca.crt": base64.b64encode(ca).decode()}})  # fmt: skip
    await manager(kube, chart, tmp_path / "a").reconcile()
    assert [c.resource for c in kube.writes()] == ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"]
    assert secret(kube, chart)["tls.crt"] == pair.cert == (tmp_path / "a" / "tls.crt").read_bytes()
    assert all(b == ca for b in bundles(kube, chart))


async def test_an_api_error_is_raised_for_the_supervisor_and_the_next_pass_recovers(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    m = manager(kube, chart, tmp_path / "a")
    kube.fail("patch", "validatingwebhookconfigurations", 500)
    with pytest.raises(KubeError):
        await m.reconcile()
    await m.reconcile()
    assert all(b == secret(kube, chart)["ca.crt"] for b in bundles(kube, chart))


# -- the server version (nativeSidecars: auto) ----------------------------------------------------


@pytest.mark.parametrize(
    ("git_version", "expected"),
    [("v1.30.4", "1.30"), ("v1.28.9-eks-036c24b", "1.28"), ("v1.33.1-gke.1584000", "1.33")],
    ids=["plain", "eks", "gke"],
)
def test_the_server_version_is_read_through_the_client(tmp_path: Path, git_version: str, expected: str) -> None:
    with FakeKube(tmp_path, git_version=git_version) as fake:
        assert kubernetes_version(KubeAPI.connect(fake.kubeconfig), "1.27") == expected


def test_an_unreadable_server_version_falls_back_to_the_setting_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeKube(tmp_path) as fake:
        fake.fail("get", "version", 503)
        assert kubernetes_version(KubeAPI.connect(fake.kubeconfig), "1.28") == "1.28"
    line = json.loads(caplog.records[-1].getMessage())
    assert line["source"] == "configured" and "503" in line["error"] and "using the configured 1.28" in line["detail"]


# -- the real webhook process ---------------------------------------------------------------------


class WebhookProcess:
    """``sandgate webhook`` on 127.0.0.1, policies from a directory."""

    def __init__(self, workdir: Path, *args: str, cert: Path, key: Path) -> None:
        self.dir = workdir
        (workdir / "policies").mkdir(parents=True)
        (workdir / "policies" / "default.yaml").write_text(POLICY)
        self.port = free_port()
        self.argv = [sys.executable, "-m", "sandgate", "webhook", "--tls-cert", str(cert), "--tls-key", str(key),
                     "--host", "127.0.0.1", "--port", str(self.port), "--policy-dir", str(workdir / "policies"), *args]  # fmt: skip

    def __enter__(self) -> WebhookProcess:
        self.log = (self.dir / "stderr.log").open("wb")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self.log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("sandgate webhook ready"), self.stderr()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()

    def stderr(self) -> str:
        return (self.dir / "stderr.log").read_text()

    def context(self, bundle: bytes) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name, like the API server
        ctx.load_verify_locations(cadata=bundle.decode())
        return ctx

    def served(self, bundle: bytes, name: str) -> bytes:
        """Handshake trusting only ``bundle``; the served certificate, PEM."""
        with (socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
              self.context(bundle).wrap_socket(raw, server_hostname=name) as tls):  # fmt: skip
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).public_bytes(_PEM)

    def wait_served(self, bundle: bytes, name: str, cert: bytes) -> bool:
        deadline = time.monotonic() + 20
        while self.served(bundle, name) != cert:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def mutate(self, bundle: bytes, name: str) -> dict[str, Any]:
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": {"uid": "u1", "namespace": "sandbox-a", "operation": "CREATE", "object": POD,
                              "kind": {"group": "", "version": "v1", "kind": "Pod"},
                              "resource": {"group": "", "version": "v1", "resource": "pods"},
                              "userInfo": {"username": "tenant"}}}  # fmt: skip
        body = json.dumps(review).encode()
        request = (f"POST /mutate HTTP/1.1\r\nHost: {name}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body  # fmt: skip
        with (socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
              self.context(bundle).wrap_socket(raw, server_hostname=name) as tls):  # fmt: skip
            tls.sendall(request)
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        response: dict[str, Any] = json.loads(payload)["response"]
        return response

    def metrics(self, bundle: bytes, name: str) -> str:
        with (socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
              self.context(bundle).wrap_socket(raw, server_hostname=name) as tls):  # fmt: skip
            tls.sendall(f"GET /metrics HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        return answer.partition(b"\r\n\r\n")[2].decode()


def chart_args(chart: dict[str, Any], kube: FakeKube, *extra: str) -> list[str]:
    """The chart's own certificate arguments, pointed at the fake API server."""
    a = chart["parsed"]
    return ["--kubeconfig", str(kube.kubeconfig), "--tls-secret", a.tls_secret, "--namespace", a.namespace,
            "--service", a.service, "--webhook-configuration", a.webhook_configuration,
            "--tls-validity-days", str(a.tls_validity_days), *extra]  # fmt: skip


def test_the_webhook_creates_its_certificate_and_a_client_trusting_only_the_ca_bundle_is_served(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    svc = f"{chart['parsed'].service}.{NS}.svc"
    files = tmp_path / "tls-a"
    files.mkdir()
    with WebhookProcess(tmp_path / "a", *chart_args(chart, kube, "--kubernetes-version", "1.28"),
                        cert=files / "tls.crt", key=files / "tls.key") as first:  # fmt: skip
        data = secret(kube, chart)
        assert all(b == data["ca.crt"] for b in bundles(kube, chart))
        assert first.served(bundles(kube, chart)[0], svc) == data["tls.crt"]
        # A second replica reuses it: same certificate, no second write.
        writes = list(kube.writes())
        (tmp_path / "tls-b").mkdir()
        with WebhookProcess(tmp_path / "b", *chart_args(chart, kube),
                            cert=tmp_path / "tls-b" / "tls.crt", key=tmp_path / "tls-b" / "tls.key") as second:  # fmt: skip
            assert second.served(bundles(kube, chart)[1], svc) == data["tls.crt"]
        assert list(kube.writes()) == writes
        # The server version (1.30 here) beats the configured 1.28: the proxy is a native sidecar.
        response = first.mutate(bundles(kube, chart)[0], svc)
        patch = json.loads(base64.b64decode(response["patch"]))
        proxy = next(op["value"] for op in patch if op["path"].startswith("/spec/initContainers"))
        proxy = proxy[0] if isinstance(proxy, list) else proxy
        assert response["allowed"] is True and proxy["name"] == "sandgate-proxy" and proxy["restartPolicy"] == "Always"
    log = [json.loads(line) for line in first.stderr().splitlines() if line.startswith("{")]
    assert {"event": "kubernetes_version", "source": "server", "version": "1.30"} in log
    assert any(e.get("event") == "tls" and e.get("action") == "create" for e in log)
    assert "PRIVATE KEY" not in first.stderr()
    assert all(allowed_by_rbac(c, chart["objs"]) for c in kube.calls), kube.calls


def test_without_a_server_version_the_webhook_uses_the_configured_one_and_logs_why(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    kube.fail("get", "version", 500)
    svc = f"{chart['parsed'].service}.{NS}.svc"
    files = tmp_path / "tls"
    files.mkdir()
    with WebhookProcess(tmp_path / "a", *chart_args(chart, kube, "--kubernetes-version", "1.28"),
                        cert=files / "tls.crt", key=files / "tls.key") as web:  # fmt: skip
        patch = json.loads(base64.b64decode(web.mutate(bundles(kube, chart)[0], svc)["patch"]))
    assert not any(op["path"].startswith("/spec/initContainers") and "sandgate-proxy" in json.dumps(op["value"])
                   for op in patch)  # fmt: skip
    warning = next(json.loads(line) for line in web.stderr().splitlines() if '"kubernetes_version"' in line)
    assert warning["source"] == "configured" and warning["version"] == "1.28" and "500" in warning["error"]


def test_background_failures_are_counted_and_the_webhook_keeps_serving(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    svc = f"{chart['parsed'].service}.{NS}.svc"
    files = tmp_path / "tls"
    files.mkdir()
    with WebhookProcess(tmp_path / "a", *chart_args(chart, kube, "--tls-check-interval", "0.2"),
                        cert=files / "tls.crt", key=files / "tls.key") as web:  # fmt: skip
        bundle = bundles(kube, chart)[0]
        kube.fail("get", "secrets", 503, times=2)
        deadline = time.monotonic() + 30
        pattern = r'sandgate_internal_errors_total\{task="webhook-certificates"\} (\d+)'
        while not (found := re.search(pattern, web.metrics(bundle, svc))) or int(float(found[1])) < 2:
            assert time.monotonic() < deadline, web.stderr()
            time.sleep(0.1)
        assert web.proc.poll() is None and web.mutate(bundle, svc)["allowed"] is True
    errors = [json.loads(line) for line in web.stderr().splitlines() if '"internal_error"' in line]
    assert {e["task"] for e in errors} == {"webhook-certificates"} and {e["error"] for e in errors} == {"KubeError"}


def test_the_webhook_refuses_to_start_when_it_cannot_reach_its_certificate(
    kube: FakeKube, chart: dict[str, Any], tmp_path: Path
) -> None:
    kube.delete("secrets", chart["parsed"].tls_secret, NS)
    files = tmp_path / "tls"
    files.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "sandgate", "webhook", "--tls-cert", str(files / "tls.crt"), "--tls-key", str(files / "tls.key"),
         "--policy-dir", str(tmp_path), *chart_args(chart, kube)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"--tls-secret {chart['parsed'].tls_secret}: secret {NS}/{chart['parsed'].tls_secret} does not exist"
        in proc.stderr
    ) and "helm upgrade" in proc.stderr


# -- the pure core --------------------------------------------------------------------------------

NAMES = dns_names("sandgate-webhook", NS)
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _state(at: dt.datetime, validity: dt.timedelta = TIMING.validity) -> TLSState:
    ca, pair = issue(NAMES, at, validity)
    return TLSState(pair, ca, at)


def _rotating(at: dt.datetime) -> TLSState:
    """Prepared at ``at``: old pair served, successor waiting, both CAs in the bundle."""
    step = plan(_state(at - dt.timedelta(days=300)), names=NAMES, now=at, timing=TIMING)
    assert step.action == "prepare"
    return step.state


def _issuer_pem(state: TLSState, pair: Pair) -> bytes:
    cert = x509.load_pem_x509_certificate(pair.cert)
    for ca in cas(state.bundle):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca.public_bytes(_PEM)
    raise AssertionError("no issuer")


@pytest.mark.parametrize(
    ("make", "now", "trusted", "action"),
    [
        (lambda: None, T0, "bundle", "create"),
        (lambda: _state(T0), T0 + dt.timedelta(days=200), "bundle", "keep"),
        (lambda: _state(T0), T0 + dt.timedelta(days=250), "bundle", "prepare"),
        (lambda: _state(T0, dt.timedelta(days=30)), T0 + dt.timedelta(days=366), "bundle", "create"),
        (lambda: _rotating(T0), T0 + dt.timedelta(minutes=4), "bundle", "keep"),
        (lambda: _rotating(T0), T0 + dt.timedelta(minutes=5), "old", "keep"),
        (lambda: _rotating(T0), T0 + dt.timedelta(minutes=5), "none", "keep"),
        (lambda: _rotating(T0), T0 + dt.timedelta(minutes=5), "bundle", "promote"),
    ],
    ids=["missing", "valid", "a-third-left", "expired", "rotating-not-settled", "new-ca-not-trusted-yet",
         "no-configurations", "rotating-settled-and-trusted"],
)  # fmt: skip
def test_plan(make: Any, now: dt.datetime, trusted: str, action: str) -> None:
    current = make()
    bundle = {"bundle": [current.bundle] * 2 if current else [], "none": [],
              "old": [_issuer_pem(current, current.serving)] * 2 if current else []}[trusted]  # fmt: skip
    assert plan(current, names=NAMES, now=now, timing=TIMING, trusted=bundle).action == action


def test_a_promoted_state_is_trimmed_only_after_it_settles() -> None:
    rotating = _rotating(T0)
    promoted = plan(rotating, names=NAMES, now=T0 + TIMING.settle, timing=TIMING, trusted=[rotating.bundle]).state
    later = T0 + TIMING.settle
    assert plan(promoted, names=NAMES, now=later + TIMING.settle / 2, timing=TIMING).action == "keep"
    trimmed = plan(promoted, names=NAMES, now=later + TIMING.settle, timing=TIMING)
    assert trimmed.action == "trim" and cas(trimmed.state.bundle) == [cas(rotating.bundle)[1]]


@pytest.mark.parametrize("how", ["future-change-time", "third-ca"])
def test_rt32_a_ca_someone_adds_to_the_bundle_does_not_stay_trusted(how: str) -> None:
    """Whoever may write the Secret (release-namespace admins, the webhook's own account) added a CA
    of theirs and set the change time in the future: the state never settled, so the CA was never
    trimmed and every pass copied it into both caBundles."""
    ca, pair = issue(NAMES, T0, TIMING.validity)
    theirs, _ = issue(["evil.example"], T0, TIMING.validity)
    legit = TLSState(pair, ca, T0)
    if how == "future-change-time":
        poisoned = TLSState(pair, ca + theirs, dt.datetime(9999, 12, 31, tzinfo=dt.UTC))
    else:
        poisoned = TLSState(pair, ca + theirs + issue(NAMES, T0, TIMING.validity)[0], T0)
    for remembered in (legit, None):
        step = plan(poisoned, names=NAMES, now=T0 + dt.timedelta(days=30), timing=TIMING, remembered=remembered)
        assert step.action in ("rebuild", "create") and theirs not in step.state.bundle, step
        if remembered is not None:  # this replica's certificate stays served and trusted meanwhile
            assert step.state.serving == pair and ca in step.state.bundle


def test_a_certificate_for_other_names_is_replaced() -> None:
    ca, pair = issue(dns_names("old-name", NS), T0, TIMING.validity)
    step = plan(TLSState(pair, ca, T0), names=NAMES, now=T0, timing=TIMING)
    assert step.action == "create" and "does not name sandgate-webhook" in step.reason


# Checks minutes apart (within a rotation step) or months apart (to reach the renewal window).
MINUTES = st.one_of(st.integers(1, 15), st.integers(60 * 24 * 20, 60 * 24 * 200))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MINUTES, min_size=2, max_size=30))
def test_property_no_step_serves_or_untrusts_a_certificate_before_its_time(gaps: list[int]) -> None:
    """Over any sequence of checks (gaps in minutes): a newly served certificate's CA was in the
    bundle for at least ``settle`` before; a CA leaves the bundle only when the served certificate
    has been served for at least ``settle``; the served certificate's CA is always trusted."""
    now = T0
    state = plan(None, names=NAMES, now=now, timing=TIMING).state
    for gap in gaps:
        now += dt.timedelta(minutes=gap)
        step = plan(state, names=NAMES, now=now, timing=TIMING, trusted=[state.bundle])
        new = step.state
        if step.action == "create":  # everything expired between two checks: nothing left to keep
            assert now >= x509.load_pem_x509_certificate(state.serving.cert).not_valid_after_utc
        else:
            assert _issuer_pem(new, new.serving) in [c.public_bytes(_PEM) for c in cas(new.bundle)]
            if new.serving != state.serving:
                assert _issuer_pem(new, new.serving) in [c.public_bytes(_PEM) for c in cas(state.bundle)]
                assert now - state.changed_at >= TIMING.settle
            if set(c.public_bytes(_PEM) for c in cas(state.bundle)) - set(
                c.public_bytes(_PEM) for c in cas(new.bundle)
            ):
                assert new.serving == state.serving and now - state.changed_at >= TIMING.settle
        state = new


async def test_the_loop_checks_until_cancelled(kube: FakeKube, chart: dict[str, Any], tmp_path: Path) -> None:
    """run() never returns on its own (the Supervisor would count that as a failure)."""
    m = manager(kube, chart, tmp_path / "a")
    m.interval = 0.01
    task = asyncio.ensure_future(m.run())
    while kube.get("secrets", chart["parsed"].tls_secret, NS) is None:
        await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
