"""The Helm chart, rendered and linted with the real Helm SDK (helm-python-sdk, Helm v4), every
object validated with kubernetes-validate --strict for 1.30 and 1.33, and checked against what the
webhook and the injector actually expect."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from injector.config import parse_config
from proxy.policy.load import parse_policy
from sandgate.cli import build_parser

CHART = Path(__file__).resolve().parents[2] / "charts" / "sandgate"
NS = "sandgate-system"
CRDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate"}
KUBE_VERSIONS = ("1.30", "1.33")

CERT_MANAGER = {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca-issuer", "kind": "ClusterIssuer"}}}}
ALL_MONITORING = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    }
}

OPTIONS = {
    "defaults": {},
    "cert-manager": CERT_MANAGER,
    "monitoring": ALL_MONITORING,
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


def render_files(overrides: dict[str, Any], **kw: Any) -> dict[str, str]:
    chart = helm_python.Chart.load(str(CHART))
    return chart.render(values=overrides, name="sandgate", namespace=NS, **kw)


def render(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    files = render_files(overrides)
    return [doc for name, text in files.items() if name.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def kinds(objs: list[dict[str, Any]]) -> list[str]:
    return [o["kind"] for o in objs]


def pod_spec(objs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(objs, "Deployment")["spec"]["template"]["spec"]
    return spec


def webhook_args(objs: list[dict[str, Any]]) -> Any:
    return build_parser().parse_args(pod_spec(objs)["containers"][0]["args"])


def validate_all(objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        if obj["kind"] in CRDS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def lint_clean(overrides: dict[str, Any]) -> None:
    for kube in ("1.30.0", "1.33.0"):
        result = helm_python.lint(str(CHART), merged(overrides), strict=True, kube_version=kube, namespace=NS)
        assert result["errors"] == []
        assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_rendered_object_is_valid_for_1_30_and_1_33(option: str) -> None:
    objs = render(OPTIONS[option])
    assert set(kinds(objs)) >= {"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "PodDisruptionBudget",
                                "ConfigMap"}  # fmt: skip
    validate_all(objs)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_strict_lint_is_clean(option: str) -> None:
    lint_clean(OPTIONS[option])


# -- upgrades and GitOps: nothing changes unless the values do ------------------------------------


@pytest.mark.parametrize("option", list(OPTIONS))
def test_two_renders_and_an_upgrade_with_the_same_values_are_byte_identical(option: str) -> None:
    first = render_files(OPTIONS[option])
    assert render_files(OPTIONS[option]) == first
    assert render_files(OPTIONS[option], is_upgrade=True, is_install=False, revision=7) == first


def test_two_dry_run_installs_produce_the_same_manifest() -> None:
    helm = helm_python.Config(storage_driver="memory", namespace=NS)
    one = helm.install(str(CHART), "sandgate", {}, namespace=NS, dry_run="client")
    two = helm.install(str(CHART), "sandgate", {}, namespace=NS, dry_run="client")
    assert one["manifest"] == two["manifest"] and one["notes"] == two["notes"]


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


@pytest.mark.parametrize("option", list(OPTIONS))
def test_the_chart_renders_no_key_material_and_no_ca_bundle(option: str) -> None:
    assert "-----BEGIN" not in "".join(render_files(OPTIONS[option]).values())
    objs = render(OPTIONS[option])
    secrets = [o for o in objs if o["kind"] == "Secret"]
    assert all("data" not in o and "stringData" not in o for o in secrets) and "caBundle" not in _keys(objs)


# -- the webhook owns its certificate (default) or cert-manager does ------------------------------


def test_the_webhook_configurations_point_at_the_webhook_that_owns_their_ca_bundle() -> None:
    objs = render({})
    mwc = find(objs, "MutatingWebhookConfiguration")
    vwc = find(objs, "ValidatingWebhookConfiguration")
    service = find(objs, "Service")
    container = pod_spec(objs)["containers"][0]
    assert mwc["webhooks"][0]["clientConfig"]["service"]["path"] == "/mutate"
    assert vwc["webhooks"][0]["clientConfig"]["service"]["path"] == "/validate"
    for hook in (*mwc["webhooks"], *vwc["webhooks"]):
        assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
        assert hook["clientConfig"]["service"]["namespace"] == NS
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"] and "caBundle" not in hook["clientConfig"]
    svc_port = next(
        p for p in service["spec"]["ports"] if p["port"] == mwc["webhooks"][0]["clientConfig"]["service"]["port"]
    )
    container_port = next(p for p in container["ports"] if p["name"] == svc_port["targetPort"])
    args = webhook_args(objs)
    assert args.command == "webhook" and args.port == container_port["containerPort"]
    # The certificate manager is told exactly the names the chart gave the objects it must keep.
    assert args.service == service["metadata"]["name"] and args.namespace == NS
    assert args.webhook_configuration == mwc["metadata"]["name"] == vwc["metadata"]["name"]
    assert args.tls_secret == f"{service['metadata']['name']}-tls" and args.tls_validity_days == 365
    assert args.tls_cert.parent == args.tls_key.parent
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == args.tls_cert.parent)
    volume = next(v for v in pod_spec(objs)["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory" and mount["readOnly"] is False
    assert mwc["webhooks"][0]["namespaceSelector"]["matchLabels"] == {"sandgate.dev/inject": "enabled"}
    assert set(mwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]) >= {NS, "kube-system"}
    assert {"pods", "pods/ephemeralcontainers"} <= set(mwc["webhooks"][0]["rules"][0]["resources"])
    assert {"pods/resize"} <= set(
        mwc["webhooks"][0]["rules"][0]["resources"]
    )  # (Sandgate's containers are not resized)
    by_name = {w["name"]: w for w in vwc["webhooks"]}
    assert by_name["policies.sandgate.dev"]["objectSelector"]["matchLabels"] == {"sandgate.dev/policy": "true"}
    # Every ConfigMap of an opted-in namespace: a sidecar mounts its policy by name, label or not.
    every = by_name["configmaps.sandgate.dev"]
    assert "objectSelector" not in every and every["namespaceSelector"] == mwc["webhooks"][0]["namespaceSelector"]
    connect = [r for r in mwc["webhooks"][0]["rules"] if r["operations"] == ["CONNECT"]]
    assert connect and set(connect[0]["resources"]) == {"pods/exec", "pods/attach"}  # (no exec into the sidecar)


def test_with_cert_manager_the_webhook_serves_the_issued_secret_and_needs_no_rbac_for_it() -> None:
    objs = render(CERT_MANAGER)
    certificate = find(objs, "Certificate")
    service = find(objs, "Service")
    args = webhook_args(objs)
    assert args.tls_secret is None
    mount = next(
        m for m in pod_spec(objs)["containers"][0]["volumeMounts"] if Path(m["mountPath"]) == args.tls_cert.parent
    )
    volume = next(v for v in pod_spec(objs)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert f"{service['metadata']['name']}.{NS}.svc" in certificate["spec"]["dnsNames"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = find(objs, kind)["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NS}/{certificate['metadata']['name']}"
    assert "Role" not in kinds(objs)
    assert find(objs, "ClusterRole")["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]


def test_cert_manager_needs_an_issuer() -> None:
    with pytest.raises(helm_python.HelmError, match=r"issuerRef\.name is required"):
        render({"tls": {"certManager": {"enabled": True}}})


def test_rbac_is_policy_reads_plus_the_one_secret_and_the_two_configurations() -> None:
    objs = render({})
    name = find(objs, "Service")["metadata"]["name"]
    assert find(objs, "ClusterRole")["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
         "resourceNames": [name], "verbs": ["get", "patch"]},
    ]  # fmt: skip
    role = find(objs, "Role")
    assert role["metadata"]["namespace"] == NS
    # No create (it cannot be limited to a name: any Secret here, Helm's release records too): the
    # chart renders the Secret, empty, and the webhook fills it.
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [f"{name}-tls"], "verbs": ["get", "update"]},
    ]
    secret = find(objs, "Secret", f"{name}-tls")
    assert secret["metadata"]["namespace"] == NS and secret["type"] == "Opaque" and "data" not in secret
    binding = find(objs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod_spec(objs)["serviceAccountName"], "namespace": NS}
    ]


def test_the_webhook_pod_meets_pod_security_restricted() -> None:
    """The release namespace can enforce restricted: only the injected pods need more."""
    spec = pod_spec(render({}))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"]:
        ctx = c["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
        assert not ctx.get("privileged") and "add" not in ctx["capabilities"]
    assert all(set(v) & {"emptyDir", "configMap", "secret", "projected"} for v in spec["volumes"])
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))


# -- every knob a platform team sets ---------------------------------------------------------------

Check = Callable[[list[dict[str, Any]]], None]


def _sm(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objs, "ServiceMonitor")


def _check_pod_field(field: str, value: Any) -> Check:
    def check(objs: list[dict[str, Any]]) -> None:
        assert pod_spec(objs)[field] == value

    return check


def _check_names(prefix: str, name_label: str) -> Check:
    def check(objs: list[dict[str, Any]]) -> None:
        webhook = f"{prefix}-webhook"
        for kind in ("Deployment", "Service", "ServiceAccount", "MutatingWebhookConfiguration",
                     "ValidatingWebhookConfiguration", "ClusterRole", "Role"):  # fmt: skip
            assert find(objs, kind)["metadata"]["name"] == webhook
        assert find(objs, "ConfigMap", f"{prefix}-injector")
        assert (
            find(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == name_label
        )
        args = webhook_args(objs)
        assert (args.service, args.webhook_configuration, args.tls_secret) == (webhook, webhook, f"{webhook}-tls")
        for hook in find(objs, "MutatingWebhookConfiguration")["webhooks"]:
            assert hook["clientConfig"]["service"]["name"] == webhook

    return check


def _check_monitor(kind: str) -> Check:
    def check(objs: list[dict[str, Any]]) -> None:
        obj = find(objs, kind)
        assert obj["metadata"]["namespace"] == "monitoring"
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    return check


def _check_pod_monitor_scrapes_only_sidecars(objs: list[dict[str, Any]]) -> None:
    """Red team 31: any pod's port named sg-metrics was scraped, feeding the audit rules series (and
    secret names in pages) of its choosing. Only Sandgate's container of an injected pod is kept."""
    pm = find(objs, "PodMonitor")
    keep = {
        (r["sourceLabels"][0], r["regex"])
        for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]
        if r["action"] == "keep"
    }
    assert keep == {("__meta_kubernetes_pod_container_name", "sandgate-proxy"),
                    ("__meta_kubernetes_pod_annotation_sandgate_dev_status", "injected")}  # fmt: skip
    assert pm["spec"]["sampleLimit"] == 50000


def _check_service_monitor(objs: list[dict[str, Any]]) -> None:
    _check_monitor("ServiceMonitor")(objs)
    sm = _sm(objs)
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NS]}  # the Service stays in the release namespace
    assert sm["spec"]["endpoints"][0]["tlsConfig"] == {"ca": {"secret": {"name": "copied-ca", "key": "ca.crt"}},
                                                       "serverName": f"sandgate-webhook.{NS}.svc"}  # fmt: skip
    service = find(objs, "Service")
    assert all(service["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())


def _check_dashboard(objs: list[dict[str, Any]]) -> None:
    cm = find(objs, "ConfigMap", "sandgate-dashboard")
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["team"] == "sec"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Sandgate"}


def _check_injector(**expected: Any) -> Check:
    def check(objs: list[dict[str, Any]]) -> None:
        config = parse_config(find(objs, "ConfigMap", "sandgate-injector")["data"]["injector.yaml"])
        for key, value in expected.items():
            assert getattr(config, key) == value

    return check


def _check_pdb_lets_drain_evict(objs: list[dict[str, Any]]) -> None:
    replicas = find(objs, "Deployment")["spec"]["replicas"]
    pdb = find(objs, "PodDisruptionBudget")["spec"]
    assert "minAvailable" not in pdb and replicas == 1
    assert pdb["maxUnavailable"] >= 1  # with one healthy replica, one eviction is allowed: drain proceeds


def _check_args(**expected: Any) -> Check:
    def check(objs: list[dict[str, Any]]) -> None:
        args = webhook_args(objs)
        for key, value in expected.items():
            assert getattr(args, key) == value

    return check


TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}
AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}  # fmt: skip
SPREAD = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
          "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "webhook"}}}  # fmt: skip
GKE_SA = {"iam.gke.io/gcp-service-account": "sg@p.iam.gserviceaccount.com"}
KPS = {"release": "kube-prometheus-stack"}  # what a default kube-prometheus-stack selects on
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def _check_policy_reads_in(*namespaces: str) -> Check:
    """ConfigMaps are read in these namespaces only: no cluster-wide rule, a RoleBinding in each."""

    def check(objs: list[dict[str, Any]]) -> None:
        name = find(objs, "Service")["metadata"]["name"]
        assert all("configmaps" not in r["resources"] for r in find(objs, "ClusterRole", name)["rules"])
        reader = find(objs, "ClusterRole", f"{name}-policy-reader")
        assert reader["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
        bindings = [
            o for o in objs if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == reader["metadata"]["name"]
        ]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(namespaces)
        assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NS}] for b in bindings)

    return check


def _template(objs: list[dict[str, Any]]) -> dict[str, Any]:
    meta: dict[str, Any] = find(objs, "Deployment")["spec"]["template"]["metadata"]
    return meta


# fmt: off
KNOBS: dict[str, tuple[dict[str, Any], Check]] = {
    "nodeSelector": ({"webhook": {"nodeSelector": {"pool": "system"}}}, _check_pod_field("nodeSelector", {"pool": "system"})),
    "tolerations": ({"webhook": {"tolerations": [TOLERATION]}}, _check_pod_field("tolerations", [TOLERATION])),
    "affinity": ({"webhook": {"affinity": AFFINITY}}, _check_pod_field("affinity", AFFINITY)),
    "topologySpreadConstraints": ({"webhook": {"topologySpreadConstraints": [SPREAD]}},
                                  _check_pod_field("topologySpreadConstraints", [SPREAD])),
    "priorityClassName": ({"webhook": {"priorityClassName": "system-cluster-critical"}},
                          _check_pod_field("priorityClassName", "system-cluster-critical")),
    "imagePullSecrets": ({"imagePullSecrets": [{"name": "regcred"}]}, _check_pod_field("imagePullSecrets", [{"name": "regcred"}])),
    "podAnnotations": ({"webhook": {"podAnnotations": {"example.com/team": "platform"}}},
                       lambda objs: _assert_subset({"example.com/team": "platform"}, _template(objs)["annotations"])),
    "podLabels": ({"webhook": {"podLabels": {"team": "platform"}}},
                  lambda objs: _assert_subset({"team": "platform"}, _template(objs)["labels"])),
    "serviceAccount.annotations": ({"webhook": {"serviceAccount": {"annotations": GKE_SA}}},
                                   lambda objs: _assert_subset(GKE_SA, find(objs, "ServiceAccount")["metadata"]["annotations"])),
    "nameOverride": ({"nameOverride": "egress"}, _check_names("sandgate-egress", "egress")),
    "fullnameOverride": ({"fullnameOverride": "sg"}, _check_names("sg", "sandgate")),
    "serviceMonitor-labels-namespace": (
        {"monitoring": {"serviceMonitor": {"enabled": True, "namespace": "monitoring", "labels": KPS, "tlsConfig": {
            "ca": {"secret": {"name": "copied-ca", "key": "ca.crt"}}, "serverName": f"sandgate-webhook.{NS}.svc"}}}},
        _check_service_monitor),
    "podMonitor-labels-namespace": ({"monitoring": {"podMonitor": {"enabled": True, "namespace": "monitoring", "labels": KPS}}},
                                    lambda objs: (_check_monitor("PodMonitor")(objs), _check_pod_monitor_scrapes_only_sidecars(objs))),
    "prometheusRule-labels-namespace": (
        {"monitoring": {"prometheusRule": {"enabled": True, "namespace": "monitoring", "labels": KPS}}},
        _check_monitor("PrometheusRule")),
    "dashboard-labels-annotations": (
        {"monitoring": {"dashboard": {"enabled": True, "namespace": "grafana", "labels": {"grafana_dashboard": "1", "team": "sec"},
                                      "annotations": {"grafana_folder": "Sandgate"}}}},
        _check_dashboard),
    "exemptLabels": ({"injector": {"exemptLabels": {"ci.example.com/system": "true"}}},
                     _check_injector(exempt_labels={"ci.example.com/system": "true"})),
    "image.tag-defaults-to-appVersion": ({}, _check_injector(image=f"ghcr.io/sandgate/sandgate:{APP_VERSION}")),
    "image.repository-and-tag": (
        {"image": {"repository": "registry.example.com/platform/sandgate", "tag": "2025.1"}},
        lambda objs: (_check_injector(image="registry.example.com/platform/sandgate:2025.1")(objs),
                      _assert_equal(pod_spec(objs)["containers"][0]["image"], "registry.example.com/platform/sandgate:2025.1"))),
    "one-replica-drains": ({"webhook": {"replicas": 1}}, _check_pdb_lets_drain_evict),
    "pdb-disabled": ({"webhook": {"podDisruptionBudget": {"enabled": False}}},
                     lambda objs: _assert_equal("PodDisruptionBudget" in kinds(objs), False)),
    "kubernetesVersion-fallback": ({"webhook": {"kubernetesVersion": "1.28"}}, _check_args(kubernetes_version="1.28")),
    "kubernetesVersion-unset": ({}, _check_args(kubernetes_version=None)),
    "tls.validityDays": ({"tls": {"validityDays": 90}}, _check_args(tls_validity_days=90)),
    "policyNamespaces": ({"webhook": {"policyNamespaces": ["agents-a", "agents-b"]}}, _check_policy_reads_in("agents-a", "agents-b")),
}
# fmt: on


def _assert_subset(expected: dict[str, str], actual: dict[str, str]) -> None:
    assert {k: actual.get(k) for k in expected} == expected


def _assert_equal(a: Any, b: Any) -> None:
    assert a == b


@pytest.mark.parametrize("knob", list(KNOBS))
def test_every_knob_renders_validates_lints_and_takes_effect(knob: str) -> None:
    values, check = KNOBS[knob]
    objs = render(values)
    validate_all(objs)
    lint_clean(values)
    check(objs)


def test_a_service_monitor_in_another_namespace_needs_its_own_tls_config() -> None:
    with pytest.raises(
        helm_python.HelmError,
        match=r"monitoring\.serviceMonitor\.namespace: .* set monitoring\.serviceMonitor\.tlsConfig",
    ):
        render({"monitoring": {"serviceMonitor": {"enabled": True, "namespace": "monitoring"}}})


def test_by_default_the_service_monitor_verifies_with_the_webhooks_ca() -> None:
    objs = render(ALL_MONITORING)
    tls = _sm(objs)["spec"]["endpoints"][0]["tlsConfig"]
    assert tls["ca"]["secret"] == {"name": webhook_args(objs).tls_secret, "key": "ca.crt"}
    assert tls["serverName"] == f"sandgate-webhook.{NS}.svc"


@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": 1},
        {"injector": {"mode": "sometimes"}},
        {"injector": {"vault": {"addr": "http://vault:8200"}}},
        {"webhook": {"policyWriters": ["alice"]}},
        {"image": {"digest": "latest"}},
        {"monitoring": {"podMonitor": {"enabled": True, "extra": 1}}},
        {"webhook": {"nodeSelectors": {"a": "b"}}},
        {"webhook": {"tolerations": "dedicated=system:NoSchedule"}},
        {"webhook": {"podDisruptionBudget": {"maxUnavailable": 0}}},
        {"webhook": {"minAvailable": 1}},
        {"imagePullSecrets": ["regcred"]},
        {"monitoring": {"prometheusRule": {"namespace": "Monitoring"}}},
        {"injector": {"exemptLabels": {"a": True}}},
        {"webhook": {"affinity": {"podAntiAfinity": {}}}},
    ],
    ids=["unknown-key", "bad-enum", "plain-http-vault", "writer-format", "bad-digest", "nested-unknown",
         "misspelt-knob", "tolerations-as-string", "pdb-that-blocks-drains", "removed-minAvailable",
         "pull-secret-as-string", "namespace-not-a-dns-label", "label-value-not-a-string", "misspelt-affinity"],
)  # fmt: skip
def test_values_that_break_the_schema_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(bad)


def test_the_injector_config_is_what_the_webhook_reads() -> None:
    objs = render(OPTIONS["pinned-vault"])
    config = parse_config(find(objs, "ConfigMap", "sandgate-injector")["data"]["injector.yaml"])
    assert config.image == "ghcr.io/sandgate/sandgate@sha256:" + "a" * 64
    assert config.vault_addr == "https://vault.vault.svc:8200" and config.proxy_uid == 1337
    assert NS in config.exempt_namespaces and config.exempt_labels == {}


def _injector(**values: Any) -> dict[str, Any]:
    return {"injector": values}


# Red team 33: values the schema let through, with which the webhook refused its config at start
# (no replica ready: every pod creation in every opted-in namespace refused), and values that
# are fine but that Helm rendered as floats ("2e+06"). Each is refused at install, or starts.
# fmt: off
VALUES_AT_THE_EDGE: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "audience-with-space": (_injector(vault={"audience": "urn: vault"}), None),
    "audience-with-comment": (_injector(vault={"audience": "a #b"}), None),
    "auth-mount-trailing-slash": (_injector(vault={"authMount": "kubernetes/"}), None),
    "addr-with-space": (_injector(vault={"addr": "https://vault .svc"}), None),
    "exempt-namespace-not-a-name": (_injector(exemptNamespaces=["Team_A"]), None),
    "proxy-uid-past-int32": (_injector(proxyUID=2**31), None),
    "agent-uid-is-the-proxys": (_injector(agentUID=1337), None),
    "proxy-uid-is-the-agents-gid": (_injector(proxyUID=1000, agentUID=2000), None),
    "metrics-port-is-the-proxys": (_injector(metricsPort=15001), None),
    "runtime-class-not-a-name": (_injector(runtimeClassName="gVisor"), None),
    "memory-not-a-quantity": (_injector(sidecarResources={"limits": {"memory": "256 MB"}}), None),
    "token-lifetime-past-2-32": (_injector(vault={"tokenExpirationSeconds": 2**32 + 1}), None),
    "large-proxy-uid": (_injector(proxyUID=2_000_000), {"proxy_uid": 2_000_000}),
    "largest-token-lifetime": (_injector(vault={"tokenExpirationSeconds": 2**32}), {"token_expiration_seconds": 2**32}),
    "no-runtime-class": (_injector(runtimeClassName=""), {"runtime_class": ""}),
    "fractional-cpu": (_injector(sidecarResources={"limits": {"cpu": 0.5, "memory": "300Mi"}}),
                       {"resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "0.5", "memory": "300Mi"}}}),
    "urn-audience": (_injector(vault={"audience": "urn:example:sandgate"}), {"vault_audience": "urn:example:sandgate"}),
}
# fmt: on


@pytest.mark.parametrize("case", list(VALUES_AT_THE_EDGE))
def test_values_the_chart_accepts_give_a_config_the_webhook_starts_with(case: str) -> None:
    overrides, expected = VALUES_AT_THE_EDGE[case]
    values = merged(overrides)
    if expected is None:
        with pytest.raises(helm_python.HelmError):
            render(values)
        return
    config = parse_config(find(render(values), "ConfigMap", "sandgate-injector")["data"]["injector.yaml"])
    for key, value in expected.items():
        assert getattr(config, key) == value


def test_the_example_policy_is_a_valid_policy() -> None:
    cm = find(render(OPTIONS["example-policy"]), "ConfigMap", "default")
    assert cm["metadata"]["namespace"] == "agents" and cm["metadata"]["labels"]["sandgate.dev/policy"] == "true"
    assert parse_policy(cm["data"]["policy.yaml"]).name == "default"


# -- NOTES.txt: what to do next, including the prerequisites --------------------------------------


@pytest.mark.parametrize(
    ("values", "says", "never"),
    [
        ({}, ["pod-security.kubernetes.io/enforce=privileged", "NET_ADMIN and NET_RAW", 'a "runsc" runtime handler',
              "kubectl label namespace my-agents sandgate.dev/inject=enabled", "kubectl -n my-agents create configmap default",
              "Secret sandgate-webhook-tls", "Argo CD"], ["cert-manager issues"]),
        ({"injector": {"mode": "explicit"}}, ["can stay at\n  baseline", "ignores HTTPS_PROXY"],
         ["enforce=privileged"]),
        (CERT_MANAGER, ["cert-manager issues Secret sandgate-webhook-tls"], ["Argo CD"]),
        ({"webhook": {"policyWriters": []}}, ["nobody (set webhook.policyWriters)"], []),
    ],
    ids=["transparent", "explicit", "cert-manager", "no-writers"],
)  # fmt: skip
def test_notes_say_how_to_prepare_a_namespace_and_write_a_first_policy(
    values: dict[str, Any], says: list[str], never: list[str]
) -> None:
    notes = render_files(values)["sandgate/templates/NOTES.txt"]
    for text in says:
        assert text in notes
    for text in never:
        assert text not in notes
    assert "{{" not in notes and not re.search(r"<no value>|%!", notes)


# The capabilities Pod Security "baseline" lets a container add; everything else needs "privileged".
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}  # fmt: skip


def _injected(values: dict[str, Any]) -> dict[str, Any]:
    """An agent pod as the chart-configured webhook injects it."""
    import jsonpatch

    from injector.mutate import mutate

    config = parse_config(find(render(values), "ConfigMap", "sandgate-injector")["data"]["injector.yaml"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "my-agents"},
           "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}]}}  # fmt: skip
    policy = parse_policy("apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: default}\n"
                          "spec: {allow: [{host: api.openai.com}]}\n")  # fmt: skip
    result = mutate(pod, policy, config, namespace="my-agents")
    assert result.allowed
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, result.patch)
    return patched


def _sandgate_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"].startswith("sandgate-")]


def _restricted(container: dict[str, Any]) -> bool:
    ctx = container.get("securityContext") or {}
    caps = ctx.get("capabilities") or {}
    return (ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") != 0 and ctx.get("allowPrivilegeEscalation") is False
            and "ALL" in caps.get("drop", []) and set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}
            and (ctx.get("seccompProfile") or {}).get("type") == "RuntimeDefault")  # fmt: skip


def test_transparent_mode_needs_a_privileged_namespace_as_the_notes_say() -> None:
    pod = _injected({})
    over_baseline = {c["name"]: sorted(set(c["securityContext"]["capabilities"].get("add", [])) - BASELINE_CAPABILITIES)
                     for c in _sandgate_containers(pod)}  # fmt: skip
    assert over_baseline == {"sandgate-proxy": [], "sandgate-capture": ["NET_ADMIN", "NET_RAW"]}
    assert "pod-security.kubernetes.io/enforce=privileged" in render_files({})["sandgate/templates/NOTES.txt"]


def test_explicit_mode_adds_only_containers_that_meet_restricted() -> None:
    pod = _injected({"injector": {"mode": "explicit"}})
    assert [c["name"] for c in _sandgate_containers(pod)] == ["sandgate-proxy"]
    assert all(_restricted(c) for c in _sandgate_containers(pod))


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


def test_every_schema_property_is_in_values_yaml() -> None:
    """The schema and the documented defaults describe the same keys (a knob the schema allows but
    values.yaml does not show is a knob nobody finds)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        return schema["definitions"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    def missing(node: dict[str, Any], value: dict[str, Any], path: str) -> list[str]:
        out = []
        for key, sub in (resolve(node).get("properties") or {}).items():
            if key not in value:
                out.append(f"{path}{key}")
            elif isinstance(value[key], dict) and value[key]:
                out += missing(sub, value[key], f"{path}{key}.")
        return out

    assert missing(schema, values, "") == []
