"""Red team 69, on red team 68's fixes: what the proxy says of its audit log's path, and a policy
read out of descriptors. Each test failed on the code before its fix.

- The audit log's path that could not be looked at was said (and counted) once in a process's
  life: after it came back, a second failure, or a later rotation whose path could not be opened,
  went unsaid (``Sink._failing_reopen`` was cleared only by a reopen).
- While the path could not be looked at, the proxy said "writing to the file as it was"; when that
  file was then removed, records were lost (counted, readiness 0) with nothing new in the log.
- A valid policy with a wildcard host needs the public suffix list, loaded on first use: out of
  descriptors, its bare OSError killed the reload watcher (restarted by the supervisor, and past
  its failure budget the proxy exits) instead of being a version read again at the next look.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path

import publicsuffixlist
import pytest

from proxy.policy import load
from proxy.policy.errors import PolicyUnreadable
from proxy.sidecar import read_policy
from tests.conftest import MAIN_POLICY, needs_root
from tests.proxy.test_redteam68 import ask
from tests.support.proxyproc import ProxyProcess


def _break(d: Path) -> None:
    """The audit log's directory moved aside and its name made a symlink loop (ELOOP for stat and
    open of the log's path); the file itself is not removed."""
    d.rename(d.with_name(d.name + ".real"))
    d.symlink_to(d.name)


def _mend(d: Path) -> None:
    d.unlink()
    d.with_name(d.name + ".real").rename(d)


def _audited(make_proxy: Callable[..., ProxyProcess], tmp_path: Path) -> tuple[ProxyProcess, Path, Path]:
    """A proxy writing its audit log in a directory of its own (and one request recorded)."""
    d = tmp_path / "auditdir"
    d.mkdir()
    log = d / "audit.log"
    p = make_proxy(MAIN_POLICY, "--audit-log", str(log))
    assert ask(p.port).startswith(b"HTTP/1.1 403")
    return p, d, log


def _requests(p: ProxyProcess, count: int, pause: float = 0.3) -> None:
    for _ in range(count):
        ask(p.port)
        time.sleep(pause)


@needs_root
def test_rt69_a_second_episode_of_an_unlookable_audit_path_is_said_and_counted(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    p, d, log = _audited(make_proxy, tmp_path)
    # Episode 1: said once and counted (red team 68's fix).
    _break(d)
    _requests(p, 4)
    said1 = [x for x in p.stderr().splitlines() if "cannot open it anew" in x]
    errs1 = p.metric("sandgate_internal_errors_total", task="audit")
    assert len(said1) == 1 and errs1 >= 1, p.stderr()[-800:]
    # The path works again and names the same file: records go there.
    _mend(d)
    _requests(p, 4)
    n = log.read_text().count("\n")
    assert n == 9, n
    assert p.stderr().count('"stream_path_back"') == 1  # said: the path leads to the file again
    time.sleep(1)
    # Episode 2, later: the same failure again. It must be said (and counted) as the first was.
    _break(d)
    _requests(p, 4)
    said2 = [x for x in p.stderr().splitlines() if "cannot open it anew" in x]
    errs2 = p.metric("sandgate_internal_errors_total", task="audit")
    _mend(d)
    assert len(said2) == 2 and errs2 > errs1, (
        f"second failure silent: said {len(said2)} time(s), internal_errors{{task=audit}} {errs1} -> {errs2}; "
        + p.stderr()[-600:]
    )


@needs_root
def test_rt69_records_going_from_written_as_it_was_to_lost_is_said(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    """While the path cannot be looked at, the proxy said "writing to the file as it was". The file
    is then removed too: records are now lost (counted, readiness 0), yet nothing in the log says
    the earlier line stopped being true."""
    p, d, _ = _audited(make_proxy, tmp_path)
    _break(d)
    _requests(p, 3)
    assert "writing to the file as it was" in p.stderr(), p.stderr()[-800:]
    (d.with_name(d.name + ".real") / "audit.log").unlink()  # the file as it was: gone now
    _requests(p, 5, 0.4)
    lost = p.metric("sandgate_internal_errors_total", task="audit")
    ready = p.metric("sandgate_proxy_ready")
    said = [x for x in p.stderr().splitlines() if '"where": "audit"' in x]
    d.unlink()
    d.with_name(d.name + ".real").rename(d)
    assert ready == 0 and lost >= 3, (ready, lost)
    assert any("records are lost" in x for x in said), f"the log still says only: {said}"


WILD = """
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: rt69-wild}
spec:
  allow:
    - host: "*.example.com"
      ports: [443]
"""


def test_rt69_read_policy_raises_policy_errors_only_when_the_suffix_list_cannot_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sidecar.read_policy promises "Raises PolicyInvalid, nothing else"; the watcher relies on it
    (PolicyUnreadable: read again at the next look, said once). Out of descriptors, loading the
    public suffix list raised a bare OSError instead: the watcher task died into the supervisor
    (internal_error "OSError", restarts, and past max_failures the whole proxy exits), and the log
    says neither the file nor the reason."""

    def emfile(*a: object, **kw: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    load._public_suffixes.cache_clear()
    monkeypatch.setattr(publicsuffixlist, "PublicSuffixList", emfile)
    f = tmp_path / "policy.yaml"
    f.write_text(WILD)
    try:
        with pytest.raises(PolicyUnreadable):  # (or any PolicyInvalid that leaves it to be read again)
            read_policy(f)
    finally:
        load._public_suffixes.cache_clear()
