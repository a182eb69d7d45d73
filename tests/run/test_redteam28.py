"""Red team 28's attacks on `sandgate run`, after red team 26's fixes, kept as the product's tests.

- the proxy never opens the user's ``--audit-log`` path (a parallel run's CMD swapped it for a link
  between `run`'s open and the proxy's, and got a root append to any file): it writes the run's own
  file, which `run` copies through the descriptor it opened before CMD started;
- a real value in `run`'s environment under any name (``OPENAI_API_KEY``, the policy's own source
  after ``--secrets-from env``) reaches neither CMD's environment nor any process's CMD can read;
- netns mode: the host's ``/run`` (system services' sockets: a resolver, the system bus) is not
  CMD's; the copies of input files (``--upstream-ca``) are root's only.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import OPENAI, needs_root
from tests.run.test_redteam26 import home as home  # (a fixture)
from tests.run.test_redteam26 import sandgate_run
from tests.run.test_sandbox import MODES

pytestmark = needs_root

PY = "/usr/bin/python3"  # CMD's (uid 1000 may not run the test's own venv)


@pytest.mark.parametrize("mode", MODES)
def test_the_audit_log_swapped_for_a_link_after_run_opened_it_writes_no_other_file(
    home: Path, pki: dict[str, Path], mode: str
) -> None:
    """The moment `run` has opened ``--audit-log`` (before the proxy starts), the file is replaced by
    a link to a root-only file (as another run's CMD, writing the same directory, can): the records
    still go where `run` opened, the root-only file is untouched."""
    victim = Path(f"/root/sandgate-rt28-victim-{os.getpid()}")
    victim.write_text("ORIGINAL\n")
    victim.chmod(0o600)
    log = home / "audit.jsonl"

    def swap() -> None:
        deadline = time.monotonic() + 30
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # (run has opened it; its proxy starts about a second later)
        (home / "link").symlink_to(victim)
        os.replace(home / "link", log)

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        r = sandgate_run(
            home, pki, mode, "--audit-log", str(log), "--",
            PY, "-c", "import urllib.request as u; u.urlopen('https://denied.example.com/', timeout=5)",
        )  # fmt: skip
        swapper.join()
        assert victim.read_text() == "ORIGINAL\n", "run's proxy appended to the file the link named"
        assert log.is_symlink() and r.returncode != 0, r.stderr[-2000:]  # (CMD's request was denied)
    finally:
        victim.unlink()


def test_the_audit_log_gets_every_record_as_it_comes(home: Path, pki: dict[str, Path]) -> None:
    log = home / "audit.jsonl"
    script = "import urllib.request as u, time\nfor _ in range(3):\n    try: u.urlopen('https://denied.example.com/', timeout=5)\n    except Exception: pass\ntime.sleep(1)\nprint(open('audit.jsonl').read().count('denied.example.com'))"
    r = sandgate_run(home, pki, "off", "--audit-log", str(log), "--", PY, "-c", script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "3", "the records were not in the log while CMD ran"
    assert log.read_text().count("denied.example.com") == 3


ENVIRON = (
    "import glob, os\n"
    "seen = [open(p, 'rb').read() for p in glob.glob('/proc/[0-9]*/environ') if os.access(p, os.R_OK)]\n"
    "print(repr(dict(os.environ)), repr(seen))\n"
)


@pytest.mark.parametrize("mode", MODES)
def test_a_real_value_under_any_name_reaches_no_environment_cmd_can_read(
    home: Path, pki: dict[str, Path], mode: str
) -> None:
    """``--secrets-from env`` with the value in SANDGATE_SECRET_OPENAI, and also (as a user who runs
    agents with the real key has it) in OPENAI_API_KEY and the policy's own source variable: CMD's
    environment, and every /proc/PID/environ it can read (gVisor lets it read root's), hold none."""
    env = {"SANDGATE_SECRET_OPENAI": OPENAI.real, "OPENAI_API_KEY": OPENAI.real, "MY_COPY": f"x{OPENAI.real}x"}
    r = sandgate_run(home, pki, mode, "--secrets-from", "env", "--", PY, "-c", ENVIRON, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "environ" not in r.stderr
    assert OPENAI.real not in r.stdout and OPENAI.real[4:20] not in r.stdout, "CMD read the real key"


@pytest.fixture
def system_socket() -> Path:
    """A root service's socket in the host's /run (a resolver, the system bus): world-connectable."""
    path = Path(f"/run/sandgate-rt28-{os.getpid()}.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    path.chmod(0o777)
    s.listen()
    yield path
    s.close()
    path.unlink()


def test_netns_mode_cmd_reaches_no_socket_of_the_hosts_run(
    home: Path, pki: dict[str, Path], system_socket: Path
) -> None:
    probe = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(system_socket)!r}); print('CONNECTED')"
    r = sandgate_run(home, pki, "off", "--", PY, "-c", probe)
    assert "CONNECTED" not in r.stdout, "CMD connected to a host service's socket in /run"
    assert r.returncode != 0


@pytest.mark.parametrize("mode", MODES)
def test_the_copies_of_input_files_are_roots_only(home: Path, pki: dict[str, Path], mode: str) -> None:
    """``--upstream-ca`` (or a link CMD made in its place, to a root-only file) is copied into the
    run's directory for the proxy: CMD cannot read the copy."""
    probe = (
        "import glob, os\n"
        "ca = os.environ['SSL_CERT_FILE']\n"
        "copies = glob.glob(os.path.join(os.path.dirname(os.path.dirname(ca)), 'in', '*'))\n"
        "print('READ' if any(os.access(p, os.R_OK) for p in copies) else 'DENIED', copies)\n"
    )
    r = sandgate_run(home, pki, mode, "--", PY, "-c", probe)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("DENIED"), r.stdout


def test_a_policy_cmds_user_can_change_is_warned_about(home: Path, pki: dict[str, Path]) -> None:
    """The policy in CMD's working directory, CMD's user's to write: a CMD could write the next
    run's (binding a key to its own host). Said, as the README's own layout does this."""
    r = sandgate_run(home, pki, "off", "--", "true")
    assert r.returncode == 0 and "can change" in r.stderr and "policy.yaml" in r.stderr, r.stderr[-2000:]
