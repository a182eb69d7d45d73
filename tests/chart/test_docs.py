"""The install instructions work as written: the README's and docs/install.md's commands and values
render with the real chart, name what the chart creates, and point at nothing outside the repository."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.chart.test_chart import find, render

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
INSTALL = ROOT / "docs" / "install.md"
DOCS = [README, INSTALL]


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def commands(path: Path, program: str) -> list[list[str]]:
    """Shell commands starting with ``program`` in the file's sh blocks (continuations joined)."""
    out = []
    for block in blocks(path, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words[:1] == [program]:
                    out.append(words)
    return out


def set_values(argv: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "--set":
            values = merged_into(values, helm_python.parse_set_string(value))
    return values


def merged_into(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = merged_into(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_helm_install_command_renders_and_uses_the_pushed_image(doc: Path) -> None:
    installs = [c for c in commands(doc, "helm") if c[1] == "install"]
    pushed = {c[-1] for c in commands(doc, "docker") if c[1] == "push"}
    assert installs
    for argv in installs:
        assert argv[2:4] == ["sandgate", "charts/sandgate"] and (ROOT / argv[3]).is_dir()
        values = set_values(argv)
        objs = render(values)
        image = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        if doc == README:
            assert image in pushed  # the image built and pushed just above
        assert values["injector"]["vault"]["addr"].startswith("https://")


def test_the_documented_values_file_renders() -> None:
    example = next(b for b in blocks(INSTALL, "yaml") if b.startswith("image:"))
    objs = render(yaml.safe_load(example))
    spec = find(objs, "Deployment")["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-cluster-critical" and spec["topologySpreadConstraints"]
    assert find(objs, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_namespace_labels_are_the_ones_the_chart_selects(doc: Path) -> None:
    labels = [c[4] for c in commands(doc, "kubectl") if c[1:3] == ["label", "namespace"]]
    mwc = find(render({}), "MutatingWebhookConfiguration")
    [(key, value)] = mwc["webhooks"][0]["namespaceSelector"]["matchLabels"].items()
    assert f"{key}={value}" in labels
    assert "pod-security.kubernetes.io/enforce=privileged" in labels


def test_the_argo_cd_snippet_names_the_rendered_configurations() -> None:
    snippet = yaml.safe_load(next(b for b in blocks(INSTALL, "yaml") if "ignoreDifferences" in b))
    objs = render({})
    for item in snippet["spec"]["ignoreDifferences"]:
        obj = find(objs, item["kind"], item["name"])
        assert obj["apiVersion"].split("/")[0] == item["group"]
        assert item["jqPathExpressions"] == [".webhooks[]?.clientConfig.caBundle"] and obj["webhooks"]
    assert "RespectIgnoreDifferences=true" in snippet["spec"]["syncPolicy"]["syncOptions"]


def test_the_secret_the_docs_name_is_the_one_the_webhook_keeps() -> None:
    from sandgate.cli import build_parser

    deployment = find(render({}), "Deployment")
    args = build_parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    deletes = [c for c in commands(INSTALL, "kubectl") if "delete" in c and "secret" in c]
    assert deletes and all(c[-1] == args.tls_secret for c in deletes)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_stand_alone(doc: Path) -> None:
    text = doc.read_text()
    assert not re.search(r"\bissues?\b [#0-9]|\(see the issues\)|SECURITY-CASES|ARCHITECTURE\.md|design folder", text)
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (doc.parent / target).exists(), target
