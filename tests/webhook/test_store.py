"""Policy stores. The ConfigMap store talks to the Kubernetes API, which cannot run here: its test
uses a thin fake of the one client call it makes (read_namespaced_config_map), returning the
client's own model objects and exceptions."""

from __future__ import annotations

from pathlib import Path

from kubernetes.client import V1ConfigMap, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from injector.mutate import BrokenPolicy, MissingPolicy
from proxy.policy.model import Policy
from webhook.store import ConfigMapStore, DirectoryStore

POLICY = "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: research}\nspec: {allow: [{host: api.openai.com}]}\n"


class FakeCoreV1:
    def __init__(self, maps: dict[tuple[str, str], V1ConfigMap]) -> None:
        self.maps = maps

    def read_namespaced_config_map(self, name: str, namespace: str) -> V1ConfigMap:
        try:
            return self.maps[(namespace, name)]
        except KeyError:
            raise ApiException(status=404, reason="Not Found") from None


def cm(name: str, text: str, labelled: bool = True) -> V1ConfigMap:
    labels = {"sandgate.dev/policy": "true"} if labelled else {}
    return V1ConfigMap(metadata=V1ObjectMeta(name=name, labels=labels), data={"policy.yaml": text})


def test_configmap_store_reads_labelled_policies_only() -> None:
    store = ConfigMapStore(FakeCoreV1({
        ("a", "research"): cm("research", POLICY),
        ("a", "unlabelled"): cm("unlabelled", POLICY.replace("research", "unlabelled"), labelled=False),
        ("a", "broken"): cm("broken", "spec: ["),
        ("a", "renamed"): cm("renamed", POLICY),
    }))  # fmt: skip
    assert isinstance(store.get("a", "research"), Policy)
    assert store.get("a", "missing") == MissingPolicy("missing")
    assert store.get("a", "unlabelled") == MissingPolicy("unlabelled")
    broken = store.get("a", "broken")
    assert isinstance(broken, BrokenPolicy) and broken.errors[0].startswith("yaml:")
    renamed = store.get("a", "renamed")
    assert isinstance(renamed, BrokenPolicy) and "same name" in renamed.errors[0]


def test_directory_store_prefers_the_namespace_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "research.yaml").write_text(POLICY)
    (tmp_path / "a" / "research.yaml").write_text(POLICY.replace("api.openai.com", "api.anthropic.com"))
    store = DirectoryStore(tmp_path)
    in_a, in_b = store.get("a", "research"), store.get("b", "research")
    assert isinstance(in_a, Policy) and in_a.allow[0].host == "api.anthropic.com"
    assert isinstance(in_b, Policy) and in_b.allow[0].host == "api.openai.com"
    assert store.get("a", "../research") == MissingPolicy("../research")
