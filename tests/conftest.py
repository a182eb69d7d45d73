"""Session fixtures: hermetic network, a PKI, real HTTPS upstreams, and one real proxy process.

One proxy serves the whole session (``proxy``); tests that need
other settings start their own with ``make_proxy``.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from proxy import native
from tests.support import isolation
from tests.support.isolation import HOSTS, isolate
from tests.support.leaks import find_leaks
from tests.support.listeners import ContactRecorder, DnsSink
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen, UpstreamThread

NETWORK = isolate()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run the property-based tests with many more examples")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "plain_python: replaces a function inside a compiled per-request module (fault injection, call counts), "
        "which only their plain Python allows: skipped where they run compiled; ./scripts/test runs these again "
        "with SANDGATE_NATIVE=0",
    )


# Tests that run `sandgate run` or a gVisor sandbox, or that look for what such a run left on the
# machine: its processes (pgrep), its directories in /tmp. Process IDs and /tmp are the machine's,
# not the worker's (each pytest-xdist worker has network and mount namespaces of its own, see
# tests/support/isolation.py), so these run one after another on one worker, never beside each
# other (./scripts/test runs the suite with `-n auto --dist loadgroup`: the scheduler below).
ONE_SANDBOX_AT_A_TIME = (
    "tests/run/",
    "tests/injector/test_redteam46_agent_caps.py",
    "tests/proxy/test_lifecycle.py::test_demo_",
)


@pytest.hookimpl(optionalhook=True)  # (pytest-xdist's hook: only where it is installed)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``, with the group said here rather than by an ``xdist_group`` mark: xdist
    3.8 renames a marked test's id to carry its group, which pytest 9.2 no longer lets it do (the
    mark was silently ignored, and sandboxes ran beside each other). xdist's own schedulers say a
    test's group the same way, by ``_split_scope``."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneSandboxAtATime(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "sandbox" if nodeid.startswith(ONE_SANDBOX_AT_A_TIME) else nodeid

    return OneSandboxAtATime(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if native.mode() != "compiled":
        return
    skip = pytest.mark.skip(reason="replaces a function inside a compiled module: run with SANDGATE_NATIVE=0")
    for item in items:
        if item.get_closest_marker("plain_python") is not None:
            item.add_marker(skip)


needs_root = pytest.mark.skipif(not NETWORK, reason="needs root: tests run in a private network namespace")

NONCE = secrets.token_hex(4)


@dataclass(frozen=True)
class Secret:
    name: str
    placeholder: str
    real: str
    env: str


OPENAI = Secret("openai", f"sk-proj-PH-{NONCE}-openai", "sk-REAL-CANARY-" + secrets.token_hex(16), "SG_TEST_OPENAI")
GITHUB = Secret("github", f"ghp-PH-{NONCE}-github", "ghs_REALCANARY" + secrets.token_hex(12), "SG_TEST_GITHUB")
MAPS = Secret("maps", f"maps-PH-{NONCE}-key", "AIzaREALCANARY" + secrets.token_hex(10), "SG_TEST_MAPS")
ALL_SECRETS = (OPENAI, GITHUB, MAPS)

MAIN_POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: test-main}}
spec:
  allow:
    - host: api.openai.com
      ports: [80, 443, 8443]
    - host: "*.example.com"
    - host: files.example.org
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{env: {OPENAI.env}}}
      hosts: [api.openai.com]
    - name: github
      placeholder: {GITHUB.placeholder}
      source: {{env: {GITHUB.env}}}
      hosts: [files.example.org]
      headers: [authorization]
    - name: maps
      placeholder: {MAPS.placeholder}
      source: {{env: {MAPS.env}}}
      hosts: [x.example.com]
      headers: [x-api-key]
      query: true
"""


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert(*[h for h in HOSTS if h != "badtls.example.com"])
    ca.cert_pem.write_to_path(d / "ca.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(d / "server.pem")
    other = trustme.CA().issue_cert("badtls.example.com")  # a CA nobody trusts
    other.private_key_and_cert_chain_pem.write_to_path(d / "badtls.pem")
    return {"ca": d / "ca.pem", "server": d / "server.pem", "badtls": d / "badtls.pem"}


@pytest.fixture(scope="session")
def upstreams(pki: dict[str, Path]) -> Iterator[dict[str, Seen]]:
    if not NETWORK:
        pytest.skip("needs root: tests run in a private network namespace")
    import ssl

    def ctx(pem: Path) -> ssl.SSLContext:
        c = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        c.load_cert_chain(pem)
        return c

    t = UpstreamThread()
    tls = ctx(pki["server"])
    t.start("api", "127.0.0.2", 443, tls)
    t.start("api-8443", "127.0.0.2", 8443, tls)
    t.start("api-plain", "127.0.0.2", 80, None)
    t.start("echo", "127.0.0.3", 443, tls)
    t.start("files", "127.0.0.4", 443, tls)
    t.start("x", "127.0.0.5", 443, tls)
    t.start("badtls", "127.0.0.8", 443, ctx(pki["badtls"]))
    t.start("vault-names", "127.0.0.10", 8200, tls)
    t.seen["_thread"] = t  # type: ignore[assignment]
    yield t.seen
    t.stop()


@pytest.fixture(scope="session")
def attacker() -> Iterator[ContactRecorder]:
    """attacker.test: every TCP connection to it is counted; a correct proxy makes none."""
    if not NETWORK:
        pytest.skip("needs root")
    rec = ContactRecorder([("127.0.0.6", 443), ("127.0.0.6", 80)])
    yield rec
    rec.close()


@pytest.fixture(scope="session")
def dns() -> DnsSink:
    if not NETWORK or isolation.NAMESERVER is None:
        pytest.skip("needs root")
    return isolation.NAMESERVER


def secret_env() -> dict[str, str]:
    return {s.env: s.real for s in ALL_SECRETS}


@pytest.fixture(scope="session")
def make_proxy(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path], upstreams: dict[str, Seen],
               dns: DnsSink) -> Iterator[Callable[..., ProxyProcess]]:  # fmt: skip
    started: list[ProxyProcess] = []

    def make(policy_text: str, *extra: str, env: dict[str, str] | None = None, mode: str = "regular",
             allow_private: bool = True, **kw: object) -> ProxyProcess:  # fmt: skip
        d = tmp_path_factory.mktemp("proxy")
        policy = d / "policy.yaml"
        policy.write_text(policy_text)
        args = ["--upstream-ca", str(pki["ca"])]
        if allow_private:
            args += ["--allow-private", "127.0.0.0/8"]
        p = ProxyProcess(policy, d, env if env is not None else secret_env(), [*args, *extra], mode=mode, **kw)  # type: ignore[arg-type]
        started.append(p)
        return p

    yield make
    # The NO-LEAK oracle (SECURITY-CASES 0.3) over the whole session: no real value, in any
    # encoding, in anything any proxy wrote: stdout, stderr, audit log, metrics.
    problems = []
    for p in started:
        if p.proc.poll() is None:
            try:
                metrics = p.metrics()
            except OSError as e:
                problems.append(f"{p.workdir}: alive but /metrics does not answer ({e}); stderr: {p.stderr()[-2000:]}")
                metrics = ""
            problems += [f"{p.workdir} metrics: {x}" for x in find_leaks(metrics)]
            p.proc.terminate()  # (all at once: each takes ~0.5 s to drain and exit)
    for p in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.proc.wait(10)
        p.stop()
        for where, text in p.outputs().items():
            problems += [f"{p.workdir} {where}: {x}" for x in find_leaks(text)]
    assert not problems, f"real secret values leaked: {problems}"


@pytest.fixture(scope="session")
def proxy(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(MAIN_POLICY)
