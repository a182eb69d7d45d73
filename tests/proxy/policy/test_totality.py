"""The loader is total: every input gets a Policy or a PolicyInvalid that names the file, the field
and the fix; never another exception (the proxy's reload watcher and the webhook catch only that).

The first tests are the findings of a fuzzing session, each of which escaped as a traceback before;
the properties below keep looking, over raw bytes and over generated YAML structures, with both the
C (libyaml) and the pure-Python YAML loader.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.policy import yamlsafe
from proxy.policy.load import PolicyInvalid, load_policy, parse_policy
from proxy.policy.model import Policy
from tests.proxy.policy.strategies import policy_documents, share

HEAD = "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: t}\n"
VALID = HEAD + "spec: {allow: [{host: api.example.com}]}\n"

LOADERS = [pytest.param(yamlsafe.PureLoader, id="pure-python")]
if yamlsafe.C_LOADER is not None:
    LOADERS.insert(0, pytest.param(yamlsafe.C_LOADER, id="libyaml"))


@pytest.fixture(params=LOADERS)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Any]]:
    monkeypatch.setattr(yamlsafe, "LOADER", request.param)
    yield request.param


def outcome(data: str | bytes, source: str = "policy.yaml") -> Policy | PolicyInvalid:
    """The loader's answer; any other exception fails the test with its traceback."""
    try:
        return parse_policy(data, source=source)
    except PolicyInvalid as e:
        return e


def refusal(data: str | bytes, source: str = "policy.yaml") -> str:
    result = outcome(data, source)
    assert isinstance(result, PolicyInvalid), f"accepted: {result}"
    assert result.errors and all(e.field and e.message for e in result.errors)
    text = str(result)
    assert all(line.startswith(f"{source}: ") for line in text.splitlines()), text
    assert "<unicode string>" not in text and "Traceback" not in text
    return text


# --- the fuzzing session's findings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"metadata: {name: rel-\xff}", "is not UTF-8: byte 0xff at line 1, column 22"),
        (HEAD.encode() + b"spec: {allow: [{host: \xc3(.example.com}]}", "is not UTF-8: byte 0xc3 at line 4"),
        (codecs.BOM_UTF16_LE + VALID.encode("utf-16-le"), "is UTF-16"),
        (codecs.BOM_UTF32_BE + VALID.encode("utf-32-be"), "is UTF-32"),
        ("[" * 600, "nested more than 32 levels deep"),
        (b"[" * 600, "nested more than 32 levels deep"),
        ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 400)), "nested more than 32 levels deep"),
        ("{a: " * 300 + "1" + "}" * 300, "nested more than 32 levels deep"),
        ("a: " + "9" * 5000, "is not an integer Python can read; quote it"),
        ("a: !!float nope", "is not a number; quote it"),
        ("a: \x01", "line 1, column 4: character U+0001 is not allowed in YAML"),
        ("a: \ud800", "line 1, column 4: U+D800 is half of a surrogate pair"),
        ("a: &a [*a]", "refers to a collection that contains it"),
        (
            "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
            "aliases expand to more than 10000 nodes",
        ),
        ("a: &a [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]\nb: [[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]\n", "once aliases"),
        ("", "is empty; an EgressPolicy is a mapping with apiVersion, kind, metadata and spec"),
        ("# only a comment\n", "is empty"),
        (VALID + "---\n" + VALID, "holds 2 YAML documents; a policy file holds one"),
        (HEAD + "spec: {allow: []}\nspec: {allow: [{host: a.example.com}]}\n", "the key 'spec' appears twice"),
        ("a: [", "policy.yaml: yaml: line "),
    ],
    ids=[
        "not-utf8",
        "not-utf8-in-a-host",
        "utf16",
        "utf32",
        "600-flow-levels",
        "600-flow-levels-bytes",
        "400-block-levels",
        "300-nested-mappings",
        "5000-digit-integer",
        "bad-explicit-float",
        "control-character",
        "lone-surrogate-in-str",
        "recursive-alias",
        "billion-laughs",
        "deep-through-alias",
        "empty-file",
        "comment-only",
        "two-documents",
        "duplicate-key",
        "yaml-syntax",
    ],
)
def test_every_malformed_input_is_a_policy_invalid_naming_the_file(
    loader: type[Any], data: str | bytes, says: str
) -> None:
    assert says in refusal(data)


def test_the_size_cap_is_one_mebibyte_as_a_configmap_holds(tmp_path: Path) -> None:
    assert isinstance(outcome(VALID + "#" * (yamlsafe.MAX_BYTES - len(VALID) - 1) + "\n"), Policy)
    assert "a policy is at most 1048576 bytes" in refusal(VALID + "#" * yamlsafe.MAX_BYTES)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (10 * yamlsafe.MAX_BYTES))
    with pytest.raises(PolicyInvalid, match="a policy is at most"):
        load_policy(str(big))


def test_load_policy_reads_bytes_and_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "rel.yaml"
    f.write_bytes(b"apiVersion: sandgate.dev/v1alpha1\nmetadata: {name: rel-\xff}\n")
    with pytest.raises(PolicyInvalid) as e:
        load_policy(str(f))
    assert str(e.value).startswith(f"{f}: file: is not UTF-8")
    with pytest.raises(PolicyInvalid, match="cannot read"):
        load_policy(str(tmp_path))  # a directory
    with pytest.raises(PolicyInvalid, match="cannot read: No such file"):
        load_policy(str(tmp_path / "missing.yaml"))


def test_a_utf8_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    f = tmp_path / "bom.yaml"
    f.write_bytes(codecs.BOM_UTF8 + VALID.encode())
    assert load_policy(str(f)).name == "t"
    assert parse_policy("\ufeff" + VALID).name == "t"


def test_parse_policy_takes_str_and_bytes_alike() -> None:
    assert parse_policy(VALID) == parse_policy(VALID.encode())


@pytest.mark.parametrize(
    "doc",
    [
        "metadata: {name: 2024-13-45}",  # a timestamp PyYAML cannot build (datetime raised ValueError)
        "metadata: {name: 2024-01-01}",
    ],
)
def test_timestamps_stay_strings_as_in_yaml_1_2(loader: type[Any], doc: str) -> None:
    text = HEAD.replace("metadata: {name: t}\n", doc + "\n") + "spec: {allow: []}\n"
    assert parse_policy(text).name == doc.split(": ")[-1].rstrip("}")


def test_anchors_and_merge_keys_within_bounds_still_work(loader: type[Any]) -> None:
    p = parse_policy(
        HEAD
        + "spec:\n  allow:\n    - &api {host: api.example.com, ports: [443, 8443]}\n    - {<<: *api, host: b.example.com}\n"
    )
    assert [(r.host, r.ports) for r in p.allow] == [("api.example.com", (443, 8443)), ("b.example.com", (443, 8443))]


def test_error_messages_are_bounded_whatever_the_input() -> None:
    text = refusal(HEAD + "spec: {allow: [{host: '" + "a" * 500_000 + "', methods: ['" + "x" * 500_000 + "']}]}")
    assert len(text) < 2000, text[:300]


# --- properties -----------------------------------------------------------------------------------


def bounded(examples: int) -> settings:
    """Seeded (the same examples every run, so CI is reproducible) and bounded in number."""
    return settings(
        max_examples=examples, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


def _total(data: str | bytes) -> None:
    result = outcome(data)
    if isinstance(result, PolicyInvalid):
        assert result.errors
        for e in result.errors:
            assert isinstance(e.field, str) and e.field and isinstance(e.message, str) and e.message
            assert len(str(e)) < 1000


@bounded(300)
@given(st.binary(max_size=400))
@example(b"metadata: {name: rel-\xff}")
@example(b"[" * 600)
@example(b"\xff\xfe")
@example(b"a: 2024-13-45")
def test_any_bytes_get_a_policy_or_a_policy_invalid(data: bytes) -> None:
    for loader in (yamlsafe.C_LOADER, yamlsafe.PureLoader):
        if loader is not None:
            yamlsafe.LOADER = loader
            try:
                _total(data)
            finally:
                yamlsafe.LOADER = yamlsafe.C_LOADER or yamlsafe.PureLoader


# YAML-ish text: the characters that make structure, plus a little of everything else.
_yamlish = st.text(
    alphabet=st.sampled_from([*"[]{}:,-?&*!|>'\"#%@` \n\t.0123456789abcxyz", "\x00", "\ufeff", "é", "\ud800"]),
    max_size=200,
)


@bounded(300)
@given(_yamlish)
@example("a: &a [*a]")
@example("!!binary x")
@example("? [a]\n: 1")
@example("a: !!timestamp 2024-99-99")
@example("a: !!int 0x")
@example("a: 1\n---\n---\n")
def test_any_text_gets_a_policy_or_a_policy_invalid(text: str) -> None:
    _total(text)


@bounded(400)
@given(policy_documents(), st.data())
def test_generated_yaml_structures_get_a_policy_or_a_policy_invalid(doc: Any, data: st.DataObject) -> None:
    doc = share(doc, data)
    text = yaml.dump(
        doc, allow_unicode=data.draw(st.booleans()), default_flow_style=data.draw(st.sampled_from([None, True, False]))
    )
    _total(text)
    _total(text.encode("utf-8", "surrogatepass"))


@bounded(50)
@given(st.integers(1, 200), st.sampled_from(["[", "{a: ", "- ", "a:\n  "]))
def test_nesting_of_any_depth_gets_an_answer(depth: int, opener: str) -> None:
    if opener == "a:\n  ":
        text = "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "1\n"
    elif opener == "- ":
        text = "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "1\n"
    else:
        text = opener * depth + "1" + ("]" if opener == "[" else "}") * depth
    _total(text)
