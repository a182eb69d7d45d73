"""TLS contexts: the agent side (leaf certificates minted by the sidecar's CA) and the upstream side
(verified against the system CAs plus ``--upstream-ca``).

Leaves are EC P-256, share one key (as mitmproxy's cert store does), name exactly the host the agent
asked for (a DNS name or an IP address, never a wildcard), and are cached in a bounded LRU of SSL
contexts: the policy's exact hosts are minted at start, others on first use. Python's ``ssl`` loads
certificates only from files; they are handed over through an anonymous in-memory file
(``memfd_create``), so no leaf key ever touches a disk (unless there is no /proc to read that file
through: then a private file in TMPDIR, removed at once; a leaf that cannot be loaded otherwise, out
of descriptors say, fails its connection).
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import os
import ssl
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.infile import MAX_PEM_BYTES, read_bounded

__all__ = ["AgentTls", "upstream_context"]

LEAF_DAYS = 30


def _load_chain(ctx: ssl.SSLContext, pem: bytes) -> None:
    """``ctx.load_cert_chain`` from memory (key and certificates in one PEM). Raises OSError when
    it cannot be loaded so (out of descriptors, say): the key is never written to a file instead,
    unless there is no /proc to read the memory file through (red team 68: at EMFILE it was)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("sandgate-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        except FileNotFoundError:
            if os.path.isdir("/proc/self/fd"):
                raise
            # no /proc (some sandboxes): fall back to a private file, removed at once
        finally:
            os.close(fd)
    with tempfile.NamedTemporaryFile(prefix="sandgate-leaf-", suffix=".pem") as f:  # mode 0600
        f.write(pem)
        f.flush()
        ctx.load_cert_chain(f.name)


class AgentTls:
    """Server-side contexts toward agents, one per host name or IP, minted on demand."""

    def __init__(self, ca_pem: bytes, cache_size: int = 256) -> None:
        self._ca_key = serialization.load_pem_private_key(ca_pem, password=None)
        start = ca_pem.index(b"-----BEGIN CERTIFICATE-----")
        self._ca_cert = x509.load_pem_x509_certificate(ca_pem[start:])
        self._ca_pem = self._ca_cert.public_bytes(serialization.Encoding.PEM)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._key_pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._cache: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._cache_size = cache_size
        self._pinned: set[str] = set()
        self.minted = 0

    def prewarm(self, hosts: Iterable[str]) -> None:
        """Mint the policy's exact hosts now; they stay cached (the LRU evicts only others)."""
        for host in hosts:
            self.context(host)
            self._pinned.add(host)

    def context(self, host: str) -> ssl.SSLContext:
        ctx = self._cache.get(host)
        if ctx is not None:
            self._cache.move_to_end(host)
            return ctx
        ctx = self._new_context(self._leaf(host))
        ctx.sni_callback = self._on_sni
        self._cache[host] = ctx
        while len(self._cache) > self._cache_size + len(self._pinned):
            oldest = next((h for h in self._cache if h not in self._pinned), None)
            if oldest is None:
                break
            del self._cache[oldest]
        return ctx

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> int | None:
        """A connection starts with the leaf of the host it is known to want (the CONNECT authority,
        or the original destination's IP); its ClientHello's server name, when the connection
        accepts it (``owner.on_sni``: an ASCII host name), gets a leaf of its own instead, so the
        agent can read whatever the proxy answers (a mismatch is refused with a reason, in TLS)."""
        owner = getattr(sslobj, "sandgate_owner", None)
        if owner is None:
            return None
        chosen = owner.on_sni(name)
        if isinstance(chosen, int):
            return chosen  # a TLS alert: the name cannot be answered for
        if chosen is not None:
            sslobj.context = self.context(chosen)
        return None

    @staticmethod
    def _settings(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])  # one authority per connection: no h2 toward agents
        ctx.options |= ssl.OP_NO_COMPRESSION

    def _new_context(self, cert_pem: bytes) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._settings(ctx)
        _load_chain(ctx, self._key_pem + cert_pem + self._ca_pem)
        return ctx

    def _leaf(self, host: str) -> bytes:
        self.minted += 1
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        now = datetime.datetime.now(datetime.UTC)
        not_after = min(now + datetime.timedelta(days=LEAF_DAYS), self._ca_cert.not_valid_after_utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca_cert.subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return cert.public_bytes(serialization.Encoding.PEM)


def upstream_context(extra_cas: Iterable[Path] = ()) -> ssl.SSLContext:
    """Verified TLS toward upstreams: the system CAs (a hashed directory is read lazily, which
    keeps start-up fast) plus each extra CA file. Raises ``OSError`` naming the file for a CA file
    that cannot be read or holds no PEM certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    paths = ssl.get_default_verify_paths()
    if paths.capath and Path(paths.capath).is_dir() and any(Path(paths.capath).glob("*.0")):
        ctx.load_verify_locations(capath=paths.capath)
    elif paths.cafile and Path(paths.cafile).is_file():
        ctx.load_verify_locations(cafile=paths.cafile)
    else:
        import certifi

        ctx.load_verify_locations(cafile=certifi.where())
    for path in extra_cas:
        # Read here, bounded, and only a regular file (red team 63: a FIFO hung the start for good);
        # PEM is ASCII, and what is around its blocks (a bundle's comments) is skipped by OpenSSL.
        pem = read_bounded(path, MAX_PEM_BYTES).decode("ascii", "ignore")
        try:
            ctx.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError) as e:  # (it names no file: the message named the confdir, red team 45)
            why = getattr(e, "reason", None) or "no certificate in it"
            raise OSError(errno.EINVAL, f"not a PEM CA certificate for --upstream-ca ({why})", str(path)) from None
    return ctx
