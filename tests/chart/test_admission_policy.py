"""The chart's ValidatingAdmissionPolicies, evaluated (tests/support/vap.py: cel-python, no API
server here) against the changes they exist to refuse and the ones they must let through.

- ``-cabundle-only`` (red team 31): RBAC cannot narrow the webhook's patch of its two webhook
  configurations to a field, so this holds its ServiceAccount to the caBundle. What it lets through
  are the webhook's real writes (its certificate manager against the fake API server, a first
  start and a renewal's first step); what it refuses, a table of the changes that would hand a
  compromised webhook the cluster, and a property: any other single change to any field.
- ``-tls-data-only`` (red team 32): the webhook's update of its Secret, to the certificate keys
  (Helm finds its release records by label: a relabelled Secret would be one).
- ``-opt-out`` (31, 32): taking a namespace out, by label or delete, is the policy writers'.
- ``running.sandgate.dev``'s matchConditions and namespaceSelectors (31): injected pods stay
  guarded wherever they are, and no other pod is sent.
- ``-vault-tokens``, ``-vault-token-volumes``, ``-vault-token-drivers`` (32-34): Sandgate's Vault
  audience is minted for the kubelet alone, projected in opted-in namespaces alone, asked for by
  no CSI driver.
- ``-policy-writers`` (34): the writers' rule on policy ConfigMaps without the webhook.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from injector import constants as k
from injector.config import InjectorConfig
from tests.chart.test_chart import NS, find, render
from tests.support.fakekube import FakeKube
from tests.support.vap import Decision, Request, decide, holds, selects
from webhook.certs import CertificateManager, Timing
from webhook.kubeapi import KubeAPI

OBJS = render({})
SVC = find(OBJS, "Service")["metadata"]["name"]
ACCOUNT = f"system:serviceaccount:{NS}:{SVC}"
POLICY = find(OBJS, "ValidatingAdmissionPolicy", f"{SVC}-cabundle-only")
CONFIG_AUDIENCE = InjectorConfig().vault_audience
KINDS = {"MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
         "ValidatingWebhookConfiguration": "validatingwebhookconfigurations"}  # fmt: skip
ADMISSION = "admissionregistration.k8s.io"


def configuration(kind: str) -> dict[str, Any]:
    """As the API server holds it after the chart's apply: with its defaults and server fields."""
    obj = copy.deepcopy(find(OBJS, kind))
    obj["metadata"] |= {"resourceVersion": "7", "uid": "0f0e", "generation": 1}
    for webhook in obj["webhooks"]:
        webhook["clientConfig"]["service"].setdefault("port", 443)
        webhook.setdefault("namespaceSelector", {})
        webhook.setdefault("objectSelector", {})
    return obj


def _verdict(decision: Decision) -> str:
    return "not its business" if not decision.applies else "allowed" if decision.allowed else "refused"


def update(new: dict[str, Any], old: dict[str, Any], *, user: str = ACCOUNT) -> Decision:
    request = Request("UPDATE", KINDS[old["kind"]], user, group=ADMISSION, name=old["metadata"]["name"])
    return decide(POLICY, request, new, old)


def test_every_policy_fails_closed_and_is_bound_to_deny() -> None:
    policies = [o for o in OBJS if o["kind"] == "ValidatingAdmissionPolicy"]
    bindings = {o["spec"]["policyName"]: o for o in OBJS if o["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert len(policies) == 7 and bindings.keys() == {p["metadata"]["name"] for p in policies}
    for policy in policies:
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert bindings[policy["metadata"]["name"]]["spec"] == {
            "policyName": policy["metadata"]["name"],
            "validationActions": ["Deny"],
        }


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKube]:
    with FakeKube(tmp_path) as fake:
        for obj in OBJS:
            if obj["kind"] in KINDS or obj["kind"] == "Secret":
                fake.put(copy.deepcopy(obj))
        yield fake


async def test_the_webhooks_own_ca_bundle_writes_are_admitted(kube: FakeKube, tmp_path: Path) -> None:
    """A first start (caBundle added) and a renewal's first step (a second CA added)."""
    name = find(OBJS, "MutatingWebhookConfiguration")["metadata"]["name"]

    class Clock:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=250)

        def __call__(self) -> dt.datetime:
            return self.now

    clock = Clock()
    manager = CertificateManager(
        KubeAPI.connect(kube.kubeconfig), namespace=NS, secret=f"{SVC}-tls", service=SVC,
        webhook_configuration=name, cert_file=tmp_path / "t" / "tls.crt", key_file=tmp_path / "t" / "tls.key",
        timing=Timing(), clock=clock,
    )  # fmt: skip
    (tmp_path / "t").mkdir()
    for step in ("first start", "renewal"):
        before = {kind: kube.get(resource, name) for kind, resource in KINDS.items()}
        secret_before = kube.get("secrets", f"{SVC}-tls", NS)
        await manager.reconcile()
        for kind, resource in KINDS.items():
            old, new = before[kind], kube.get(resource, name)
            assert old is not None and new is not None and new != old, (step, kind)
            assert update(new, old) == Decision(applies=True, allowed=True), (step, kind)
        secret_after = kube.get("secrets", f"{SVC}-tls", NS)
        assert secret_after != secret_before
        assert update_secret(secret_after, secret_before) == Decision(applies=True, allowed=True), step
        clock.now = dt.datetime.now(dt.UTC)


TLS_POLICY = find(OBJS, "ValidatingAdmissionPolicy", f"{SVC}-tls-data-only")


def update_secret(new: Any, old: Any, *, user: str = ACCOUNT, name: str = f"{SVC}-tls") -> Decision:
    return decide(TLS_POLICY, Request("UPDATE", "secrets", user, name=name, namespace=NS), new, old)


def _webhook(obj: dict[str, Any]) -> dict[str, Any]:
    webhook: dict[str, Any] = obj["webhooks"][0]
    return webhook


CHANGES = {
    "rules: every resource": lambda o: _webhook(o)["rules"].append(
        {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*/*"], "scope": "*"}
    ),
    "clientConfig: a url off the cluster": lambda o: _webhook(o)["clientConfig"].update(
        url="https://203.0.113.9/steal"
    ),
    "clientConfig: the service swapped for a url": lambda o: _webhook(o)["clientConfig"].update(
        service=None, url="https://203.0.113.9/steal"
    ),
    "clientConfig: another service": lambda o: _webhook(o)["clientConfig"]["service"].update(name="evil"),
    "clientConfig: another path": lambda o: _webhook(o)["clientConfig"]["service"].update(path="/anything"),
    "failurePolicy Ignore": lambda o: _webhook(o).update(failurePolicy="Ignore"),
    "namespaceSelector: other namespaces": lambda o: _webhook(o).update(
        namespaceSelector={"matchLabels": {"team": "attacker"}}
    ),
    "objectSelector: opt pods out": lambda o: _webhook(o).update(objectSelector={"matchLabels": {"skip": "me"}}),
    "matchConditions: never": lambda o: _webhook(o).update(matchConditions=[{"name": "never", "expression": "false"}]),
    "timeoutSeconds": lambda o: _webhook(o).update(timeoutSeconds=1),
    "sideEffects": lambda o: _webhook(o).update(sideEffects="NoneOnDryRun"),
    "matchPolicy Exact": lambda o: _webhook(o).update(matchPolicy="Exact"),
    "admissionReviewVersions": lambda o: _webhook(o).update(admissionReviewVersions=["v1beta1"]),
    "a webhook removed": lambda o: o["webhooks"].pop(),
    "a webhook added": lambda o: o["webhooks"].append(copy.deepcopy(_webhook(o)) | {"name": "steal.example.com"}),
    "a webhook renamed": lambda o: _webhook(o).update(name="other.sandgate.dev"),
    "every webhook removed": lambda o: o.pop("webhooks"),
    "a label": lambda o: o["metadata"]["labels"].update(team="x"),
    "an annotation (cert-manager's CA injection)": lambda o: (
        o["metadata"].setdefault("annotations", {}).update({"cert-manager.io/inject-ca-from": "evil/ca"})
    ),
    "a finalizer": lambda o: o["metadata"].update(finalizers=["example.com/never"]),
    "an owner (garbage-collected with it)": lambda o: o["metadata"].update(
        ownerReferences=[{"apiVersion": "v1", "kind": "Namespace", "name": "tmp", "uid": "1"}]
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("change", list(CHANGES))
def test_any_other_change_by_the_webhook_is_refused_and_anyone_elses_is_not_its_business(
    kind: str, change: str
) -> None:
    old = configuration(kind)
    new = copy.deepcopy(old)
    CHANGES[change](new)
    assert new != old
    decision = update(new, old)
    assert decision.applies and not decision.allowed, decision
    assert update(new, old, user="system:serviceaccount:argocd:argocd-application-controller").applies is False


@pytest.mark.parametrize("operation", ["CREATE", "DELETE"])
def test_the_webhook_may_neither_create_nor_delete_a_webhook_configuration(operation: str) -> None:
    obj = configuration("MutatingWebhookConfiguration")
    request = Request(operation, "mutatingwebhookconfigurations", ACCOUNT, group=ADMISSION,
                      name=obj["metadata"]["name"])  # fmt: skip
    decision = decide(POLICY, request, obj if operation == "CREATE" else None, obj if operation == "DELETE" else None)
    assert decision.applies and not decision.allowed


def test_the_webhook_may_not_touch_another_webhook_configuration_not_even_its_ca_bundle() -> None:
    old = configuration("MutatingWebhookConfiguration")
    old["metadata"]["name"] = "istio-sidecar-injector"
    new = copy.deepcopy(old)
    _webhook(new)["clientConfig"]["caBundle"] = "AAAA"
    assert not update(new, old).allowed


# -- a property: any one change but caBundle -----------------------------------------------------

_SERVER_FIELDS = {
    ("metadata", "name"),
    ("metadata", "resourceVersion"),
    ("metadata", "uid"),
    ("metadata", "generation"),
}


def _nodes(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``node`` but the caBundles, the server's fields, apiVersion and kind."""
    if path in _SERVER_FIELDS or path[-1:] == ("caBundle",) or path in (("apiVersion",), ("kind",)):
        return
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, (*path, i))


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "Ignore", "*", "evil", "v1"]),
    st.lists(st.sampled_from(["*", "pods", "CREATE"]), max_size=2), st.fixed_dictionaries({"x": st.just("y")}),
)  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(KINDS)), data=st.data())
def test_property_every_change_but_the_ca_bundle_is_refused(kind: str, data: st.DataObject) -> None:
    old = configuration(kind)
    _webhook(old)["clientConfig"]["caBundle"] = "T0xE"
    new = copy.deepcopy(old)
    path = data.draw(st.sampled_from(list(_nodes(new))), label="path")
    parent = new
    for key in path[:-1]:
        parent = parent[key]
    how = data.draw(st.sampled_from(["replace", "remove"]), label="how")
    if how == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(_VALUES.filter(lambda v: v != parent[path[-1]]), label="value")
    if data.draw(st.booleans(), label="and a new caBundle"):
        webhooks = new.get("webhooks")
        for webhook in webhooks if isinstance(webhooks, list) else []:
            if isinstance(webhook, dict) and isinstance(webhook.get("clientConfig"), dict):
                webhook["clientConfig"]["caBundle"] = "TkVX"
    assert new != old
    decision = update(new, old)
    assert decision.applies and not decision.allowed, (path, how)


@settings(max_examples=50, deadline=None)
@given(kind=st.sampled_from(list(KINDS)), bundles=st.lists(st.sampled_from(["", "QQ==", "TkVX"]), min_size=4))
def test_property_any_ca_bundles_alone_are_admitted(kind: str, bundles: list[str]) -> None:
    old = configuration(kind)
    new = copy.deepcopy(old)
    for webhook, bundle in zip(new["webhooks"], bundles, strict=False):
        webhook["clientConfig"]["caBundle"] = bundle
    assert update(new, old).allowed


# -- taking a namespace out of Sandgate is the policy writers' decision (red team 31) --------------

WRITERS = render({"webhook": {"policyWriters": ["group:sec", "user:alice"]}})
OPT_OUT = find(WRITERS, "ValidatingAdmissionPolicy", f"{SVC}-opt-out")
ENABLED = {"sandgate.dev/inject": "enabled", "kubernetes.io/metadata.name": "agents"}


def namespace(labels: dict[str, str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "agents"} | ({"labels": labels} if labels is not None else {})
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


@pytest.mark.parametrize(
    ("old", "new", "user", "groups", "expected"),
    [
        (ENABLED, {"kubernetes.io/metadata.name": "agents"}, "bob", ("tenant-a",), "refused"),
        (ENABLED, ENABLED | {"sandgate.dev/inject": "disabled"}, "bob", (), "refused"),
        (ENABLED, None, "bob", (), "refused"),
        (ENABLED, {"kubernetes.io/metadata.name": "agents"}, "kubernetes-admin", ("system:masters",), "refused"),
        (ENABLED, {"kubernetes.io/metadata.name": "agents"}, "alice", (), "allowed"),
        (ENABLED, {"kubernetes.io/metadata.name": "agents"}, "carol", ("system:authenticated", "sec"), "allowed"),
        (ENABLED, ENABLED | {"team": "a"}, "bob", (), "not its business"),
        ({"kubernetes.io/metadata.name": "agents"}, ENABLED, "bob", (), "not its business"),
        (None, {"team": "a"}, "bob", (), "not its business"),
    ],
    ids=[
        "label-removed",
        "label-changed",
        "every-label-removed",
        "cluster-admin-not-a-writer",
        "writer-user",
        "writer-group",
        "other-label",
        "opting-in",
        "never-opted-in",
    ],
)
def test_only_policy_writers_may_take_a_namespace_out_of_sandgate(
    old: dict[str, str] | None, new: dict[str, str] | None, user: str, groups: tuple[str, ...], expected: str
) -> None:
    for subresource in ("", "status", "finalize"):
        request = Request("UPDATE", "namespaces", user, groups, name="agents", subresource=subresource)
        decision = decide(OPT_OUT, request, namespace(new), namespace(old))
        assert _verdict(decision) == expected, (subresource, decision)
    if old is not None and old.get("sandgate.dev/inject") == "enabled" and expected != "not its business":
        # Deleting it (and creating it again unlabelled) is taking it out too (red team 32).
        deleted = decide(OPT_OUT, Request("DELETE", "namespaces", user, groups, name="agents"), None, namespace(old))
        assert deleted.applies and deleted.allowed == (expected == "allowed"), deleted
    assert find(WRITERS, "ValidatingAdmissionPolicyBinding", f"{SVC}-opt-out")["spec"]["validationActions"] == ["Deny"]


# -- injected pods stay guarded wherever they are --------------------------------------------------


MWC = find(OBJS, "MutatingWebhookConfiguration")
PODS, RUNNING = (
    next(w for w in MWC["webhooks"] if w["name"] == n) for n in ("pods.sandgate.dev", "running.sandgate.dev")
)


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        ("agents", {"sandgate.dev/inject": "enabled"}, {"pods.sandgate.dev"}),
        ("agents", {}, {"running.sandgate.dev"}),
        ("agents", {"sandgate.dev/inject": "disabled"}, {"running.sandgate.dev"}),
        (NS, {"sandgate.dev/inject": "enabled"}, set()),
        ("kube-system", {}, set()),
    ],
    ids=["opted-in", "never-labelled", "label-changed", "release-namespace", "kube-system"],
)
def test_every_namespace_but_the_exempt_ones_has_exactly_one_of_the_pod_webhooks(
    name: str, labels: dict[str, str], expected: set[str]
) -> None:
    labels = labels | {"kubernetes.io/metadata.name": name}
    assert {w["name"] for w in (PODS, RUNNING) if selects(w["namespaceSelector"], labels)} == expected


def _pod(**spec: Any) -> dict[str, Any]:
    meta = spec.pop("metadata", {"name": "agent"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "agent", "image": "agent:1"}]} | spec}  # fmt: skip


_SIDECAR = {"name": "sandgate-proxy", "image": "sandgate:1", "restartPolicy": "Always"}


@pytest.mark.parametrize(
    ("operation", "obj", "old", "sent"),
    [
        ("UPDATE", _pod(), _pod(initContainers=[_SIDECAR]), True),
        ("UPDATE", _pod(), _pod(containers=[_SIDECAR, {"name": "agent", "image": "agent:1"}]), True),
        ("UPDATE", _pod(), _pod(initContainers=[{"name": "sandgate-capture", "image": "sandgate:1"}]), True),
        ("UPDATE", _pod(), _pod(metadata={"name": "a", "annotations": {"sandgate.dev/status": "injected"}}), True),
        ("UPDATE", _pod(), _pod(), False),
        ("UPDATE", _pod(), _pod(initContainers=[{"name": "setup", "image": "busybox"}]), False),
        ("CONNECT", {"kind": "PodExecOptions", "container": "sandgate-proxy", "command": ["sh"]}, None, True),
        ("CONNECT", {"kind": "PodAttachOptions", "container": "sandgate-capture"}, None, True),
        ("CONNECT", {"kind": "PodExecOptions", "container": "agent", "command": ["sh"]}, None, False),
        ("CONNECT", {"kind": "PodExecOptions", "command": ["sh"]}, None, False),
    ],
    ids=[
        "native-sidecar",
        "sidecar-container",
        "capture",
        "status-annotation",
        "plain-pod",
        "other-init",
        "exec-sidecar",
        "attach-capture",
        "exec-agent",
        "exec-default-container",
    ],
)
def test_the_guard_is_sent_what_it_refuses_and_nothing_of_other_pods(
    operation: str, obj: dict[str, Any], old: dict[str, Any] | None, sent: bool
) -> None:
    request = Request(operation, "pods", "bob", subresource="exec" if operation == "CONNECT" else "")
    assert [holds(c["expression"], request, obj, old) for c in RUNNING["matchConditions"]] == [sent]
    assert RUNNING["clientConfig"]["service"] == PODS["clientConfig"]["service"]  # the same checks as opted-in ones
    assert {r["operations"][0] for r in RUNNING["rules"]} == {"UPDATE", "CONNECT"}  # never CREATE: no injection
    assert "sandgate-proxy" in k.OUR_CONTAINERS and "sandgate-capture" in k.OUR_CONTAINERS


# -- the webhook's TLS Secret: certificate data only (red team 32) ---------------------------------


def _filled_secret() -> dict[str, Any]:
    """The chart's Secret as the webhook filled it, with Helm's ownership annotations."""
    secret = copy.deepcopy(find(OBJS, "Secret", f"{SVC}-tls"))
    secret["metadata"] |= {"resourceVersion": "9", "uid": "s1",
                           "annotations": {"meta.helm.sh/release-name": "sandgate", "meta.helm.sh/release-namespace": NS,
                                           "sandgate.dev/tls-changed-at": "2026-12-05T08:00:00+00:00"}}  # fmt: skip
    secret["data"] = {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "ca.crt": "Y2E="}
    return secret


def _helm_record(secret: dict[str, Any]) -> None:
    """Helm finds its release records by label alone (owner=helm, name=<release>): its storage
    driver's query never looks at the name or the type, so this Secret would read as revision 99."""
    secret["metadata"]["labels"] = {"owner": "helm", "name": "sandgate", "status": "deployed", "version": "99"}
    secret["data"] = {"release": "SDRzSUFBQUFBQUFBLw=="}


SECRET_CHANGES = {
    "a forged helm release record": _helm_record,
    "helm's labels alone": lambda o: o["metadata"]["labels"].update(owner="helm", name="sandgate", status="deployed"),
    "a label removed": lambda o: o["metadata"]["labels"].pop("app.kubernetes.io/managed-by"),
    "a release key beside the certificate": lambda o: o["data"].update(release="eA=="),
    "stringData": lambda o: o.update(stringData={"tls.crt": "x"}),
    "helm's annotation changed": lambda o: o["metadata"]["annotations"].update({"meta.helm.sh/release-name": "other"}),
    "helm's annotation removed": lambda o: o["metadata"]["annotations"].pop("meta.helm.sh/release-namespace"),
    "an annotation added": lambda o: o["metadata"]["annotations"].update({"helm.sh/hook": "pre-delete"}),
    "the type": lambda o: o.update(type="helm.sh/release.v1"),
    "made immutable": lambda o: o.update(immutable=True),
}


@pytest.mark.parametrize("change", list(SECRET_CHANGES))
def test_the_webhook_may_change_its_secrets_certificate_data_only(change: str) -> None:
    old = _filled_secret()
    new = copy.deepcopy(old)
    SECRET_CHANGES[change](new)
    assert new != old
    decision = update_secret(new, old)
    assert decision.applies and not decision.allowed, decision
    assert update_secret(new, old, user="admin").applies is False  # Helm itself, an admin: not this policy's


def test_the_webhook_may_write_new_certificates_and_its_change_time() -> None:
    old = _filled_secret()
    new = copy.deepcopy(old)
    new["data"] |= {"next.crt": "bmV4dA==", "next.key": "bmsy", "ca.crt": "Y2EgY2Ey"}
    new["metadata"]["annotations"]["sandgate.dev/tls-changed-at"] = "2026-12-05T09:00:00+00:00"
    assert update_secret(new, old).allowed
    other = copy.deepcopy(old)
    other["metadata"]["name"] = "sh.helm.release.v1.sandgate.v1"
    assert not update_secret(other, other, name="sh.helm.release.v1.sandgate.v1").allowed  # another Secret


# -- Sandgate's Vault audience: minted by the kubelet only, projected by its sidecars only ---------

VAULT_TOKENS = find(OBJS, "ValidatingAdmissionPolicy", f"{SVC}-vault-tokens")
TOKEN_VOLUMES = find(OBJS, "ValidatingAdmissionPolicy", f"{SVC}-vault-token-volumes")
AUDIENCE = "sandgate-vault"
KUBELET = ("system:node:node-1", ("system:nodes", "system:authenticated"))
OTHER_NS = {"kubernetes.io/metadata.name": "agents"}


@pytest.mark.parametrize(
    ("who", "audiences", "labels", "expected"),
    [
        (("bob", ("system:authenticated",)), [AUDIENCE], ENABLED, "refused"),
        (("bob", ()), ["https://kubernetes.default.svc", AUDIENCE], ENABLED, "refused"),
        (("system:serviceaccount:agents:default", ("system:serviceaccounts",)), [AUDIENCE], ENABLED, "refused"),
        (("system:node:evil", ()), [AUDIENCE], ENABLED, "refused"),  # a name like the kubelet's, not its group
        (("bob", ()), [AUDIENCE], OTHER_NS, "refused"),  # minted before the namespace opts in, used after
        (KUBELET, [AUDIENCE], ENABLED, "allowed"),
        (("bob", ()), ["https://kubernetes.default.svc"], ENABLED, "not its business"),
        (("bob", ()), ["vault"], OTHER_NS, "not its business"),  # other tools' Vault audiences
        (("bob", ()), None, ENABLED, "not its business"),
    ],
    ids=[
        "tenant",
        "tenant-among-audiences",
        "service-account",
        "node-name-only",
        "before-opt-in",
        "kubelet",
        "api-audience",
        "other-vault-audience",
        "default-audience",
    ],
)
def test_only_the_kubelet_may_request_a_token_for_sandgates_vault_audience(
    who: tuple[str, tuple[str, ...]], audiences: list[str] | None, labels: dict[str, str], expected: str
) -> None:
    """`kubectl create token default --audience sandgate-vault` would be the sidecar's very
    credential, minted without a pod: neither webhook sees it (red team 32)."""
    token_request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"audiences": audiences} if audiences is not None else {}}  # fmt: skip
    request = Request("CREATE", "serviceaccounts", who[0], who[1], name="default", namespace="agents",
                      subresource="token")  # fmt: skip
    assert CONFIG_AUDIENCE == AUDIENCE
    assert _verdict(decide(VAULT_TOKENS, request, token_request, None, namespace_labels=labels)) == expected


def _projecting(audience: str | None, namespace: str = "agents") -> dict[str, Any]:
    token: dict[str, Any] = {"path": "token"} | ({"audience": audience} if audience is not None else {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "planted", "namespace": namespace},
            "spec": {"containers": [{"name": "a", "image": "busybox", "volumeMounts": [{"name": "t", "mountPath": "/t"}]}],
                     "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": token}]}}]}}  # fmt: skip


@pytest.mark.parametrize(
    ("audience", "namespace", "labels", "expected"),
    [
        (AUDIENCE, "agents", OTHER_NS, "refused"),  # planted before opt-in: the kubelet would refresh it after
        (AUDIENCE, "agents", {**OTHER_NS, "sandgate.dev/inject": "disabled"}, "refused"),
        (AUDIENCE, "kube-system", {"sandgate.dev/inject": "enabled"}, "refused"),  # exempt: no webhook there
        (AUDIENCE, NS, {"sandgate.dev/inject": "enabled"}, "refused"),
        (AUDIENCE, "agents", ENABLED, "allowed"),  # the webhook refuses it to all but its sidecar there
        ("vault", "agents", OTHER_NS, "not its business"),
        (None, "agents", OTHER_NS, "not its business"),
    ],
    ids=[
        "not-opted-in",
        "label-disabled",
        "exempt-kube-system",
        "exempt-release-namespace",
        "opted-in",
        "other-audience",
        "api-token",
    ],
)
def test_only_pods_of_opted_in_namespaces_may_project_sandgates_vault_audience(
    audience: str | None, namespace: str, labels: dict[str, str], expected: str
) -> None:
    labels = labels | {"kubernetes.io/metadata.name": namespace}
    request = Request("CREATE", "pods", "bob", name="planted", namespace=namespace)
    decision = decide(TOKEN_VOLUMES, request, _projecting(audience, namespace), None, namespace_labels=labels)
    assert _verdict(decision) == expected, decision


def test_an_injected_pod_passes_the_volume_policy_and_its_kubelet_gets_its_token() -> None:
    from injector.mutate import mutate
    from tests.injector.test_mutate import CONFIG, POLICY

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "agents"},
           "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}]}}  # fmt: skip
    injected = mutate(pod, POLICY, CONFIG, namespace="agents").pod
    assert injected is not None
    request = Request("CREATE", "pods", "system:serviceaccount:kube-system:replicaset-controller", namespace="agents")
    decision = decide(TOKEN_VOLUMES, request, injected, None, namespace_labels=ENABLED)
    assert decision == Decision(applies=True, allowed=True)


def test_the_vault_token_policies_follow_the_configured_audience() -> None:
    objs = render({"injector": {"vault": {"audience": "urn:example:vault"}}})
    tokens = find(objs, "ValidatingAdmissionPolicy", f"{SVC}-vault-tokens")
    volumes = find(objs, "ValidatingAdmissionPolicy", f"{SVC}-vault-token-volumes")
    request = Request("CREATE", "serviceaccounts", "bob", name="default", namespace="agents", subresource="token")
    assert not decide(tokens, request, {"spec": {"audiences": ["urn:example:vault"]}}, None).allowed
    pod = Request("CREATE", "pods", "bob", namespace="agents")
    assert not decide(volumes, pod, _projecting("urn:example:vault"), None, namespace_labels=OTHER_NS).allowed


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([{"audience": AUDIENCE}], "refused"),
        ([{"audience": "vault"}, {"audience": AUDIENCE, "expirationSeconds": 3600}], "refused"),
        ([{"audience": "vault"}], "allowed"),
        (None, "allowed"),
        ([{}], "allowed"),
    ],
    ids=["sandgate-audience", "among-others", "other-audience", "none", "api-audience"],
)
def test_no_csi_driver_may_request_sandgates_vault_audience(
    requests: list[dict[str, Any]] | None, expected: str
) -> None:
    """The kubelet mints a token of each tokenRequests audience for every pod mounting the driver's
    volumes and hands it to the driver (red team 34)."""
    policy = find(OBJS, "ValidatingAdmissionPolicy", f"{SVC}-vault-token-drivers")
    driver = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "secrets.example.com"},
              "spec": {"tokenRequests": requests} if requests is not None else {}}  # fmt: skip
    for operation in ("CREATE", "UPDATE"):
        request = Request(operation, "csidrivers", "cluster-admin", ("system:masters",), group="storage.k8s.io")
        assert _verdict(decide(policy, request, driver, driver if operation == "UPDATE" else None)) == expected


# -- policies are the writers' without the webhook too (red team 34) --------------------------------

POLICY_WRITERS = find(WRITERS, "ValidatingAdmissionPolicy", f"{SVC}-policy-writers")


def _cm(
    labels: dict[str, str] | None = None, data: dict[str, str] | None = None, binary: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "default", "namespace": "agents"} | ({"labels": labels} if labels else {})
    body = {("binaryData" if binary else "data"): data} if data is not None else {}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta} | body


LABELLED = {"sandgate.dev/policy": "true"}
TEXT = {"policy.yaml": "apiVersion: sandgate.dev/v1alpha1"}


@pytest.mark.parametrize(
    ("operation", "new", "old", "labels", "expected"),
    [
        ("CREATE", _cm(LABELLED, TEXT), None, OTHER_NS, "refused"),  # labelled: a policy anywhere
        ("UPDATE", _cm(None, TEXT), _cm(LABELLED, TEXT), OTHER_NS, "refused"),  # the label taken off
        ("DELETE", None, _cm(LABELLED, TEXT), OTHER_NS, "refused"),
        ("CREATE", _cm(None, TEXT), None, ENABLED, "refused"),  # a sidecar mounts it by name
        ("CREATE", _cm(None, {"policy.yaml": "eA=="}, binary=True), None, ENABLED, "refused"),
        ("UPDATE", _cm(None, {"notes": "x"}), _cm(None, TEXT), ENABLED, "refused"),  # the policy taken out
        ("CREATE", _cm(None, TEXT), None, OTHER_NS, "not its business"),  # no sidecar reads it there
        ("CREATE", _cm(None, {"app.conf": "x"}), None, ENABLED, "not its business"),
        (
            "CREATE",
            _cm(None, TEXT),
            None,
            {"kubernetes.io/metadata.name": "kube-system", "sandgate.dev/inject": "enabled"},
            "not its business",
        ),
    ],
    ids=[
        "labelled",
        "label-removed",
        "deleted",
        "unlabelled-opted-in",
        "binary-data",
        "key-removed",
        "not-opted-in",
        "ordinary",
        "exempt",
    ],
)
def test_only_policy_writers_write_policies_even_without_the_webhook(
    operation: str, new: Any, old: Any, labels: dict[str, str], expected: str
) -> None:
    namespace = labels["kubernetes.io/metadata.name"]
    tenant = Request(operation, "configmaps", "bob", ("system:authenticated",), name="default", namespace=namespace)
    assert _verdict(decide(POLICY_WRITERS, tenant, new, old, namespace_labels=labels)) == expected
    if expected == "refused":
        writer = Request(operation, "configmaps", "carol", ("sec",), name="default", namespace=namespace)
        assert _verdict(decide(POLICY_WRITERS, writer, new, old, namespace_labels=labels)) == "allowed"
