"""Policy stores. The ConfigMap store talks to the Kubernetes API, which cannot run here: its test
uses a thin fake of the one client call it makes (read_namespaced_config_map), returning the
client's own model objects and exceptions."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client import V1ConfigMap, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from injector.mutate import BrokenPolicy, MissingPolicy
from proxy.policy.model import Policy
from webhook.store import ConfigMapStore, DirectoryStore

POLICY = "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: research}\nspec: {allow: [{host: api.openai.com}]}\n"


class FakeCoreV1:
    def __init__(self, maps: dict[tuple[str, str], V1ConfigMap]) -> None:
        self.maps = maps
        self.calls: list[tuple[str, str, float | None]] = []

    def read_namespaced_config_map(
        self, name: str, namespace: str, _request_timeout: float | None = None
    ) -> V1ConfigMap:
        self.calls.append((namespace, name, _request_timeout))
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


NOT_POLICY_NAMES = ["a" * 300, "Research", "../research", "research.yaml", "", "-x", "a/b", "x\x00"]


@pytest.mark.parametrize(
    "name",
    NOT_POLICY_NAMES,
    ids=["300-chars", "upper-case", "dot-dot", "dotted", "empty", "leading-dash", "slash", "nul"],
)
def test_a_name_that_cannot_name_a_policy_is_a_missing_policy(tmp_path: Path, name: str) -> None:
    (tmp_path / "research.yaml").write_text(POLICY)
    assert DirectoryStore(tmp_path).get("a", name) == MissingPolicy(name)
    api = FakeCoreV1({})
    assert ConfigMapStore(api).get("a", name) == MissingPolicy(name)
    assert api.calls == [], "the API server is not asked about a name no ConfigMap can have"


def test_the_namespace_never_leads_out_of_the_policy_directory(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "research.yaml").write_text(POLICY.replace("api.openai.com", "evil.example"))
    (tmp_path / "policies" / "research.yaml").write_text(POLICY)
    found = DirectoryStore(tmp_path / "policies").get("..", "research")
    assert isinstance(found, Policy) and found.allow[0].host == "api.openai.com"


def test_the_api_server_is_never_waited_on_forever() -> None:
    api = FakeCoreV1({("a", "research"): cm("research", POLICY)})
    ConfigMapStore(api).get("a", "research")
    assert api.calls and api.calls[0][2] is not None and api.calls[0][2] <= 10


def test_a_deeply_nested_policy_is_broken_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "research.yaml").write_text("spec: " + "[" * 600 + "]" * 600)
    broken = DirectoryStore(tmp_path).get("a", "research")
    assert isinstance(broken, BrokenPolicy) and "nested deeper than" in broken.errors[0]
