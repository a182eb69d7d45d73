"""The Helm chart, rendered and linted with the real Helm SDK (helm-python-sdk, Helm v4), every
object validated with kubernetes-validate --strict for 1.30 and 1.33, and checked against what the
webhook and the injector actually expect."""

from __future__ import annotations

import base64
import copy
import datetime
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from injector.config import parse_config
from proxy.policy.load import parse_policy
from sandgate.cli import build_parser

CHART = Path(__file__).resolve().parents[2] / "charts" / "sandgate"
NS = "sandgate-system"
CRDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate"}

OPTIONS = {
    "defaults": {},
    "cert-manager": {
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca-issuer", "kind": "ClusterIssuer"}}}
    },
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        }
    },
    "gke": {"injector": {"gkeSandbox": True}, "runtimeClass": {"gkeScheduling": True}},
    "explicit-no-runtimeclass": {
        "injector": {"mode": "explicit", "nativeSidecars": "never"},
        "runtimeClass": {"create": False},
    },
    "example-policy": {"examplePolicy": {"enabled": True, "namespace": "agents"}},
    "pinned-vault": {
        "image": {"digest": "sha256:" + "a" * 64},
        "injector": {"vault": {"addr": "https://vault.vault.svc:8200"}},
    },
    "writers-and-version": {
        "webhook": {"policyWriters": ["group:sec", "user:alice"], "kubernetesVersion": "1.28", "replicas": 3}
    },
}


def merged(overrides: dict[str, Any]) -> dict[str, Any]:
    base = yaml.safe_load((CHART / "values.yaml").read_text())

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(a)
        for key, value in b.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    return merge(base, overrides)


def render(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(str(CHART))
    files = chart.render(values=overrides, name="sandgate", namespace=NS)
    return [doc for name, text in files.items() if name.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_rendered_object_is_valid_for_1_30_and_1_33(option: str) -> None:
    objs = render(OPTIONS[option])
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                          "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "PodDisruptionBudget",
                                          "ConfigMap"}  # fmt: skip
    for obj in objs:
        if obj["kind"] in CRDS:
            continue
        for version in ("1.30", "1.33"):
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_strict_lint_is_clean(option: str) -> None:
    for kube in ("1.30.0", "1.33.0"):
        result = helm_python.lint(str(CHART), merged(OPTIONS[option]), strict=True, kube_version=kube, namespace=NS)
        assert result["errors"] == []
        assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": 1},
        {"injector": {"mode": "sometimes"}},
        {"injector": {"vault": {"addr": "http://vault:8200"}}},
        {"webhook": {"policyWriters": ["alice"]}},
        {"image": {"digest": "latest"}},
        {"monitoring": {"podMonitor": {"enabled": True, "extra": 1}}},
    ],
    ids=["unknown-key", "bad-enum", "plain-http-vault", "writer-format", "bad-digest", "nested-unknown"],
)
def test_values_that_break_the_schema_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(bad)


def test_cert_manager_needs_an_issuer() -> None:
    with pytest.raises(helm_python.HelmError, match=r"issuerRef\.name is required"):
        render({"tls": {"certManager": {"enabled": True}}})


def test_the_webhook_configurations_point_at_the_webhook_and_trust_its_certificate() -> None:
    objs = render({})
    mwc = find(objs, "MutatingWebhookConfiguration")["webhooks"][0]
    vwc = find(objs, "ValidatingWebhookConfiguration")["webhooks"][0]
    service = find(objs, "Service")
    deployment = find(objs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert mwc["clientConfig"]["service"]["path"] == "/mutate" and vwc["clientConfig"]["service"]["path"] == "/validate"
    for hook in (mwc, vwc):
        assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
        assert hook["clientConfig"]["service"]["namespace"] == NS
        assert (
            hook["failurePolicy"] == "Fail"
            and hook["sideEffects"] == "None"
            and hook["admissionReviewVersions"] == ["v1"]
        )
    svc_port = next(p for p in service["spec"]["ports"] if p["port"] == mwc["clientConfig"]["service"]["port"])
    container_port = next(p for p in container["ports"] if p["name"] == svc_port["targetPort"])
    args = build_parser().parse_args(container["args"])
    assert args.command == "webhook" and args.port == container_port["containerPort"]
    assert mwc["namespaceSelector"]["matchLabels"] == {"sandgate.dev/inject": "enabled"}
    assert set(mwc["namespaceSelector"]["matchExpressions"][0]["values"]) >= {NS, "kube-system"}
    assert {"pods", "pods/ephemeralcontainers"} <= set(mwc["rules"][0]["resources"]) and "CREATE" in mwc["rules"][0][
        "operations"
    ]
    # The CA in caBundle signed the serving certificate, which names the Service.
    secret = find(objs, "Secret")
    ca = x509.load_pem_x509_certificate(base64.b64decode(mwc["clientConfig"]["caBundle"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"{service['metadata']['name']}.{NS}.svc" in names
    assert leaf.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
    assert mwc["clientConfig"]["caBundle"] == vwc["clientConfig"]["caBundle"]


def test_the_injector_config_is_what_the_webhook_reads() -> None:
    objs = render(OPTIONS["pinned-vault"])
    cm = find(objs, "ConfigMap", "sandgate-injector")
    config = parse_config(cm["data"]["injector.yaml"])
    assert config.image == "ghcr.io/sandgate/sandgate@sha256:" + "a" * 64
    assert config.vault_addr == "https://vault.vault.svc:8200" and config.proxy_uid == 1337
    assert NS in config.exempt_namespaces


def test_rbac_is_read_configmaps_only() -> None:
    role = find(render({}), "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]


def test_the_example_policy_is_a_valid_policy() -> None:
    cm = find(render(OPTIONS["example-policy"]), "ConfigMap", "default")
    assert cm["metadata"]["namespace"] == "agents" and cm["metadata"]["labels"]["sandgate.dev/policy"] == "true"
    assert parse_policy(cm["data"]["policy.yaml"]).name == "default"


def test_every_values_key_is_documented() -> None:
    """Each key in values.yaml has a comment on the line(s) above it or a section comment."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        if stripped.endswith(":") and not stripped.startswith(("requests", "limits")):
            continue  # a section header
        previous = lines[i - 1].strip() if i else ""
        if not previous.startswith("#") and not stripped.startswith(("requests", "limits", "name:", "kind:")):
            undocumented.append(stripped)
    assert undocumented == []
