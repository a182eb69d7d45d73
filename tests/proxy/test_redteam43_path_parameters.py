"""Red team 43: a path rule is passed by a dot segment written with a path parameter (``..;``).

docs/policy.md: "A path with dot segments or encoded '.', '/' or '\\' never matches" a path rule
(``proxy.policy.decide._AMBIGUOUS_PATH``). The pattern reads a dot segment as ``.`` or ``..``
between slashes; ``/v1/..;/admin`` has the segment ``..;``, which Tomcat, Jetty and Spring (and the
servers behind them) read as ``..`` with an empty path parameter: the request the glob ``/v1/*``
allowed is served as ``/admin`` (the Shiro / Spring Security ACL bypasses of CVE-2020-1957 and
kin). The same with a parameter value (``..;x=1``) or a single dot (``.;``).

Invariant: the allowlist decides what the upstream serves; an ambiguous path is refused, not
forwarded (fail closed).

Fix idea: read a segment as its part before the first ``;`` when looking for dot segments (and
``%3b`` as ``;``): ``(^|/)\\.{1,2}(;[^/]*)?(/|$)``, or refuse ``;`` in a path checked against a rule."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import needs_root
from tests.proxy.test_redteam import HOSTILE_NAME, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam39 import tunnel
from tests.support.hostile import HostileServer
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt43-paths}}
spec:
  allow:
    - host: {HOSTILE_NAME}
      paths: ["/v1/*"]
"""


@pytest.fixture
def paths(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
) -> Iterator[ProxyProcess]:
    p = make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), env={})
    yield p
    p.stop()


def _get(p: ProxyProcess, target: str) -> bytes:
    s = tunnel(p)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nConnection: close\r\n\r\n".encode())
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_rt43_control_a_plain_dot_segment_is_refused(paths: ProxyProcess, hostile: HostileServer) -> None:  # noqa: F811
    """Holds: ``/v1/../admin`` never matches ``/v1/*``."""
    before = len(hostile.requests)
    out = _get(paths, "/v1/../admin")
    assert b"path_not_allowed" in out, out[:200]
    assert len(hostile.requests) == before


@pytest.mark.parametrize("target", ["/v1/..;/admin", "/v1/..;x=1/admin", "/v1/.;/..;/admin"])
def test_rt43_a_dot_segment_with_a_path_parameter_never_matches_a_path_rule(
    paths: ProxyProcess,
    hostile: HostileServer,  # noqa: F811
    target: str,
) -> None:
    before = len(hostile.requests)
    out = _get(paths, target)
    reached = [r.path for r in hostile.requests[before:]]
    assert not reached, f"{target} passed the rule /v1/* and reached the upstream (Tomcat serves /admin): {reached}"
    assert b"path_not_allowed" in out, out[:200]
