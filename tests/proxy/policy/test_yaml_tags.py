"""Every YAML reader of the project is total over tags: an edit of a valid file gets the value read,
or the reader's own error, never another exception (red team 45, F1).

PyYAML's tag constructors raise KeyError (``!!bool 1``), IndexError (``!!int `` empty) and
TypeError (a key tagged ``!!seq``), and the policy loader let them out: a traceback from ``sandgate
proxy``/``policy``/``run``/``webhook --config``, and on a hot reload a watcher crash instead of a
rejected reload. ``proxy.policy.yamlsafe`` now turns what any constructor raises into an error at
its node, and the injector's config and ``sandgate run`` read YAML through it as well.

The proof is the property at the end: a valid policy (and a valid cases file, a valid injector
config) mutated with tags, anchors, indicators and odd scalars, with both loaders, gets its value or
its reader's error, whatever the mutation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from injector.config import ConfigError, InjectorConfig, parse_config
from injector.mutate import BrokenPolicy, MissingPolicy
from proxy import policytool
from proxy.policy import yamlsafe
from proxy.policy.errors import PolicyError
from proxy.policy.load import PolicyInvalid, parse_policy
from proxy.policy.model import Policy
from webhook.store import parse_stored

LOADERS = [pytest.param(yamlsafe.PureLoader, id="pure-python")]
if yamlsafe.C_LOADER is not None:
    LOADERS.insert(0, pytest.param(yamlsafe.C_LOADER, id="libyaml"))
ALL_LOADERS = [p.values[0] for p in LOADERS]


@pytest.fixture(params=LOADERS)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Any]]:
    monkeypatch.setattr(yamlsafe, "LOADER", request.param)
    yield request.param


POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata:
  name: default
spec:
  mode: enforce
  allow:
    - &api {host: api.openai.com, methods: [GET, POST], paths: ["/v1/*"], ports: [443]}
    - {<<: *api, host: api.example.com}
    - host: pypi.org
      ports: [443, 8443]
  secrets:
    - name: openai
      placeholder: sk-sandgate-openai-0123456789abcdef
      source: {env: OPENAI_KEY}
      hosts: [api.openai.com]
      headers: [authorization]
"""
CASES = """policy: default
cases:
  - name: a chat completion
    request: {method: POST, url: "https://api.openai.com/v1/chat", headers: {authorization: "Bearer x"}}
    expect: {decision: allowed}
  - request: {method: GET, url: "https://evil.example/"}
    expect: {decision: denied, reason: host_not_allowed}
"""
CONFIG = """image: ghcr.io/sandgate/sandgate:0.1.0
mode: transparent
gkeSandbox: false
kubernetesVersion: "1.30"
proxyUID: 1337
redirectPorts: [80, 443]
exemptNamespaces: [kube-system]
resources: {requests: {cpu: 50m, memory: 64Mi}}
"""


# --- the red team's inputs, at once for every reader ------------------------------------------

TAGGED = {
    "bool-1": "ports: [!!bool 1]",
    "bool-empty": "ports: [!!bool ]",
    "int-empty": "ports: [!!int ]",
    "int-underscore": "ports: [!!int _]",
    "float-empty": "ports: [!!float ]",
    "seq-key": "!!seq : x",
    "map-key": "!!map : x",
    "set-key": "!!set : 1",
    "omap-key": "!!omap x: 1",
    "pairs-key": "!!pairs x: 1",
}


@pytest.mark.parametrize("line", TAGGED.values(), ids=TAGGED.keys())
def test_a_tag_pyyaml_chokes_on_is_a_policy_error_at_its_line(loader: type[Any], line: str) -> None:
    text = POLICY.replace("      ports: [443, 8443]\n", "      " + line + "\n")
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, source="p.yaml")
    assert [e.field for e in info.value.errors] == ["yaml"]
    assert "p.yaml: yaml: line 11, column " in str(info.value), str(info.value)


def test_the_messages_say_what_to_write(loader: type[Any]) -> None:
    def says(line: str) -> str:
        with pytest.raises(PolicyInvalid) as info:
            parse_policy(POLICY.replace("      ports: [443, 8443]\n", "      " + line + "\n"))
        return str(info.value)

    assert "'1' is not a boolean (true or false); quote it" in says("ports: [!!bool 1]")
    assert "'' is not an integer Python can read; quote it" in says("ports: [!!int ]")
    assert "a key may not be a list, a mapping or a set (it is tagged !!seq)" in says("!!seq : x")


@pytest.mark.parametrize("line", TAGGED.values(), ids=TAGGED.keys())
def test_the_webhook_config_names_the_problem(loader: type[Any], line: str) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML: line 2, column \d+: "):
        parse_config("mode: transparent\n" + line.replace("ports", "redirectPorts") + "\n")


def test_the_webhook_config_is_read_as_policies_are() -> None:
    with pytest.raises(ConfigError, match="the key 'mode' appears twice"):
        parse_config("mode: transparent\nmode: explicit\n")
    with pytest.raises(ConfigError, match="holds 2 YAML documents"):
        parse_config("mode: transparent\n---\nmode: explicit\n")
    assert parse_config("---\n") == InjectorConfig()
    assert parse_config("gkeSandbox: !!bool yes\n").gke_sandbox is True


# --- any other exception out of a constructor, wherever it is raised --------------------------


def test_an_unexpected_exception_in_a_constructor_is_placed_at_its_node(
    loader: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands in for the next PyYAML constructor bug: a scalar whose construction raises."""
    real = yaml.constructor.BaseConstructor.construct_scalar

    def breaks_on_boom(self: Any, node: Any) -> Any:
        if node.value == "boom":
            raise ZeroDivisionError
        return real(self, node)

    monkeypatch.setattr(yaml.constructor.BaseConstructor, "construct_scalar", breaks_on_boom)
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(POLICY.replace("host: pypi.org", "host: boom"))
    assert "line 10, column 13: cannot read this value tagged !!str (ZeroDivisionError)" in str(info.value)


def test_one_raised_while_a_collection_is_finished_later_is_placed_at_the_collection(
    loader: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML builds a mapping's contents after the rest of the document (a generator resumed by
    ``construct_document``): what is raised then is outside the constructor call."""
    real = yaml.constructor.SafeConstructor.flatten_mapping

    def breaks_on_boom(self: Any, node: Any) -> Any:
        if any(getattr(k, "value", None) == "boom" for k, _ in node.value):
            raise TypeError("unhashable type: 'list'")
        return real(self, node)

    monkeypatch.setattr(yaml.constructor.SafeConstructor, "flatten_mapping", breaks_on_boom)
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(POLICY.replace("      ports: [443, 8443]\n", "      ports: {boom: 1}\n"))
    assert "line 11, column 14: cannot read this value tagged !!map (TypeError)" in str(info.value)


def test_memory_error_is_not_taken_for_a_bad_file(loader: type[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Documented exception: it says nothing about the file (which is at most 1 MiB, aliases bounded),
    and whoever asked may succeed again (the watcher, restarted, reads the change again)."""

    def out_of_memory(self: Any, node: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(yaml.constructor.BaseConstructor, "construct_scalar", out_of_memory)
    with pytest.raises(MemoryError):
        parse_policy(POLICY)


# --- the property: mutate valid files, every reader answers with its value or its error ---------

# What the mutations insert: every tag YAML 1.1 defines (and a few it does not), anchors, aliases,
# merge keys, indicators, and scalars each constructor reads in its own way.
_YAML_TAGS = [
    "str",
    "int",
    "float",
    "bool",
    "null",
    "seq",
    "map",
    "set",
    "omap",
    "pairs",
    "binary",
    "timestamp",
    "merge",
]
_TAGS = [f"!!{t} " for t in [*_YAML_TAGS, "value", "yaml"]]
_TAGS += ["!x ", "!<tag:yaml.org,2002:int> ", "!<tag:yaml.org,2002:python/object/apply:os.system> ", "! "]
_TOKENS = [
    *_TAGS,
    *[t.strip() for t in _TAGS],
    "&a ",
    "*a",
    "<<: ",
    "? ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    '"',
    "|",
    ">",
    "#",
    "\n",
    "  ",
    "---\n",
    "...\n",
]
_SCALARS = ["", "1", "0x", "0b2", "1_0", "_", ".", ".nan", ".inf", "-.inf", "1e999", "9" * 5000, "~", "null",
            "yes", "Off", "2024-13-45", "2024-01-01", "12:30:00", "=", "<<", "[]", "{}", "a: b", "\\u0000"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "insert", "insert", "scalar", "delete"]))
        if kind == "insert":
            piece = draw(st.sampled_from(_TOKENS))
            if draw(st.booleans()):
                piece += draw(st.sampled_from(_SCALARS))
            text = text[:at] + piece + text[at:]
        elif kind == "scalar":
            # replace the value after a ": " or "- " or "[" near ``at`` with another scalar
            starts = [i + len(m) for m in (": ", "- ", "[", ", ") if (i := text.find(m, at)) >= 0]
            if starts:
                start = min(starts)
                end = min([j for j in (text.find(c, start) for c in "\n,]}") if j >= 0] or [len(text)])
                text = text[:start] + draw(st.sampled_from([*_TAGS, ""])) + draw(st.sampled_from(_SCALARS)) + text[end:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
    return text


def bounded(examples: int) -> settings:
    return settings(
        max_examples=examples, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


def each_loader(check: Callable[[], None]) -> None:
    for loader in ALL_LOADERS:
        yamlsafe.LOADER = loader
        try:
            check()
        finally:
            yamlsafe.LOADER = yamlsafe.C_LOADER or yamlsafe.PureLoader


def _well_formed(errors: list[PolicyError]) -> None:
    assert errors
    for e in errors:
        assert isinstance(e.field, str) and e.field and isinstance(e.message, str) and e.message
        assert "Traceback" not in e.message and len(str(e)) < 2000


@bounded(600)
@given(mutated(POLICY))
@example(POLICY.replace("ports: [443, 8443]", "ports: [!!bool 1]"))
@example(POLICY.replace("metadata:", "!!omap x: 1\nmetadata:"))
@example(POLICY.replace("[GET, POST]", "[!!int , POST]"))
def test_a_mutated_policy_loads_or_is_a_policy_invalid(text: str) -> None:
    def check() -> None:
        try:
            assert isinstance(parse_policy(text, source="p.yaml"), Policy)
        except PolicyInvalid as e:
            _well_formed(e.errors)
        for d in policytool.documents("p.yaml", text.encode("utf-8", "surrogatepass")):  # sandgate policy check
            assert d.policy is not None or d.skipped or d.errors
            if d.errors:
                _well_formed(d.errors)
        stored = parse_stored("default", text, "configmap a/default")  # the webhook's /validate and /mutate
        assert isinstance(stored, Policy | BrokenPolicy | MissingPolicy)

    each_loader(check)


@bounded(300)
@given(mutated(CASES))
@example(CASES.replace("cases:\n", "cases:\n  - !!float : 1\n"))
@example(CASES.replace("https://evil.example/", "https://[::1/v1"))
def test_a_mutated_cases_file_is_read_or_named(text: str) -> None:
    [doc] = policytool.documents("p.yaml", POLICY.encode())

    def check() -> None:
        problems: list[tuple[str, PolicyError]] = []
        cases = policytool._read_cases("cases.yaml", text.encode("utf-8", "surrogatepass"), [doc], problems)
        for _, err in problems:
            _well_formed([err])
        for case in cases:
            policytool._run(case)

    each_loader(check)


@bounded(300)
@given(mutated(CONFIG))
@example(CONFIG.replace("gkeSandbox: false", "gkeSandbox: !!bool 1"))
def test_a_mutated_webhook_config_is_read_or_a_config_error(text: str) -> None:
    def check() -> None:
        try:
            assert isinstance(parse_config(text), InjectorConfig)
        except ConfigError as e:
            assert str(e) and "Traceback" not in str(e)

    each_loader(check)
