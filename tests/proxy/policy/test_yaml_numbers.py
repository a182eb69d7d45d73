"""Red team 63: a number in a policy that YAML 1.1 (which PyYAML reads) reads otherwise than YAML
1.2 (which editors and JSON Schema tools read): ``ports: [0673]`` opened port 443 (octal; 673 to
the author and to any YAML 1.2 reader), ``7:23`` too (base 60), and ``4_43``; ``policy check`` said
ok. Each is now refused with its line, and the proxy refuses to start with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.policy import yamlsafe
from proxy.policy.errors import PolicyInvalid
from proxy.policy.yamlsafe import load_documents
from tests.proxy.test_redteam45_proxy_flags import POLICY

SANDGATE = [sys.executable, "-m", "sandgate"]
LOADERS = [yamlsafe.PureLoader, *([yamlsafe.C_LOADER] if yamlsafe.C_LOADER is not None else [])]


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("written", "form"),
    [("0673", "octal"), ("7:23", "base 60"), ("4_43", "an underscore"), ("0b110111011", "binary")],
)
def test_rt63_a_port_yaml_1_1_reads_otherwise_is_refused(tmp_path: Path, written: str, form: str) -> None:
    text = POLICY.replace("allow: [{host: api.openai.com}]", f"allow: [{{host: api.openai.com, ports: [{written}]}}]")
    out = subprocess.run([*SANDGATE, "policy", "check", str(_policy(tmp_path, text))], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1, out.stdout  # (a policy that fails its check; 2 is for what cannot be read)
    assert f"'{written}' is 443 only in YAML 1.1 ({form}" in out.stdout + out.stderr
    assert "write the number in decimal" in out.stdout + out.stderr
    # (and the proxy refuses to start with it, saying the same)
    started = proxy_with(tmp_path, text)
    assert started.returncode == 2 and f"'{written}' is 443 only in YAML 1.1" in started.stderr, started.stderr


def proxy_with(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SANDGATE, "proxy", "--policy", str(_policy(tmp_path, text)), "--confdir", str(tmp_path / "conf"),
         "--listen-port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("written", ["443", "+443", "0x1bb", "'443'"])
def test_numbers_yaml_1_2_reads_alike_are_kept(tmp_path: Path, written: str) -> None:
    """(Decimal and hexadecimal read alike in both; a quoted port is text, which the schema refuses
    with its own words.)"""
    text = POLICY.replace("allow: [{host: api.openai.com}]", f"allow: [{{host: api.openai.com, ports: [{written}]}}]")
    out = subprocess.run([*SANDGATE, "policy", "check", str(_policy(tmp_path, text))], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ("YAML 1.1" in out.stdout + out.stderr) is False
    assert out.returncode == (1 if written.startswith("'") else 0), out.stdout


@pytest.mark.parametrize(
    ("text", "value"),
    [("443", 443), ("+443", 443), ("-0", 0), ("0", 0), ("0x1bb", 443), ("0.5", 0.5), ("00.5", 0.5), ("443.0", 443.0),
     ("'0673'", "0673"), ("08", "08"), ("1e3", "1e3")],
)  # fmt: skip
@pytest.mark.parametrize("loader", LOADERS)
def test_numbers_both_yamls_read_alike_are_read(text: str, value: object, loader: type) -> None:
    """(``08`` and ``1e3`` are text to YAML 1.1, and a number to YAML 1.2: where a number is due,
    the schema refuses text with its own words.)"""
    assert load_documents(f"a: {text}\n", "t", loader=loader) == [{"a": value}]


@pytest.mark.parametrize("text", ["0673", "-012", "!!int 0673", "7:23", "1_000", "0b101", "6:30.5", "1_0.5"])
@pytest.mark.parametrize("loader", LOADERS)
def test_numbers_yaml_1_1_alone_reads_so_are_refused_with_their_line(text: str, loader: type) -> None:
    with pytest.raises(PolicyInvalid) as e:
        load_documents(f"x: 1\na: {text}\n", "t", loader=loader)
    assert e.value.errors[0].message.startswith(f"line 2, column 4: '{text.removeprefix('!!int ')}' is ")
    assert "only in YAML 1.1" in e.value.errors[0].message
